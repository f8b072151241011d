// Package graph is the model as a typed dataflow graph: ops (embedding,
// norm, linear, RoPE, attention, gated activation, residual add, LM head)
// joined by tensor values whose every dimension is named and sized, and
// parameters whose dimensions are named the same way.
//
// A dimension's identity is not declared by whoever builds the graph: each
// op and parameter starts with fresh symbols, and each op's rule says which
// of its dimensions must be the same (a linear's input columns are its
// input's features; a residual add's operands share their width). Build
// propagates those equalities through the whole graph (union-find), so two
// tensor dimensions carry the same identity exactly when the dataflow forces
// them to; the prunable axes are the identities no op pins (see Axes). This
// is the idea of Torch-Pruning's DepGraph.
//
// The package knows no model family and no file format: families live in
// package ir, which builds graphs from its Config and names their tensors.
// Keeping the graph below ir (ir imports graph, never the reverse) lets ir's
// own API, such as Config.Couplings, be derived from the graph.
package graph

import (
	"fmt"
	"strings"
)

// Sym is one dimension identity. Builders create fresh symbols for every
// op output and parameter; Build unifies them. Name and Size label the
// symbol; unified symbols must agree on both.
type Sym struct {
	Name string
	// Size is the extent; 0 marks a dynamic one (the token count).
	Size int

	layer  int
	parent *Sym
	// pin says why no pruning may cut this identity ("" if none); only
	// meaningful on a class root.
	pin string
}

// find returns the representative of s's identity class.
func (s *Sym) find() *Sym {
	for s.parent != nil {
		if s.parent.parent != nil {
			s.parent = s.parent.parent
		}
		s = s.parent
	}
	return s
}

// Dim is one dimension of a tensor: Units alone, or Units×Block when each
// unit owns Block.Size consecutive entries (heads × head_dim).
type Dim struct {
	Units *Sym
	Block *Sym
}

// Size is the dimension's extent.
func (d Dim) Size() int {
	if d.Block != nil {
		return d.Units.Size * d.Block.Size
	}
	return d.Units.Size
}

// BlockSize is the number of entries one unit owns (1 when unblocked).
func (d Dim) BlockSize() int {
	if d.Block != nil {
		return d.Block.Size
	}
	return 1
}

func (d Dim) String() string {
	if d.Units.Size == 0 {
		return d.Units.Name
	}
	if d.Block != nil {
		return fmt.Sprintf("%s×%s=%d×%d", d.Units.Name, d.Block.Name, d.Units.Size, d.Block.Size)
	}
	return fmt.Sprintf("%s=%d", d.Units.Name, d.Units.Size)
}

// Shape is a tensor's dimensions, outermost first.
type Shape []Dim

// Sizes is the shape as plain extents.
func (s Shape) Sizes() []int {
	out := make([]int, len(s))
	for i, d := range s {
		out[i] = d.Size()
	}
	return out
}

func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// Elements is the product of the sizes.
func (s Shape) Elements() int64 {
	n := int64(1)
	for _, d := range s {
		n *= int64(d.Size())
	}
	return n
}

// Value is a tensor flowing between ops.
type Value struct {
	// ID numbers values in creation order (%0, %1, ...).
	ID    int
	Shape Shape
	// Tokens marks integer token ids rather than activations.
	Tokens bool
}

// Param is a weight tensor, named as the family's files name it.
type Param struct {
	Name  string
	Shape Shape
	// Role is the parameter's place in its op ("weight", "bias").
	Role string
}

// Kind is an op's type.
type Kind string

// Op kinds. The options of each live in its Attrs.
const (
	KindEmbedding Kind = "embedding"
	KindRMSNorm   Kind = "rms_norm"
	KindLinear    Kind = "linear"
	KindRoPE      Kind = "rope"
	KindAttention Kind = "attention"
	KindGLU       Kind = "glu"
	KindAdd       Kind = "add"
	KindLMHead    Kind = "lm_head"
	// KindMoE is a mixture-of-experts MLP: a router, routed gated-MLP
	// experts stacked along their first dimension, and an optional shared
	// expert with a sigmoid gate (Qwen2-MoE).
	KindMoE Kind = "moe"
)

// Op is one node. Ops have one output; params are the weights they read
// (a tied LM head reads the embedding's).
type Op struct {
	Kind Kind
	// Name is the op's role within its layer ("q_proj", "residual").
	Name string
	// Layer is the decoder layer the op belongs to, -1 outside the layers.
	Layer  int
	Inputs []*Value
	Output *Value
	Params []*Param
	Attrs  Attrs
}

// Attrs are an op's options; String prints them as key=value pairs.
type Attrs interface {
	String() string
}

// EmbeddingAttrs: Gemma multiplies the looked-up rows by √hidden. The
// scale is symbolic so that it follows the width after hidden pruning, as
// Hugging Face recomputes it from hidden_size.
type EmbeddingAttrs struct {
	ScaleSqrtHidden bool
}

func (a EmbeddingAttrs) String() string {
	if a.ScaleSqrtHidden {
		return "scale=√hidden"
	}
	return ""
}

// NormAttrs configure an RMSNorm: y = x / rms(x) · (Offset + w).
type NormAttrs struct {
	Eps float64
	// Offset is 1 for Gemma's `1 + w` weights, else 0.
	Offset float64
	// PerHead normalizes each head of a Units×Block input over Block
	// (Qwen3's q/k norm), with a weight of Block entries shared by heads.
	PerHead bool
}

