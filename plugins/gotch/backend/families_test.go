package backend

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// The tests in this file run every family of irtest.Families() on random
// weights and compare the backend with the independent float64 decoder
// (internal/decoder64): logits, losses, gradients, statistics, KV-cache
// generation and LoRA.

// famSeqLen is longer than every family's sliding window, so that the
// windows cut.
const famSeqLen = 12

// family is one random model of a family, loaded into a backend, with its
// float64 reference and a few token sequences.
type family struct {
	name string
	cfg  ir.Config
	im   *ir.Model
	ref  *decoder64.Model
	id   api.ModelID
	seqs [][]int
}

// randomFamilyModel is irtest.RandomModel with each matrix scaled by
// 1/√fan-in, so that activations stay O(1) through the layers and the
// soft caps and windows act in their useful range rather than saturated.
func randomFamilyModel(t *testing.T, cfg ir.Config, rng *rand.Rand) *ir.Model {
	t.Helper()
	im := irtest.RandomModel(t, cfg, rng)
	for _, name := range im.TensorNames() {
		tn, err := im.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(tn.Shape) < 2 {
			continue
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatalf("tensor %s: %v", name, err)
		}
		// Stacked experts are [experts, out, in]: the fan-in is last.
		f := float32(1 / math.Sqrt(float64(tn.Shape[len(tn.Shape)-1])))
		for i := range v {
			v[i] *= f
		}
		im.Tensors[name] = ir.FromFloat32(ir.F32, tn.Shape, v)
	}
	return im
}

