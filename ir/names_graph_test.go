package ir_test

import (
	"reflect"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// handExpectedShapes is Config.ExpectedShapes as it was written by hand
// before the graph derived it, kept as the golden reference.
func handExpectedShapes(c *ir.Config) ([]string, map[string][]int) {
	names := []string{ir.NameEmbed}
	shapes := map[string][]int{ir.NameEmbed: {c.Vocab, c.Hidden}}
	add := func(n string, s ...int) {
		names = append(names, n)
		shapes[n] = s
	}
	for i, l := range c.Layers {
		q, kv := l.Heads*l.HeadDim, l.KVHeads*l.HeadDim
		add(ir.LayerName(i, ir.RoleAttnNorm), c.Hidden)
		add(ir.LayerName(i, ir.RoleQ), q, c.Hidden)
		add(ir.LayerName(i, ir.RoleK), kv, c.Hidden)
		add(ir.LayerName(i, ir.RoleV), kv, c.Hidden)
		add(ir.LayerName(i, ir.RoleO), c.Hidden, q)
		add(ir.LayerName(i, ir.RoleMLPNorm), c.Hidden)
		add(ir.LayerName(i, ir.RoleGate), l.MLP, c.Hidden)
		add(ir.LayerName(i, ir.RoleUp), l.MLP, c.Hidden)
		add(ir.LayerName(i, ir.RoleDown), c.Hidden, l.MLP)
	}
	add(ir.NameFinalNorm, c.Hidden)
	if !c.Tied {
		add(ir.NameClassifier, c.Vocab, c.Hidden)
	}
	return names, shapes
}

// TestExpectedShapesFromGraph: the tensors derived from the graph are the
// hand-written ones, in the same order with the same shapes, on tied,
// untied, grouped-query, multi-head and per-layer-sized configs.
func TestExpectedShapesFromGraph(t *testing.T) {
	configs := graphConfigs()
	configs["small untied"] = smallConfig(false)
	configs["small tied"] = smallConfig(true)
	noLayers := stories260K()
	noLayers.Layers = nil
	configs["no layers"] = noLayers
	for name, c := range configs {
		names, shapes := c.ExpectedShapes()
		wantNames, wantShapes := handExpectedShapes(&c)
		if !reflect.DeepEqual(names, wantNames) {
			t.Errorf("%s: names\n got %v\nwant %v", name, names, wantNames)
		}
		if !reflect.DeepEqual(shapes, wantShapes) {
			t.Errorf("%s: shapes\n got %v\nwant %v", name, shapes, wantShapes)
		}
	}
}
