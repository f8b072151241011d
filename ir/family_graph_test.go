package ir_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// The axes derived from every family's graph cut exactly what each
// family's extra tensors require: biases with their heads, Gemma's post
// norms with the hidden width, and never a per-head q/k norm (its
// head_dim entries are shared by every head).
func TestFamilyAxesCutFamilyTensors(t *testing.T) {
	for name, c := range irtest.Families() {
		axes, err := c.Axes()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cuts := func(axis ir.AxisKind, layer int) map[string][2]int {
			cs, err := axes.Couplings(axis, layer)
			if err != nil {
				t.Fatalf("%s: %s: %v", name, axis, err)
			}
			out := map[string][2]int{}
			for _, c := range cs {
				out[c.Tensor] = [2]int{c.Dim, c.Block}
			}
			return out
		}
		lt := c.LayerTensors(1)
		hd := c.Layers[1].HeadDim
		heads, kv, hidden, mlp := cuts(ir.AxisHeads, 1), cuts(ir.AxisKVHeads, 1), cuts(ir.AxisHidden, -1), cuts(ir.AxisMLP, 1)
		want := func(what string, got map[string][2]int, tensor string, dim, block int) {
			t.Helper()
			if g, ok := got[tensor]; !ok || g != [2]int{dim, block} {
				t.Errorf("%s: %s axis: %s cut %v (present %v), want dim %d block %d", name, what, tensor, g, ok, dim, block)
			}
		}
		want("heads", heads, lt.Q, 0, hd)
		want("heads", heads, lt.O, 1, hd)
		want("kv_heads", kv, lt.K, 0, hd)
		want("kv_heads", kv, lt.V, 0, hd)
		want("mlp", mlp, lt.Down, 1, 1)
		want("hidden", hidden, lt.MLPNorm, 0, 1)
		if c.AttnBias {
			want("heads", heads, lt.QBias, 0, hd)
			want("kv_heads", kv, lt.KBias, 0, hd)
			want("kv_heads", kv, lt.VBias, 0, hd)
		}
		if c.PostNorms {
			want("hidden", hidden, lt.AttnPostNorm, 0, 1)
			want("hidden", hidden, lt.MLPPostNorm, 0, 1)
		}
		if c.QKNorm {
			for _, m := range []map[string][2]int{heads, kv, hidden, mlp} {
				if _, ok := m[lt.QNorm]; ok {
					t.Errorf("%s: an axis cuts the per-head q norm", name)
				}
			}
		}
		if len(heads) != 2+boolInt(c.AttnBias) || len(kv) != 2+2*boolInt(c.AttnBias) {
			t.Errorf("%s: heads cut %v, kv_heads cut %v", name, heads, kv)
		}
		// Every parameter of the layer is a tensor the names list, in the
		// graph's order.
		names, _ := c.ExpectedShapes()
		var layer1 []string
		for _, n := range names {
			if slices.Contains(lt.All(), n) {
				layer1 = append(layer1, n)
			}
		}
		if !slices.Equal(layer1, lt.All()) {
			t.Errorf("%s: layer tensors in graph order %v, LayerTensors.All %v", name, layer1, lt.All())
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Pruning every axis of every family keeps a model that validates, with
// the family's extra tensors cut to the kept units.
func TestFamilyKeepAndDrop(t *testing.T) {
	for name, c := range irtest.Families() {
		m := irtest.RandomModel(t, c, newRand(1))
		l := c.Layers[0]
		out, err := m.Keep(ir.Selection{
			Hidden: []int{0, 2, 3, 5, 7, 8, 11, 15},
			MLP:    map[int][]int{0: {1, 4, 19}},
			Heads:  map[int][]int{0: headsOfGroups(l, 0)},
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out.Config.Hidden != 8 || out.Config.Layers[0].KVHeads != 1 || out.Config.Layers[0].MLP != 3 {
			t.Errorf("%s: pruned config %+v", name, out.Config)
		}
		if c.AttnBias {
			b, _ := out.Tensor(out.Config.LayerTensors(0).QBias)
			if b.Shape[0] != out.Config.Layers[0].Heads*l.HeadDim {
				t.Errorf("%s: q bias %v", name, b.Shape)
			}
		}
		d, err := out.DropLayers([]int{1})
		if err != nil {
			t.Fatalf("%s: drop: %v", name, err)
		}
		if len(d.Config.Layers) != 2 || d.Config.Layers[1].Window != c.Layers[2].Window {
			t.Errorf("%s: after dropping layer 1: %+v", name, d.Config.Layers)
		}
	}
}

// headsOfGroups lists the query heads of the first n+1 KV groups.
func headsOfGroups(l ir.LayerConfig, g int) []int {
	var out []int
	for h := 0; h < (g+1)*l.GroupSize(); h++ {
		out = append(out, h)
	}
	return out
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 11)) }