// loadModel uploads im into b with weights stored as store and registers
// it.
func loadModel(t *testing.T, b *Backend, im *ir.Model, store torch.DType) api.ModelID {
	t.Helper()
	var id api.ModelID
	err := b.do(context.Background(), func() error {
		m, err := b.upload(im, store)
		if err != nil {
			return err
		}
		b.next++
		m.id = api.ModelID(fmt.Sprintf("m%d", b.next))
		b.models[m.id] = m
		id = m.id
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// families loads one random model per family (seeded by seed) into b as
// float32 models: the dense families of irtest.Families in name order,
// then the mixture-of-experts ones of irtest.MoEFamilies.
func families(t *testing.T, b *Backend, seed uint64) []*family {
	return familiesAs(t, b, seed, torch.Float32)
}

// familiesAs is families with the weights stored as store.
func familiesAs(t *testing.T, b *Backend, seed uint64, store torch.DType) []*family {
	t.Helper()
	var names []string
	cfgs := map[string]ir.Config{}
	for _, fams := range []map[string]ir.Config{irtest.Families(), irtest.MoEFamilies()} {
		set := make([]string, 0, len(fams))
		for n, c := range fams {
			set = append(set, n)
			cfgs[n] = c
		}
		slices.Sort(set)
		names = append(names, set...)
	}
	var out []*family
	for i, n := range names {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		f := &family{name: n, cfg: cfgs[n]}
		f.im = randomFamilyModel(t, f.cfg, rng)
		ref, err := decoder64.Load(f.im)
		if err != nil {
			t.Fatal(err)
		}
		f.ref = ref
		f.id = loadModel(t, b, f.im, store)
		for range 3 {
			s := make([]int, famSeqLen)
			for j := range s {
				s[j] = rng.IntN(f.cfg.Vocab)
			}
			f.seqs = append(f.seqs, s)
		}
		out = append(out, f)
	}
	return out
}

// tokenFile writes seqs as an int32 token file.
func tokenFile(t *testing.T, seqs [][]int) string {
	t.Helper()
	var data []int32
	for _, s := range seqs {
		for _, id := range s {
			data = append(data, int32(id))
		}
	}
	p := filepath.Join(t.TempDir(), "tokens.npy")
	if err := npy.WriteInt32(p, []int{len(seqs), len(seqs[0])}, data); err != nil {
		t.Fatal(err)
	}
	return p
}

// flatTokens lays seqs out as the backend's int64 batch and next-token
// targets (−1 after each sequence's last position).
func flatTokens(seqs [][]int) ([]int64, []int32) {
	var tok []int64
	var ids []int32
	for _, s := range seqs {
		for j, id := range s {
			tok = append(tok, int64(id))
			if j+1 < len(s) {
				ids = append(ids, int32(s[j+1]))
			} else {
				ids = append(ids, -1)
			}
		}
	}
	return tok, ids
}

// backendLogits runs seqs through model id with the layers in skip
// bypassed and returns the logits per sequence and position.
func backendLogits(t *testing.T, b *Backend, id api.ModelID, seqs [][]int, skip map[int]bool) [][][]float64 {
	t.Helper()
	var out [][][]float64
	err := b.do(context.Background(), func() error {
		m, err := b.model(id)
		if err != nil {
			return err
		}
		s := torch.NewScope()
		defer s.Free()
		tok, _ := flatTokens(seqs)
		n, T := len(seqs), len(seqs[0])
		h, err := b.forward(s, m, s.To(s.FromInt64(tok, int64(n), int64(T)), b.dev), n, T, fwdOpts{skip: skip})
		if err != nil {
			return err
		}
		cdt := b.computeDType(m)
		z := s.Float64s(m.logits(s, h, m.weight(s, m.classifier(), cdt), cdt))
		if err := s.Err(); err != nil {
			return err
		}
		V := m.cfg.Vocab
		for i := range n {
			var rows [][]float64
			for p := range T {
				rows = append(rows, z[(i*T+p)*V:(i*T+p+1)*V])
			}
			out = append(out, rows)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newFamilyBackend is a backend on the device WHITTLE_GOTCH_DEVICE names
// (cpu by default, as for TestConformance), so that a GPU check runs the
// fused attention paths (libtorch ≥ 2.0) too.
func newFamilyBackend(t *testing.T, precision string) *Backend {
	t.Helper()
	dev := os.Getenv("WHITTLE_GOTCH_DEVICE")
	if dev == "" {
		dev = "cpu"
	}
	b, err := New(Options{Device: dev, Precision: precision, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// tol is a float32 tolerance set for the CPU, ten times looser on a GPU
// (other kernels, other summation orders, float32 statistics).
func tol(b *Backend, cpu float64) float64 {
	if b.dev.IsCUDA() {
		return 10 * cpu
	}
	return cpu
}

// closeTo reports whether got is within rel of want, relative to
// max(1, |want|).
func closeTo(got, want, rel float64) bool {
	return math.Abs(got-want) <= rel*math.Max(1, math.Abs(want))
}

// TestFamilyLogits: for every family the backend's logits, with and
// without a layer bypassed, are the float64 reference's.
func TestFamilyLogits(t *testing.T) {
	b := newFamilyBackend(t, "fp32")
	for _, f := range families(t, b, 1) {
		t.Run(f.name, func(t *testing.T) {
			for _, skip := range []map[int]bool{nil, {1: true}} {
				got := backendLogits(t, b, f.id, f.seqs, skip)
				var worst float64
				for i, s := range f.seqs {
					want := f.ref.Forward(s, skip, nil)
					for p := range want {
						for v, w := range want[p] {
							worst = math.Max(worst, math.Abs(got[i][p][v]-w)/math.Max(1, math.Abs(w)))
						}
					}
				}
				if worst > tol(b, 2e-5) {
					t.Errorf("skip %v: logits differ from the float64 reference by %.3g (relative)", skip, worst)
				}
			}
		})
	}
}

// TestFamilyBF16: models stored and run in bfloat16 (how a GPU runs
// teachers and evaluations) give every family's logits within bfloat16's
// precision of the float64 reference, and generate.
func TestFamilyBF16(t *testing.T) {
	b := newFamilyBackend(t, "bf16")
	for _, f := range familiesAs(t, b, 1, torch.BFloat16) {
		t.Run(f.name, func(t *testing.T) {
			ref := f.ref
			cut := make([]int, len(f.seqs))
			for i := range cut {
				cut[i] = famSeqLen
			}
			if hasMoE(&f.cfg) {
				// Routing is discrete: a token whose k-th and (k+1)-th
				// router logits are closer than bfloat16's rounding of the
				// activations may pick another expert than the float64
				// reference, which changes every later position. The
				// reference routes on the same rounded weights, and each
				// sequence is compared up to its first position with a
				// router logit margin under 0.05.
				ref = roundedRef(t, f.im, ir.BF16)
				for i, s := range f.seqs {
					for p, mg := range routerMargins(ref, s) {
						if mg < 0.05 {
							t.Logf("sequence %d: compared up to position %d (router margin %.2g there)", i, p, mg)
							cut[i] = p
							break
						}
					}
				}
			}
			got := backendLogits(t, b, f.id, f.seqs, nil)
			var worst, scale float64
			for i, s := range f.seqs {
				for p, row := range ref.Forward(s, nil, nil)[:cut[i]] {
					for v, w := range row {
						worst = math.Max(worst, math.Abs(got[i][p][v]-w))
						scale = math.Max(scale, math.Abs(w))
					}
				}
			}
			// Weights rounded to 8 bits of mantissa and products in
			// bfloat16: a few percent of the logits' range.
			if worst > 0.06*scale {
				t.Errorf("logits differ from the float64 reference by %.3g (largest logit %.3g)", worst, scale)
			}
			res, err := b.Generate(context.Background(), api.GenerateRequest{Model: f.id, Prompts: [][]int{f.seqs[0][:2]}, MaxTokens: famSeqLen, StopToken: -1})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Tokens[0]) != famSeqLen {
				t.Errorf("generated %d tokens, want %d", len(res.Tokens[0]), famSeqLen)
			}
		})
	}
}

// routerMargins is, for each position of tokens, the smallest gap over
// the reference's mixture-of-experts layers between the k-th and the
// (k+1)-th router logit (log-probability): how far the position is from
// routing differently.
func routerMargins(g *decoder64.Model, tokens []int) []float64 {
	acts := make([]decoder64.LayerActs, len(g.Config.Layers))
	g.Forward(tokens, nil, acts)
	k := g.Config.ExpertsPerToken
	out := make([]float64, len(tokens))
	for p := range out {
		out[p] = math.Inf(1)
		for _, a := range acts {
			if a.MoE == nil {
				continue
			}
			pr := slices.Clone(a.MoE[p].Probs)
			slices.SortFunc(pr, func(x, y float64) int { return cmp.Compare(y, x) })
			out[p] = math.Min(out[p], math.Log(pr[k-1]/pr[k]))
		}
	}
	return out
}

// roundedRef is the float64 reference of im's weights rounded to dt.
func roundedRef(t *testing.T, im *ir.Model, dt ir.DType) *decoder64.Model {
	t.Helper()
	r := &ir.Model{Config: im.Config, Tensors: map[string]*ir.Tensor{}, Source: "rounded"}
	for _, name := range im.TensorNames() {
		tn, err := im.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if r.Tensors[name], err = tn.Convert(dt); err != nil {
			t.Fatalf("tensor %s: %v", name, err)
		}
	}
	g, err := decoder64.Load(r)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// refObjective is the mean over the scored rows of
// (1−α)·CE + α·τ²·KL(p_teacher^τ ‖ p_student^τ), from float64 logits.
func refObjective(z, zt [][][]float64, seqs [][]int, alpha, tau float64) (loss, ce, kl float64) {
	logSoftmax := func(v []float64, tau float64) []float64 {
		mx := math.Inf(-1)
		for _, x := range v {
			mx = math.Max(mx, x/tau)
		}
		var s float64
		for _, x := range v {
			s += math.Exp(x/tau - mx)
		}
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = x/tau - mx - math.Log(s)
		}
		return out
	}
	var n float64
	for i, s := range seqs {
		for p := 0; p+1 < len(s); p++ {
			ce -= logSoftmax(z[i][p], 1)[s[p+1]]
			if zt != nil {
				lq, lp := logSoftmax(z[i][p], tau), logSoftmax(zt[i][p], tau)
				for v := range lp {
					kl += math.Exp(lp[v]) * (lp[v] - lq[v])
				}
			}
			n++
		}
	}
	ce, kl = ce/n, kl/n
	return (1-alpha)*ce + alpha*tau*tau*kl, ce, kl
}

// refAux is Hugging Face Mixtral's load_balancing_loss_func over the
// reference's routers for the batch seqs: per group of mixture-of-experts
// layers with the same expert count, all their positions' routings
// concatenated as M rows, E·Σ_e (rows routing to e / M)·(mean probability
// of e); the groups' losses add.
func refAux(g *decoder64.Model, seqs [][]int) float64 {
	cfg := &g.Config
	count, prob, rows := map[int][]float64{}, map[int][]float64{}, map[int]float64{}
	for _, s := range seqs {
		acts := make([]decoder64.LayerActs, len(cfg.Layers))
		g.Forward(s, nil, acts)
		for l, a := range acts {
			E := cfg.Layers[l].Experts
			if E == 0 {
				continue
			}
			if count[E] == nil {
				count[E], prob[E] = make([]float64, E), make([]float64, E)
			}
			for _, r := range a.MoE {
				for e, p := range r.Probs {
					prob[E][e] += p
				}
				for _, e := range r.Chosen {
					count[E][e]++
				}
				rows[E]++
			}
		}
	}
	var total float64
	for E, c := range count {
		for e := range c {
			total += float64(E) * c[e] / rows[E] * prob[E][e] / rows[E]
		}
	}
	return total
}

// refLogits is the reference's logits of seqs.
func refLogits(g *decoder64.Model, seqs [][]int) [][][]float64 {
	var out [][][]float64
	for _, s := range seqs {
		out = append(out, g.Forward(s, nil, nil))
	}
	return out
}

// TestFamilyLosses: evaluation's LM loss (with a layer bypassed too) and
// the distillation objective against a teacher of the same family are
// the float64 reference's, soft caps included.
func TestFamilyLosses(t *testing.T) {
	ctx := context.Background()
	b := newFamilyBackend(t, "fp32")
	students := families(t, b, 2)
	teachers := families(t, b, 3)
	for fi, f := range students {
		t.Run(f.name, func(t *testing.T) {
			data := api.Sequences{Path: tokenFile(t, f.seqs)}
			res, err := b.Evaluate(ctx, api.EvalRequest{Model: f.id, LM: &data, SkipLayers: [][]int{{0}}, BatchSize: 2})
			if err != nil {
				t.Fatal(err)
			}
			_, want, _ := refObjective(refLogits(f.ref, f.seqs), nil, f.seqs, 0, 1)
			if !closeTo(res.LM.Loss, want, tol(b, 1e-5)) {
				t.Errorf("LM loss %.9g, reference %.9g", res.LM.Loss, want)
			}
			var zs [][][]float64
			for _, s := range f.seqs {
				zs = append(zs, f.ref.Forward(s, map[int]bool{0: true}, nil))
			}
			if _, want, _ := refObjective(zs, nil, f.seqs, 0, 1); !closeTo(res.Skipped[0].LM.Loss, want, tol(b, 1e-5)) {
				t.Errorf("LM loss without layer 0 %.9g, reference %.9g", res.Skipped[0].LM.Loss, want)
			}

			tf := teachers[fi]
			const alpha, tau = 0.7, 2.0
			wantLoss, wantCE, wantKL := refObjective(refLogits(f.ref, f.seqs), refLogits(tf.ref, f.seqs), f.seqs, alpha, tau)
			err = b.do(ctx, func() error {
				m, tm := b.models[f.id], b.models[tf.id]
				s := torch.NewScope()
				defer s.Free()
				tok, ids := flatTokens(f.seqs)
				out, err := b.scoreBatch(s, m, tm, tok, ids, len(f.seqs), famSeqLen, fwdOpts{}, objective{alpha: alpha, tau: tau, scaleT2: true}, false)
				if err != nil {
					return err
				}
				for _, c := range []struct {
					what      string
					got, want float64
				}{{"loss", out.loss, wantLoss}, {"CE", out.ce, wantCE}, {"KL", out.kl, wantKL}} {
					if !closeTo(c.got, c.want, tol(b, 1e-5)) {
						t.Errorf("distillation %s %.9g, reference %.9g", c.what, c.got, c.want)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFamilyGradients: autograd's gradients of the distillation
// objective (CE and KL from a teacher of the same family) with respect to
// parameters of every kind the family has — biases, q/k norms, post
// norms, the (tied) embedding — match central finite differences of the
// float64 reference.
func TestFamilyGradients(t *testing.T) {
	ctx := context.Background()
	b := newFamilyBackend(t, "fp32")
	students := families(t, b, 4)
	teachers := families(t, b, 5)
	const alpha, tau, eps = 0.5, 2.0, 1e-5
	for fi, f := range students {
		t.Run(f.name, func(t *testing.T) {
			tf := teachers[fi]
			zt := refLogits(tf.ref, f.seqs)
			rng := rand.New(rand.NewPCG(9, uint64(fi)))
			names := append(f.cfg.LayerTensors(1).All(), ir.NameEmbed, ir.NameFinalNorm)
			// Qwen2-MoE's layer 1 is dense: take a routed layer's tensors
			// (router, experts, shared expert and its gate) too.
			moe := hasMoE(&f.cfg)
			if moe && !f.cfg.Layers[1].MoE() {
				names = append(names, f.cfg.LayerTensors(0).All()...)
			}
			// The routers' load-balancing loss joins the objective of the
			// mixture-of-experts families.
			auxW := 0.0
			if moe {
				auxW = 0.3
			}
			if !f.cfg.Tied {
				names = append(names, ir.NameClassifier)
			}
			// Two elements of each tensor; embedding rows of tokens the
			// sequences use.
			type elem struct {
				name string
				i    int
			}
			var elems []elem
			for _, n := range names {
				for range 2 {
					i := rng.IntN(len(f.ref.W[n]))
					if n == ir.NameEmbed {
						i = f.seqs[0][rng.IntN(famSeqLen)]*f.cfg.Hidden + rng.IntN(f.cfg.Hidden)
					}
					elems = append(elems, elem{n, i})
				}
			}
			grads := map[string][]float64{}
			err := b.do(ctx, func() error {
				m, tm := b.models[f.id], b.models[tf.id]
				s := torch.NewScope()
				defer s.Free()
				var ws []torch.Tensor
				for _, n := range m.names {
					s.SetRequiresGrad(m.w[n], true)
					ws = append(ws, m.w[n])
				}
				defer func() {
					for _, w := range ws {
						s.SetRequiresGrad(w, false)
					}
					s.ZeroGrad(ws)
				}()
				tok, ids := flatTokens(f.seqs)
				x := s.To(s.FromInt64(tok, int64(len(f.seqs)), famSeqLen), b.dev)
				th, err := b.forward(s, tm, x, len(f.seqs), famSeqLen, fwdOpts{})
				if err != nil {
					return err
				}
				torch.SetGradEnabled(true)
				defer torch.SetGradEnabled(false)
				var o fwdOpts
				if moe {
					o.aux = &routerAux{s: s}
				}
				h, err := b.forward(s, m, x, len(f.seqs), famSeqLen, o)
				if err != nil {
					return err
				}
				in := lossIn{student: m, h: h, ids: ids, teacher: tm, th: th, obj: objective{alpha: alpha, tau: tau, scaleT2: true, routerAux: auxW}, grad: true, scale: 1}
				if moe {
					in.aux = o.aux.loss(s, b.dev)
				}
				out, err := b.loss(s, in)
				if err != nil {
					return err
				}
				if want := refAux(f.ref, f.seqs); moe && !closeTo(out.aux, want, tol(b, 1e-5)) {
					t.Errorf("router load-balancing loss %.9g, reference %.9g", out.aux, want)
				}
				for _, n := range names {
					grads[n] = s.Float64s(s.Grad(m.w[n]))
				}
				return s.Err()
			})
			if err != nil {
				t.Fatal(err)
			}
			loss := func(g *decoder64.Model) float64 {
				l, _, _ := refObjective(refLogits(g, f.seqs), zt, f.seqs, alpha, tau)
				if auxW > 0 {
					l += auxW * refAux(g, f.seqs)
				}
				return l
			}
			fd := make([]float64, len(elems))
			var scale float64
			for k, e := range elems {
				g := f.ref.Clone()
				w0 := g.W[e.name][e.i]
				g.W[e.name][e.i] = w0 + eps
				lp := loss(g)
				g.W[e.name][e.i] = w0 - eps
				fd[k] = (lp - loss(g)) / (2 * eps)
				scale = math.Max(scale, math.Abs(fd[k]))
			}
			for k, e := range elems {
				got := grads[e.name][e.i]
				if math.Abs(got-fd[k]) > tol(b, 1e-3)*(math.Abs(fd[k])+0.01*scale) {
					t.Errorf("d loss / d %s[%d] = %.7g, finite differences %.7g", e.name, e.i, got, fd[k])
				}
			}
		})
	}
}

// TestFamilyStats: the Minitron statistics and Block Influence of every
// family are the float64 reference's activations aggregated as
// core/backend documents.
func TestFamilyStats(t *testing.T) {
	ctx := context.Background()
	b := newFamilyBackend(t, "fp32")
	for _, f := range families(t, b, 6) {
		t.Run(f.name, func(t *testing.T) {
			got, err := b.Stats(ctx, api.StatsRequest{Model: f.id, Data: api.Sequences{Path: tokenFile(t, f.seqs)}, BatchSize: 2, Activations: true, BlockInfluence: true})
			if err != nil {
				t.Fatal(err)
			}
			want := refStats(f.ref, f.seqs)
			check := func(what string, g, w []float64) {
				t.Helper()
				if len(g) != len(w) {
					t.Fatalf("%s: %d values, want %d", what, len(g), len(w))
				}
				for i := range w {
					if !closeTo(g[i], w[i], tol(b, 1e-5)) {
						t.Errorf("%s[%d] = %.9g, reference %.9g", what, i, g[i], w[i])
					}
				}
			}
			for l := range f.cfg.Layers {
				check(fmt.Sprintf("MLP[%d]", l), got.MLP[l], want.MLP[l])
				check(fmt.Sprintf("HeadChannels[%d]", l), got.HeadChannels[l], want.HeadChannels[l])
				check(fmt.Sprintf("Heads[%d]", l), got.Heads[l], want.Heads[l])
			}
			for l, lc := range f.cfg.Layers {
				if !lc.MoE() {
					continue
				}
				for e := range lc.Experts {
					check(fmt.Sprintf("ExpertMLP[%d][%d]", l, e), got.ExpertMLP[l][e], want.ExpertMLP[l][e])
				}
				check(fmt.Sprintf("ExpertProb[%d]", l), got.ExpertProb[l], want.ExpertProb[l])
				check(fmt.Sprintf("ExpertOutput[%d]", l), got.ExpertOutput[l], want.ExpertOutput[l])
				check(fmt.Sprintf("SharedMLP[%d]", l), got.SharedMLP[l], want.SharedMLP[l])
				if !slices.Equal(got.ExpertTokens[l], want.ExpertTokens[l]) {
					t.Errorf("ExpertTokens[%d] = %v, reference %v", l, got.ExpertTokens[l], want.ExpertTokens[l])
				}
			}
			check("Hidden", got.Hidden, want.Hidden)
			check("BlockInfluence", got.BlockInfluence, want.BlockInfluence)
		})
	}
}

// refStats aggregates the reference's activations as api.StatsResult
// documents: per channel √Σ_sequences (mean_positions |a|)² (for an
// expert, the mean over the positions routed to it, over the sequences
// with any), router probabilities, weighted expert output norms and
// routed tokens summed over positions, heads as the
// norm of their channels, hidden as the sum over the block-input norms
// (the attention's and the MLP's input norms of every layer), Block
// Influence as 1 − mean cos(layer input, layer output).
func refStats(g *decoder64.Model, seqs [][]int) *api.StatsResult {
	cfg := &g.Config
	nl := len(cfg.Layers)
	mlp, head, n1, n2 := make([][]float64, nl), make([][]float64, nl), make([][]float64, nl), make([][]float64, nl)
	cos := make([]float64, nl)
	add := func(acc *[]float64, a [][]float64) {
		if len(a) == 0 {
			return // an expert no position of the sequence was routed to
		}
		if *acc == nil {
			*acc = make([]float64, len(a[0]))
		}
		for c := range *acc {
			var m float64
			for _, row := range a {
				m += math.Abs(row[c])
			}
			m /= float64(len(a))
			(*acc)[c] += m * m
		}
	}
	res := &api.StatsResult{Hidden: make([]float64, cfg.Hidden), BlockInfluence: make([]float64, nl)}
	if hasMoE(cfg) {
		res.ExpertMLP, res.ExpertProb, res.ExpertOutput, res.ExpertTokens, res.SharedMLP = make([][][]float64, nl), make([][]float64, nl), make([][]float64, nl), make([][]int, nl), make([][]float64, nl)
	}
	expert, shared := make([][][]float64, nl), make([][]float64, nl)
	tokens := 0
	for _, s := range seqs {
		acts := make([]decoder64.LayerActs, nl)
		g.Forward(s, nil, acts)
		for l, a := range acts {
			if lc := cfg.Layers[l]; lc.MoE() {
				if expert[l] == nil {
					expert[l] = make([][]float64, lc.Experts)
					res.ExpertProb[l], res.ExpertOutput[l], res.ExpertTokens[l] = make([]float64, lc.Experts), make([]float64, lc.Experts), make([]int, lc.Experts)
				}
				routed := make([][][]float64, lc.Experts)
				var sh [][]float64
				for _, r := range a.MoE {
					for e, p := range r.Probs {
						res.ExpertProb[l][e] += p
					}
					for i, e := range r.Chosen {
						routed[e] = append(routed[e], r.ExpertAct[e])
						res.ExpertTokens[l][e]++
						res.ExpertOutput[l][e] += math.Abs(r.Weights[i]) * math.Sqrt(decoder64.Dot(r.ExpertOut[e], r.ExpertOut[e]))
					}
					if r.SharedAct != nil {
						sh = append(sh, r.SharedAct)
					}
				}
				for e := range routed {
					add(&expert[l][e], routed[e])
				}
				add(&shared[l], sh)
			} else {
				add(&mlp[l], a.MLPAct)
			}
			add(&head[l], a.AttnOut)
			add(&n1[l], a.AttnNormOut)
			add(&n2[l], a.MLPNormOut)
			for p := range a.In {
				cos[l] += decoder64.Dot(a.In[p], a.Out[p]) / math.Sqrt(decoder64.Dot(a.In[p], a.In[p])*decoder64.Dot(a.Out[p], a.Out[p]))
			}
		}
		tokens += len(s)
	}
	sqrt := func(v []float64) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = math.Sqrt(x)
		}
		return out
	}
	for l, lc := range cfg.Layers {
		if lc.MoE() {
			res.MLP = append(res.MLP, nil)
			for e := range expert[l] {
				v := expert[l][e]
				if v == nil {
					v = make([]float64, lc.ExpertMLP) // never routed to
				}
				res.ExpertMLP[l] = append(res.ExpertMLP[l], sqrt(v))
			}
			if shared[l] != nil {
				res.SharedMLP[l] = sqrt(shared[l])
			}
		} else {
			res.MLP = append(res.MLP, sqrt(mlp[l]))
		}
		ch := sqrt(head[l])
		res.HeadChannels = append(res.HeadChannels, ch)
		heads := make([]float64, lc.Heads)
		for h := range heads {
			c := ch[h*lc.HeadDim : (h+1)*lc.HeadDim]
			heads[h] = math.Sqrt(decoder64.Dot(c, c))
		}
		res.Heads = append(res.Heads, heads)
		for c := range res.Hidden {
			res.Hidden[c] += math.Sqrt(n1[l][c]) + math.Sqrt(n2[l][c])
		}
		res.BlockInfluence[l] = 1 - cos[l]/float64(tokens)
	}
	return res
}

// TestFamilyGenerate: for every family, decoding against the KV cache
// (sliding windows and soft caps included) gives a full forward's logits
// at every length, and greedy generation is the float64 reference's
// argmax, token by token.
func TestFamilyGenerate(t *testing.T) {
	ctx := context.Background()
	b := newFamilyBackend(t, "fp32")
	for _, f := range families(t, b, 7) {
		t.Run(f.name, func(t *testing.T) {
			seq := int64s32(f.seqs[0])
			err := b.do(ctx, func() error {
				m := b.models[f.id]
				cache := newKVCache(len(m.cfg.Layers), 16)
				defer cache.free()
				for _, prompt := range []int{1, 3} {
					cache.free()
					for n := prompt; n <= len(seq); n++ {
						feed := seq[n-1 : n]
						if n == prompt {
							feed = seq[:n]
						}
						got, err := b.lastLogits(m, feed, cache)
						if err != nil {
							return err
						}
						want, err := b.lastLogits(m, seq[:n], nil)
						if err != nil {
							return err
						}
						for i := range want {
							if !closeTo(float64(got[i]), float64(want[i]), tol(b, 1e-5)) {
								t.Errorf("prompt %d, %d tokens: logit %d cached %g, full %g", prompt, n, i, got[i], want[i])
							}
						}
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}

			prompt := f.seqs[1][:3]
			res, err := b.Generate(ctx, api.GenerateRequest{Model: f.id, Prompts: [][]int{prompt}, MaxTokens: 10, StopToken: -1})
			if err != nil {
				t.Fatal(err)
			}
			toks := slices.Clone(prompt)
			for i, got := range res.Tokens[0] {
				z := f.ref.Forward(toks, nil, nil)
				last := z[len(z)-1]
				best, second := argmaxMargin(last)
				if last[best]-last[second] < 1e-4 {
					t.Logf("step %d: the reference's top two logits tie within 1e-4; stopping the comparison", i)
					break
				}
				if got != best {
					t.Fatalf("step %d: generated %d, reference argmax %d (after %v)", i, got, best, toks)
				}
				toks = append(toks, got)
			}
			if len(res.Tokens[0]) != 10 {
				t.Errorf("generated %d tokens, want 10", len(res.Tokens[0]))
			}
		})
	}
}

func int64s32(s []int) []int64 {
	out := make([]int64, len(s))
	for i, v := range s {
		out[i] = int64(v)
	}
	return out
}

// argmaxMargin returns the indices of the largest and second largest
// values.
func argmaxMargin(v []float64) (best, second int) {
	best, second = 0, -1
	for i := 1; i < len(v); i++ {
		switch {
		case v[i] > v[best]:
			best, second = i, best
		case second < 0 || v[i] > v[second]:
			second = i
		}
	}
	return best, second
}

// TestFamilyLoRA: for every family, a forward pass with LoRA adapters on
// every projection equals the float64 reference with W + (α/r)·B·A in
// place of each adapted W, and merging writes exactly those weights.
func TestFamilyLoRA(t *testing.T) {
	ctx := context.Background()
	b := newFamilyBackend(t, "fp32")
	roles := []string{ir.RoleQ, ir.RoleK, ir.RoleV, ir.RoleO, ir.RoleGate, ir.RoleUp, ir.RoleDown}
	for fi, f := range families(t, b, 8) {
		t.Run(f.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(10, uint64(fi)))
			merged := f.ref.Clone()
			var got [][][]float64
			err := b.do(ctx, func() error {
				m := b.models[f.id]
				set, err := b.newLoRA(m.cfg, api.ResolvedLoRA{Rank: 2, Alpha: 4, Roles: roles}, 1)
				if err != nil {
					return err
				}
				defer set.free()
				s := torch.NewScope()
				defer s.Free()
				// B starts at zero; give it values so that the adapters count.
				for _, k := range set.keys {
					shape := set.b[k].Shape()
					v := make([]float32, shape[0]*shape[1])
					for i := range v {
						v[i] = float32(rng.NormFloat64() * 0.3)
					}
					s.CopyInto(set.b[k], s.FromFloat32(v, shape...))
					a, bv := s.Float64s(set.a[k]), s.Float64s(set.b[k])
					w := merged.W[projName(m.cfg.LayerTensors(k.layer), k.role)]
					r := int(shape[1])
					in := len(a) / r
					for o := range int(shape[0]) {
						for j := range in {
							var d float64
							for q := range r {
								d += bv[o*r+q] * a[q*in+j]
							}
							w[o*in+j] += set.scale * d
						}
					}
				}
				tok, _ := flatTokens(f.seqs)
				n := len(f.seqs)
				h, err := b.forward(s, m, s.To(s.FromInt64(tok, int64(n), famSeqLen), b.dev), n, famSeqLen, fwdOpts{adapters: set})
				if err != nil {
					return err
				}
				z := s.Float64s(m.logits(s, h, m.weight(s, m.classifier(), torch.Float32), torch.Float32))
				V := m.cfg.Vocab
				for i := range n {
					var rows [][]float64
					for p := range famSeqLen {
						rows = append(rows, z[(i*famSeqLen+p)*V:(i*famSeqLen+p+1)*V])
					}
					got = append(got, rows)
				}
				if err := set.merge(m); err != nil {
					return err
				}
				for _, k := range set.keys {
					name := projName(m.cfg.LayerTensors(k.layer), k.role)
					w := s.Float64s(m.w[name])
					for i, want := range merged.W[name] {
						if !closeTo(w[i], want, tol(b, 1e-6)) {
							return fmt.Errorf("merged %s[%d] = %g, want %g", name, i, w[i], want)
						}
					}
				}
				return s.Err()
			})
			if err != nil {
				t.Fatal(err)
			}
			want := refLogits(merged, f.seqs)
			for i := range want {
				for p := range want[i] {
					for v, w := range want[i][p] {
						if !closeTo(got[i][p][v], w, tol(b, 2e-5)) {
							t.Fatalf("sequence %d position %d: logit %d with adapters %.7g, reference with merged weights %.7g", i, p, v, got[i][p][v], w)
						}
					}
				}
			}
		})
	}
}

// familiesDir holds one tiny checkpoint per family in its exact Hugging
// Face layout (Phi-3's fused projections, Gemma 2's norm names, bfloat16
// files).
const familiesDir = "../../../ir/testdata/families"

// TestFamilyFixtures: each family's checkpoint, loaded from its Hugging
// Face directory, gives the float64 reference's logits, and saving it
// writes back the tensors it read.
func TestFamilyFixtures(t *testing.T) {
	ctx := context.Background()
	b := newFamilyBackend(t, "fp32")
	for _, fam := range []string{"gemma2", "llama3", "mistral", "phi3", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe"} {
		t.Run(fam, func(t *testing.T) {
			dir := filepath.Join(familiesDir, fam)
			im, err := hf.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			ref, err := decoder64.Load(im)
			if err != nil {
				t.Fatal(err)
			}
			id, err := b.Load(ctx, api.LoadRequest{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(11, 0))
			seqs := make([][]int, 2)
			for i := range seqs {
				for range famSeqLen {
					seqs[i] = append(seqs[i], rng.IntN(im.Config.Vocab))
				}
			}
			got := backendLogits(t, b, id, seqs, nil)
			for i, s := range seqs {
				for p, row := range ref.Forward(s, nil, nil) {
					for v, w := range row {
						if !closeTo(got[i][p][v], w, tol(b, 2e-5)) {
							t.Fatalf("sequence %d position %d: logit %d %.7g, reference %.7g", i, p, v, got[i][p][v], w)
						}
					}
				}
			}

			out := filepath.Join(t.TempDir(), "saved")
			if err := b.Save(ctx, api.SaveRequest{Model: id, Dir: out}); err != nil {
				t.Fatal(err)
			}
			back, err := hf.Load(out)
			if err != nil {
				t.Fatal(err)
			}
			defer back.Close()
			if !slices.Equal(back.TensorNames(), im.TensorNames()) {
				t.Fatalf("saved tensors %v, loaded %v", back.TensorNames(), im.TensorNames())
			}
			for _, name := range im.TensorNames() {
				w, g := ref.W[name], weights(t, back, name)
				for i := range w {
					if g[i] != w[i] {
						t.Fatalf("saved %s[%d] = %g, loaded %g", name, i, g[i], w[i])
					}
				}
			}
		})
	}
}

// weights reads a tensor of m widened to float64.
func weights(t *testing.T, m *ir.Model, name string) []float64 {
	t.Helper()
	tn, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatalf("tensor %s: %v", name, err)
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
