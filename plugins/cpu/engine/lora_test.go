package engine

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// mergedRef64 is the float64 reference of p with every adapter merged,
// W + s·B·A computed in float64.
func mergedRef64(p *Params, l *LoRA) *ref64 {
	ref := newRef64(p)
	for _, a := range l.Adapters {
		name := ir.LayerName(a.Layer, a.Role)
		w := append([]float64(nil), ref.W[name]...)
		s := l.Alpha / float64(l.Rank)
		for o := 0; o < a.Out; o++ {
			for i := 0; i < a.In; i++ {
				var sum float64
				for k := 0; k < l.Rank; k++ {
					sum += float64(a.B[o*l.Rank+k]) * float64(a.A[k*a.In+i])
				}
				w[o*a.In+i] += s * sum
			}
		}
		ref.W[name] = w
	}
	return ref
}

func randomLoRA(t *testing.T, cfg ir.Config, targets []string, seed uint64) *LoRA {
	t.Helper()
	l, err := NewLoRA(cfg, LoRAConfig{Rank: 2, Alpha: 3, Targets: targets}, seed)
	if err != nil {
		t.Fatal(err)
	}
	// B starts at zero, which would hide A's gradient: randomize it.
	r := rand.New(rand.NewPCG(seed, 3))
	for _, a := range l.Adapters {
		for i := range a.B {
			a.B[i] = float32(0.5 * r.NormFloat64())
		}
	}
	return l
}

// TestLoRAGradients checks the adapters' gradients (and the trainable norm
// weights' when the base is only partly frozen) against central finite
// differences of the float64 reference with W + s·B·A merged.
func TestLoRAGradients(t *testing.T) {
	const b, tt = 2, 5
	for _, c := range []struct {
		name    string
		targets []string
		frozen  func(string) bool
		lc      int // lossCases index
	}{
		{"all-targets/frozen-base/ce", LoRARoles, func(string) bool { return true }, 0},
		{"qv-down/norms-train/mixed", []string{ir.RoleQ, ir.RoleV, ir.RoleDown}, func(n string) bool { return !strings.Contains(n, "norm") }, 4},
		{"o-gate-up/frozen-base/kl", []string{ir.RoleO, ir.RoleGate, ir.RoleUp}, func(string) bool { return true }, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := tinyConfig(false)
			p := randomParams(t, cfg, 21, 0.5)
			l := randomLoRA(t, cfg, c.targets, 5)
			in := makeInputs(lossCases[c.lc], b, tt, cfg.Vocab, 31)
			obj := lossCases[c.lc].obj
			e, err := New(p, Options{Threads: 2, LossChunk: 3, Frozen: c.frozen})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.SetLoRA(l); err != nil {
				t.Fatal(err)
			}
			if err := e.Forward(in.tokens, b, tt); err != nil {
				t.Fatal(err)
			}
			res, err := e.LossGrad(in.tg, obj, in.source(), 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Backward(); err != nil {
				t.Fatal(err)
			}
			var teacherRows [][]float64
			if in.teacher != nil {
				teacherRows = in.teacher.rows
			}
			lossOf := func() float64 { return loss64(mergedRef64(p, l).logits(in.tokens, b, tt), teacherRows, in.tg, obj) }
			if want := lossOf(); math.Abs(res.Loss-want) > 1e-5*(1+math.Abs(want)) {
				t.Fatalf("loss %v, float64 reference %v", res.Loss, want)
			}
			const h = 1e-4
			fd := func(x []float32, i int) float64 {
				orig := x[i]
				x[i] = orig + h
				lp := lossOf()
				x[i] = orig - h
				lm := lossOf()
				x[i] = orig
				return (lp - lm) / (float64(float32(orig+h)) - float64(float32(orig-h)))
			}
			check := func(name string, x, g []float32) {
				var maxErr, maxAbs float64
				for i := range x {
					want := fd(x, i)
					maxAbs = math.Max(maxAbs, math.Abs(want))
					maxErr = math.Max(maxErr, math.Abs(want-float64(g[i])))
				}
				if maxAbs == 0 {
					t.Errorf("%s: zero gradient everywhere", name)
				}
				if maxErr > 2e-3*maxAbs+1e-5 {
					t.Errorf("%s: gradient differs from finite differences by %g (largest |grad| %g)", name, maxErr, maxAbs)
				}
			}
			for _, a := range l.Adapters {
				name := ir.LayerName(a.Layer, a.Role)
				check(name+".lora_A", a.A, a.GA)
				check(name+".lora_B", a.B, a.GB)
			}
			for i, tn := range p.Tensors() {
				g := e.G.Tensors()[i].Data
				if c.frozen(tn.Name) {
					for _, v := range g {
						if v != 0 {
							t.Fatalf("frozen %s has gradient %v", tn.Name, v)
						}
					}
					continue
				}
				check(tn.Name, tn.Data, g)
			}
		})
	}
}

