package ir_test

import (
	"testing"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// The MoE axes derived from the graph: experts cut the router's rows and
// the stacked experts' first dimension; each expert's width cuts gate and
// up rows and down columns within each expert; the shared expert's width
// cuts its own three matrices and never its scalar gate.
func TestMoEAxes(t *testing.T) {
	for name, c := range irtest.MoEFamilies() {
		axes, err := c.Axes()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		lt := c.LayerTensors(0)
		cuts := func(axis ir.AxisKind) map[string]int {
			cs, err := axes.Couplings(axis, 0)
			if err != nil {
				t.Fatalf("%s: %s: %v", name, axis, err)
			}
			out := map[string]int{}
			for _, c := range cs {
				out[c.Tensor] = c.Dim
			}
			return out
		}
		want := func(axis ir.AxisKind, w map[string]int) {
			t.Helper()
			got := cuts(axis)
			if len(got) != len(w) {
				t.Errorf("%s: %s cuts %v, want %v", name, axis, got, w)
			}
			for k, d := range w {
				if got[k] != d {
					t.Errorf("%s: %s cuts %v, want %v", name, axis, got, w)
				}
			}
		}
		want(ir.AxisExperts, map[string]int{lt.Router: 0, lt.ExpertGate: 0, lt.ExpertUp: 0, lt.ExpertDown: 0})
		want(ir.AxisExpertMLP, map[string]int{lt.ExpertGate: 1, lt.ExpertUp: 1, lt.ExpertDown: 2})
		if c.Layers[0].SharedMLP > 0 {
			want(ir.AxisSharedMLP, map[string]int{lt.SharedGate: 0, lt.SharedUp: 0, lt.SharedDown: 1})
		}
	}
}

// Active parameters leave out the experts a token is not routed to: by
// hand for the Mixtral config (3 layers of 4 experts, top 2).
func TestMoEActiveParams(t *testing.T) {
	c := irtest.MoEFamilies()["mixtral"]
	p := c.Params()
	perExpert := int64(3 * 10 * 16)
	if idle := p.Total - p.Active; idle != 3*2*perExpert {
		t.Errorf("total %d, active %d: %d idle, want %d", p.Total, p.Active, idle, 3*2*perExpert)
	}
	dense := c.Clone()
	for i := range dense.Layers {
		dense.Layers[i] = ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 6, MLP: 10}
	}
	// Top-2 of 4 experts of width 10 computes like a dense MLP of width
	// 20 plus the router (4 rows of 16 per layer).
	dense2 := dense.Clone()
	for i := range dense2.Layers {
		dense2.Layers[i].MLP = 20
	}
	if got, want := c.FLOPsPerToken(8), dense2.FLOPsPerToken(8)+2*3*4*16; got != want {
		t.Errorf("FLOPs per token %d, want %d", got, want)
	}
}

// Keeping experts and per-expert neurons slices the stacked tensors per
// expert and the router's rows, and refuses leaving fewer experts than
// each token is routed to.
func TestMoEKeep(t *testing.T) {
	for name, c := range irtest.MoEFamilies() {
		m := irtest.RandomModel(t, c, newRand(3))
		l := c.Layers[0]
		per := make([][]int, l.Experts)
		for e := range per {
			per[e] = []int{e, e + 1, l.ExpertMLP - 1} // each expert its own
		}
		out, err := m.Keep(ir.Selection{Experts: map[int][]int{0: {1, 3}}, ExpertMLP: map[int][][]int{0: per}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		lt := c.LayerTensors(0)
		src, _ := m.Tensors[lt.ExpertDown].Float32()
		got, _ := out.Tensors[lt.ExpertDown].Float32()
		// down [experts, hidden, expert_mlp]: kept expert 1 (now 0), its
		// neurons 1, 2, last.
		for r := 0; r < c.Hidden; r++ {
			for j, n := range per[1] {
				if g, w := got[r*3+j], src[1*c.Hidden*l.ExpertMLP+r*l.ExpertMLP+n]; g != w {
					t.Fatalf("%s: down[0][%d][%d] = %g, want expert 1's neuron %d = %g", name, r, j, g, n, w)
				}
			}
		}
		if _, err := m.Keep(ir.Selection{Experts: map[int][]int{0: {2}}}); err == nil {
			t.Errorf("%s: keeping 1 expert under top-2 routing accepted", name)
		}
	}
}
