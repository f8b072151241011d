package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// tinyConfig has layers of different shapes: GQA 4/2 with head_dim 4 and
// a second layer with 2 heads on 1 KV head of head_dim 6.
func tinyConfig(tied bool) ir.Config {
	return ir.Config{
		Arch: "llama", Vocab: 11, Hidden: 8,
		Layers: []ir.LayerConfig{
			{Heads: 4, KVHeads: 2, HeadDim: 4, MLP: 12},
			{Heads: 2, KVHeads: 1, HeadDim: 6, MLP: 5},
		},
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 16, Tied: tied, BOS: 1, EOS: 2,
	}
}

// randomParams draws weights large enough that every nonlinearity matters.
func randomParams(t testing.TB, cfg ir.Config, seed uint64, std float64) *Params {
	t.Helper()
	p, err := NewParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 7))
	for _, tn := range p.Tensors() {
		for i := range tn.Data {
			if len(tn.Shape) == 1 {
				tn.Data[i] = float32(1 + 0.3*r.NormFloat64())
			} else {
				tn.Data[i] = float32(std * r.NormFloat64())
			}
		}
	}
	return p
}

func randomTokens(r *rand.Rand, n, vocab int) []int32 {
	s := make([]int32, n)
	for i := range s {
		s[i] = int32(r.IntN(vocab))
	}
	return s
}

// fixedLogits is a LogitSource over precomputed rows.
type fixedLogits struct {
	v    int
	rows [][]float64
}

func (f *fixedLogits) Vocab() int { return f.v }

func (f *fixedLogits) Logits(r0, r1 int, dst []float32) error {
	for r := r0; r < r1; r++ {
		for j, x := range f.rows[r] {
			dst[(r-r0)*f.v+j] = float32(x)
		}
	}
	return nil
}

func (f *fixedLogits) Forward([]int32, int, int) error { return nil }

type lossCase struct {
	name    string
	full    bool // check every element, not a sample
	obj     Objective
	ids     bool
	weights bool
	teacher bool
}

var lossCases = []lossCase{
	{name: "ce", ids: true, full: true},
	{name: "masked-ce", ids: true, weights: true},
	{name: "kl-T2-scaled", obj: Objective{KLWeight: 1, Temperature: 2, ScaleT2: true}, teacher: true},
	{name: "kl-top3", obj: Objective{KLWeight: 1, Temperature: 1.5, TopK: 3}, teacher: true},
	{name: "mixed-top4-T2", full: true, obj: Objective{KLWeight: 0.3, Temperature: 2, TopK: 4}, ids: true, weights: true, teacher: true},
	{name: "mixed-T1", obj: Objective{KLWeight: 0.6}, ids: true, teacher: true},
}

type lossInputs struct {
	tokens  []int32
	tg      Targets
	teacher *fixedLogits
}

func makeInputs(c lossCase, b, t, vocab int, seed uint64) lossInputs {
	r := rand.New(rand.NewPCG(seed, 99))
	in := lossInputs{tokens: randomTokens(r, b*t, vocab)}
	n := b * t
	if c.ids {
		in.tg.IDs = randomTokens(r, n, vocab)
		in.tg.IDs[t-1] = -1 // last position of the first sequence unscored
	}
	if c.weights {
		in.tg.Weights = make([]float32, n)
		for i := range in.tg.Weights {
			in.tg.Weights[i] = []float32{0, 1, 0.5, 2}[i%4]
		}
	}
	if c.teacher {
		in.teacher = &fixedLogits{v: vocab}
		for i := 0; i < n; i++ {
			row := make([]float64, vocab)
			for j := range row {
				row[j] = 2 * r.NormFloat64()
			}
			in.teacher.rows = append(in.teacher.rows, row)
		}
	}
	return in
}

func (in lossInputs) source() LogitSource {
	if in.teacher == nil {
		return nil
	}
	return in.teacher
}

// TestGradients checks every parameter's gradient against central finite
// differences of the float64 reference, for each loss.
func TestGradients(t *testing.T) {
	const b, tt = 2, 5
	for _, tied := range []bool{false, true} {
		for ci, c := range lossCases {
			t.Run(fmt.Sprintf("tied=%v/%s", tied, c.name), func(t *testing.T) {
				cfg := tinyConfig(tied)
				p := randomParams(t, cfg, uint64(ci+1), 0.5)
				in := makeInputs(c, b, tt, cfg.Vocab, uint64(ci+10))
				e, err := New(p, Options{Threads: 2, LossChunk: 3})
				if err != nil {
					t.Fatal(err)
				}
				if err := e.Forward(in.tokens, b, tt); err != nil {
					t.Fatal(err)
				}
				res, err := e.LossGrad(in.tg, c.obj, in.source(), 1)
				if err != nil {
					t.Fatal(err)
				}
				if err := e.Backward(); err != nil {
					t.Fatal(err)
				}
				ref := newRef64(p)
				var teacherRows [][]float64
				if in.teacher != nil {
					teacherRows = in.teacher.rows
				}
				want := loss64(ref.logits(in.tokens, b, tt), teacherRows, in.tg, c.obj)
				if math.Abs(res.Loss-want) > 1e-5*(1+math.Abs(want)) {
					t.Fatalf("loss %v, float64 reference %v", res.Loss, want)
				}
				// Every element for one loss per tying, a sample for the rest,
				// to keep the test fast.
				sample := 0
				if !c.full || tied != (ci == 0) {
					sample = 5
				}
				checkFiniteDiff(t, e, ref, in, c.obj, b, tt, sample)
			})
		}
	}
}

// checkFiniteDiff compares all elements of every gradient tensor, or
// sample of them (chosen at random) when sample > 0.
func checkFiniteDiff(t *testing.T, e *Engine, ref *ref64, in lossInputs, obj Objective, b, tt, sample int) {
	t.Helper()
	var teacherRows [][]float64
	if in.teacher != nil {
		teacherRows = in.teacher.rows
	}
	const h = 1e-5
	for ti, tn := range e.P.Tensors() {
		w := ref.W[tn.Name]
		g := e.G.Tensors()[ti].Data
		var maxErr, maxAbs float64
		worst := 0
		idx := make([]int, len(w))
		for i := range idx {
			idx[i] = i
		}
		if sample > 0 && sample < len(w) {
			r := rand.New(rand.NewPCG(uint64(ti), 5))
			r.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
			idx = idx[:sample]
		}
		for _, i := range idx {
			orig := w[i]
			w[i] = orig + h
			lp := loss64(ref.logits(in.tokens, b, tt), teacherRows, in.tg, obj)
			w[i] = orig - h
			lm := loss64(ref.logits(in.tokens, b, tt), teacherRows, in.tg, obj)
			w[i] = orig
			fd := (lp - lm) / (2 * h)
			maxAbs = math.Max(maxAbs, math.Abs(fd))
			if d := math.Abs(fd - float64(g[i])); d > maxErr {
				maxErr, worst = d, i
			}
		}
		if maxAbs == 0 && maxErr == 0 {
			continue
		}
		if maxErr > 2e-4*maxAbs+1e-6 {
			t.Errorf("%s: gradient differs from finite differences by %g at element %d (largest |grad| %g)", tn.Name, maxErr, worst, maxAbs)
		}
	}
}
