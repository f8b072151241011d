package prunewidth

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// setRouter writes router rows into a model: dropped experts get zero
// rows (logit 0) and the kept experts come in pairs whose rows are each
// other's negation, so that every token has, per pair, a kept logit ≥ 0.
// With at least top-k pairs the dropped experts are therefore never among
// a token's top k (ties go to the lower index; an exact 0 logit does not
// occur with random weights).
func setRouter(t *testing.T, m *ir.Model, layer int, pairs [][2]int) {
	t.Helper()
	name := m.Config.LayerTensors(layer).Router
	tn, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	d := m.Config.Hidden
	r := make([]float32, len(v))
	for _, p := range pairs {
		for i := range d {
			r[p[0]*d+i] = v[p[0]*d+i]
			r[p[1]*d+i] = -v[p[0]*d+i]
		}
	}
	m.Tensors[name] = ir.FromFloat32(tn.DType, tn.Shape, r)
}

// zeroExpertColumns zeroes, within every expert's [hidden, width] down
// projection, the columns of the neurons that expert does not keep.
func zeroExpertColumns(w []float64, experts, hidden, width int, keep [][]int) {
	for e := range experts {
		for r := range hidden {
			for c := range width {
				if !slices.Contains(keep[e], c) {
					w[e*hidden*width+r*width+c] = 0
				}
			}
		}
	}
}

// Pruning the expert axes computes what the unpruned model computes with
// the pruned units silenced, checked with the float64 reference decoder:
// an expert's or the shared expert's neurons are silenced by zeroing the
// down-projection columns they feed; dropped experts are silenced by a
// router under which no token ever chooses them (setRouter), which with
// renormalized top-k weights (Mixtral, Qwen3-MoE) leaves every routing
// weight as the pruned model computes it over the experts it keeps.
func TestMoEPruningEqualsSilencing(t *testing.T) {
	tokens := []int{1, 5, 9, 2, 30, 7, 7, 11, 3, 36, 0, 4, 8, 8, 21}
	fams := irtest.MoEFamilies()
	for _, tc := range []struct {
		name      string
		cfg       ir.Config
		pairs     [][2]int // kept experts, in pairs (nil: keep all)
		perToken  int      // 0: unchanged
		expertMLP int      // 0: unchanged
		sharedMLP int
	}{
		{name: "qwen3 drop two of six", cfg: fams["qwen3_moe"], pairs: [][2]int{{1, 2}, {4, 5}}},
		{name: "qwen3 drop and narrow", cfg: fams["qwen3_moe"], pairs: [][2]int{{5, 0}, {2, 3}}, expertMLP: 5},
		{name: "mixtral top-1 over two", cfg: fams["mixtral"], pairs: [][2]int{{2, 1}}, perToken: 1},
		{name: "mixtral narrow", cfg: fams["mixtral"], expertMLP: 3},
		{name: "qwen2 narrow experts and shared", cfg: fams["qwen2_moe"], expertMLP: 6, sharedMLP: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := randomModel(t, tc.cfg, 3)
			rng := rand.New(rand.NewPCG(2, 2))
			s := Random(tc.cfg, 9)
			to := tc.cfg.Clone()
			if tc.perToken > 0 {
				to.ExpertsPerToken = tc.perToken
			}
			var kept []int
			for _, p := range tc.pairs {
				kept = append(kept, p[0], p[1])
			}
			slices.Sort(kept)
			for l, lc := range tc.cfg.Layers {
				if !lc.MoE() {
					continue
				}
				if kept != nil {
					setRouter(t, m, l, tc.pairs)
					for e := range s.Experts[l] {
						s.Experts[l][e] = rng.Float64()
						if slices.Contains(kept, e) {
							s.Experts[l][e] += 1
						}
					}
					to.Layers[l].Experts = len(kept)
				}
				if tc.expertMLP > 0 {
					to.Layers[l].ExpertMLP = tc.expertMLP
				}
				if tc.sharedMLP > 0 {
					to.Layers[l].SharedMLP = tc.sharedMLP
				}
			}
			full, err := decoder64.Load(m)
			if err != nil {
				t.Fatal(err)
			}
			silenced := full.Clone()
			silenced.Config.ExpertsPerToken = to.ExpertsPerToken
			for l, lc := range tc.cfg.Layers {
				lt := tc.cfg.LayerTensors(l)
				if tc.expertMLP > 0 && lc.MoE() {
					keep := make([][]int, lc.Experts)
					for e := range keep {
						keep[e] = scores.TopK(s.ExpertMLP[l][e], tc.expertMLP)
					}
					zeroExpertColumns(silenced.W[lt.ExpertDown], lc.Experts, tc.cfg.Hidden, lc.ExpertMLP, keep)
				}
				if tc.sharedMLP > 0 && lc.SharedMLP > 0 {
					keep := scores.TopK(s.SharedMLP[l], tc.sharedMLP)
					zeroExpertColumns(silenced.W[lt.SharedDown], 1, tc.cfg.Hidden, lc.SharedMLP, [][]int{keep})
				}
			}
			pruned, err := PruneTo(m, s, to)
			if err != nil {
				t.Fatal(err)
			}
			if got := pruned.Config; !configEqual(got, to) {
				t.Fatalf("pruned config %+v, want %+v", got, to)
			}
			p, err := decoder64.Load(pruned)
			if err != nil {
				t.Fatal(err)
			}
			// The setRouter construction must really keep the dropped
			// experts idle, or the comparison proves nothing.
			acts := make([]decoder64.LayerActs, len(tc.cfg.Layers))
			want := silenced.Forward(tokens, nil, acts)
			if kept != nil {
				for l := range acts {
					for _, r := range acts[l].MoE {
						for _, e := range r.Chosen {
							if !slices.Contains(kept, e) {
								t.Fatalf("layer %d: a token chose dropped expert %d", l, e)
							}
						}
					}
				}
			}
			got := p.Forward(tokens, nil, nil)
			var worst float64
			for i := range want {
				for j := range want[i] {
					worst = math.Max(worst, math.Abs(got[i][j]-want[i][j]))
				}
			}
			if !(worst <= 1e-9) {
				t.Errorf("pruned and silenced models differ by %.3g", worst)
			}
		})
	}
}

