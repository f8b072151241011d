package engine

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/llama2c"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

// sharedData finds shared/data/rel by walking up from the package
// directory, and skips the test when it is absent.
func sharedData(t testing.TB, rel string) string {
	t.Helper()
	return shareddata.Path(t, rel)
}

// compareWithReference checks the engine's logits at every position of
// every sequence against the reference's token-by-token forward.
func compareWithReference(t *testing.T, m *ir.Model, tokens []int32, b, tt int, tol float64) {
	t.Helper()
	p, err := FromIR(m)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(p, Options{Threads: 2, Inference: true, LossChunk: 7})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Forward(tokens, b, tt); err != nil {
		t.Fatal(err)
	}
	v := m.Config.Vocab
	got := make([]float32, b*tt*v)
	if err := e.Logits(0, b*tt, got); err != nil {
		t.Fatal(err)
	}
	ref, err := reference.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	for s := 0; s < b; s++ {
		sess := ref.NewSession(tt)
		for pos := 0; pos < tt; pos++ {
			want, err := sess.Forward(int(tokens[s*tt+pos]))
			if err != nil {
				t.Fatal(err)
			}
			row := got[(s*tt+pos)*v : (s*tt+pos+1)*v]
			for j, w := range want {
				d := math.Abs(float64(row[j] - w))
				worst = math.Max(worst, d)
				if d > tol*(1+math.Abs(float64(w))) {
					t.Fatalf("sequence %d position %d logit %d: engine %v, reference %v", s, pos, j, row[j], w)
				}
			}
		}
	}
	t.Logf("largest logit difference %g", worst)
}

func TestMatchesReferenceStories260K(t *testing.T) {
	m, err := llama2c.Load(sharedData(t, "models/stories260K/stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const b, tt = 2, 70 // more than one attention block
	r := rand.New(rand.NewPCG(3, 4))
	tokens := randomTokens(r, b*tt, m.Config.Vocab)
	tokens[0], tokens[tt] = 1, 1 // BOS
	compareWithReference(t, m, tokens, b, tt, 2e-4)
}

func TestMatchesReferenceTiny(t *testing.T) {
	for _, tied := range []bool{false, true} {
		p := randomParams(t, tinyConfig(tied), 11, 0.4)
		m, err := p.ToIR(ir.F32)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(5, 6))
		compareWithReference(t, m, randomTokens(r, 3*9, 11), 3, 9, 1e-5)
	}
}

func TestIRRoundTrip(t *testing.T) {
	p := randomParams(t, tinyConfig(false), 2, 0.1)
	for _, dt := range []ir.DType{ir.F32, ir.BF16} {
		m, err := p.ToIR(dt)
		if err != nil {
			t.Fatal(err)
		}
		q, err := FromIR(m)
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range p.Flat() {
			y := q.Flat()[i]
			if dt == ir.F32 && x != y || math.Abs(float64(x-y)) > math.Abs(float64(x))/128 {
				t.Fatalf("%v: element %d is %v after the round trip, was %v", dt, i, y, x)
			}
		}
	}
	if _, err := p.ToIR(ir.DType(9)); err == nil {
		t.Error("ToIR accepted an unknown dtype")
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	e, err := New(randomParams(t, tinyConfig(true), 1, 0.1), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tokens []int32
		b, t   int
		want   string
	}{
		{[]int32{1, 2, 11}, 1, 3, "outside vocabulary"},
		{[]int32{1, -1}, 1, 2, "outside vocabulary"},
		{[]int32{1, 2, 3}, 2, 2, "4 tokens"[1:]},
		{make([]int32, 17), 1, 17, "exceeds"},
		{nil, 0, 3, "positive"},
	} {
		err := e.Forward(c.tokens, c.b, c.t)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Forward(%v, %d, %d) = %v, want an error about %q", c.tokens, c.b, c.t, err, c.want)
		}
	}
	if err := e.Backward(); err == nil {
		t.Error("Backward before LossGrad succeeded")
	}
	if err := e.Forward([]int32{1, 2, 3, 4}, 2, 2); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tg   Targets
		obj  Objective
		want string
	}{
		{Targets{IDs: []int32{1, 2, 3}}, Objective{}, "3 target ids"},
		{Targets{IDs: []int32{1, 2, 3, 11}}, Objective{}, "outside vocabulary"},
		{Targets{}, Objective{}, "no target ids"},
		{Targets{IDs: []int32{1, 2, 3, 4}}, Objective{KLWeight: 0.5}, "no teacher"},
		{Targets{IDs: []int32{1, 2, 3, 4}}, Objective{KLWeight: 1.5}, "outside [0, 1]"},
		{Targets{IDs: []int32{1, 2, 3, 4}, Weights: []float32{1}}, Objective{}, "row weights"},
	} {
		if _, err := e.Loss(c.tg, c.obj, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Loss(%+v, %+v) = %v, want an error about %q", c.tg, c.obj, err, c.want)
		}
	}
}

