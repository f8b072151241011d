package graph

import "fmt"

// Cut is one parameter dimension an axis runs through: unit u of the axis
// owns entries [u·Block, (u+1)·Block) of dimension Dim of tensor Tensor.
type Cut struct {
	Tensor string
	Dim    int
	Block  int
}

// Axis is a prunable dimension identity: the parameter dimensions that
// carry it must be cut together, or the graph no longer type-checks.
type Axis struct {
	// Name is the dimension's name ("hidden", "heads", "kv_heads", "mlp").
	Name string
	// Layer is the one decoder layer whose ops the identity touches, or
	// -1 when it runs through several (hidden runs through all).
	Layer int
	// Units is the number of units (channels, heads, neurons).
	Units int
	// Cuts lists the parameter dimensions in parameter order.
	Cuts []Cut
	// GroupedBy is the ID of the axis whose units group this one's (a
	// layer's query heads are grouped by its KV heads), "" if none.
	GroupedBy string
	// Within is the ID of the axis whose every unit cuts this one on its
	// own (each expert keeps its own expert_mlp neurons, the same number
	// in all), "" if none.
	Within string
}

// ID names the axis: "hidden", or "layers.3.heads" for a per-layer one.
func (a Axis) ID() string {
	if a.Layer < 0 {
		return a.Name
	}
	return fmt.Sprintf("layers.%d.%s", a.Layer, a.Name)
}

// axes collects, for every identity that no op pins, the parameter
// dimensions that carry it: whole dimensions, and the units of a
// units×block dimension. Axes come in order of first appearance.
func (b *Builder) axes() []Axis {
	// The layer of an identity is derived from the ops that created its
	// symbols, not declared.
	layers := map[*Sym]int{}
	for _, s := range b.syms {
		r := s.find()
		if l, ok := layers[r]; !ok {
			layers[r] = s.layer
		} else if l != s.layer {
			layers[r] = -1
		}
	}
	index := map[*Sym]int{}
	var out []Axis
	for _, p := range b.g.Params {
		for i, d := range p.Shape {
			r := d.Units.find()
			if r.pin != "" {
				continue
			}
			k, ok := index[r]
			if !ok {
				k = len(out)
				index[r] = k
				out = append(out, Axis{Name: r.Name, Layer: layers[r], Units: r.Size})
			}
			out[k].Cuts = append(out[k].Cuts, Cut{Tensor: p.Name, Dim: i, Block: d.BlockSize()})
		}
	}
	for _, g := range b.groups {
		q, okq := index[g[0].find()]
		kv, okkv := index[g[1].find()]
		if okq && okkv {
			out[q].GroupedBy = out[kv].ID()
		}
	}
	for _, w := range b.within {
		inner, okI := index[w[0].find()]
		outer, okO := index[w[1].find()]
		if okI && okO {
			out[inner].Within = out[outer].ID()
		}
	}
	return out
}