func configEqual(a, b ir.Config) bool {
	return a.ExpertsPerToken == b.ExpertsPerToken && a.Hidden == b.Hidden && slices.Equal(a.Layers, b.Layers)
}

// The pass's targets on MoE models: every MoE layer gets one target per
// axis, top-k is kept ≤ the experts left (or lowered on request), and
// axes the model lacks are refused.
func TestMoETargets(t *testing.T) {
	fams := irtest.MoEFamilies()
	mix, qwen2 := fams["mixtral"], fams["qwen2_moe"] // 4 experts of 10, top 2; qwen2 adds a shared 12 and a dense layer of 20
	for _, tc := range []struct {
		name    string
		cfg     ir.Config
		c       Config
		want    targets
		wantErr string
	}{
		{"keep all", mix, Config{}, targets{hidden: 16, heads: 4, kvHeads: 2, experts: 4, expertMLP: 10, perToken: 2}, ""},
		{"halve experts", mix, Config{ExpertsRatio: fptr(0.5)}, targets{hidden: 16, heads: 4, kvHeads: 2, experts: 2, expertMLP: 10, perToken: 2}, ""},
		{"narrow experts", mix, Config{ExpertMLP: iptr(6)}, targets{hidden: 16, heads: 4, kvHeads: 2, experts: 4, expertMLP: 6, perToken: 2}, ""},
		{"one expert, top-1", mix, Config{Experts: iptr(1), ExpertsPerToken: iptr(1)}, targets{hidden: 16, heads: 4, kvHeads: 2, experts: 1, expertMLP: 10, perToken: 1}, ""},
		{"too few experts", mix, Config{Experts: iptr(1)}, targets{}, "experts = 1 leaves fewer experts than num_experts_per_tok = 2"},
		{"top-k above experts left", mix, Config{Experts: iptr(2), ExpertsPerToken: iptr(3)}, targets{}, "experts_per_token = 3 must be between 1 and the 2 experts left"},
		{"no shared expert", mix, Config{SharedMLP: iptr(4)}, targets{}, "shared_mlp is set but the model has no layer with that axis"},
		{"no dense layer", mix, Config{MLP: iptr(4)}, targets{}, "mlp is set"},
		{"mixed model", qwen2, Config{MLPRatio: fptr(0.5), SharedMLPRatio: fptr(0.5), Experts: iptr(3)},
			targets{hidden: 16, mlp: 10, heads: 4, kvHeads: 2, experts: 3, expertMLP: 10, sharedMLP: 6, perToken: 2}, ""},
		{"top-k on a dense model", testConfig(), Config{ExpertsPerToken: iptr(1)}, targets{}, "no routed experts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.targets(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("targets = %+v, %v; want an error mentioning %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("targets = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// Magnitude on the expert axes: an expert's score is the norm of its
// router row and its three weight slices, and each expert's neurons are
// scored by that expert's own rows and columns; computed here by hand
// from the stacked tensors.
func TestMagnitudeExperts(t *testing.T) {
	cfg := irtest.MoEFamilies()["qwen2_moe"]
	m := randomModel(t, cfg, 8)
	s, err := Magnitude(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkTable(cfg, s); err != nil {
		t.Fatal(err)
	}
	lc, d := cfg.Layers[0], cfg.Hidden
	lt := cfg.LayerTensors(0)
	router, _ := values(t, m, lt.Router)
	gate, _ := values(t, m, lt.ExpertGate)
	up, _ := values(t, m, lt.ExpertUp)
	down, _ := values(t, m, lt.ExpertDown)
	F := lc.ExpertMLP
	for e := range lc.Experts {
		sq := rowsSq(router, d, e, e+1)
		for _, w := range [][]float64{gate, up, down} {
			for _, x := range w[e*F*d : (e+1)*F*d] {
				sq += x * x
			}
		}
		if !approxEqual([]float64{s.Experts[0][e]}, []float64{math.Sqrt(sq)}) {
			t.Errorf("expert %d: magnitude %g, want %g", e, s.Experts[0][e], math.Sqrt(sq))
		}
		for j := range F {
			// Row j of the expert's gate and up, column j of its down.
			sq := rowsSq(gate[e*F*d:(e+1)*F*d], d, j, j+1) + rowsSq(up[e*F*d:(e+1)*F*d], d, j, j+1) + colsSq(down[e*d*F:(e+1)*d*F], F, j, j+1)
			if !approxEqual([]float64{s.ExpertMLP[0][e][j]}, []float64{math.Sqrt(sq)}) {
				t.Errorf("expert %d neuron %d: magnitude %g, want %g", e, j, s.ExpertMLP[0][e][j], math.Sqrt(sq))
			}
		}
	}
	if s.Experts[1] != nil || len(s.MLP[1]) != cfg.Layers[1].MLP || len(s.SharedMLP[0]) != lc.SharedMLP {
		t.Errorf("dense layer 1 or shared expert scored wrongly: experts %v, mlp %d, shared %d", s.Experts[1], len(s.MLP[1]), len(s.SharedMLP[0]))
	}
}

// A table without expert scores (a dense model's, or one from a backend
// without expert statistics) cannot prune a MoE model; Random draws one
// score per unit of every axis.
func TestMoETables(t *testing.T) {
	cfg := irtest.MoEFamilies()["qwen2_moe"]
	s := Random(cfg, 1)
	if err := checkTable(cfg, s); err != nil {
		t.Fatalf("random table: %v", err)
	}
	if again := Random(cfg, 1); !slices.Equal(again.Experts[0], s.Experts[0]) || slices.Equal(Random(cfg, 2).Experts[0], s.Experts[0]) {
		t.Error("random scores do not follow the seed")
	}
	s.Experts, s.ExpertMLP, s.SharedMLP = nil, nil, nil
	if err := checkTable(cfg, s); err == nil || !strings.Contains(err.Error(), "expert statistics") {
		t.Errorf("a table without expert scores: %v", err)
	}
}