func (a NormAttrs) String() string {
	s := fmt.Sprintf("eps=%g", a.Eps)
	if a.Offset != 0 {
		s += fmt.Sprintf(" offset=%g", a.Offset)
	}
	if a.PerHead {
		s += " per_head"
	}
	return s
}

// RoPEAttrs configure rotary embeddings; Scaling is "" (none), "linear"
// or "llama3", with Hugging Face's parameters.
type RoPEAttrs struct {
	Theta          float64
	Scaling        string
	Factor         float64
	LowFreqFactor  float64
	HighFreqFactor float64
	OriginalMaxPos int
}

func (a RoPEAttrs) String() string {
	s := fmt.Sprintf("theta=%g", a.Theta)
	switch a.Scaling {
	case "":
	case "llama3":
		s += fmt.Sprintf(" scaling=llama3 factor=%g low_freq_factor=%g high_freq_factor=%g original_max_pos=%d", a.Factor, a.LowFreqFactor, a.HighFreqFactor, a.OriginalMaxPos)
	default:
		s += fmt.Sprintf(" scaling=%s factor=%g", a.Scaling, a.Factor)
	}
	return s
}

// AttentionAttrs configure causal grouped-query attention. Query head h
// reads KV head h / (heads/kv_heads).
type AttentionAttrs struct {
	// Scale multiplies the scores; 0 means 1/√head_dim.
	Scale float64
	// SoftCap, when positive, caps scores as SoftCap·tanh(s/SoftCap).
	SoftCap float64
	// SlidingWindow, when positive, limits each query to that many most
	// recent positions.
	SlidingWindow int
}

func (a AttentionAttrs) String() string {
	var parts []string
	if a.Scale != 0 {
		parts = append(parts, fmt.Sprintf("scale=%g", a.Scale))
	}
	if a.SoftCap != 0 {
		parts = append(parts, fmt.Sprintf("softcap=%g", a.SoftCap))
	}
	if a.SlidingWindow != 0 {
		parts = append(parts, fmt.Sprintf("window=%d", a.SlidingWindow))
	}
	return strings.Join(parts, " ")
}

// Activation is a gated MLP's nonlinearity.
type Activation string

const (
	// SiLU is Llama's SwiGLU gate.
	SiLU Activation = "silu"
	// GELUTanh is Gemma's GeGLU gate (the tanh approximation).
	GELUTanh Activation = "gelu_tanh"
)

// GLUAttrs configure act(gate) ⊙ up.
type GLUAttrs struct {
	Act Activation
}

func (a GLUAttrs) String() string { return "act=" + string(a.Act) }

// LMHeadAttrs configure the classifier.
type LMHeadAttrs struct {
	// Tied means the weight is the token embedding.
	Tied bool
	// SoftCap, when positive, caps logits as SoftCap·tanh(z/SoftCap).
	SoftCap float64
}

func (a LMHeadAttrs) String() string {
	var parts []string
	if a.Tied {
		parts = append(parts, "tied")
	}
	if a.SoftCap != 0 {
		parts = append(parts, fmt.Sprintf("softcap=%g", a.SoftCap))
	}
	return strings.Join(parts, " ")
}

// MoEAttrs configure a mixture of experts: each token's router logits
// go through a softmax over all experts, the TopK largest probabilities
// pick the experts, renormalized to sum to 1 when NormTopK (Mixtral,
// Qwen3-MoE) or used as they are (Qwen2-MoE by default); the token's
// output is the weighted sum of those experts' gated MLPs, plus the shared
// expert's output times sigmoid(shared gate) when there is one.
type MoEAttrs struct {
	TopK     int
	NormTopK bool
	Act      Activation
}

func (a MoEAttrs) String() string {
	s := fmt.Sprintf("top_k=%d act=%s", a.TopK, a.Act)
	if a.NormTopK {
		s += " norm_topk"
	}
	return s
}

// noAttrs is the Attrs of ops without options.
type noAttrs struct{}

func (noAttrs) String() string { return "" }

// Graph is a built, type-checked model graph.
type Graph struct {
	// Name is the family ("llama").
	Name   string
	Input  *Value
	Ops    []*Op
	Output *Value
	// Params lists every distinct parameter in creation order, which is
	// the family's canonical tensor order.
	Params []*Param
	Axes   []Axis
}

// ParamCount is the number of parameters, shared ones counted once.
func (g *Graph) ParamCount() int64 {
	var n int64
	for _, p := range g.Params {
		n += p.Shape.Elements()
	}
	return n
}

// Axis finds the prunable axis with the given dimension name in a layer
// (-1 for an axis that spans layers, such as hidden).
func (g *Graph) Axis(name string, layer int) (*Axis, error) {
	var found *Axis
	for i := range g.Axes {
		a := &g.Axes[i]
		if a.Name != name || a.Layer != layer {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("graph %s: two %s axes in %s", g.Name, name, layerName(layer))
		}
		found = a
	}
	if found == nil {
		return nil, fmt.Errorf("graph %s: no prunable %s axis in %s", g.Name, name, layerName(layer))
	}
	return found, nil
}

func layerName(layer int) string {
	if layer < 0 {
		return "the whole model"
	}
	return fmt.Sprintf("layer %d", layer)
}
