package prunewidth

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// bestAllocation is the brute-force reference for allocate: over every
// per-layer count that is a multiple of r (at least r, at most the
// layer's width), with sum at most total, the largest sum of each layer's
// top scores.
func bestAllocation(units [][]float64, r, total int) (best float64, kept int) {
	best = math.Inf(-1)
	var walk func(l, left int, acc float64)
	walk = func(l, left int, acc float64) {
		if l == len(units) {
			if acc > best+1e-12 || (math.Abs(acc-best) <= 1e-12 && total-left > kept) {
				best, kept = acc, total-left
			}
			return
		}
		sorted := append([]float64(nil), units[l]...)
		sort.Sort(sort.Reverse(sort.Float64Slice(sorted)))
		for k := r; k <= len(sorted) && k <= left; k += r {
			s := 0.0
			for _, x := range sorted[:k] {
				s += x
			}
			walk(l+1, left-k, acc+s)
		}
	}
	walk(0, total, 0)
	return best, kept
}

func topSum(u []float64, k int) (s float64) {
	for _, i := range scores.TopK(u, k) {
		s += u[i]
	}
	return s
}

// allocate keeps the best score any rounded split can keep, using the
// whole total, whenever widths and total are multiples of round_to.
func TestAllocateMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		widths []int
		r      int
	}{
		{[]int{12, 12, 12}, 4},
		{[]int{12, 8, 16}, 4},
		{[]int{6, 6, 6, 6}, 1},
		{[]int{9, 6, 3}, 3},
	} {
		sum := 0
		for _, w := range tc.widths {
			sum += w
		}
		for trial := range 20 {
			units := make([][]float64, len(tc.widths))
			for l, w := range tc.widths {
				units[l] = make([]float64, w)
				scale := math.Exp(2 * rng.NormFloat64()) // layers differ in scale
				for i := range units[l] {
					units[l][i] = scale * rng.ExpFloat64()
				}
			}
			for total := tc.r * len(tc.widths); total <= sum; total += tc.r {
				keep := allocate(units, tc.r, total)
				got, kept := 0.0, 0
				for l, k := range keep {
					if k%tc.r != 0 || k < tc.r || k > tc.widths[l] {
						t.Fatalf("widths %v r %d total %d: layer %d keeps %d", tc.widths, tc.r, total, l, k)
					}
					got += topSum(units[l], k)
					kept += k
				}
				want, wantKept := bestAllocation(units, tc.r, total)
				if math.Abs(got-want) > 1e-9*math.Abs(want) || kept != total || wantKept != total {
					t.Errorf("widths %v r %d total %d trial %d: keeps %v (score %g, %d units), best %g (%d units)", tc.widths, tc.r, total, trial, keep, got, kept, want, wantKept)
				}
			}
		}
	}
}

// With widths that are not multiples of round_to, every layer still keeps
// a multiple of it or its whole width, at least one multiple, and never
// more than the total.
func TestAllocatePartialChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	widths := []int{10, 7, 13}
	units := make([][]float64, len(widths))
	for l, w := range widths {
		units[l] = make([]float64, w)
		for i := range units[l] {
			units[l][i] = rng.Float64()
		}
	}
	for total := 4 + 4 + 4; total <= 30; total++ {
		keep := allocate(units, 4, total)
		kept := 0
		for l, k := range keep {
			if (k%4 != 0 && k != widths[l]) || k < 4 || k > widths[l] {
				t.Errorf("total %d: layer %d (width %d) keeps %d", total, l, widths[l], k)
			}
			kept += k
		}
		if kept > total || kept < total-3 {
			t.Errorf("total %d: keeps %d (%v)", total, kept, keep)
		}
	}
}

func nonUniformConfig() ir.Config {
	c := testConfig()
	c.Layers = ir.UniformLayers(3, ir.LayerConfig{Heads: 8, KVHeads: 4, HeadDim: 2, MLP: 16})
	return c
}

