package decoder64

import (
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// TestMoEUpcycled checks the mixture-of-experts layers against dense ones
// through an identity of the published definitions: when every expert is
// a copy of one MLP, a renormalized top-k (Mixtral, Qwen3-MoE) sums
// weights of 1 whatever the router chose, so the layer is that MLP. For
// Qwen2-MoE (no renormalization, a gated shared expert) the router is
// zeroed, so each of the top-2 of 4 experts weighs 1/4, and the shared
// gate is zeroed, so the shared expert — the MLP padded with dead neurons —
// weighs sigmoid(0) = 1/2: again 1/2 + 1/2 of the MLP. Renormalizing
// there instead (a plausible mistake) must show.
func TestMoEUpcycled(t *testing.T) {
	fams := irtest.MoEFamilies()
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		cfg := fams[name]
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 6))
			g, err := Load(irtest.RandomModel(t, cfg, rng))
			if err != nil {
				t.Fatal(err)
			}
			dense := cfg.Clone()
			dw := maps.Clone(g.W)
			d := cfg.Hidden
			for l, lc := range cfg.Layers {
				if !lc.MoE() {
					continue
				}
				if !cfg.NormTopK && (lc.Experts != 4 || cfg.ExpertsPerToken != 2) {
					t.Fatalf("layer %d: the weights below assume top-2 of 4 experts, got top-%d of %d", l, cfg.ExpertsPerToken, lc.Experts)
				}
				n := cfg.LayerTensors(l)
				F := lc.ExpertMLP
				gate, up, down := g.W[n.ExpertGate][:F*d], g.W[n.ExpertUp][:F*d], g.W[n.ExpertDown][:d*F]
				dense.Layers[l] = ir.LayerConfig{Heads: lc.Heads, KVHeads: lc.KVHeads, HeadDim: lc.HeadDim, MLP: F}
				dn := dense.LayerTensors(l)
				dw[dn.Gate], dw[dn.Up], dw[dn.Down] = gate, up, down
				for _, name := range []string{n.Router, n.ExpertGate, n.ExpertUp, n.ExpertDown, n.SharedGate, n.SharedUp, n.SharedDown, n.SharedExpertGate} {
					delete(dw, name)
				}
				g.W[n.ExpertGate] = slices.Repeat(gate, lc.Experts)
				g.W[n.ExpertUp] = slices.Repeat(up, lc.Experts)
				g.W[n.ExpertDown] = slices.Repeat(down, lc.Experts)
				if cfg.NormTopK {
					continue
				}
				clear(g.W[n.Router])
				clear(g.W[n.SharedExpertGate])
				S := lc.SharedMLP
				// The shared expert is the MLP plus S-F neurons whose
				// gate and up rows and down columns are zero.
				g.W[n.SharedGate] = slices.Concat(gate, make([]float64, (S-F)*d))
				g.W[n.SharedUp] = slices.Concat(up, make([]float64, (S-F)*d))
				sd := make([]float64, d*S)
				for r := range d {
					copy(sd[r*S:], down[r*F:(r+1)*F])
				}
				g.W[n.SharedDown] = sd
			}
			if err := dense.Check(); err != nil {
				t.Fatal(err)
			}
			tokens := make([]int, 9)
			for i := range tokens {
				tokens[i] = rng.IntN(cfg.Vocab)
			}
			want := New(dense, dw).Forward(tokens, nil, nil)
			diff := func(g *Model) float64 {
				var worst float64
				for p, z := range g.Forward(tokens, nil, nil) {
					for i, v := range z {
						worst = max(worst, math.Abs(v-want[p][i]))
					}
				}
				return worst
			}
			if worst := diff(g); !(worst <= 1e-9) {
				t.Errorf("max |Δlogit| %.3g with the dense model, want ≤ 1e-9", worst)
			}
			wrong := g.Clone()
			wrong.Config.NormTopK = !cfg.NormTopK
			moved := diff(wrong)
			t.Logf("norm_topk_prob flipped: max |Δlogit| %.3g", moved)
			if !cfg.NormTopK && !(moved > 0.1) {
				t.Errorf("renormalizing Qwen2-MoE's top-k moves the logits by %.3g only", moved)
			}
		})
	}
}

