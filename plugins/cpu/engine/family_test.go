package engine

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// sortedFamilies lists irtest.Families and irtest.MoEFamilies in a
// stable order.
func sortedFamilies() ([]string, map[string]ir.Config) {
	fams := allFamilies()
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, fams
}

// allFamilies merges the dense and mixture-of-experts family configs.
func allFamilies() map[string]ir.Config {
	fams := irtest.Families()
	for n, c := range irtest.MoEFamilies() {
		fams[n] = c
	}
	return fams
}

// familyParams draws weights for cfg: matrices from N(0, std²), biases from
// N(0, 0.3²), norms so that the applied weight (offset + w) is 1 + N(0, 0.3²).
func familyParams(t testing.TB, cfg ir.Config, seed uint64, std float64) *Params {
	t.Helper()
	p := randomParams(t, cfg, seed, std)
	r := rand.New(rand.NewPCG(seed, 11))
	bias := map[string]bool{}
	for l := range cfg.Layers {
		lt := cfg.LayerTensors(l)
		bias[lt.QBias], bias[lt.KBias], bias[lt.VBias] = true, true, true
	}
	for _, tn := range p.Tensors() {
		if len(tn.Shape) != 1 {
			continue
		}
		for i := range tn.Data {
			if bias[tn.Name] {
				tn.Data[i] = float32(0.3 * r.NormFloat64())
			} else {
				tn.Data[i] = float32(1 - cfg.NormOffset + 0.3*r.NormFloat64())
			}
		}
	}
	return p
}

// TestFamilyParams: every tensor of a family binds to its Layer field, and
// InitRandom makes norms the identity (offset + w = 1) and biases 0.
func TestFamilyParams(t *testing.T) {
	names, fams := sortedFamilies()
	for _, name := range names {
		cfg := fams[name]
		p, err := NewParams(cfg)
		if err != nil {
			t.Fatal(err)
		}
		p.InitRandom(3)
		for l, lp := range p.Layers {
			lt := cfg.LayerTensors(l)
			for _, f := range []struct {
				name string
				w    []float32
				want float32 // -1: a matrix
			}{
				{lt.AttnNorm, lp.AttnNorm, 1}, {lt.QNorm, lp.QNorm, 1}, {lt.KNorm, lp.KNorm, 1},
				{lt.AttnPostNorm, lp.AttnPostNorm, 1}, {lt.MLPNorm, lp.MLPNorm, 1}, {lt.MLPPostNorm, lp.MLPPostNorm, 1},
				{lt.QBias, lp.QBias, 0}, {lt.KBias, lp.KBias, 0}, {lt.VBias, lp.VBias, 0},
				{lt.Q, lp.Q, -1}, {lt.K, lp.K, -1}, {lt.V, lp.V, -1}, {lt.O, lp.O, -1},
				{lt.Gate, lp.Gate, -1}, {lt.Up, lp.Up, -1}, {lt.Down, lp.Down, -1},
				{lt.Router, lp.Router, -1}, {lt.ExpertGate, lp.ExpertGate, -1}, {lt.ExpertUp, lp.ExpertUp, -1},
				{lt.ExpertDown, lp.ExpertDown, -1}, {lt.SharedGate, lp.SharedGate, -1}, {lt.SharedUp, lp.SharedUp, -1},
				{lt.SharedDown, lp.SharedDown, -1}, {lt.SharedExpertGate, lp.SharedExpertGate, -1},
			} {
				if (f.name == "") != (f.w == nil) {
					t.Fatalf("%s layer %d: tensor %q bound to %d floats", name, l, f.name, len(f.w))
				}
				if f.want < 0 {
					continue
				}
				for _, v := range f.w {
					applied := v
					if f.want == 1 {
						applied = float32(cfg.NormOffset) + v
					}
					if applied != f.want {
						t.Fatalf("%s: %s initialized to %v (applied %v), want applied %v", name, f.name, v, applied, f.want)
					}
				}
			}
		}
	}
}