// scaleLayer multiplies one layer's MLP and head scores by k.
func scaleLayer(s *scores.Table, layer int, k float64) *scores.Table {
	out := *s
	out.MLP = slices.Clone(s.MLP)
	out.Heads = slices.Clone(s.Heads)
	out.MLP[layer] = slices.Clone(s.MLP[layer])
	out.Heads[layer] = slices.Clone(s.Heads[layer])
	for i := range out.MLP[layer] {
		out.MLP[layer][i] *= k
	}
	for i := range out.Heads[layer] {
		out.Heads[layer][i] *= k
	}
	return &out
}

func keptSizes(c *ir.Config, sel ir.Selection) (mlp, kv []int) {
	for li, l := range c.Layers {
		m, k := l.MLP, l.KVHeads
		if v, ok := sel.MLP[li]; ok {
			m = len(v)
		}
		if v, ok := sel.Heads[li]; ok {
			k = len(v) / l.GroupSize()
		}
		mlp, kv = append(mlp, m), append(kv, k)
	}
	return mlp, kv
}

// Mean normalization makes the split blind to a layer's overall score
// scale (a function-preserving rescaling of its weights); raw scores hand
// a scaled-up layer more units.
func TestSelectNonUniformNormalization(t *testing.T) {
	c := nonUniformConfig()
	s := table(c, rand.New(rand.NewPCG(7, 8)))
	tg := NonUniformTargets{MLP: 24, KVHeads: 6, RoundTo: 4}
	base, err := SelectNonUniform(&c, s, tg)
	if err != nil {
		t.Fatal(err)
	}
	scaled, err := SelectNonUniform(&c, scaleLayer(s, 1, 100), tg)
	if err != nil {
		t.Fatal(err)
	}
	bm, bk := keptSizes(&c, base)
	sm, sk := keptSizes(&c, scaled)
	if !slices.Equal(bm, sm) || !slices.Equal(bk, sk) {
		t.Errorf("mean: layer 1 scaled ×100 changes the split: mlp %v → %v, kv %v → %v", bm, sm, bk, sk)
	}
	raw := tg
	raw.Normalize = NormalizeNone
	rawSel, err := SelectNonUniform(&c, scaleLayer(s, 1, 100), raw)
	if err != nil {
		t.Fatal(err)
	}
	rm, rk := keptSizes(&c, rawSel)
	// Layer 1's units all outrank the others', so it fills up first.
	if rm[1] != 16 || rk[1] != 4 || rm[0]+rm[2] != 8 || rk[0]+rk[2] != 2 {
		t.Errorf("none: layer 1 scaled ×100 keeps mlp %v, kv %v; want layer 1 whole and the rest at the minimum", rm, rk)
	}
}