// TestLoRAMergeAndStep: a forward with adapters equals one over merged
// weights, and an optimizer step moves the adapters, not frozen weights.
func TestLoRAMergeAndStep(t *testing.T) {
	cfg := tinyConfig(true)
	p := randomParams(t, cfg, 4, 0.4)
	l := randomLoRA(t, cfg, []string{ir.RoleQ, ir.RoleUp, ir.RoleDown}, 8)
	tokens := randomTokens(rand.New(rand.NewPCG(1, 2)), 2*6, cfg.Vocab)
	logits := func(e *Engine) []float32 {
		t.Helper()
		if err := e.Forward(tokens, 2, 6); err != nil {
			t.Fatal(err)
		}
		out := make([]float32, 12*cfg.Vocab)
		if err := e.Logits(0, 12, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	e, _ := New(p, Options{Inference: true, Threads: 2})
	if err := e.SetLoRA(l); err != nil {
		t.Fatal(err)
	}
	adapted := logits(e)
	merged := p.Clone()
	if err := l.Merge(merged, 2); err != nil {
		t.Fatal(err)
	}
	m, _ := New(merged, Options{Inference: true})
	for i, want := range logits(m) {
		if math.Abs(float64(adapted[i]-want)) > 1e-5*(1+math.Abs(float64(want))) {
			t.Fatalf("logit %d: adapted %v, merged %v", i, adapted[i], want)
		}
	}
	// Detaching restores the base model.
	if err := e.SetLoRA(nil); err != nil {
		t.Fatal(err)
	}
	base, _ := New(p, Options{Inference: true})
	baseLogits := logits(base)
	for i, v := range logits(e) {
		if v != baseLogits[i] {
			t.Fatalf("logit %d after detaching: %v, base %v", i, v, baseLogits[i])
		}
	}

	tr, _ := New(p, Options{Threads: 2, Frozen: func(string) bool { return true }})
	if err := tr.SetLoRA(l); err != nil {
		t.Fatal(err)
	}
	before, beforeA := append([]float32(nil), p.Flat()...), append([]float32(nil), l.Flat()...)
	logits(tr)
	ids := append(append([]int32(nil), tokens[1:]...), -1)
	if _, err := tr.LossGrad(Targets{IDs: ids}, Objective{}, nil, 1); err != nil {
		t.Fatal(err)
	}
	if err := tr.Backward(); err != nil {
		t.Fatal(err)
	}
	if tr.GradNorm() == 0 {
		t.Fatal("zero gradient norm with adapters attached")
	}
	opt, _ := NewAdamW(0.9, 0.999, 1e-8, 0.1)
	if err := opt.Step(tr, 1e-2, 1); err != nil {
		t.Fatal(err)
	}
	if opt.M != nil {
		t.Error("moments allocated for a fully frozen base")
	}
	for i, v := range p.Flat() {
		if v != before[i] {
			t.Fatalf("frozen weight %d changed", i)
		}
	}
	moved := 0
	for i, v := range l.Flat() {
		if v != beforeA[i] {
			moved++
		}
	}
	if moved != len(l.Flat()) {
		t.Errorf("%d of %d adapter parameters moved", moved, len(l.Flat()))
	}
	tr.ZeroGrad()
	for _, g := range l.Grad() {
		if g != 0 {
			t.Fatal("ZeroGrad left adapter gradients")
		}
	}
}

func TestNewLoRA(t *testing.T) {
	cfg := tinyConfig(false)
	l, err := NewLoRA(cfg, LoRAConfig{Rank: 3, Alpha: 6, Targets: []string{ir.RoleDown, ir.RoleQ}}, 7)
	if err != nil {
		t.Fatal(err)
	}
	// Two targets in each of two layers, in layer then role order.
	want := []struct {
		layer   int
		role    string
		out, in int
	}{{0, ir.RoleQ, 16, 8}, {0, ir.RoleDown, 8, 12}, {1, ir.RoleQ, 12, 8}, {1, ir.RoleDown, 8, 5}}
	if len(l.Adapters) != len(want) {
		t.Fatalf("%d adapters, want %d", len(l.Adapters), len(want))
	}
	for i, w := range want {
		a := l.Adapters[i]
		if a.Layer != w.layer || a.Role != w.role || a.Out != w.out || a.In != w.in {
			t.Errorf("adapter %d is layer %d %s %d×%d, want %+v", i, a.Layer, a.Role, a.Out, a.In, w)
		}
		bound := 1 / math.Sqrt(float64(a.In))
		for _, v := range a.A {
			if math.Abs(float64(v)) > bound || v == 0 {
				t.Fatalf("A value %v outside ±%v", v, bound)
			}
		}
		for _, v := range a.B {
			if v != 0 {
				t.Fatal("B does not start at zero")
			}
		}
	}
	if l.Scale() != 2 {
		t.Errorf("scale %v, want 2", l.Scale())
	}
	again, _ := NewLoRA(cfg, LoRAConfig{Rank: 3, Alpha: 6, Targets: []string{ir.RoleDown, ir.RoleQ}}, 7)
	for i, v := range l.Flat() {
		if again.Flat()[i] != v {
			t.Fatal("the same seed gave different adapters")
		}
	}
	for _, bad := range []LoRAConfig{
		{Rank: 0, Alpha: 1, Targets: []string{ir.RoleQ}},
		{Rank: 2, Alpha: math.NaN(), Targets: []string{ir.RoleQ}},
		{Rank: 2, Alpha: 1},
		{Rank: 2, Alpha: 1, Targets: []string{"q"}},
		{Rank: 2, Alpha: 1, Targets: []string{ir.RoleQ, ir.RoleQ}},
	} {
		if _, err := NewLoRA(cfg, bad, 1); err == nil {
			t.Errorf("NewLoRA accepted %+v", bad)
		}
	}
	other := tinyConfig(false)
	other.Layers[1].MLP = 7
	e, _ := New(randomParams(t, other, 1, 0.1), Options{})
	if err := e.SetLoRA(l); err == nil {
		t.Error("SetLoRA accepted adapters of another shape")
	}
}
