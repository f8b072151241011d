package search

import (
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// TestAxisValues checks sizes derived from ratios against hand
// computation: round(ratio·current), floored to a multiple of round_to
// unless it is the current size, without sizes below (1 − max_prune)·current.
func TestAxisValues(t *testing.T) {
	tests := []struct {
		name     string
		cur      int
		ratios   []float64
		sizes    []int
		roundTo  int
		maxPrune float64
		want     []int
	}{
		{"hidden by quarters", 4096, []float64{1, 0.75, 0.5}, nil, 64, 1, []int{4096, 3072, 2048}},
		// 0.65625·14336 = 9408, floored to a multiple of 512: Minitron-4B's 9216.
		{"minitron mlp", 14336, []float64{0.65625}, nil, 512, 1, []int{9216}},
		{"max_prune", 32, []float64{1, 0.75, 0.5}, nil, 1, 0.3, []int{32, 24}},
		// 0.875·172 = 150.5 → 151 → 148; ratio 1 keeps 172 though it is no multiple of 4.
		{"round_to keeps current", 172, []float64{0.875, 1}, nil, 4, 1, []int{172, 148}},
		{"duplicates merged", 5, []float64{1, 0.9, 0.8}, nil, 1, 1, []int{5, 4}},
		{"sizes sorted", 12, nil, []int{6, 12, 6, 8}, 1, 1, []int{12, 8, 6}},
		{"default grid", 64, nil, nil, 1, 1, []int{64, 56, 48, 40, 32}},
		{"max_prune keeps the boundary", 32, []float64{0.5}, nil, 1, 0.5, []int{16}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := axisValues("x", tc.cur, tc.ratios, tc.sizes, tc.roundTo, tc.maxPrune)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestBudgetFits: every bound is an upper bound; a candidate must come
// within the tolerance below at least one.
func TestBudgetFits(t *testing.T) {
	b := Budget{Params: 1000, Memory: 4000, Tolerance: 0.03}
	for _, tc := range []struct {
		m    Measures
		want bool
	}{
		{Measures{Params: 1000, Memory: 2000}, true},  // params exactly at the bound
		{Measures{Params: 970, Memory: 2000}, true},   // 3% below
		{Measures{Params: 969, Memory: 2000}, false},  // uses neither budget
		{Measures{Params: 500, Memory: 3900}, true},   // uses the memory budget
		{Measures{Params: 1001, Memory: 3900}, false}, // over params
		{Measures{Params: 990, Memory: 4001}, false},  // over memory
	} {
		if got := b.Fits(tc.m); got != tc.want {
			t.Errorf("Fits(%+v) = %v (usage %.4f), want %v", tc.m, got, b.Usage(tc.m), tc.want)
		}
	}
}

// TestLayerMeasure checks the measures Enumerate extrapolates from one-
// and two-layer graphs against measuring each candidate's whole graph, for
// every family's options.
func TestLayerMeasure(t *testing.T) {
	for name, cfg := range irtest.Families() {
		t.Run(name, func(t *testing.T) {
			l := cfg.Layers[0]
			b := Budget{Params: 1, SeqLen: 48, Batch: 3, Tolerance: 0.03}
			width := Sizes{Hidden: cfg.Hidden - 2, MLP: l.MLP - 1, Heads: l.Heads, KVHeads: l.KVHeads}
			measure := b.layerMeasure(cfg, width)
			for n := 1; n <= len(cfg.Layers); n++ {
				s := width
				s.Layers = n
				c := s.Config(cfg)
				if got, want := measure(n), b.Measure(&c); got != want {
					t.Errorf("%d layers: extrapolated %+v, measured %+v", n, got, want)
				}
			}
		})
	}
}

// TestRefusesMoE: expert pruning is not searched yet, so a
// mixture-of-experts model is refused when the space is resolved (at plan
// time), not when a candidate is pruned.
func TestRefusesMoE(t *testing.T) {
	c := &Config{Space: []SpaceAxis{{Axis: AxisHidden, Ratios: []float64{0.5}}}}
	_, err := c.resolveSpace(&recipe.Pass{}, irtest.MoEFamilies()["mixtral"])
	if err == nil || !strings.Contains(err.Error(), "does not prune mixture-of-experts layers yet (4 experts per layer)") {
		t.Errorf("resolving a space over a MoE model: %v", err)
	}
}

// TestRandomPick checks pick = "random"'s draw against the uniform
// distribution: every index in [0, k) comes up, the counts over many
// seeds pass a chi-square test, and a seed always draws the same index.
func TestRandomPick(t *testing.T) {
	for _, k := range []int{1, 2, 8, 12} {
		const seeds = 6000
		counts := make([]int, k)
		for seed := range int64(seeds) {
			i := RandomPick(seed, k)
			if i < 0 || i >= k {
				t.Fatalf("k = %d, seed %d: index %d out of range", k, seed, i)
			}
			if j := RandomPick(seed, k); j != i {
				t.Fatalf("k = %d, seed %d: drew %d, then %d", k, seed, i, j)
			}
			counts[i]++
		}
		want := float64(seeds) / float64(k)
		var chi2 float64
		for _, c := range counts {
			chi2 += (float64(c) - want) * (float64(c) - want) / want
		}
		// The 99.9th percentile of chi-square with 11 degrees of freedom
		// is 31.3; fewer degrees give lower ones.
		if chi2 > 31.3 {
			t.Errorf("k = %d: counts %v over %d seeds, chi-square %.1f: not uniform", k, counts, seeds, chi2)
		}
	}
}