// SelectNonUniform keeps, per layer, the top neurons by score and whole
// KV groups ranked by their summed head scores, splitting the totals as
// the brute-force best split of the normalized scores.
func TestSelectNonUniform(t *testing.T) {
	c := nonUniformConfig()
	rng := rand.New(rand.NewPCG(9, 10))
	for trial := range 10 {
		s := table(c, rng)
		for li := range s.MLP {
			s = scaleLayer(s, li, math.Exp(rng.NormFloat64()))
		}
		tg := NonUniformTargets{Hidden: 12, MLP: 28, KVHeads: 7, RoundTo: 4}
		sel, err := SelectNonUniform(&c, s, tg)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sel.Hidden, scores.TopK(s.Hidden, 12)) {
			t.Errorf("hidden %v, want the global top 12", sel.Hidden)
		}
		mlp, kv := keptSizes(&c, sel)
		norm, _ := normalizer(NormalizeMean)
		var units, groups [][]float64
		got, gotKV := 0.0, 0.0
		for li, l := range c.Layers {
			u := norm(s.MLP[li])
			gs := make([]float64, l.KVHeads)
			for h, v := range s.Heads[li] {
				gs[h/l.GroupSize()] += v
			}
			g := norm(gs)
			units, groups = append(units, u), append(groups, g)
			got += topSum(u, mlp[li])
			gotKV += topSum(g, kv[li])
			if v, ok := sel.MLP[li]; ok && !slices.Equal(v, scores.TopK(s.MLP[li], mlp[li])) {
				t.Errorf("trial %d layer %d keeps neurons %v, not its top %d", trial, li, v, mlp[li])
			}
			if v, ok := sel.Heads[li]; ok {
				var want []int
				for _, gi := range scores.TopK(gs, kv[li]) {
					for h := range l.GroupSize() {
						want = append(want, gi*l.GroupSize()+h)
					}
				}
				if !slices.Equal(v, want) {
					t.Errorf("trial %d layer %d keeps heads %v, want whole top groups %v", trial, li, v, want)
				}
			}
		}
		want, _ := bestAllocation(units, 4, 28)
		wantKV, _ := bestAllocation(groups, 1, 7)
		if math.Abs(got-want) > 1e-9 || math.Abs(gotKV-wantKV) > 1e-9 {
			t.Errorf("trial %d: kept normalized score mlp %g kv %g, best %g and %g (split mlp %v kv %v)", trial, got, gotKV, want, wantKV, mlp, kv)
		}
		if sum(mlp) != 28 || sum(kv) != 7 {
			t.Errorf("trial %d: totals mlp %d kv %d, want 28 and 7", trial, sum(mlp), sum(kv))
		}
	}
}

func sum(v []int) (s int) {
	for _, x := range v {
		s += x
	}
	return s
}

// The pruned model is valid, its layers differ, and the plan (made
// before any score is known) counts its parameters exactly.
func TestPruneNonUniformMatchesPlan(t *testing.T) {
	c := nonUniformConfig()
	m := randomModel(t, c, 11)
	s := table(c, rand.New(rand.NewPCG(12, 13)))
	s = scaleLayer(s, 2, 5)
	s.MLP[0][3] = 1e3 // one dominant neuron makes layer 0's others cheap
	tg := NonUniformTargets{Hidden: 12, MLP: 32, KVHeads: 7, RoundTo: 4}
	out, err := PruneNonUniform(m, s, tg)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Validate(); err != nil {
		t.Fatal(err)
	}
	if out.Config.Uniform() {
		t.Errorf("pruned layers are alike: %+v", out.Config.Layers)
	}
	plan, err := PlanNonUniform(c, tg)
	if err != nil {
		t.Fatal(err)
	}
	mlp, kv := 0, 0
	for i, l := range out.Config.Layers {
		mlp += l.MLP
		kv += l.KVHeads
		if l.Heads != l.KVHeads*c.Layers[i].GroupSize() {
			t.Errorf("layer %d: %d heads over %d KV heads; groups must keep their size %d", i, l.Heads, l.KVHeads, c.Layers[i].GroupSize())
		}
	}
	if mlp != 32 || kv != 7 || out.Config.Hidden != 12 {
		t.Errorf("pruned totals mlp %d kv %d hidden %d, want 32, 7, 12", mlp, kv, out.Config.Hidden)
	}
	if got, want := plan.Params().Total, out.Config.Params().Total; got != want {
		t.Errorf("planned %d parameters, pruned model has %d", got, want)
	}
	// Evenly: 32 neurons over 3 layers in fours is 12, 12, 8.
	var planned []int
	for _, l := range plan.Layers {
		planned = append(planned, l.MLP)
	}
	if !slices.Equal(planned, []int{12, 12, 8}) {
		t.Errorf("planned widths %v, want the even split [12 12 8]", planned)
	}
}

