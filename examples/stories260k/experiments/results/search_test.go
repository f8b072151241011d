package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/passes"
	"github.com/whittle-ml/whittle/passes/search"
)

// writeModel writes the config of the model a pass of a seed's run
// produced.
func writeModel(t *testing.T, runDir string, p pipeline.PassRecord, hidden, mlp, heads, kv, layers int) {
	t.Helper()
	cfg := ir.Config{Arch: "llama", Vocab: 512, Hidden: hidden, NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 512, Tied: true, BOS: 1, EOS: 2,
		Layers: ir.UniformLayers(layers, ir.LayerConfig{Heads: heads, KVHeads: kv, HeadDim: 8, MLP: mlp})}
	b, err := hf.MarshalConfig(&cfg, ir.F32)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(pipeline.PassDir(runDir, p.Index, p.Name), "model")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hf.ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeCandidates writes a search pass's candidates.json: the sizes
// given, scored in that order (the first best).
func writeCandidates(t *testing.T, runDir string, p pipeline.PassRecord, sizes ...search.Sizes) {
	t.Helper()
	r := search.Results{Objective: search.ObjectiveLMLoss, LowerIsBetter: true, RetrainTokens: 32768}
	for i, sz := range sizes {
		r.Rows = append(r.Rows, search.Row{Rank: len(sizes) - i, Candidate: search.Candidate{Sizes: sz}, Scored: true,
			Score: &search.Score{Value: 2 + 0.1*float64(i)}, Winner: i == 0})
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pipeline.PassDir(runDir, p.Index, p.Name), search.ResultsFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReportSearch renders finding 6 from hand-written runs of three
// seeds: the cells are the mean ± sample sd, Δ is the per-seed
// difference, the ranks come from the search's own table, and the
// reading claims only the differences larger than the spread.
func TestReportSearch(t *testing.T) {
	dir := t.TempDir()
	recipes, runs := filepath.Join(dir, "recipes"), filepath.Join(dir, "runs")
	copyRecipes(t, recipes, "06-search")
	reg, err := passes.Registry()
	if err != nil {
		t.Fatal(err)
	}
	r, diags := recipe.Load(filepath.Join(recipes, "06-search.hcl"), nil, reg.Language())
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	// Seed s adds d·(s − 2): the sample sd over seeds 1-3 is d.
	loss := map[string]func(s float64) float64{
		// ≈160K: the search beats both by more than the spread of 0.02.
		"kd-search-160k": func(s float64) float64 { return 2.00 + 0.01*(s-2) },
		"kd-hand-160k":   func(s float64) float64 { return 2.10 + 0.01*(s-2) },
		"kd-random-160k": func(s float64) float64 { return 2.05 + 0.01*(s-2) },
		// ≈200K: 0.02 apart, spread 0.06; the paired differences vary.
		"kd-search-200k": func(s float64) float64 { return 2.00 + 0.03*(s-2) },
		"kd-hand-200k":   func(s float64) float64 { return 2.02 + 0.03*(2-s) },
		"kd-random-200k": func(s float64) float64 { return 2.30 },
	}
	hand := search.Sizes{Hidden: 48, MLP: 128, Heads: 8, KVHeads: 4, Layers: 5}
	other := search.Sizes{Hidden: 48, MLP: 160, Heads: 4, KVHeads: 2, Layers: 5}
	third := search.Sizes{Hidden: 64, MLP: 160, Heads: 8, KVHeads: 4, Layers: 3}
	model := func(sz search.Sizes) [5]int { return [5]int{sz.Hidden, sz.MLP, sz.Heads, sz.KVHeads, sz.Layers} }
	for seed := 1; seed <= 3; seed++ {
		var ps []pipeline.PassRecord
		for _, p := range r.Passes {
			m := map[string]any{}
			if f, ok := loss[p.Name]; ok {
				m = map[string]any{"val_loss": f(float64(seed)), "val_loss_before": 4.0, "teacher_val_loss": 1.8, "tokens": 409600.0}
			}
			ps = append(ps, pipeline.PassRecord{Index: p.Index, Name: p.Name, Kind: p.Kind, Status: pipeline.StatusDone, Seconds: float64(seed), Metrics: m})
		}
		run := writeSeed(t, recipes, runs, "06-search", seed, ps)
		// The search picks "other" but the hand-picked shape in seed 3;
		// the random pick draws the hand-picked shape in seed 1.
		arches := map[string]search.Sizes{"hand-160k": hand, "hand-200k": hand, "search-160k": other, "search-200k": other, "random-160k": third, "random-200k": third}
		if seed == 3 {
			arches["search-160k"] = hand
		}
		if seed == 1 {
			arches["random-160k"] = hand
		}
		for _, p := range ps {
			if sz, ok := arches[p.Name]; ok {
				a := model(sz)
				writeModel(t, run, p, a[0], a[1], a[2], a[3], a[4])
			}
			if strings.HasPrefix(p.Name, "search-") {
				// The winner first, then the others in a fixed order.
				list := []search.Sizes{arches[p.Name]}
				for _, sz := range []search.Sizes{other, third, hand} {
					if sz != arches[p.Name] {
						list = append(list, sz)
					}
				}
				writeCandidates(t, run, p, list...)
			}
		}
	}
	var buf bytes.Buffer
	paths, _ := filepath.Glob(filepath.Join(recipes, "*.hcl"))
	if err := writeReport(&buf, recipes, runs, paths, []int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{
		"**n = 3** (seeds 1, 2, 3).",
		"distilled for 32,768 tokens",
		"| ≈160K | searched | hidden 48, MLP 160, 4/2 heads, 5 layers (seeds 1, 2); hidden 48, MLP 128, 8/4 heads, 5 layers (seed 3) |",
		// FLOPs at 128 tokens, by hand: 2 × 162,816 matmul weights (5 ×
		// 27,648 + the 512 × 48 head) + 5 × 4·128·(heads·8) for attention:
		// 407,552 with 4 heads (seeds 1, 2), 489,472 with 8 (seed 3).
		"| 163,344 | 434,859 ± 47,297 | 1 of 3 | 2s ± 1s | 4.0000 ± 0.0000 | 2.0000 ± 0.0100 | -0.1000 ± 0.0000 |",
		// The hand-picked shape: third of the search's candidates in
		// seeds 1 and 2, its winner in seed 3.
		"| ≈160K | hand-picked | hidden 48, MLP 128, 8/4 heads, 5 layers | 16", "| 3 of 3 (seeds 1, 2); 1 of 3 (seed 3) |",
		"At ≈160K (", "the searched student beats the hand-picked one by 0.1000 nats (spread ±0.0200), and the searched student beats the random pick by 0.0500 nats (spread ±0.0200).",
		// Per seed at ≈160K: search − hand = −0.1, search − random = −0.05.
		"the searched student's loss minus the hand-picked one's is -0.1000 ± 0.0000 nats (lower in 3 of 3 seeds), minus the random pick's -0.0500 ± 0.0000 nats (lower in 3 of 3 seeds).",
		"The search chose the hand-picked shape itself in seed 3. The random pick drew the hand-picked shape in seed 1. At ≈200K",
		"the searched student and the hand-picked one are within the seed-to-seed spread (0.0200 nats apart, spread ±0.0600)",
		// At ≈200K: search − hand = −0.08, −0.02, +0.04; search − random =
		// −0.33, −0.30, −0.27.
		"minus the hand-picked one's is -0.0200 ± 0.0600 nats (lower in 2 of 3 seeds), minus the random pick's -0.3000 ± 0.0300 nats (lower in 3 of 3 seeds).",
		"the searched student ended below the baseline in 11 of the 12 (seed, budget, baseline) comparisons that are not ties",
		"The search's gain over both baselines exceeds the seed-to-seed spread at one budget only.",
		// Pairs of different students, agreeing/all, by hand: ≈160K seed 1
		// 2/2 (random = hand), seed 2 3/3, seed 3 1/2 (search = hand; hand
		// ranked 1 beats nobody); ≈200K (hand ranked 3, random 2) seeds 1
		// and 2 2/3 (hand beats random), seed 3 1/3 (hand beats both).
		"Of the 16 pairs of different students (per seed and budget), 11 end in the order the search ranked them.",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(got)
	}
}

func TestInSeeds(t *testing.T) {
	x := seeded{runs: make([]*experiment, 3), seeds: []int{1, 2, 3}}
	tests := []struct {
		vals []string
		want string
	}{
		{[]string{"4", "4", "4"}, "4"},
		{[]string{"3", "3", "4"}, "3 in seeds 1 and 2, 4 in seed 3"},
		{[]string{"3", "4", "3"}, "3 in seeds 1 and 3, 4 in seed 2"},
		{[]string{"3", "4", "5"}, "3 in seed 1, 4 in seed 2, 5 in seed 3"},
	}
	for _, tc := range tests {
		if got := inSeeds(x, func(i int) string { return tc.vals[i] }); got != tc.want {
			t.Errorf("inSeeds(%v) = %q, want %q", tc.vals, got, tc.want)
		}
	}
}