// familyLossCases are the objectives the family tests run: plain
// cross-entropy, and a mix with KL to a teacher whose logits are capped by
// the student's final soft cap when the family has one.
var familyLossCases = []lossCase{
	{name: "ce", ids: true},
	{name: "mixed-top4-T2", obj: Objective{KLWeight: 0.4, Temperature: 2, TopK: 4}, ids: true, weights: true, teacher: true},
}

// TestFamilyGradients checks every parameter's gradient of every family
// (all its options on), and of LoRA adapters on all seven matrices (with
// the base matrices frozen, its biases and norms training), against
// central finite differences of the float64 reference's loss.
// Sequences are longer than the sliding windows, so masked keys, the soft
// caps, the biases, the q/k norms, the post norms and the scaled embedding
// all sit on the path.
func TestFamilyGradients(t *testing.T) {
	const b, tt = 2, 9
	names, fams := sortedFamilies()
	for _, name := range names {
		for ci, c := range familyLossCases {
			for _, withLoRA := range []bool{false, true} {
				sub := name + "/" + c.name
				if withLoRA {
					sub += "/lora"
				}
				t.Run(sub, func(t *testing.T) {
					cfg := fams[name]
					p := familyParams(t, cfg, uint64(ci+3), 0.4)
					in := makeInputs(c, b, tt, cfg.Vocab, uint64(ci+20))
					if c.teacher && cfg.FinalSoftCap > 0 {
						// Teacher logits come from a capped engine too.
						for _, row := range in.teacher.rows {
							for j, x := range row {
								row[j] = float64(float32(cfg.FinalSoftCap * math.Tanh(float64(float32(x))/cfg.FinalSoftCap)))
							}
						}
					}
					var lora *LoRA
					frozen := func(string) bool { return false }
					if withLoRA {
						lora = randomLoRA(t, cfg, LoRARoles, 9)
						vectors := map[string]bool{}
						for _, tn := range p.Tensors() {
							vectors[tn.Name] = len(tn.Shape) == 1
						}
						frozen = func(n string) bool { return !vectors[n] }
					}
					e, err := New(p, Options{Threads: 2, LossChunk: 5, Frozen: frozen})
					if err != nil {
						t.Fatal(err)
					}
					if err := e.SetLoRA(lora); err != nil {
						t.Fatal(err)
					}
					if err := e.Forward(in.tokens, b, tt); err != nil {
						t.Fatal(err)
					}
					if _, err := e.LossGrad(in.tg, c.obj, in.source(), 1); err != nil {
						t.Fatal(err)
					}
					if err := e.Backward(); err != nil {
						t.Fatal(err)
					}
					fd := newFamilyFD(t, p, lora, in, c.obj, b, tt)
					type tensor struct {
						name string
						w, g []float32
					}
					var ts []tensor
					for i, tn := range p.Tensors() {
						g := e.G.Tensors()[i].Data
						if frozen(tn.Name) {
							for _, v := range g {
								if v != 0 {
									t.Fatalf("frozen %s has gradient %v", tn.Name, v)
								}
							}
							continue
						}
						ts = append(ts, tensor{tn.Name, tn.Data, g})
					}
					if lora != nil {
						for _, a := range lora.Adapters {
							n := ir.LayerName(a.Layer, a.Role)
							ts = append(ts, tensor{n + ".lora_A", a.A, a.GA}, tensor{n + ".lora_B", a.B, a.GB})
						}
					}
					for ti, tn := range ts {
						fd.check(tn.name, tn.w, tn.g, uint64(ti))
					}
				})
			}
		}
	}
}

// familyFD takes finite differences of the float64 reference's loss over
// weights perturbed in place.
type familyFD struct {
	t    *testing.T
	loss func() float64
	// h is the step; tol the allowed error relative to the tensor's largest
	// gradient, abs an absolute floor.
	h, tol, abs float64
	sample      int
}

