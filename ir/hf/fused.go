package hf

import (
	"fmt"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/safetensors"
)

// Phi-3 stores each layer's q, k and v projections as one matrix, and its
// gate and up projections as another, stacked by rows in that order
// (modeling_phi3: qkv[..., :q], [q:q+kv], [q+kv:]; gate_up.chunk(2)).
// whittle's canonical names are the unfused Llama ones.
const (
	roleQKV    = "self_attn.qkv_proj"
	roleGateUp = "mlp.gate_up_proj"
)

// fusedGroup is one fused tensor of a layer and the canonical tensors it
// holds, with their row counts, in row order.
type fusedGroup struct {
	name  string
	parts []string
	rows  []int
}

// fusedGroups lists the fused tensors of cfg's family; none for families
// that store their projections apart.
func fusedGroups(cfg *ir.Config) []fusedGroup {
	if cfg.Arch != "phi3" {
		return nil
	}
	var out []fusedGroup
	for i, l := range cfg.Layers {
		lt := cfg.LayerTensors(i)
		q, kv := l.Heads*l.HeadDim, l.KVHeads*l.HeadDim
		out = append(out,
			fusedGroup{ir.LayerName(i, roleQKV), []string{lt.Q, lt.K, lt.V}, []int{q, kv, kv}},
			fusedGroup{ir.LayerName(i, roleGateUp), []string{lt.Gate, lt.Up}, []int{l.MLP, l.MLP}})
	}
	return out
}

// splitFused replaces each fused tensor by its parts. A part is a view of
// the fused tensor's rows: row blocks of a row-major matrix are contiguous,
// so a part's bytes are a sub-slice of the fused tensor's (of the memory
// map, for a loaded file) and nothing is copied or read before use.
func splitFused(m *ir.Model) error {
	for _, g := range fusedGroups(&m.Config) {
		fused, ok := m.Tensors[g.name]
		if !ok {
			return fmt.Errorf("missing tensor %s", g.name)
		}
		total := 0
		for _, r := range g.rows {
			total += r
		}
		if len(fused.Shape) != 2 || fused.Shape[0] != total || fused.Shape[1] != m.Config.Hidden {
			return fmt.Errorf("tensor %s has shape %v, want [%d %d] (rows %v for %v)", g.name, fused.Shape, total, m.Config.Hidden, g.rows, g.parts)
		}
		rowBytes := fused.Shape[1] * fused.DType.Size()
		off := 0
		for j, part := range g.parts {
			if _, dup := m.Tensors[part]; dup {
				return fmt.Errorf("tensor %s is stored both alone and in %s", part, g.name)
			}
			begin, end := off*rowBytes, (off+g.rows[j])*rowBytes
			m.Tensors[part] = ir.LazyTensor(fused.DType, []int{g.rows[j], fused.Shape[1]}, func() ([]byte, error) {
				raw, err := fused.Bytes()
				if err != nil {
					return nil, fmt.Errorf("reading %s: %w", g.name, err)
				}
				return raw[begin:end:end], nil
			})
			off += g.rows[j]
		}
		delete(m.Tensors, g.name)
	}
	return nil
}

// fuseSources replaces, in a list of tensors to write, each fused group's
// parts by the fused tensor, at the place of its first part. The fused
// bytes are built (copied) when the writer asks for them.
func fuseSources(cfg *ir.Config, srcs []safetensors.Source) ([]safetensors.Source, error) {
	groups := fusedGroups(cfg)
	if len(groups) == 0 {
		return srcs, nil
	}
	index := make(map[string]int, len(srcs))
	for i, s := range srcs {
		index[s.Name] = i
	}
	drop := map[string]bool{}
	for _, g := range groups {
		parts := make([]safetensors.Source, len(g.parts))
		for j, name := range g.parts {
			i, ok := index[name]
			if !ok {
				return nil, fmt.Errorf("missing tensor %s of %s", name, g.name)
			}
			parts[j] = srcs[i]
			if parts[j].DType != parts[0].DType {
				return nil, fmt.Errorf("%s and %s have dtypes %v and %v, but are saved as one tensor %s (convert them with SaveOptions.DType)", g.parts[0], name, parts[0].DType, parts[j].DType, g.name)
			}
			if j > 0 {
				drop[name] = true
			}
		}
		rows := 0
		for _, p := range parts {
			rows += p.Shape[0]
		}
		fused := safetensors.Source{Name: g.name, DType: parts[0].DType, Shape: []int{rows, parts[0].Shape[1]}, Data: func() ([]byte, error) {
			var out []byte
			for _, p := range parts {
				b, err := p.Data()
				if err != nil {
					return nil, fmt.Errorf("%s: %w", p.Name, err)
				}
				out = append(out, b...)
			}
			return out, nil
		}}
		srcs[index[g.parts[0]]] = fused
	}
	out := srcs[:0:0]
	for _, s := range srcs {
		if !drop[s.Name] {
			out = append(out, s)
		}
	}
	return out, nil
}