// TestLossValues checks the loss against values computed by hand for a
// model whose logits are known: all-zero weights give uniform logits.
func TestLossValues(t *testing.T) {
	cfg := tinyConfig(false)
	p, err := NewParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(p, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Forward([]int32{3, 4}, 1, 2); err != nil {
		t.Fatal(err)
	}
	// Uniform student over 11 tokens: CE = ln 11. Teacher with logits
	// (ln 2, 0, 0, …) at τ=1: q = (2, 1, …, 1)/12; KL(q‖uniform) =
	// Σ q ln(11 q) = (2/12) ln(22/12) + (10/12) ln(11/12).
	teacher := &fixedLogits{v: 11, rows: [][]float64{make([]float64, 11), make([]float64, 11)}}
	teacher.rows[0][0], teacher.rows[1][0] = math.Ln2, math.Ln2
	wantKL := 2.0/12*math.Log(22.0/12) + 10.0/12*math.Log(11.0/12)
	res, err := e.Loss(Targets{IDs: []int32{5, -1}}, Objective{KLWeight: 0.25}, teacher)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 1 || math.Abs(res.CE-math.Log(11)) > 1e-6 || math.Abs(res.KL-wantKL) > 1e-6 ||
		math.Abs(res.Loss-(0.75*math.Log(11)+0.25*wantKL)) > 1e-6 {
		t.Errorf("got %+v, want CE %v KL %v on 1 row", res, math.Log(11), wantKL)
	}
	// Top-1 teacher: q is one-hot on token 0, KL = ln 11 − 0 = ln 11.
	res, err = e.Loss(Targets{}, Objective{KLWeight: 1, TopK: 1, Temperature: 3, ScaleT2: true}, teacher)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 2 || math.Abs(res.KL-math.Log(11)) > 1e-6 || math.Abs(res.Loss-9*math.Log(11)) > 1e-5 {
		t.Errorf("top-1: got %+v, want KL ln 11 and loss 9 ln 11", res)
	}
}

func TestTopK(t *testing.T) {
	h := topK{idx: make([]int32, 0, 3), val: make([]float32, 0, 3)}
	for i, v := range []float32{1, 5, 3, 5, 0, 7, 3, 5} {
		h.offer(int32(i), v)
	}
	got := map[int32]bool{}
	for _, id := range h.idx {
		got[id] = true
	}
	// 7 (id 5), then the two lowest ids of the value 5 (ids 1, 3).
	if len(got) != 3 || !got[5] || !got[1] || !got[3] {
		t.Errorf("kept ids %v, want 1, 3, 5", h.idx)
	}
}

// TestFrozenAndAccumulation: frozen tensors get no gradient and the others
// get exactly what an unfrozen run gives; two half-scaled LossGrad/Backward
// passes accumulate to one full pass.
func TestFrozenAndAccumulation(t *testing.T) {
	cfg := tinyConfig(false)
	p := randomParams(t, cfg, 3, 0.4)
	in := makeInputs(lossCases[0], 2, 6, cfg.Vocab, 4)
	run := func(e *Engine, scale float32, times int) {
		t.Helper()
		for i := 0; i < times; i++ {
			if err := e.Forward(in.tokens, 2, 6); err != nil {
				t.Fatal(err)
			}
			if _, err := e.LossGrad(in.tg, Objective{}, nil, scale); err != nil {
				t.Fatal(err)
			}
			if err := e.Backward(); err != nil {
				t.Fatal(err)
			}
		}
	}
	full, _ := New(p, Options{Threads: 2})
	run(full, 1, 1)
	frozenSet := map[string]bool{
		ir.NameEmbed:                     true,
		ir.LayerName(0, ir.RoleAttnNorm): true,
		ir.LayerName(0, ir.RoleQ):        true,
		ir.LayerName(0, ir.RoleK):        true,
		ir.LayerName(0, ir.RoleV):        true,
		ir.LayerName(0, ir.RoleO):        true,
		ir.LayerName(0, ir.RoleMLPNorm):  true,
		ir.LayerName(0, ir.RoleGate):     true,
		ir.LayerName(1, ir.RoleDown):     true,
		ir.LayerName(0, ir.RoleDown):     true,
		ir.LayerName(0, ir.RoleUp):       true,
		ir.LayerName(1, ir.RoleMLPNorm):  true,
		ir.NameClassifier:                true,
		ir.LayerName(1, ir.RoleAttnNorm): false,
		ir.LayerName(1, ir.RoleQ):        false,
		ir.NameFinalNorm:                 false,
	}
	frozen, _ := New(p, Options{Threads: 2, Frozen: func(n string) bool { return frozenSet[n] }})
	run(frozen, 0.5, 2)
	for i, tn := range full.G.Tensors() {
		g := frozen.G.Tensors()[i].Data
		for j, want := range tn.Data {
			if frozenSet[tn.Name] {
				want = 0
			}
			if d := math.Abs(float64(g[j] - want)); d > 1e-6*(1+math.Abs(float64(want))) {
				t.Fatalf("%s[%d]: gradient %v, want %v", tn.Name, j, g[j], want)
			}
		}
	}
	// A frozen tensor is left alone by the optimizer.
	before := append([]float32(nil), p.Flat()...)
	opt, _ := NewAdamW(0.9, 0.95, 1e-8, 0.1)
	if err := opt.Step(frozen, 0.01, 1); err != nil {
		t.Fatal(err)
	}
	for _, tn := range p.Tensors() {
		changed := false
		for j, v := range tn.Data {
			changed = changed || v != before[tn.Offset+j]
		}
		if changed == frozenSet[tn.Name] {
			t.Errorf("%s: changed=%v, frozen=%v", tn.Name, changed, frozenSet[tn.Name])
		}
	}
}

func TestLayerHook(t *testing.T) {
	cfg := tinyConfig(true)
	p := randomParams(t, cfg, 8, 0.4)
	calls := 0
	check := func(l int, a *Activations) error {
		calls++
		lc := cfg.Layers[l]
		n := 6
		if len(a.MLPAct) != n*lc.MLP || len(a.AttnOut) != n*lc.Heads*lc.HeadDim || len(a.Input) != n*cfg.Hidden {
			t.Errorf("layer %d: activation sizes %d, %d, %d", l, len(a.MLPAct), len(a.AttnOut), len(a.Input))
		}
		// The residual stream adds the MLP output to Mid: recompute it from
		// the hook's MLPAct and the down projection.
		for r := 0; r < n; r++ {
			for i := 0; i < cfg.Hidden; i++ {
				var s float64
				for j := 0; j < lc.MLP; j++ {
					s += float64(p.Layers[l].Down[i*lc.MLP+j]) * float64(a.MLPAct[r*lc.MLP+j])
				}
				want := float64(a.Mid[r*cfg.Hidden+i]) + s
				if math.Abs(want-float64(a.Output[r*cfg.Hidden+i])) > 1e-5 {
					t.Fatalf("layer %d row %d: output %v, Mid + down(MLPAct) %v", l, r, a.Output[r*cfg.Hidden+i], want)
				}
			}
		}
		return nil
	}
	for _, inference := range []bool{false, true} {
		calls = 0
		e, _ := New(p, Options{Inference: inference, OnLayer: check})
		if err := e.Forward([]int32{1, 2, 3, 4, 5, 6}, 2, 3); err != nil {
			t.Fatal(err)
		}
		if calls != 2 {
			t.Errorf("hook called %d times, want 2", calls)
		}
	}
}

// TestSumOfObjectives: LossGrad calls after one Forward add up, so CE at
// scale 0.3 plus KL at scale 0.7 is the mixed objective with KL weight 0.7.
func TestSumOfObjectives(t *testing.T) {
	cfg := tinyConfig(false)
	p := randomParams(t, cfg, 12, 0.4)
	in := makeInputs(lossCases[4], 2, 5, cfg.Vocab, 13)
	obj := Objective{KLWeight: 0.7, Temperature: 2, TopK: 4}
	mixed, _ := New(p, Options{Threads: 2})
	split, _ := New(p, Options{Threads: 2})
	for _, e := range []*Engine{mixed, split} {
		if err := e.Forward(in.tokens, 2, 5); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := mixed.LossGrad(in.tg, obj, in.teacher, 1); err != nil {
		t.Fatal(err)
	}
	ce, kl := obj, obj
	ce.KLWeight, kl.KLWeight = 0, 1
	if _, err := split.LossGrad(in.tg, ce, nil, 0.3); err != nil {
		t.Fatal(err)
	}
	if _, err := split.LossGrad(in.tg, kl, in.teacher, 0.7); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*Engine{mixed, split} {
		if err := e.Backward(); err != nil {
			t.Fatal(err)
		}
		if err := e.Backward(); err == nil {
			t.Error("a second Backward without LossGrad succeeded")
		}
	}
	for i, g := range mixed.G.Flat() {
		if h := split.G.Flat()[i]; math.Abs(float64(g-h)) > 1e-6*(1+math.Abs(float64(g))) {
			t.Fatalf("gradient element %d: mixed %v, summed %v", i, g, h)
		}
	}
}