func newFamilyFD(t *testing.T, p *Params, lora *LoRA, in lossInputs, obj Objective, b, tt int) *familyFD {
	var teacherRows [][]float64
	if in.teacher != nil {
		teacherRows = in.teacher.rows
	}
	return &familyFD{t: t, h: fdStep(p.Config), tol: 2e-3, abs: 1e-5, sample: 6, loss: func() float64 {
		ref := newRef64(p)
		if lora != nil {
			ref = mergedRef64(p, lora)
		}
		return loss64(ref.logits(in.tokens, b, tt), teacherRows, in.tg, obj)
	}}
}

// fdStep is the finite differences' step: 1e-4, or 1e-5 for a mixture of
// experts, whose loss jumps where a perturbation changes a token's experts
// (the float64 reference keeps the smaller step exact enough).
func fdStep(cfg ir.Config) float64 {
	if hasMoE(cfg) {
		return 1e-5
	}
	return 1e-4
}

func hasMoE(cfg ir.Config) bool {
	for _, l := range cfg.Layers {
		if l.MoE() {
			return true
		}
	}
	return false
}

// diff is the central difference at element i of w with step h, over the
// step actually taken in float32.
func (f *familyFD) diff(w []float32, i int, h float64) float64 {
	orig := w[i]
	w[i] = float32(float64(orig) + h)
	up := float64(w[i])
	lp := f.loss()
	w[i] = float32(float64(orig) - h)
	down := float64(w[i])
	lm := f.loss()
	w[i] = orig
	return (lp - lm) / (up - down)
}

// check compares a sample of g with finite differences of w.
func (f *familyFD) check(name string, w, g []float32, seed uint64) {
	f.t.Helper()
	idx := rand.New(rand.NewPCG(seed, 5)).Perm(len(w))
	if len(idx) > f.sample {
		idx = idx[:f.sample]
	}
	var maxErr, maxAbs float64
	worst := 0
	for _, i := range idx {
		want := f.diff(w, i, f.h)
		maxAbs = math.Max(maxAbs, math.Abs(want))
		if d := math.Abs(want - float64(g[i])); d > maxErr {
			maxErr, worst = d, i
		}
	}
	if maxErr > f.tol*maxAbs+f.abs {
		f.t.Errorf("%s: gradient differs from finite differences by %g at element %d (grad %g; largest |fd| %g)", name, maxErr, worst, g[worst], maxAbs)
	}
}

// longWindows is a family config with sliding windows that span several of
// the attention's row blocks (attnBlock), over sequences of t tokens.
func longWindows(name string, t int) ir.Config {
	cfg := allFamilies()[name].Clone()
	cfg.MaxSeq = t
	for i := range cfg.Layers {
		if cfg.Layers[i].Window > 0 {
			cfg.Layers[i].Window = attnBlock/2 + 7 + 20*i
		}
	}
	return cfg
}

