package ir_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// handCouplings is Config.Couplings as it was written by hand before the
// graph derived it, kept as the golden reference for the derivation.
func handCouplings(c *ir.Config, axis ir.AxisKind, layer int) ([]ir.Coupling, error) {
	if axis != ir.AxisHidden && (layer < 0 || layer >= len(c.Layers)) {
		return nil, fmt.Errorf("layer %d out of range [0,%d)", layer, len(c.Layers))
	}
	name := ir.LayerName
	switch axis {
	case ir.AxisHidden:
		cs := []ir.Coupling{{ir.NameEmbed, 1, 1}}
		for i := range c.Layers {
			cs = append(cs,
				ir.Coupling{name(i, ir.RoleAttnNorm), 0, 1},
				ir.Coupling{name(i, ir.RoleQ), 1, 1},
				ir.Coupling{name(i, ir.RoleK), 1, 1},
				ir.Coupling{name(i, ir.RoleV), 1, 1},
				ir.Coupling{name(i, ir.RoleO), 0, 1},
				ir.Coupling{name(i, ir.RoleMLPNorm), 0, 1},
				ir.Coupling{name(i, ir.RoleGate), 1, 1},
				ir.Coupling{name(i, ir.RoleUp), 1, 1},
				ir.Coupling{name(i, ir.RoleDown), 0, 1},
			)
		}
		cs = append(cs, ir.Coupling{ir.NameFinalNorm, 0, 1})
		if !c.Tied {
			cs = append(cs, ir.Coupling{ir.NameClassifier, 1, 1})
		}
		return cs, nil
	case ir.AxisHeads:
		hd := c.Layers[layer].HeadDim
		return []ir.Coupling{{name(layer, ir.RoleQ), 0, hd}, {name(layer, ir.RoleO), 1, hd}}, nil
	case ir.AxisKVHeads:
		hd := c.Layers[layer].HeadDim
		return []ir.Coupling{{name(layer, ir.RoleK), 0, hd}, {name(layer, ir.RoleV), 0, hd}}, nil
	case ir.AxisMLP:
		return []ir.Coupling{{name(layer, ir.RoleGate), 0, 1}, {name(layer, ir.RoleUp), 0, 1}, {name(layer, ir.RoleDown), 1, 1}}, nil
	}
	return nil, fmt.Errorf("unknown axis %q", axis)
}

// TestCouplingsFromGraph: the couplings derived from the graph are the
// hand-written ones, in the same order, for every axis and layer (and a
// few out of range), and fail where they failed, with the same message.
func TestCouplingsFromGraph(t *testing.T) {
	configs := graphConfigs()
	oneLayer := stories260K()
	oneLayer.Layers = oneLayer.Layers[:1]
	configs["one layer"] = oneLayer
	noLayers := stories260K()
	noLayers.Layers = nil
	configs["no layers"] = noLayers
	axes := []ir.AxisKind{ir.AxisHidden, ir.AxisHeads, ir.AxisKVHeads, ir.AxisMLP, "depth"}
	for name, c := range configs {
		built, err := c.Axes()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, axis := range axes {
			for layer := -1; layer <= len(c.Layers); layer++ {
				got, err := c.Couplings(axis, layer)
				want, werr := handCouplings(&c, axis, layer)
				if fmt.Sprint(err) != fmt.Sprint(werr) {
					t.Errorf("%s: Couplings(%s, %d) error %v, want %v", name, axis, layer, err, werr)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: Couplings(%s, %d)\n got %v\nwant %v", name, axis, layer, got, want)
				}
				// One built graph answers every question the same way.
				bgot, berr := built.Couplings(axis, layer)
				if fmt.Sprint(berr) != fmt.Sprint(werr) || !reflect.DeepEqual(bgot, want) {
					t.Errorf("%s: Axes.Couplings(%s, %d) = %v, %v; want %v, %v", name, axis, layer, bgot, berr, want, werr)
				}
			}
		}
	}
}

func config70B() ir.Config {
	return ir.Config{Vocab: 128256, Hidden: 8192, Layers: ir.UniformLayers(80, ir.LayerConfig{Heads: 64, KVHeads: 8, HeadDim: 128, MLP: 28672}), NormEps: 1e-5, RopeTheta: 5e5}
}

// BenchmarkCouplings measures deriving one layer's couplings of an
// 80-layer (70B-shaped) config, which builds the whole graph each call.
func BenchmarkCouplings(b *testing.B) {
	c := config70B()
	for b.Loop() {
		if _, err := c.Couplings(ir.AxisMLP, 40); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAxesCouplings measures every couplings question a width prune
// of that config asks (hidden, then heads, KV heads and MLP of every
// layer), answered from one built graph.
func BenchmarkAxesCouplings(b *testing.B) {
	c := config70B()
	for b.Loop() {
		a, err := c.Axes()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.Couplings(ir.AxisHidden, 0); err != nil {
			b.Fatal(err)
		}
		for l := range c.Layers {
			for _, axis := range []ir.AxisKind{ir.AxisHeads, ir.AxisKVHeads, ir.AxisMLP} {
				if _, err := a.Couplings(axis, l); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}
