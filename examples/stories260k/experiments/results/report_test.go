package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

func TestTokensToReach(t *testing.T) {
	c := []point{{100, 3.0}, {200, 2.5}, {300, 2.4}}
	tests := []struct {
		target, want float64
	}{
		{3.5, 100}, {3.0, 100}, {2.6, 200}, {2.4, 300}, {2.0, math.NaN()},
	}
	for _, tc := range tests {
		got := tokensToReach(c, tc.target)
		if got != tc.want && !(math.IsNaN(got) && math.IsNaN(tc.want)) {
			t.Errorf("tokensToReach(%v) = %v, want %v", tc.target, got, tc.want)
		}
	}

}

// TestReportFromManifest renders finding 5 from a hand-written manifest
// and checks the table and the reading follow its numbers.
func TestReportFromManifest(t *testing.T) {
	dir := t.TempDir()
	recipes := filepath.Join(dir, "recipes")
	runs := filepath.Join(dir, "runs")
	// The real recipes: the report counts their passes.
	for _, name := range []string{"05-distill-loss", "01-prune-vs-scratch"} {
		src, err := os.ReadFile(filepath.Join("..", name+".hcl"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(recipes, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(recipes, name+".hcl"), src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hash, err := pipeline.HashPath(filepath.Join(recipes, "05-distill-loss.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	train := func(name string, loss, kl float64) pipeline.PassRecord {
		return pipeline.PassRecord{Name: name, Kind: "distill", Status: pipeline.StatusDone, Seconds: 10,
			Metrics: map[string]any{"val_loss": loss, "val_kl": kl, "tokens": 819200.0, "val_loss_before": 4.0, "teacher_val_loss": 2.4}}
	}
	done := func(i int, name string) pipeline.PassRecord {
		return pipeline.PassRecord{Index: i, Name: name, Status: pipeline.StatusDone}
	}
	// Out of domain KL wins; in domain the mix does.
	man := pipeline.Manifest{Recipe: hash, Variables: map[string]json.RawMessage{"seed": json.RawMessage("1")}, Passes: []pipeline.PassRecord{
		done(0, "teacher-correction"), done(1, "score"), done(2, "prune-width"),
		train("kl", 2.5, 0.11), train("ce", 2.7, 0.4), train("mix-0.5", 2.55, 0.15),
		train("kl-top64", 2.51, 0.12), train("kl-top8", 2.6, 0.2),
		done(8, "ts-score"), done(9, "ts-prune-width"),
		train("ts-kl", 2.1, 0.4), train("ts-ce", 2.05, 0.6), train("ts-mix-0.5", 2.0, 0.5),
		train("ts-kl-top64", 2.1, 0.41), train("ts-kl-top8", 2.2, 0.5),
	}}
	run := filepath.Join(runs, "05-distill-loss")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(man)
	if err := os.WriteFile(filepath.Join(run, pipeline.ManifestName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	// The student's architecture comes from the prune-width pass's model.
	cfg := ir.Config{Arch: "llama", Vocab: 512, Hidden: 48, NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 512, Tied: true, BOS: 1, EOS: 2,
		Layers: ir.UniformLayers(5, ir.LayerConfig{Heads: 8, KVHeads: 4, HeadDim: 8, MLP: 128})}
	cj, err := hf.MarshalConfig(&cfg, ir.F32)
	if err != nil {
		t.Fatal(err)
	}
	mdir := filepath.Join(run, "passes", "02-prune-width", "model")
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mdir, hf.ConfigFile), cj, 0o644); err != nil {
		t.Fatal(err)
	}

	e, err := loadExperiment(filepath.Join(recipes, "05-distill-loss.hcl"), runs)
	if err != nil {
		t.Fatal(err)
	}
	if !e.complete() || e.stale || e.seconds() != 100 || e.num("mix-0.5", "val_loss") != 2.55 || !math.IsNaN(e.num("kl", "nope")) {
		t.Fatalf("experiment read back wrong: complete %v seconds %v", e.complete(), e.seconds())
	}
	var buf bytes.Buffer
	paths, _ := filepath.Glob(filepath.Join(recipes, "*.hcl"))
	if err := writeReport(&buf, recipes, runs, paths); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{
		"| `01-prune-vs-scratch` | ? | n/a | n/a | n/a | 0s | not run |",
		"| `05-distill-loss` | 1 | n/a | n/a | n/a | 1m40s | complete |",
		"Student: width-pruned to hidden 48, MLP 128 (163,344 parameters)",
		"| ½ KL + ½ CE | 0.5 | all 512 | 2.5500 | 12.81 | 0.1500 |",
		"Out of domain, ranked by held-out loss: forward KL 2.5000; forward KL, top-64 logits 2.5100; ½ KL + ½ CE 2.5500; forward KL, top-8 logits 2.6000; cross-entropy on the data 2.7000.",
		"In domain, ranked by held-out loss: ½ KL + ½ CE 2.0000; cross-entropy on the data 2.0500; forward KL 2.1000;",
		"Forward KL beats cross-entropy out of domain (2.5000 vs 2.7000) but not in domain (2.1000 vs 2.0500).",
		"The equal mix is the best in domain (2.0000)",
		"out of domain it is 2.5500, 0.0500 behind the best arm",
		"top-64 of 512 logits is nearly free (+0.0000 in domain, +0.0100 out of domain",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}

	// A manifest of fewer passes than the recipe is an unfinished run; a
	// changed recipe makes the run stale.
	man.Passes = man.Passes[:6]
	b, _ = json.Marshal(man)
	if err := os.WriteFile(filepath.Join(run, pipeline.ManifestName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if e, err := loadExperiment(filepath.Join(recipes, "05-distill-loss.hcl"), runs); err != nil || e.complete() {
		t.Errorf("6 of 8 passes: complete %v (%v)", e != nil && e.complete(), err)
	}
	if err := os.WriteFile(filepath.Join(recipes, "05-distill-loss.hcl"), []byte("# changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if e, err := loadExperiment(filepath.Join(recipes, "05-distill-loss.hcl"), runs); err != nil || !e.stale {
		t.Errorf("changed recipe: stale %v (%v)", e != nil && e.stale, err)
	}
}
