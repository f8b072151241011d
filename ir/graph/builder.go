package graph

import (
	"errors"
	"fmt"
)

// Size describes a new dimension to a Builder: a name and an extent, or
// units×block.
type Size struct {
	Name   string
	N      int
	Block  string
	BlockN int
}

// D is an unblocked dimension.
func D(name string, n int) Size { return Size{Name: name, N: n} }

// Blocked is n units of block entries each (heads × head_dim).
func Blocked(name string, n int, block string, blockN int) Size {
	return Size{Name: name, N: n, Block: block, BlockN: blockN}
}

// Builder assembles a graph op by op. Every output and parameter gets
// fresh dimension symbols; only Build's propagation relates them. The
// first misuse is remembered and returned by Build, so that a family's
// builder reads as a straight list of ops.
type Builder struct {
	g      *Graph
	layer  int
	syms   []*Sym
	groups [][2]*Sym
	// within pairs an identity cut per unit of another (expert_mlp per
	// expert).
	within [][2]*Sym
	err    error
}

// NewBuilder starts a graph whose input is a sequence of token ids.
func NewBuilder(name string) *Builder {
	b := &Builder{g: &Graph{Name: name}, layer: -1}
	tokens := b.fresh("tokens", 0)
	tokens.pin = "the token count is dynamic"
	b.g.Input = &Value{ID: 0, Shape: Shape{{Units: tokens}}, Tokens: true}
	return b
}

// Input is the token ids.
func (b *Builder) Input() *Value { return b.g.Input }

// Layer makes the following ops part of decoder layer i (-1: none).
func (b *Builder) Layer(i int) { b.layer = i }

func (b *Builder) fail(format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf(format, args...)
	}
}

func (b *Builder) fresh(name string, size int) *Sym {
	s := &Sym{Name: name, Size: size, layer: b.layer}
	b.syms = append(b.syms, s)
	return s
}

func (b *Builder) dim(s Size) Dim {
	d := Dim{Units: b.fresh(s.Name, s.N)}
	if s.Block != "" {
		d.Block = b.fresh(s.Block, s.BlockN)
	}
	return d
}

// like is a fresh dimension labelled as d.
func (b *Builder) like(d Dim) Dim {
	out := Dim{Units: b.fresh(d.Units.Name, d.Units.Size)}
	if d.Block != nil {
		out.Block = b.fresh(d.Block.Name, d.Block.Size)
	}
	return out
}

// activation checks that v is a [tokens, features] activation.
func (b *Builder) activation(what string, v *Value) bool {
	switch {
	case v == nil:
		b.fail("%s: missing input", what)
	case v.Tokens || len(v.Shape) != 2:
		b.fail("%s: input %%%d %v is not a [tokens, features] activation", what, v.ID, v.Shape)
	default:
		return true
	}
	return false
}

func (b *Builder) param(name, role string, shape ...Dim) *Param {
	if name == "" {
		b.fail("layer %d: %s parameter has no name", b.layer, role)
	}
	p := &Param{Name: name, Role: role, Shape: shape}
	b.g.Params = append(b.g.Params, p)
	return p
}

// op records an op whose output has the given feature dimension and a
// fresh token dimension.
func (b *Builder) op(kind Kind, name string, attrs Attrs, features Dim, params []*Param, inputs ...*Value) *Value {
	out := &Value{ID: len(b.g.Ops) + 1, Shape: Shape{b.like(b.g.Input.Shape[0]), features}}
	if attrs == nil {
		attrs = noAttrs{}
	}
	b.g.Ops = append(b.g.Ops, &Op{Kind: kind, Name: name, Layer: b.layer, Inputs: inputs, Output: out, Params: params, Attrs: attrs})
	return out
}

// placeholder keeps a chain of calls going after a misuse.
func (b *Builder) placeholder() *Value {
	return &Value{ID: -1, Shape: Shape{b.like(b.g.Input.Shape[0]), b.dim(D("invalid", 0))}}
}

// Embedding looks token ids up in a [vocab, hidden] table.
func (b *Builder) Embedding(weight string, ids *Value, vocab, hidden Size, a EmbeddingAttrs) (*Value, *Param) {
	if ids == nil || !ids.Tokens {
		b.fail("embedding: input is not token ids")
	}
	w := b.param(weight, "weight", b.dim(vocab), b.dim(hidden))
	return b.op(KindEmbedding, "embed_tokens", a, b.dim(hidden), []*Param{w}, ids), w
}

// RMSNorm normalizes x (per head when a.PerHead) and scales by a weight.
func (b *Builder) RMSNorm(name, weight string, x *Value, a NormAttrs) *Value {
	if !b.activation(name, x) {
		return b.placeholder()
	}
	f := x.Shape[1]
	wd := b.like(f)
	if a.PerHead {
		if f.Block == nil {
			b.fail("%s: per-head norm of %v, which has no heads", name, x.Shape)
			return b.placeholder()
		}
		wd = Dim{Units: b.fresh(f.Block.Name, f.Block.Size)}
	}
	w := b.param(weight, "weight", wd)
	return b.op(KindRMSNorm, name, a, b.like(f), []*Param{w}, x)
}

// Linear is x·Wᵀ (+ bias when bias names one), W being [out, in].
func (b *Builder) Linear(name, weight, bias string, x *Value, out Size) *Value {
	if !b.activation(name, x) {
		return b.placeholder()
	}
	ps := []*Param{b.param(weight, "weight", b.dim(out), b.like(x.Shape[1]))}
	if bias != "" {
		ps = append(ps, b.param(bias, "bias", b.dim(out)))
	}
	return b.op(KindLinear, name, nil, b.dim(out), ps, x)
}

