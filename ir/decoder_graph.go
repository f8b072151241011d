package ir

import (
	"github.com/whittle-ml/whittle/ir/graph"
)

// Graph builds the model's dataflow graph.
//
// Every family whittle reads is Llama's decoder with options (biases, q/k
// norms, Gemma 2's extra norms, scales and caps, sliding windows), so one
// builder serves them all, reading the options from the Config and the
// tensor names from LayerTensors. The prunable axes and the tensor
// dimensions each one cuts are not written here: Build derives them by
// propagating dimension identities through these ops.
//
// The builder lives in package ir, not in ir/graph, because it needs the
// Config and the canonical tensor names, and ir derives its own API (the
// axes' couplings) from the graph: ir imports graph, graph imports nothing
// of ir.
func (c *Config) Graph() (*graph.Graph, error) {
	arch := c.Arch
	if arch == "" {
		arch = "llama"
	}
	b := graph.NewBuilder(arch)
	hidden := graph.D(string(AxisHidden), c.Hidden)
	vocab := graph.D("vocab", c.Vocab)
	norm := graph.NormAttrs{Eps: c.NormEps, Offset: c.NormOffset}
	rope := c.ropeAttrs()
	act := graph.SiLU
	if c.Activation() == ActGELUTanh {
		act = graph.GELUTanh
	}
	x, embed := b.Embedding(NameEmbed, b.Input(), vocab, hidden, graph.EmbeddingAttrs{ScaleSqrtHidden: c.EmbedScale})
	for i, l := range c.Layers {
		b.Layer(i)
		t := c.LayerTensors(i)
		heads := graph.Blocked(string(AxisHeads), l.Heads, "head_dim", l.HeadDim)
		kvHeads := graph.Blocked(string(AxisKVHeads), l.KVHeads, "head_dim", l.HeadDim)

		h := b.RMSNorm("attn_norm", t.AttnNorm, x, norm)
		q := b.Linear("q_proj", t.Q, t.QBias, h, heads)
		k := b.Linear("k_proj", t.K, t.KBias, h, kvHeads)
		v := b.Linear("v_proj", t.V, t.VBias, h, kvHeads)
		if c.QKNorm {
			perHead := norm
			perHead.PerHead = true
			q = b.RMSNorm("q_norm", t.QNorm, q, perHead)
			k = b.RMSNorm("k_norm", t.KNorm, k, perHead)
		}
		q = b.RoPE("rope_q", q, rope)
		k = b.RoPE("rope_k", k, rope)
		attn := graph.AttentionAttrs{SoftCap: c.AttnSoftCap, SlidingWindow: l.Window}
		if c.AttnScalar > 0 {
			attn.Scale = c.AttnScale(l.HeadDim)
		}
		a := b.Linear("o_proj", t.O, "", b.Attention("attention", q, k, v, attn), hidden)
		if c.PostNorms {
			a = b.RMSNorm("attn_post_norm", t.AttnPostNorm, a, norm)
		}
		x = b.Add("residual", x, a)

		h = b.RMSNorm("mlp_norm", t.MLPNorm, x, norm)
		var m *graph.Value
		if l.MoE() {
			m = b.MoE("moe", h, graph.MoEParams{
				Router: t.Router, Gate: t.ExpertGate, Up: t.ExpertUp, Down: t.ExpertDown,
				SharedGate: t.SharedGate, SharedUp: t.SharedUp, SharedDown: t.SharedDown, SharedExpertGate: t.SharedExpertGate,
			}, graph.D(string(AxisExperts), l.Experts), graph.D(string(AxisExpertMLP), l.ExpertMLP), graph.D(string(AxisSharedMLP), l.SharedMLP),
				graph.MoEAttrs{TopK: c.ExpertsPerToken, NormTopK: c.NormTopK, Act: act})
		} else {
			mlp := graph.D(string(AxisMLP), l.MLP)
			g := b.Linear("gate_proj", t.Gate, "", h, mlp)
			u := b.Linear("up_proj", t.Up, "", h, mlp)
			m = b.Linear("down_proj", t.Down, "", b.GLU("act", g, u, graph.GLUAttrs{Act: act}), hidden)
		}
		if c.PostNorms {
			m = b.RMSNorm("mlp_post_norm", t.MLPPostNorm, m, norm)
		}
		x = b.Add("residual", x, m)
	}
	b.Layer(-1)
	x = b.RMSNorm("norm", NameFinalNorm, x, norm)
	head := graph.LMHeadAttrs{SoftCap: c.FinalSoftCap}
	if c.Tied {
		return b.Build(b.TiedLMHead(x, embed, head))
	}
	return b.Build(b.LMHead(NameClassifier, x, vocab, head))
}

// ropeAttrs is the config's RoPE as graph attributes.
func (c *Config) ropeAttrs() graph.RoPEAttrs {
	rope := graph.RoPEAttrs{Theta: c.RopeTheta}
	if s := c.RopeScaling; s != nil && s.Type != "" && s.Type != "default" {
		rope.Scaling, rope.Factor = s.Type, s.Factor
		if s.Type == "llama3" {
			rope.LowFreqFactor, rope.HighFreqFactor, rope.OriginalMaxPos = s.LowFreqFactor, s.HighFreqFactor, s.OriginalMaxPos
		}
	}
	return rope
}