// TestFamilyGradientsLongWindows repeats the finite differences over
// sequences several attention blocks long, so that windows skip whole
// blocks of keys (forward) and of queries (backward).
func TestFamilyGradientsLongWindows(t *testing.T) {
	const b, tt = 1, 3*attnBlock - 5
	for _, name := range []string{"gemma2", "mistral"} {
		t.Run(name, func(t *testing.T) {
			cfg := longWindows(name, tt)
			p := familyParams(t, cfg, 5, 0.4)
			c := familyLossCases[0]
			in := makeInputs(c, b, tt, cfg.Vocab, 23)
			e, err := New(p, Options{Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Forward(in.tokens, b, tt); err != nil {
				t.Fatal(err)
			}
			if _, err := e.LossGrad(in.tg, c.obj, nil, 1); err != nil {
				t.Fatal(err)
			}
			if err := e.Backward(); err != nil {
				t.Fatal(err)
			}
			fd := newFamilyFD(t, p, nil, in, c.obj, b, tt)
			fd.sample = 3
			for ti, tn := range p.Tensors() {
				fd.check(tn.Name, tn.Data, e.G.Tensors()[ti].Data, uint64(ti))
			}
		})
	}
}

// TestSlidingWindowReach: with sliding windows of w positions in all L
// layers, the logits at position i depend on the tokens in
// (i − L·(w−1), i] only. Changing an early token leaves every later row
// past that reach bitwise unchanged (masked keys get probability exactly
// 0) and changes the rows within it.
func TestSlidingWindowReach(t *testing.T) {
	const tt = 3*attnBlock + 11
	cfg := longWindows("mistral", tt)
	for i := range cfg.Layers {
		cfg.Layers[i].Window = 40
	}
	reach := len(cfg.Layers) * 39
	p := familyParams(t, cfg, 6, 0.4)
	e, err := New(p, Options{Threads: 2, Inference: true})
	if err != nil {
		t.Fatal(err)
	}
	tokens := randomTokens(rand.New(rand.NewPCG(4, 4)), tt, cfg.Vocab)
	logits := func() []float32 {
		if err := e.Forward(tokens, 1, tt); err != nil {
			t.Fatal(err)
		}
		out := make([]float32, tt*cfg.Vocab)
		if err := e.Logits(0, tt, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := logits()
	const changed = 9
	tokens[changed] = (tokens[changed] + 1) % int32(cfg.Vocab)
	after := logits()
	v := cfg.Vocab
	for r := changed; r < tt; r++ {
		same := true
		for j := 0; j < v; j++ {
			if math.Float32bits(before[r*v+j]) != math.Float32bits(after[r*v+j]) {
				same = false
			}
		}
		if inReach := r <= changed+reach; same == inReach {
			t.Errorf("row %d (token %d changed, reach %d): logits unchanged = %v", r, changed, reach, same)
		}
	}
}

// TestFamilyDeterminism: for every family, the loss, the logits and every
// gradient (LoRA adapters' included) are bitwise the same at 1, 2 and 3
// threads, and whether the attention probabilities are kept for the
// backward pass or recomputed.
func TestFamilyDeterminism(t *testing.T) {
	const b, tt = 2, attnBlock + 9
	names, _ := sortedFamilies()
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			cfg := longWindows(name, tt)
			p := familyParams(t, cfg, 7, 0.4)
			c := familyLossCases[1]
			if hasMoE(cfg) {
				c.obj.RouterAux = 0.3 // the balancing loss's gradient too
			}
			in := makeInputs(c, b, tt, cfg.Vocab, 24)
			lora := randomLoRA(t, cfg, LoRARoles, 2)
			type result struct {
				loss          float64
				logits, g, lg []float32
			}
			run := func(threads int, budget int64) result {
				e, err := New(p, Options{Threads: threads, LossChunk: 13, AttentionBudget: budget})
				if err != nil {
					t.Fatal(err)
				}
				if err := e.SetLoRA(lora); err != nil {
					t.Fatal(err)
				}
				if err := e.Forward(in.tokens, b, tt); err != nil {
					t.Fatal(err)
				}
				if e.keepProbs != (budget >= 0) {
					t.Fatalf("budget %d: probabilities kept = %v", budget, e.keepProbs)
				}
				logits := make([]float32, e.Rows()*cfg.Vocab)
				if err := e.Logits(0, e.Rows(), logits); err != nil {
					t.Fatal(err)
				}
				e.ZeroGrad()
				res, err := e.LossGrad(in.tg, c.obj, in.source(), 1)
				if err != nil {
					t.Fatal(err)
				}
				if err := e.Backward(); err != nil {
					t.Fatal(err)
				}
				return result{res.Loss, logits, append([]float32(nil), e.G.Flat()...), append([]float32(nil), lora.Grad()...)}
			}
			want := run(2, 0)
			for _, v := range []struct {
				threads int
				budget  int64
			}{{1, 0}, {3, 0}, {2, -1}, {1, -1}} {
				got := run(v.threads, v.budget)
				if math.Float64bits(got.loss) != math.Float64bits(want.loss) {
					t.Errorf("threads %d budget %d: loss %v, want %v", v.threads, v.budget, got.loss, want.loss)
				}
				for _, f := range []struct {
					what      string
					got, want []float32
				}{{"logit", got.logits, want.logits}, {"gradient", got.g, want.g}, {"LoRA gradient", got.lg, want.lg}} {
					for i := range f.want {
						if math.Float32bits(f.got[i]) != math.Float32bits(f.want[i]) {
							t.Fatalf("threads %d budget %d: %s %d is %v, want %v", v.threads, v.budget, f.what, i, f.got[i], f.want[i])
						}
					}
				}
			}
		})
	}
}

// TestFamilyMatchesRef64 compares the engine's logits and layer
// activations (the OnLayer views) with the float64 decoder on a random
// model of every family.
func TestFamilyMatchesRef64(t *testing.T) {
	const b, tt = 2, 11
	names, fams := sortedFamilies()
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			cfg := fams[name]
			m := irtest.RandomModel(t, cfg, rand.New(rand.NewPCG(12, 1)))
			p, err := FromIR(m)
			if err != nil {
				t.Fatal(err)
			}
			ref := newRef64(p)
			tokens := randomTokens(rand.New(rand.NewPCG(13, 1)), b*tt, cfg.Vocab)
			// Reference activations, per sequence then position.
			refActs := make([][]decoder64.LayerActs, b)
			var want [][]float64
			for s := range refActs {
				refActs[s] = make([]decoder64.LayerActs, len(cfg.Layers))
				row := make([]int, tt)
				for i := range row {
					row[i] = int(tokens[s*tt+i])
				}
				want = append(want, ref.Forward(row, nil, refActs[s])...)
			}
			closeTo := func(what string, got []float32, w int, ref func(r int) []float64) {
				t.Helper()
				for r := 0; r < b*tt; r++ {
					wr := ref(r)
					var scale float64
					for _, v := range wr {
						scale = math.Max(scale, math.Abs(v))
					}
					for j, v := range wr {
						if d := math.Abs(float64(got[r*w+j]) - v); d > 1e-4*scale+1e-6 {
							t.Fatalf("%s row %d [%d]: %v, float64 reference %v", what, r, j, got[r*w+j], v)
						}
					}
				}
			}
			e, err := New(p, Options{Threads: 2, Inference: true, OnLayer: func(l int, a *Activations) error {
				lc := cfg.Layers[l]
				get := func(f func(*decoder64.LayerActs) [][]float64) func(r int) []float64 {
					return func(r int) []float64 { return f(&refActs[r/tt][l])[r%tt] }
				}
				d := cfg.Hidden
				closeTo("input", a.Input, d, get(func(x *decoder64.LayerActs) [][]float64 { return x.In }))
				closeTo("attention norm", a.AttnNormOut, d, get(func(x *decoder64.LayerActs) [][]float64 { return x.AttnNormOut }))
				closeTo("attention output", a.AttnOut, lc.Heads*lc.HeadDim, get(func(x *decoder64.LayerActs) [][]float64 { return x.AttnOut }))
				closeTo("MLP norm", a.MLPNormOut, d, get(func(x *decoder64.LayerActs) [][]float64 { return x.MLPNormOut }))
				if lc.MoE() {
					checkMoEActs(t, a.MoE, refActs, l, tt, d, lc)
				} else {
					closeTo("MLP activation", a.MLPAct, lc.MLP, get(func(x *decoder64.LayerActs) [][]float64 { return x.MLPAct }))
				}
				closeTo("output", a.Output, d, get(func(x *decoder64.LayerActs) [][]float64 { return x.Out }))
				if (a.AttnPostNormOut != nil) != cfg.PostNorms || (a.MLPPostNormOut != nil) != cfg.PostNorms {
					t.Fatalf("layer %d: post-norm outputs present %v, %v with PostNorms %v", l, a.AttnPostNormOut != nil, a.MLPPostNormOut != nil, cfg.PostNorms)
				}
				if cfg.PostNorms {
					closeTo("attention post norm", a.AttnPostNormOut, d, get(func(x *decoder64.LayerActs) [][]float64 { return x.AttnPostNormOut }))
					closeTo("MLP post norm", a.MLPPostNormOut, d, get(func(x *decoder64.LayerActs) [][]float64 { return x.MLPPostNormOut }))
				}
				return nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Forward(tokens, b, tt); err != nil {
				t.Fatal(err)
			}
			logits := make([]float32, b*tt*cfg.Vocab)
			if err := e.Logits(0, b*tt, logits); err != nil {
				t.Fatal(err)
			}
			closeTo("logits", logits, cfg.Vocab, func(r int) []float64 { return want[r] })
		})
	}
}

// TestFamilyLayerHook: the OnLayer views of every family are what they
// claim, recomputed in float64 from the views and the weights: the norm
// outputs normalize Input and Mid (offset included), and Mid and Output
// add to the residual stream the (post-normed) projections of AttnOut
// through o_proj and of MLPAct through down_proj.
func TestFamilyLayerHook(t *testing.T) {
	const b, tt = 2, 7
	names, fams := sortedFamilies()
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			cfg := fams[name]
			p := familyParams(t, cfg, 8, 0.4)
			d := cfg.Hidden
			norm := func(x, w []float32) []float64 {
				var ss float64
				for _, v := range x {
					ss += float64(v) * float64(v)
				}
				r := 1 / math.Sqrt(ss/float64(len(x))+cfg.NormEps)
				out := make([]float64, len(x))
				for i, v := range x {
					out[i] = float64(v) * r * (cfg.NormOffset + float64(w[i]))
				}
				return out
			}
			project := func(w, x []float32, out int) []float32 {
				y := make([]float32, out)
				for o := range y {
					var s float64
					for i, v := range x {
						s += float64(w[o*len(x)+i]) * float64(v)
					}
					y[o] = float32(s)
				}
				return y
			}
			expect := func(what string, got []float32, want []float64) {
				t.Helper()
				for i, v := range want {
					if math.Abs(float64(got[i])-v) > 1e-4*(1+math.Abs(v)) {
						t.Fatalf("%s [%d]: %v, recomputed %v", what, i, got[i], v)
					}
				}
			}
			calls := 0
			hook := func(l int, a *Activations) error {
				calls++
				lp := &p.Layers[l]
				qd, m := lp.Heads*lp.HeadDim, lp.MLP
				if len(a.AttnOut) != b*tt*qd || len(a.MLPAct) != b*tt*m {
					t.Fatalf("layer %d: AttnOut %d and MLPAct %d floats", l, len(a.AttnOut), len(a.MLPAct))
				}
				for r := 0; r < b*tt; r++ {
					row := func(x []float32, w int) []float32 { return x[r*w : (r+1)*w] }
					expect("attention norm", row(a.AttnNormOut, d), norm(row(a.Input, d), lp.AttnNorm))
					expect("MLP norm", row(a.MLPNormOut, d), norm(row(a.Mid, d), lp.MLPNorm))
					var mlpOut []float32
					if lp.MoE() {
						mlpOut = moeOutput(a.MoE, r, d, lp.SharedDown)
					} else {
						mlpOut = project(lp.Down, row(a.MLPAct, m), d)
					}
					for _, res := range []struct {
						what           string
						in, out, delta []float32
						post           []float32
					}{
						{"Mid", row(a.Input, d), row(a.Mid, d), project(lp.O, row(a.AttnOut, qd), d), lp.AttnPostNorm},
						{"Output", row(a.Mid, d), row(a.Output, d), mlpOut, lp.MLPPostNorm},
					} {
						want := make([]float64, d)
						delta := make([]float64, d)
						for i, v := range res.delta {
							delta[i] = float64(v)
						}
						if res.post != nil {
							delta = norm(res.delta, res.post)
						}
						for i := range want {
							want[i] = float64(res.in[i]) + delta[i]
						}
						expect(res.what, res.out, want)
					}
				}
				return nil
			}
			for _, inference := range []bool{false, true} {
				calls = 0
				e, err := New(p, Options{Inference: inference, Threads: 2, OnLayer: hook})
				if err != nil {
					t.Fatal(err)
				}
				tokens := randomTokens(rand.New(rand.NewPCG(3, 3)), b*tt, cfg.Vocab)
				if err := e.Forward(tokens, b, tt); err != nil {
					t.Fatal(err)
				}
				if calls != len(cfg.Layers) {
					t.Errorf("hook called %d times, want %d", calls, len(cfg.Layers))
				}
			}
		})
	}
}