// RoPE rotates each head of x by position.
func (b *Builder) RoPE(name string, x *Value, a RoPEAttrs) *Value {
	if !b.activation(name, x) {
		return b.placeholder()
	}
	return b.op(KindRoPE, name, a, b.like(x.Shape[1]), nil, x)
}

// Attention is causal grouped-query attention of q over k and v.
func (b *Builder) Attention(name string, q, k, v *Value, a AttentionAttrs) *Value {
	if !b.activation(name, q) || !b.activation(name, k) || !b.activation(name, v) {
		return b.placeholder()
	}
	return b.op(KindAttention, name, a, b.like(q.Shape[1]), nil, q, k, v)
}

// GLU is act(gate) ⊙ up.
func (b *Builder) GLU(name string, gate, up *Value, a GLUAttrs) *Value {
	if !b.activation(name, gate) || !b.activation(name, up) {
		return b.placeholder()
	}
	return b.op(KindGLU, name, a, b.like(gate.Shape[1]), nil, gate, up)
}

// Add is the residual sum x + y.
func (b *Builder) Add(name string, x, y *Value) *Value {
	if !b.activation(name, x) || !b.activation(name, y) {
		return b.placeholder()
	}
	return b.op(KindAdd, name, nil, b.like(x.Shape[1]), nil, x, y)
}

// MoEParams name a mixture of experts' parameters: the router [experts,
// hidden]; the routed experts' gate and up [experts, expert_mlp, hidden]
// and down [experts, hidden, expert_mlp]; and, when SharedDown is not "",
// the shared expert's gate and up [shared_mlp, hidden], down [hidden,
// shared_mlp] and its gate [1, hidden].
type MoEParams struct {
	Router                           string
	Gate, Up, Down                   string
	SharedGate, SharedUp, SharedDown string
	SharedExpertGate                 string
}

// MoE is a mixture-of-experts MLP over x (see MoEAttrs). shared is the
// shared expert's width, ignored without one.
func (b *Builder) MoE(name string, x *Value, p MoEParams, experts, expertMLP, shared Size, a MoEAttrs) *Value {
	if !b.activation(name, x) {
		return b.placeholder()
	}
	if a.TopK < 1 || a.TopK > experts.N {
		b.fail("%s: top_k %d outside [1, %d experts]", name, a.TopK, experts.N)
		return b.placeholder()
	}
	h := x.Shape[1]
	ps := []*Param{
		b.param(p.Router, "router", b.dim(experts), b.like(h)),
		b.param(p.Gate, "gate", b.dim(experts), b.dim(expertMLP), b.like(h)),
		b.param(p.Up, "up", b.dim(experts), b.dim(expertMLP), b.like(h)),
		b.param(p.Down, "down", b.dim(experts), b.like(h), b.dim(expertMLP)),
	}
	if p.SharedDown != "" {
		ps = append(ps,
			b.param(p.SharedGate, "shared_gate", b.dim(shared), b.like(h)),
			b.param(p.SharedUp, "shared_up", b.dim(shared), b.like(h)),
			b.param(p.SharedDown, "shared_down", b.like(h), b.dim(shared)),
			b.param(p.SharedExpertGate, "shared_expert_gate", b.dim(D("one", 1)), b.like(h)),
		)
	}
	return b.op(KindMoE, name, a, b.like(h), ps, x)
}

// LMHead projects x to logits with its own [vocab, hidden] weight.
func (b *Builder) LMHead(weight string, x *Value, vocab Size, a LMHeadAttrs) *Value {
	if !b.activation("lm_head", x) {
		return b.placeholder()
	}
	a.Tied = false
	w := b.param(weight, "weight", b.dim(vocab), b.like(x.Shape[1]))
	return b.op(KindLMHead, "lm_head", a, b.dim(vocab), []*Param{w}, x)
}

// TiedLMHead projects x to logits with the embedding table.
func (b *Builder) TiedLMHead(x *Value, embed *Param, a LMHeadAttrs) *Value {
	if !b.activation("lm_head", x) {
		return b.placeholder()
	}
	if embed == nil || len(embed.Shape) != 2 {
		b.fail("lm_head: tied to no embedding table")
		return b.placeholder()
	}
	a.Tied = true
	return b.op(KindLMHead, "lm_head", a, b.like(embed.Shape[0]), []*Param{embed}, x)
}

// Build propagates dimension identities through the ops, checks that
// every dimension the dataflow joins agrees in name and size, and derives
// the prunable axes. out is the graph's output (the logits). A Builder
// builds one graph: call Build once, last.
func (b *Builder) Build(out *Value) (*Graph, error) {
	if b.err != nil {
		return nil, fmt.Errorf("graph %s: %w", b.g.Name, b.err)
	}
	if out == nil {
		return nil, errors.New("graph " + b.g.Name + ": no output")
	}
	b.g.Output = out
	for _, op := range b.g.Ops {
		if err := b.propagate(op); err != nil {
			return nil, fmt.Errorf("graph %s: %s %s in %s: %w", b.g.Name, op.Kind, op.Name, layerName(op.Layer), err)
		}
	}
	b.g.Axes = b.axes()
	return b.g, nil
}
