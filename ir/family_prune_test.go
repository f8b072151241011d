package ir_test

import (
	"math"
	"testing"

	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// Pruning a unit through the derived axes computes exactly what the
// unpruned model computes with that unit silenced, for every family: MLP
// neurons and attention heads are silenced by zeroing the down_proj and
// o_proj columns they feed, and a dropped layer by bypassing it. The
// float64 reference decoder (written from the published model
// definitions, sharing no code with ir) runs both; if an axis missed a
// tensor (a bias, a q/k norm, a post norm) or cut one it should not, the
// pruned model would not validate or would compute something else.
func TestFamilyPruningEqualsSilencing(t *testing.T) {
	tokens := []int{1, 5, 9, 2, 30, 7, 7, 11, 3, 36, 0, 4}
	for name, c := range irtest.Families() {
		t.Run(name, func(t *testing.T) {
			m := irtest.RandomModel(t, c, newRand(7))
			scaleWeights(t, m, 0.3) // N(0,1) weights saturate every soft cap
			full, err := decoder64.Load(m)
			if err != nil {
				t.Fatal(err)
			}
			l0, l1 := c.Layers[0], c.Layers[1]
			keepMLP := []int{0, 3, 4, 10, 19}
			keepHeads := []int{l1.GroupSize(), l1.GroupSize() + 1} // in KV group 1
			pruned, err := m.Keep(ir.Selection{MLP: map[int][]int{0: keepMLP}, Heads: map[int][]int{1: keepHeads}})
			if err != nil {
				t.Fatal(err)
			}
			silenced := full.Clone()
			zeroColumns(silenced.W[c.LayerTensors(0).Down], c.Hidden, l0.MLP, 1, keepMLP)
			zeroColumns(silenced.W[c.LayerTensors(1).O], c.Hidden, l1.Heads, l1.HeadDim, keepHeads)
			p, err := decoder64.Load(pruned)
			if err != nil {
				t.Fatal(err)
			}
			expectSame(t, "width", p.Forward(tokens, nil, nil), silenced.Forward(tokens, nil, nil))

			dropped, err := m.DropLayers([]int{1})
			if err != nil {
				t.Fatal(err)
			}
			d, err := decoder64.Load(dropped)
			if err != nil {
				t.Fatal(err)
			}
			expectSame(t, "depth", d.Forward(tokens, nil, nil), full.Forward(tokens, map[int]bool{1: true}, nil))
		})
	}
}

// scaleWeights multiplies every matrix of m by s.
func scaleWeights(t *testing.T, m *ir.Model, s float32) {
	t.Helper()
	for name, tn := range m.Tensors {
		if len(tn.Shape) != 2 {
			continue
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		for i := range v {
			v[i] *= s
		}
		m.Tensors[name] = ir.FromFloat32(ir.F32, tn.Shape, v)
	}
}

// zeroColumns zeroes, in a [rows, units·block] matrix, the columns of
// every unit not kept.
func zeroColumns(w []float64, rows, units, block int, keep []int) {
	kept := map[int]bool{}
	for _, u := range keep {
		kept[u] = true
	}
	cols := units * block
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			if !kept[c/block] {
				w[r*cols+c] = 0
			}
		}
	}
}

func expectSame(t *testing.T, what string, got, want [][]float64) {
	t.Helper()
	var worst float64
	for i := range want {
		for j := range want[i] {
			worst = math.Max(worst, math.Abs(got[i][j]-want[i][j]))
		}
	}
	if !(worst <= 1e-9) {
		t.Errorf("%s: pruned and silenced models differ by %.3g", what, worst)
	}
}