// TestMoEActs checks what Forward records in a mixture-of-experts layer:
// the top-k experts are the most probable, their weights are the router's
// probabilities (renormalized with NormTopK), and only the chosen experts
// and the shared expert have activations.
func TestMoEActs(t *testing.T) {
	fams := irtest.MoEFamilies()
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		cfg := fams[name]
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 8))
			g, err := Load(irtest.RandomModel(t, cfg, rng))
			if err != nil {
				t.Fatal(err)
			}
			tokens := []int{3, 1, 4, 1, 5, 9}
			acts := make([]LayerActs, len(cfg.Layers))
			g.Forward(tokens, nil, acts)
			for l, lc := range cfg.Layers {
				a := acts[l]
				if !lc.MoE() {
					if a.MoE != nil || a.MLPAct == nil {
						t.Fatalf("dense layer %d: MoE %v, MLPAct %v", l, a.MoE != nil, a.MLPAct != nil)
					}
					continue
				}
				if len(a.MoE) != len(tokens) || a.MLPAct != nil {
					t.Fatalf("layer %d: %d MoE records for %d positions (MLPAct %v)", l, len(a.MoE), len(tokens), a.MLPAct != nil)
				}
				for p, r := range a.MoE {
					sorted := slices.Sorted(slices.Values(r.Probs))
					var sum float64
					for i, e := range r.Chosen {
						if r.Probs[e] != sorted[len(sorted)-1-i] {
							t.Fatalf("layer %d position %d: choice %d is expert %d (p %g), not the next most probable", l, p, i, e, r.Probs[e])
						}
						sum += r.Probs[e]
					}
					for i, e := range r.Chosen {
						w := r.Probs[e]
						if cfg.NormTopK {
							w /= sum
						}
						if math.Abs(r.Weights[i]-w) > 1e-15 {
							t.Fatalf("layer %d position %d: weight %g, want %g", l, p, r.Weights[i], w)
						}
					}
					if (lc.SharedMLP > 0) != (r.SharedAct != nil) {
						t.Fatalf("layer %d: shared width %d, shared activation recorded %v", l, lc.SharedMLP, r.SharedAct != nil)
					}
					for e, act := range r.ExpertAct {
						if (act != nil) != slices.Contains(r.Chosen, e) {
							t.Fatalf("layer %d position %d: expert %d has activations %v, chosen %v", l, p, e, act != nil, r.Chosen)
						}
					}
				}
			}
		})
	}
}

// TestMoEFixturesHF checks ir/hf's reading of the mixture-of-experts
// fixtures against this package's own test reader of the same files
// (hfConfig, stackExperts: written from the transformers classes): the
// same config, and the same logits from the stacked experts.
func TestMoEFixturesHF(t *testing.T) {
	for _, fam := range []string{"mixtral", "qwen2_moe", "qwen3_moe"} {
		t.Run(fam, func(t *testing.T) {
			dir := filepath.Join(familiesDir, fam)
			cfg := hfConfig(t, dir)
			m, err := hf.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if !reflect.DeepEqual(m.Config, cfg) {
				t.Fatalf("hf.Load config %+v\nwant %+v", m.Config, cfg)
			}
			got, err := Load(m)
			if err != nil {
				t.Fatal(err)
			}
			tokens := []int{1, 400, 17, 300, 5, 99, 511, 42}
			want := New(cfg, stackExperts(t, hfWeights(t, dir))).Forward(tokens, nil, nil)
			for p, z := range got.Forward(tokens, nil, nil) {
				if !slices.Equal(z, want[p]) {
					t.Fatalf("position %d: logits differ", p)
				}
			}
		})
	}
}
