package ir_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/graph"
)

// graphConfigs are Llama-layout configs covering tied and untied
// classifiers, grouped-query attention and per-layer sizes (a pruned model).
func graphConfigs() map[string]ir.Config {
	nonUniform := stories260K()
	nonUniform.Layers[1] = ir.LayerConfig{Heads: 4, KVHeads: 1, HeadDim: 16, MLP: 7}
	nonUniform.Layers[3].MLP = 1
	untied := nonUniform.Clone()
	untied.Tied = false
	mha := ir.Config{Arch: "mistral", Vocab: 13, Hidden: 12, Layers: ir.UniformLayers(3, ir.LayerConfig{Heads: 3, KVHeads: 3, HeadDim: 6, MLP: 10}), NormEps: 1e-5, RopeTheta: 1e4,
		RopeScaling: &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 64}}
	return map[string]ir.Config{"stories260K": stories260K(), "non-uniform": nonUniform, "untied": untied, "mha": mha}
}

// The graph's parameters are exactly the tensors ExpectedShapes lists, in
// the same order, and the graph counts as many parameters as Params.
func TestGraphParamsMatchExpectedShapes(t *testing.T) {
	for name, c := range graphConfigs() {
		g, err := c.Graph()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		names, shapes := c.ExpectedShapes()
		var got []string
		for _, p := range g.Params {
			got = append(got, p.Name)
			if !slices.Equal(p.Shape.Sizes(), shapes[p.Name]) {
				t.Errorf("%s: %s has shape %v in the graph, %v expected", name, p.Name, p.Shape.Sizes(), shapes[p.Name])
			}
		}
		if !slices.Equal(got, names) {
			t.Errorf("%s: graph parameters\n%v\nexpected tensors\n%v", name, got, names)
		}
		if g.ParamCount() != c.Params().Total {
			t.Errorf("%s: graph counts %d parameters, Params %d", name, g.ParamCount(), c.Params().Total)
		}
	}
}

// The Llama graph carries the config's options on its ops.
func TestGraphOptions(t *testing.T) {
	c := graphConfigs()["mha"]
	g, err := c.Graph()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[graph.Kind]int{}
	for _, op := range g.Ops {
		kinds[op.Kind]++
		switch a := op.Attrs.(type) {
		case graph.RoPEAttrs:
			want := graph.RoPEAttrs{Theta: 1e4, Scaling: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 64}
			if a != want {
				t.Errorf("rope attrs %+v, want %+v", a, want)
			}
		case graph.NormAttrs:
			if a != (graph.NormAttrs{Eps: 1e-5}) {
				t.Errorf("norm attrs %+v", a)
			}
		case graph.GLUAttrs:
			if a.Act != graph.SiLU {
				t.Errorf("activation %s", a.Act)
			}
		case graph.LMHeadAttrs:
			if a.Tied != c.Tied {
				t.Errorf("lm head tied=%v, config %v", a.Tied, c.Tied)
			}
		}
	}
	n := len(c.Layers)
	want := map[graph.Kind]int{graph.KindEmbedding: 1, graph.KindRMSNorm: 2*n + 1, graph.KindLinear: 7 * n, graph.KindRoPE: 2 * n,
		graph.KindAttention: n, graph.KindGLU: n, graph.KindAdd: 2 * n, graph.KindLMHead: 1}
	if !maps.Equal(kinds, want) {
		t.Errorf("op kinds %v, want %v", kinds, want)
	}
}