func TestSelectNonUniformErrors(t *testing.T) {
	c := nonUniformConfig()
	s := table(c, rand.New(rand.NewPCG(1, 2)))
	for _, tc := range []struct {
		name    string
		tg      NonUniformTargets
		wantErr string
	}{
		{"mlp below minimum", NonUniformTargets{MLP: 11, RoundTo: 4}, "at least round_to 4"},
		{"mlp above current", NonUniformTargets{MLP: 49}, "current 48"},
		{"kv below one group per layer", NonUniformTargets{KVHeads: 2}, "one KV group per layer"},
		{"kv above current", NonUniformTargets{KVHeads: 13}, "current 12"},
		{"hidden above current", NonUniformTargets{Hidden: 17}, "hidden"},
		{"negative round_to", NonUniformTargets{MLP: 24, RoundTo: -1}, "round_to"},
		{"unknown normalize", NonUniformTargets{Normalize: "max"}, "normalize"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SelectNonUniform(&c, s, tc.tg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("SelectNonUniform: %v; want an error mentioning %q", err, tc.wantErr)
			}
		})
	}
	moe := irtest.MoEFamilies()["mixtral"]
	if _, err := SelectNonUniform(&moe, table(moe, rand.New(rand.NewPCG(1, 2))), NonUniformTargets{KVHeads: 4}); err == nil || !strings.Contains(err.Error(), "mixture of experts") {
		t.Errorf("mixture of experts: %v", err)
	}
	short := *s
	short.MLP = s.MLP[:2]
	if _, err := SelectNonUniform(&c, &short, NonUniformTargets{MLP: 24}); err == nil {
		t.Error("a table for 2 of 3 layers is accepted")
	}
}

func TestDefaultRoundTo(t *testing.T) {
	for _, tc := range []struct{ mlp, want int }{
		{14336, 64}, {1024, 64}, {1023, 32}, {512, 32}, {172, 8}, {16, 1}, {1, 1},
	} {
		if got := DefaultRoundTo(tc.mlp); got != tc.want {
			t.Errorf("DefaultRoundTo(%d) = %d, want %d", tc.mlp, got, tc.want)
		}
	}
}

func bptr(v bool) *bool { return &v }

// uniform = false reads mlp and kv_heads as totals (or ratios of them).
func TestNonUniformTargets(t *testing.T) {
	c := nonUniformConfig() // 3 layers × 16 neurons, 4 KV heads
	off := bptr(false)
	for _, tc := range []struct {
		name    string
		c       Config
		want    NonUniformTargets
		wantErr string
	}{
		{"totals", Config{Uniform: off, MLP: iptr(30), KVHeads: iptr(7)}, NonUniformTargets{Hidden: 16, MLP: 30, KVHeads: 7, RoundTo: 1}, ""},
		{"ratios of totals", Config{Uniform: off, MLPRatio: fptr(0.5), KVHeadsRatio: fptr(0.5), RoundTo: 4}, NonUniformTargets{Hidden: 16, MLP: 24, KVHeads: 6, RoundTo: 4}, ""},
		{"tiny ratios keep the minimum", Config{Uniform: off, MLPRatio: fptr(0.01), KVHeadsRatio: fptr(0.01), RoundTo: 4}, NonUniformTargets{Hidden: 16, MLP: 12, KVHeads: 3, RoundTo: 4}, ""},
		{"hidden stays global", Config{Uniform: off, HiddenRatio: fptr(0.5), Normalize: "none"}, NonUniformTargets{Hidden: 8, MLP: 48, KVHeads: 12, RoundTo: 1, Normalize: "none"}, ""},
		{"heads refused", Config{Uniform: off, Heads: iptr(4)}, NonUniformTargets{}, "kv_heads"},
		{"total above current", Config{Uniform: off, MLP: iptr(49)}, NonUniformTargets{}, "current 48"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.nonUniformTargets(c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("nonUniformTargets = %+v, %v; want an error mentioning %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("nonUniformTargets = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := (&Config{Normalize: "mean"}).targets(testConfig()); err == nil || !strings.Contains(err.Error(), "uniform = false") {
		t.Errorf("normalize with uniform pruning: %v", err)
	}
}
