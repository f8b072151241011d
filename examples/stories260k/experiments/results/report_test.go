package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/passes"
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

// copyRecipes copies the real experiment recipes named into dir: the
// report counts their passes and hashes them.
func copyRecipes(t *testing.T, dir string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		src, err := os.ReadFile(filepath.Join("..", name+".hcl"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".hcl"), src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSeed writes one seed's run directory of recipe name: its manifest
// of passes and, for each pass in models, the pruned student's config.
func writeSeed(t *testing.T, recipes, runs, name string, seed int, passes []pipeline.PassRecord, models ...string) string {
	t.Helper()
	hash, err := pipeline.HashPath(filepath.Join(recipes, name+".hcl"))
	if err != nil {
		t.Fatal(err)
	}
	man := pipeline.Manifest{Recipe: hash, Variables: map[string]json.RawMessage{"seed": json.RawMessage(strconv.Itoa(seed))}, Passes: passes}
	dir := seedDir(runs, name, seed)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pipeline.ManifestName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := ir.Config{Arch: "llama", Vocab: 512, Hidden: 48, NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 512, Tied: true, BOS: 1, EOS: 2,
		Layers: ir.UniformLayers(5, ir.LayerConfig{Heads: 8, KVHeads: 4, HeadDim: 8, MLP: 128})}
	cj, err := hf.MarshalConfig(&cfg, ir.F32)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range passes {
		if !slices.Contains(models, p.Name) {
			continue
		}
		mdir := filepath.Join(dir, "passes", fmt.Sprintf("%02d-%s", p.Index, p.Name), "model")
		if err := os.MkdirAll(mdir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mdir, hf.ConfigFile), cj, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestReportFromManifest renders finding 5 from hand-written manifests of
// three seeds, one unfinished, and checks that the cells are the mean ±
// sample sd of the finished two and that the reading claims only the
// differences larger than the spread.
func TestReportFromManifest(t *testing.T) {
	dir := t.TempDir()
	recipes := filepath.Join(dir, "recipes")
	runs := filepath.Join(dir, "runs")
	copyRecipes(t, recipes, "05-distill-loss", "01-prune-vs-scratch")
	// Seed 1 takes mean − d, seed 2 mean + d: the sample sd is d·√2.
	train := func(seed int, name string, loss, d, kl float64) pipeline.PassRecord {
		sign := float64(2*seed - 3)
		return pipeline.PassRecord{Name: name, Kind: "distill", Status: pipeline.StatusDone, Seconds: 10,
			Metrics: map[string]any{"val_loss": loss + sign*d, "val_kl": kl, "tokens": 819200.0, "val_loss_before": 4.0, "teacher_val_loss": 2.4}}
	}
	done := func(i int, name string) pipeline.PassRecord {
		return pipeline.PassRecord{Index: i, Name: name, Status: pipeline.StatusDone}
	}
	passes := func(seed int) []pipeline.PassRecord {
		return []pipeline.PassRecord{
			done(0, "teacher-correction"), done(1, "score"), done(2, "prune-width"),
			// Out of domain KL beats CE by 0.2 against a spread of 0.014.
			train(seed, "kl", 2.5, 0.005, 0.11), train(seed, "ce", 2.7, 0.005, 0.4), train(seed, "mix-0.5", 2.55, 0.005, 0.15),
			train(seed, "kl-top64", 2.51, 0.005, 0.12), train(seed, "kl-top8", 2.6, 0.005, 0.2),
			done(8, "ts-score"), done(9, "ts-prune-width"),
			// In domain KL and CE are 0.05 apart within a spread of
			// 2·0.02·√2 = 0.0566; the mix beats CE by 0.05 > 0.0297.
			train(seed, "ts-kl", 2.1, 0.02, 0.4), train(seed, "ts-ce", 2.05, 0.02, 0.6), train(seed, "ts-mix-0.5", 2.0, 0.001, 0.5),
			train(seed, "ts-kl-top64", 2.1, 0.02, 0.41), train(seed, "ts-kl-top8", 2.2, 0.001, 0.5),
		}
	}
	run := writeSeed(t, recipes, runs, "05-distill-loss", 1, passes(1), "prune-width")
	writeSeed(t, recipes, runs, "05-distill-loss", 2, passes(2), "prune-width")
	// Seed 3 stopped after 6 passes with outlandish numbers: left out.
	p3 := passes(3)[:6]
	for i := 3; i < 6; i++ {
		p3[i].Metrics["val_loss"] = 9.0
	}
	writeSeed(t, recipes, runs, "05-distill-loss", 3, p3, "prune-width")

	e, err := loadExperiment(filepath.Join(recipes, "05-distill-loss.hcl"), run)
	if err != nil {
		t.Fatal(err)
	}
	if !e.complete() || e.stale || e.seconds() != 100 || e.num("mix-0.5", "val_loss") != 2.545 || !math.IsNaN(e.num("kl", "nope")) {
		t.Fatalf("experiment read back wrong: complete %v seconds %v", e.complete(), e.seconds())
	}
	var buf bytes.Buffer
	paths, _ := filepath.Glob(filepath.Join(recipes, "*.hcl"))
	if err := writeReport(&buf, recipes, runs, paths, []int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{
		"| `01-prune-vs-scratch` | 3 | n/a | n/a | n/a | 0s | not run |",
		"| `05-distill-loss` | 1 | n/a | n/a | n/a | 1m40s | complete |",
		"| `05-distill-loss` | 3 | n/a | n/a | n/a | 30s | incomplete |",
		"**n = 2** (seeds 1, 2). *Only 2 of the 3 seeds have completed",
		"Student: width-pruned to hidden 48, MLP 128 (163,344 parameters)",
		"| ½ KL + ½ CE | 0.5 | all 512 | 2.5500 ± 0.0071 |",
		"Out of domain, ranked by mean held-out loss: forward KL 2.5000 ± 0.0071; forward KL, top-64 logits 2.5100 ± 0.0071; ½ KL + ½ CE 2.5500 ± 0.0071; forward KL, top-8 logits 2.6000 ± 0.0071; cross-entropy on the data 2.7000 ± 0.0071.",
		"In domain, ranked by mean held-out loss: ½ KL + ½ CE 2.0000 ± 0.0014; cross-entropy on the data 2.0500 ± 0.0283; forward KL 2.1000 ± 0.0283;",
		"In domain forward KL and cross-entropy on the data are within the seed-to-seed spread (0.0500 nats apart, spread ±0.0566); out of domain forward KL beats cross-entropy on the data by 0.2000 nats (spread ±0.0141).",
		"Forward KL does not beat cross-entropy beyond the spread in both settings",
		"in domain the equal mix beats cross-entropy by 0.0500 nats (spread ±0.0297)",
		"out of domain forward KL beats the equal mix by 0.0500 nats (spread ±0.0141)",
		"top-64 of 512 logits: in domain top-64 and the full softmax are within the seed-to-seed spread (0.0000 nats apart, spread ±0.0566); out of domain top-64 and the full softmax are within the seed-to-seed spread (0.0100 nats apart, spread ±0.0141).",
		"top-8 of 512 logits: in domain the full softmax beats top-8 by 0.1000 nats (spread ±0.0297)",
		"Each arm ran 2 seeds",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(got)
	}

	// A manifest of fewer passes than the recipe is an unfinished run; a
	// changed recipe makes the run stale.
	if e, err := loadExperiment(filepath.Join(recipes, "05-distill-loss.hcl"), seedDir(runs, "05-distill-loss", 3)); err != nil || e.complete() {
		t.Errorf("6 of 15 passes: complete %v (%v)", e != nil && e.complete(), err)
	}
	if err := os.WriteFile(filepath.Join(recipes, "05-distill-loss.hcl"), []byte("# changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if e, err := loadExperiment(filepath.Join(recipes, "05-distill-loss.hcl"), run); err != nil || !e.stale {
		t.Errorf("changed recipe: stale %v (%v)", e != nil && e.stale, err)
	}
}

// TestReportAllSections renders every finding from synthetic runs of the
// real recipes, three seeds each, whose every pass carries every metric
// the report reads: each section must show n = 3, tables and a reading
// that compares numbers with a spread.
func TestReportAllSections(t *testing.T) {
	dir := t.TempDir()
	recipes := filepath.Join(dir, "recipes")
	runs := filepath.Join(dir, "runs")
	var names []string
	for _, s := range sections {
		names = append(names, s.recipe)
	}
	copyRecipes(t, recipes, names...)
	reg, err := passes.Registry()
	if err != nil {
		t.Fatal(err)
	}
	seeds := []int{1, 2, 3}
	for _, name := range names {
		r, diags := recipe.Load(filepath.Join(recipes, name+".hcl"), nil, reg.Language())
		if diags.HasErrors() {
			t.Fatalf("%s: %s", name, diags.Error())
		}
		for _, seed := range seeds {
			var ps []pipeline.PassRecord
			var models []string
			for _, p := range r.Passes {
				ps = append(ps, pipeline.PassRecord{Index: p.Index, Name: p.Name, Kind: p.Kind, Status: pipeline.StatusDone, Seconds: 1, Metrics: fakeMetrics(p.Name, seed)})
				models = append(models, p.Name)
			}
			writeSeed(t, recipes, runs, name, seed, ps, models...)
		}
	}
	var buf bytes.Buffer
	paths, _ := filepath.Glob(filepath.Join(recipes, "*.hcl"))
	if err := writeReport(&buf, recipes, runs, paths, seeds); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	if testing.Verbose() {
		t.Log(got)
	}
	parts := strings.Split(got, "\n## ")
	if len(parts) != 2+len(sections) {
		t.Fatalf("%d sections, want runs + %d findings", len(parts)-1, len(sections))
	}
	for i, s := range sections {
		body := parts[2+i]
		if !strings.HasPrefix(body, s.title) {
			t.Errorf("section %d is %q, want %q", i, strings.SplitN(body, "\n", 2)[0], s.title)
			continue
		}
		for _, want := range []string{"**n = 3** (seeds 1, 2, 3).", " ± ", "**Reading.**"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %q", s.recipe, want)
			}
		}
		for _, bad := range []string{"Incomplete metrics", "cannot be compared", "single seed", "Only "} {
			if strings.Contains(body, bad) {
				t.Errorf("%s has %q", s.recipe, bad)
			}
		}
	}
	// Seed 3 drops other layers: the choice is reported per seed.
	if want := "{2, 3} (seeds 1, 2), {2, 4} (seed 3)"; !strings.Contains(parts[2+3], want) {
		t.Errorf("depth selection lacks %q", want)
	}
}

// fakeMetrics is every metric the report reads, made up from the pass
// name (which arm) and the seed (a spread of 0.01 per seed step).
func fakeMetrics(pass string, seed int) map[string]any {
	h := fnv.New32a()
	h.Write([]byte(pass))
	u := float64(h.Sum32()%1000) / 1000
	s := float64(seed)
	loss := 2 + u + 0.01*s
	list := func(f func(i int) float64) []any {
		out := make([]any, 5)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	dropped := []any{2.0, 3.0}
	if seed == 3 {
		dropped = []any{2.0, 4.0}
	}
	return map[string]any{
		"val_loss": loss, "val_loss_before": 4 + u, "teacher_val_loss": 2.4 + 0.01*s, "val_kl": u / 2, "tokens": 819200.0,
		"dataset.shakespeare.loss": loss, "dataset.tinystories.loss": loss - 0.5, "dataset.tinystories.tokens": 37846.0,
		"dataset.shakespeare.tokens": 130048.0, "dataset.shakespeare.tokens_per_s": 50000*(1+u) + 1000*s,
		"task.copa.acc": 0.5 + u/4 + 0.01*s, "task.winogrande.acc": 0.5 + 0.01*s, "task.copa.items": 100.0, "task.winogrande.items": 1267.0,
		"layers.lm_loss":         list(func(i int) float64 { return u + float64(i) + 0.01*s }),
		"layers.block_influence": list(func(i int) float64 { return u / float64(i+1) }),
		"layers.accuracy":        list(func(i int) float64 { return 0.01 * float64(i) * s }),
		"dropped_layers":         dropped,
		"val_history":            history(102400, loss+1, 204800, loss+0.5, 307200, loss+0.2, 409600, loss),
	}
}
