package graph

import (
	"fmt"
)

// unify records that two symbols are one dimension identity.
func unify(a, b *Sym) error {
	ra, rb := a.find(), b.find()
	if ra == rb {
		return nil
	}
	if ra.Name != rb.Name || ra.Size != rb.Size {
		return fmt.Errorf("dimension %s=%d meets %s=%d", ra.Name, ra.Size, rb.Name, rb.Size)
	}
	rb.parent = ra
	if ra.pin == "" {
		ra.pin = rb.pin
	}
	return nil
}

// same unifies two dimensions unit for unit and block for block.
func same(a, b Dim) error {
	if (a.Block == nil) != (b.Block == nil) {
		return fmt.Errorf("dimension %v meets %v: one is split into heads, the other not", a, b)
	}
	if err := unify(a.Units, b.Units); err != nil {
		return err
	}
	if a.Block != nil {
		return unify(a.Block, b.Block)
	}
	return nil
}

func pin(s *Sym, why string) {
	if r := s.find(); r.pin == "" {
		r.pin = why
	}
}

// propagate applies one op's rule: which of its inputs', output's and
// parameters' dimensions are the same identity, and which identities the
// op forbids cutting. The builder has already checked ranks.
func (b *Builder) propagate(op *Op) error {
	in, out := op.Inputs, op.Output
	f := out.Shape[1]
	var eqs [][2]Dim
	switch op.Kind {
	case KindEmbedding:
		w := op.Params[0]
		pin(w.Shape[0].Units, "token ids index the vocabulary")
		eqs = append(eqs, [2]Dim{w.Shape[1], f})
	case KindRMSNorm:
		x, w := in[0].Shape[1], op.Params[0].Shape[0]
		eqs = append(eqs, [2]Dim{x, f})
		if op.Attrs.(NormAttrs).PerHead {
			// One weight of head_dim entries serves every head.
			eqs = append(eqs, [2]Dim{Dim{Units: x.Block}, w})
		} else {
			eqs = append(eqs, [2]Dim{x, w})
		}
	case KindLinear:
		w := op.Params[0]
		eqs = append(eqs, [2]Dim{w.Shape[1], in[0].Shape[1]}, [2]Dim{w.Shape[0], f})
		if len(op.Params) > 1 {
			eqs = append(eqs, [2]Dim{op.Params[1].Shape[0], f})
		}
	case KindRoPE:
		x := in[0].Shape[1]
		if x.Block == nil {
			return fmt.Errorf("input %v is not split into heads", x)
		}
		// RoPE rotates dimension i of a head with dimension i+head_dim/2,
		// so a head's dimensions cannot be cut one by one.
		pin(x.Block, "RoPE rotates a head's dimensions in pairs")
		eqs = append(eqs, [2]Dim{x, f})
	case KindAttention:
		q, k, v := in[0].Shape[1], in[1].Shape[1], in[2].Shape[1]
		if q.Block == nil || k.Block == nil || v.Block == nil {
			return fmt.Errorf("inputs %v, %v, %v are not all split into heads", q, k, v)
		}
		// Scores are q·k per head, and each query head reads the value
		// head of its group: one head_dim throughout, k and v share their
		// heads, the output has the queries' heads. Query heads relate to
		// KV heads by grouping, not identity.
		eqs = append(eqs, [2]Dim{q, f}, [2]Dim{k, v}, [2]Dim{Dim{Units: q.Block}, Dim{Units: k.Block}})
		b.groups = append(b.groups, [2]*Sym{q.Units, k.Units})
	case KindGLU, KindAdd:
		// Operands first, so that a mismatch names them in order.
		eqs = append(eqs, [2]Dim{in[0].Shape[1], in[1].Shape[1]}, [2]Dim{in[0].Shape[1], f})
	case KindMoE:
		x := in[0].Shape[1]
		router, gate, up, down := op.Params[0], op.Params[1], op.Params[2], op.Params[3]
		// Experts are one identity across the router's rows and the
		// stacked experts; one expert width across gate, up and down.
		eqs = append(eqs, [2]Dim{router.Shape[1], x}, [2]Dim{x, f},
			[2]Dim{router.Shape[0], gate.Shape[0]}, [2]Dim{gate.Shape[0], up.Shape[0]}, [2]Dim{up.Shape[0], down.Shape[0]},
			[2]Dim{gate.Shape[1], up.Shape[1]}, [2]Dim{up.Shape[1], down.Shape[2]},
			[2]Dim{gate.Shape[2], x}, [2]Dim{up.Shape[2], x}, [2]Dim{down.Shape[1], f})
		// Each expert keeps its own neurons: the expert width is cut
		// within each expert, not across them.
		b.within = append(b.within, [2]*Sym{gate.Shape[1].Units, gate.Shape[0].Units})
		if len(op.Params) > 4 {
			sg, su, sd, seg := op.Params[4], op.Params[5], op.Params[6], op.Params[7]
			pin(seg.Shape[0].Units, "the shared expert's gate is one scalar per token")
			eqs = append(eqs, [2]Dim{sg.Shape[0], su.Shape[0]}, [2]Dim{su.Shape[0], sd.Shape[1]},
				[2]Dim{sg.Shape[1], x}, [2]Dim{su.Shape[1], x}, [2]Dim{sd.Shape[0], f}, [2]Dim{seg.Shape[1], x})
		}
	case KindLMHead:
		w := op.Params[0]
		pin(f.Units, "logits index the vocabulary")
		eqs = append(eqs, [2]Dim{w.Shape[1], in[0].Shape[1]}, [2]Dim{w.Shape[0], f})
	default:
		return fmt.Errorf("unknown op kind %q", op.Kind)
	}
	// Every activation shares the token dimension.
	for _, v := range in {
		eqs = append(eqs, [2]Dim{v.Shape[0], out.Shape[0]})
	}
	for _, e := range eqs {
		if err := same(e[0], e[1]); err != nil {
			return err
		}
	}
	return nil
}
