package engine

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

func TestSchedule(t *testing.T) {
	s := Schedule{Peak: 1e-3, Min: 1e-4, Warmup: 5, Total: 15}
	// Warm-up is (step+1)/5 of the peak; halfway through the decay the
	// cosine term is 0.5·(1+cos(0.4π)) = 0.6545085.
	for _, c := range []struct {
		step int
		want float64
	}{
		{0, 2e-4}, {1, 4e-4}, {4, 1e-3}, {5, 1e-3},
		{9, 1e-4 + 0.9e-3*0.5*(1+math.Cos(0.4*math.Pi))},
		{14, 1.2202456766718092e-4}, {15, 1e-4}, {100, 1e-4},
	} {
		if got := s.At(c.step); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("At(%d) = %v, want %v", c.step, got, c.want)
		}
	}
	if got := (Schedule{Peak: 3}).At(7); got != 3 {
		t.Errorf("constant schedule gives %v", got)
	}
}

// TestAdamW runs three steps with fixed gradients 0.2, −0.1, 0.05 and
// compares with PyTorch's update rule evaluated in float64 (lr 0.1, betas
// 0.9/0.999, eps 1e-8, weight decay 0.01). Step 1 by hand: the weight
// 0.5 decays to 0.4995, m̂ = 0.2 and sqrt(v̂) = 0.2, so it moves by
// 0.1·0.2/0.2 to 0.3995; a norm weight 1 is not decayed and goes to 0.9.
func TestAdamW(t *testing.T) {
	p, err := NewParams(tinyConfig(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range p.Tensors() {
		for i := range tn.Data {
			tn.Data[i] = 0.5
			if len(tn.Shape) == 1 {
				tn.Data[i] = 1
			}
		}
	}
	e, err := New(p, Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	opt, err := NewAdamW(0.9, 0.999, 1e-8, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	wantMatrix := []float64{0.39950000499999977, 0.37246680271367577, 0.3380514236643632}
	wantNorm := []float64{0.9000000049999998, 0.8733663027186758, 0.8393233904720768}
	for step, g := range []float32{0.2, -0.1, 0.05} {
		for i := range e.G.Flat() {
			e.G.Flat()[i] = g
		}
		if err := opt.Step(e, 0.1, 1); err != nil {
			t.Fatal(err)
		}
		for _, tn := range p.Tensors() {
			want := wantMatrix[step]
			if len(tn.Shape) == 1 {
				want = wantNorm[step]
			}
			for _, v := range tn.Data {
				if math.Abs(float64(v)-want) > 1e-6 {
					t.Fatalf("step %d, %s: %v, want %v", step+1, tn.Name, v, want)
				}
			}
		}
	}
	if _, err := NewAdamW(1, 0.9, 1e-8, 0); err == nil {
		t.Error("beta1 = 1 accepted")
	}
}

// trainSetup builds a student trainer distilling from a teacher of another
// architecture, with CE mixed in, clipping, and two micro-batches per step.
func trainSetup(t *testing.T, threads int, attBudget int64) (*Trainer, []Batch) {
	t.Helper()
	cfg := tinyConfig(false)
	sp, err := NewParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sp.InitRandom(42)
	tcfg := tinyConfig(true)
	tcfg.Layers = append(tcfg.Layers, ir.LayerConfig{Heads: 2, KVHeads: 2, HeadDim: 4, MLP: 16})
	tp := randomParams(t, tcfg, 9, 0.3)
	student, err := New(sp, Options{Threads: threads, LossChunk: 5, AttentionBudget: attBudget})
	if err != nil {
		t.Fatal(err)
	}
	teacher, err := New(tp, Options{Threads: threads, Inference: true, AttentionBudget: attBudget})
	if err != nil {
		t.Fatal(err)
	}
	tc := DefaultTrainConfig()
	tc.Objective = Objective{KLWeight: 0.5, Temperature: 2, ScaleT2: true, TopK: 5}
	tc.Schedule = Schedule{Peak: 3e-2, Min: 3e-3, Warmup: 2, Total: 10}
	tr, err := NewTrainer(student, teacher, tc)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	var batches []Batch
	for i := 0; i < 2; i++ {
		toks := randomTokens(r, 3*8, cfg.Vocab)
		ids := append(append([]int32(nil), toks[1:]...), -1)
		batches = append(batches, Batch{Tokens: toks, B: 3, T: 8, Targets: Targets{IDs: ids}})
	}
	return tr, batches
}

// TestDeterminism: the same seed gives bitwise the same weights after
// several steps, at the same and at different thread counts, and whether
// the attention probabilities are kept or recomputed in the backward pass.
func TestDeterminism(t *testing.T) {
	run := func(threads int, attBudget int64) ([]float32, []StepStats) {
		tr, batches := trainSetup(t, threads, attBudget)
		var stats []StepStats
		for i := 0; i < 3; i++ {
			st, err := tr.Step(batches)
			if err != nil {
				t.Fatal(err)
			}
			stats = append(stats, st)
		}
		return tr.Student.P.Flat(), stats
	}
	a, sa := run(2, 0)
	b, sb := run(2, 0)
	c, _ := run(1, 0)
	d, sd := run(2, -1)
	e, _ := run(1, -1)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("element %d differs between identical runs: %v vs %v", i, a[i], b[i])
		}
		if math.Float32bits(a[i]) != math.Float32bits(c[i]) {
			t.Fatalf("element %d differs between 2 and 1 threads: %v vs %v", i, a[i], c[i])
		}
		if math.Float32bits(a[i]) != math.Float32bits(d[i]) || math.Float32bits(a[i]) != math.Float32bits(e[i]) {
			t.Fatalf("element %d differs when attention is recomputed: %v vs %v, %v", i, a[i], d[i], e[i])
		}
	}
	for i := range sa {
		if sa[i] != sb[i] || sa[i] != sd[i] {
			t.Fatalf("step %d stats differ: %+v vs %+v vs %+v (recomputed)", i, sa[i], sb[i], sd[i])
		}
	}
}

// TestClipping: with clipping on, the first AdamW step sees the gradients
// scaled by ClipNorm/‖g‖. A large epsilon makes the step depend on that
// scale: Δθ = −lr·c·g/(|c·g|+ε) (β₁ = 0, β₂ = 0 make m̂ = c·g, sqrt(v̂) = |c·g|).
func TestClipping(t *testing.T) {
	cfg := tinyConfig(true)
	p := randomParams(t, cfg, 5, 0.4)
	in := makeInputs(lossCases[0], 2, 4, cfg.Vocab, 3)
	ref, _ := New(p.Clone(), Options{})
	if err := ref.Forward(in.tokens, 2, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := ref.LossGrad(in.tg, Objective{}, nil, 1); err != nil {
		t.Fatal(err)
	}
	if err := ref.Backward(); err != nil {
		t.Fatal(err)
	}
	var ss float64
	for _, g := range ref.G.Flat() {
		ss += float64(g) * float64(g)
	}
	norm := math.Sqrt(ss)
	const clip, lr, eps = 0.05, 0.01, 0.1
	c := clip / (norm + 1e-6)
	if c >= 1 {
		t.Fatalf("gradient norm %v too small for the test", norm)
	}
	e, _ := New(p, Options{})
	tr, err := NewTrainer(e, nil, TrainConfig{Schedule: Schedule{Peak: lr}, Eps: eps, ClipNorm: clip})
	if err != nil {
		t.Fatal(err)
	}
	before := append([]float32(nil), p.Flat()...)
	st, err := tr.Step([]Batch{{Tokens: in.tokens, B: 2, T: 4, Targets: in.tg}})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(st.GradNorm-norm) > 1e-6*norm {
		t.Errorf("step reports gradient norm %v, want %v", st.GradNorm, norm)
	}
	for i, g := range ref.G.Flat() {
		cg := c * float64(g)
		want := float64(before[i]) - lr*cg/(math.Abs(cg)+eps)
		if math.Abs(float64(p.Flat()[i])-want) > 1e-6 {
			t.Fatalf("element %d: %v, want %v", i, p.Flat()[i], want)
		}
	}
}

// TestTrainingLearns: training from scratch on one repeated sequence
// drives its cross-entropy far below the uniform ln 11.
func TestTrainingLearns(t *testing.T) {
	p, err := NewParams(tinyConfig(true))
	if err != nil {
		t.Fatal(err)
	}
	p.InitRandom(1)
	e, _ := New(p, Options{})
	tc := DefaultTrainConfig()
	tc.Schedule = Schedule{Peak: 3e-2, Min: 3e-3, Warmup: 5, Total: 60}
	tr, err := NewTrainer(e, nil, tc)
	if err != nil {
		t.Fatal(err)
	}
	toks := []int32{1, 3, 5, 7, 9, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 2}
	ids := append(append([]int32(nil), toks[1:]...), -1)
	batch := []Batch{{Tokens: toks, B: 1, T: 16, Targets: Targets{IDs: ids}}}
	var first, last StepStats
	for i := 0; i < 60; i++ {
		st, err := tr.Step(batch)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = st
		}
		last = st
	}
	if math.Abs(first.CE-math.Log(11)) > 0.1 || last.CE > 0.2 {
		t.Errorf("cross-entropy went from %v to %v; want about ln 11 = %v, then below 0.2", first.CE, last.CE, math.Log(11))
	}
}
