package ir

import (
	"github.com/whittle-ml/whittle/ir/graph"
)

// Graph builds the model's dataflow graph. Every family whittle reads
// today has Llama's layout; later families (Qwen2, Qwen3, Gemma 2, Phi-3)
// become small builders chosen here by Arch.
//
// The builders live in package ir, not in ir/graph, because they need the
// Config and the canonical tensor names, and ir derives its own API (the
// axes' couplings) from the graph: ir imports graph, graph imports nothing
// of ir.
func (c *Config) Graph() (*graph.Graph, error) {
	return llamaGraph(c)
}

// llamaGraph is the Llama/Mistral decoder: pre-norm attention and SwiGLU
// MLP blocks with residual adds, RMSNorm without offset, no biases.
func llamaGraph(c *Config) (*graph.Graph, error) {
	arch := c.Arch
	if arch == "" {
		arch = "llama"
	}
	b := graph.NewBuilder(arch)
	hidden := graph.D(string(AxisHidden), c.Hidden)
	vocab := graph.D("vocab", c.Vocab)
	norm := graph.NormAttrs{Eps: c.NormEps}
	rope := graph.RoPEAttrs{Theta: c.RopeTheta}
	if s := c.RopeScaling; s != nil && s.Type != "" && s.Type != "default" {
		rope.Scaling, rope.Factor = s.Type, s.Factor
		if s.Type == "llama3" {
			rope.LowFreqFactor, rope.HighFreqFactor, rope.OriginalMaxPos = s.LowFreqFactor, s.HighFreqFactor, s.OriginalMaxPos
		}
	}
	x, embed := b.Embedding(NameEmbed, b.Input(), vocab, hidden, graph.EmbeddingAttrs{})
	for i, l := range c.Layers {
		b.Layer(i)
		name := func(role string) string { return LayerName(i, role) }
		h := b.RMSNorm(RoleAttnNorm, name(RoleAttnNorm), x, norm)
		q := b.Linear(RoleQ, name(RoleQ), "", h, graph.Blocked(string(AxisHeads), l.Heads, "head_dim", l.HeadDim))
		k := b.Linear(RoleK, name(RoleK), "", h, graph.Blocked(string(AxisKVHeads), l.KVHeads, "head_dim", l.HeadDim))
		v := b.Linear(RoleV, name(RoleV), "", h, graph.Blocked(string(AxisKVHeads), l.KVHeads, "head_dim", l.HeadDim))
		q = b.RoPE("rope_q", q, rope)
		k = b.RoPE("rope_k", k, rope)
		a := b.Attention("attention", q, k, v, graph.AttentionAttrs{})
		x = b.Add("residual", x, b.Linear(RoleO, name(RoleO), "", a, hidden))
		h = b.RMSNorm(RoleMLPNorm, name(RoleMLPNorm), x, norm)
		mlp := graph.D(string(AxisMLP), l.MLP)
		g := b.Linear(RoleGate, name(RoleGate), "", h, mlp)
		u := b.Linear(RoleUp, name(RoleUp), "", h, mlp)
		m := b.GLU("act", g, u, graph.GLUAttrs{Act: graph.SiLU})
		x = b.Add("residual", x, b.Linear(RoleDown, name(RoleDown), "", m, hidden))
	}
	b.Layer(-1)
	x = b.RMSNorm("norm", NameFinalNorm, x, norm)
	if c.Tied {
		return b.Build(b.TiedLMHead(x, embed, graph.LMHeadAttrs{}))
	}
	return b.Build(b.LMHead(NameClassifier, x, vocab, graph.LMHeadAttrs{}))
}
