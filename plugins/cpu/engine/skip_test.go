package engine

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// TestSkipMatchesDroppedLayer: bypassing a layer gives the logits and
// gradients of the model with that layer removed (ir's DropLayers), and no
// gradient for the bypassed layer.
func TestSkipMatchesDroppedLayer(t *testing.T) {
	cfg := tinyConfig(false)
	cfg.Layers = append(cfg.Layers, ir.LayerConfig{Heads: 2, KVHeads: 2, HeadDim: 4, MLP: 9})
	p := randomParams(t, cfg, 12, 0.4)
	m, err := p.ToIR(ir.F32)
	if err != nil {
		t.Fatal(err)
	}
	for _, skip := range [][]int{{1}, {0}, {0, 2}} {
		dm, err := m.DropLayers(skip)
		if err != nil {
			t.Fatal(err)
		}
		dp, err := FromIR(dm)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(2, 2))
		tokens := randomTokens(r, 2*7, cfg.Vocab)
		ids := randomTokens(r, 2*7, cfg.Vocab)
		run := func(e *Engine) []float32 {
			t.Helper()
			if err := e.Forward(tokens, 2, 7); err != nil {
				t.Fatal(err)
			}
			out := make([]float32, 14*cfg.Vocab)
			if err := e.Logits(0, 14, out); err != nil {
				t.Fatal(err)
			}
			if e.G != nil {
				if _, err := e.LossGrad(Targets{IDs: ids}, Objective{}, nil, 1); err != nil {
					t.Fatal(err)
				}
				if err := e.Backward(); err != nil {
					t.Fatal(err)
				}
			}
			return out
		}
		for _, inference := range []bool{true, false} {
			e, _ := New(p, Options{Threads: 2, Inference: inference})
			if err := e.SetSkip(skip); err != nil {
				t.Fatal(err)
			}
			ref, _ := New(dp, Options{Threads: 2, Inference: inference})
			got, want := run(e), run(ref)
			for i := range got {
				if math.Abs(float64(got[i]-want[i])) > 1e-6 {
					t.Fatalf("skip %v: logit %d is %v, the dropped model's %v", skip, i, got[i], want[i])
				}
			}
			if inference {
				continue
			}
			// Map the dropped model's layer names back onto the original's.
			kept := map[int]int{}
			for l, j := 0, 0; l < len(cfg.Layers); l++ {
				if !contains(skip, l) {
					kept[l] = j
					j++
				}
			}
			grads := map[string][]float32{}
			for i, tn := range dp.Tensors() {
				grads[tn.Name] = ref.G.Tensors()[i].Data
			}
			for i, tn := range p.Tensors() {
				g := e.G.Tensors()[i].Data
				var want []float32
				if l, role, ok := splitLayerName(tn.Name, len(cfg.Layers)); !ok {
					want = grads[tn.Name]
				} else if j, ok := kept[l]; ok {
					want = grads[ir.LayerName(j, role)]
				} else {
					want = make([]float32, len(g))
				}
				for k := range g {
					if math.Abs(float64(g[k]-want[k])) > 1e-5*(1+math.Abs(float64(want[k]))) {
						t.Fatalf("skip %v: %s[%d] gradient %v, dropped model's %v", skip, tn.Name, k, g[k], want[k])
					}
				}
			}
		}
	}
	e, _ := New(p, Options{})
	for _, bad := range [][]int{{3}, {-1}, {1, 1}} {
		if err := e.SetSkip(bad); err == nil {
			t.Errorf("SetSkip(%v) accepted", bad)
		}
	}
	if err := e.SetSkip([]int{2, 0}); err != nil || len(e.Skipped()) != 2 || e.Skipped()[0] != 0 {
		t.Errorf("Skipped() = %v, %v", e.Skipped(), err)
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func splitLayerName(name string, layers int) (int, string, bool) {
	for l := 0; l < layers; l++ {
		for _, role := range ir.LayerRoles {
			if ir.LayerName(l, role) == name {
				return l, role, true
			}
		}
	}
	return 0, "", false
}

// TestRowScores compares per-row NLL and argmax with the float64
// reference.
func TestRowScores(t *testing.T) {
	cfg := tinyConfig(true)
	p := randomParams(t, cfg, 13, 0.5)
	const b, tt = 3, 6
	r := rand.New(rand.NewPCG(9, 9))
	tokens := randomTokens(r, b*tt, cfg.Vocab)
	targets := randomTokens(r, b*tt, cfg.Vocab)
	for i := range targets {
		if i%3 == 1 {
			targets[i] = -1
		}
	}
	e, _ := New(p, Options{Threads: 2, Inference: true, LossChunk: 2})
	if err := e.Forward(tokens, b, tt); err != nil {
		t.Fatal(err)
	}
	nll := make([]float64, b*tt)
	arg := make([]int32, b*tt)
	if err := e.RowScores(targets, nll, arg); err != nil {
		t.Fatal(err)
	}
	for row, z := range newRef64(p).logits(tokens, b, tt) {
		if targets[row] < 0 {
			if nll[row] != 0 || arg[row] != -1 {
				t.Errorf("unscored row %d: nll %v, argmax %d", row, nll[row], arg[row])
			}
			continue
		}
		want := -logSoftmax64(z, 1)[targets[row]]
		if math.Abs(nll[row]-want) > 1e-5 {
			t.Errorf("row %d: nll %v, reference %v", row, nll[row], want)
		}
		best := 0
		for j, v := range z {
			if v > z[best] {
				best = j
			}
		}
		if int(arg[row]) != best {
			t.Errorf("row %d: argmax %d, reference %d", row, arg[row], best)
		}
	}
	bad := append([]int32(nil), targets...)
	bad[0] = int32(cfg.Vocab)
	if err := e.RowScores(bad, nll, arg); err == nil {
		t.Error("RowScores accepted a target outside the vocabulary")
	}
}
