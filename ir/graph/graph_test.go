package graph

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

const (
	tHidden, tVocab, tHeads, tKV, tHD, tMLP = 12, 20, 4, 2, 6, 10
)

// sandwich builds by hand a two-layer graph with every option the
// families of issue 11 need: Gemma's √hidden embedding scale, `1 + w`
// norms, post-attention and pre/post-FFN norms, attention and logit soft
// caps and a sliding window; Qwen2's q/k/v biases and Qwen3's per-head q/k
// norms in layer 0; OLMo-2-style full-width q/k norms in layer 1.
func sandwich(t *testing.T) *Graph {
	t.Helper()
	b := NewBuilder("sandwich")
	hidden := D("hidden", tHidden)
	norm := NormAttrs{Eps: 1e-6, Offset: 1}
	x, embed := b.Embedding("embed", b.Input(), D("vocab", tVocab), hidden, EmbeddingAttrs{ScaleSqrtHidden: true})
	for i := range 2 {
		b.Layer(i)
		n := func(s string) string { return fmt.Sprintf("l%d.%s", i, s) }
		bias := func(s string) string {
			if i == 0 {
				return n(s + ".bias")
			}
			return ""
		}
		h := b.RMSNorm("input_norm", n("input_norm"), x, norm)
		q := b.Linear("q", n("q"), bias("q"), h, Blocked("heads", tHeads, "head_dim", tHD))
		k := b.Linear("k", n("k"), bias("k"), h, Blocked("kv_heads", tKV, "head_dim", tHD))
		v := b.Linear("v", n("v"), bias("v"), h, Blocked("kv_heads", tKV, "head_dim", tHD))
		qk := NormAttrs{Eps: 1e-6, PerHead: i == 0}
		q = b.RMSNorm("q_norm", n("q_norm"), q, qk)
		k = b.RMSNorm("k_norm", n("k_norm"), k, qk)
		q = b.RoPE("rope_q", q, RoPEAttrs{Theta: 1e4})
		k = b.RoPE("rope_k", k, RoPEAttrs{Theta: 1e4})
		a := b.Attention("attn", q, k, v, AttentionAttrs{Scale: 0.25, SoftCap: 50, SlidingWindow: 8 * (1 - i)})
		o := b.Linear("o", n("o"), "", a, hidden)
		x = b.Add("residual", x, b.RMSNorm("post_attn_norm", n("post_attn_norm"), o, norm))
		h = b.RMSNorm("pre_ffn_norm", n("pre_ffn_norm"), x, norm)
		g := b.Linear("gate", n("gate"), "", h, D("mlp", tMLP))
		u := b.Linear("up", n("up"), "", h, D("mlp", tMLP))
		d := b.Linear("down", n("down"), "", b.GLU("act", g, u, GLUAttrs{Act: GELUTanh}), hidden)
		x = b.Add("residual", x, b.RMSNorm("post_ffn_norm", n("post_ffn_norm"), d, norm))
	}
	b.Layer(-1)
	x = b.RMSNorm("norm", "norm", x, norm)
	g, err := b.Build(b.TiedLMHead(x, embed, LMHeadAttrs{SoftCap: 30}))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestAxesPropagate checks the derived axes against a list written out by
// hand from the architectures' definitions.
func TestAxesPropagate(t *testing.T) {
	g := sandwich(t)
	cut := func(tensor string, dim, block int) Cut { return Cut{tensor, dim, block} }
	var hidden []Cut
	hidden = append(hidden, cut("embed", 1, 1))
	for i := range 2 {
		n := func(s string) string { return fmt.Sprintf("l%d.%s", i, s) }
		hidden = append(hidden, cut(n("input_norm"), 0, 1), cut(n("q"), 1, 1), cut(n("k"), 1, 1), cut(n("v"), 1, 1),
			cut(n("o"), 0, 1), cut(n("post_attn_norm"), 0, 1), cut(n("pre_ffn_norm"), 0, 1),
			cut(n("gate"), 1, 1), cut(n("up"), 1, 1), cut(n("down"), 0, 1), cut(n("post_ffn_norm"), 0, 1))
	}
	hidden = append(hidden, cut("norm", 0, 1))
	mlp := func(i int) []Cut {
		return []Cut{cut(fmt.Sprintf("l%d.gate", i), 0, 1), cut(fmt.Sprintf("l%d.up", i), 0, 1), cut(fmt.Sprintf("l%d.down", i), 1, 1)}
	}
	want := []Axis{
		{Name: "hidden", Layer: -1, Units: tHidden, Cuts: hidden},
		// Layer 0: biases follow their rows; per-head q/k norms are over
		// head_dim, which RoPE pins, so no axis cuts them.
		{Name: "heads", Layer: 0, Units: tHeads, GroupedBy: "layers.0.kv_heads",
			Cuts: []Cut{cut("l0.q", 0, tHD), cut("l0.q.bias", 0, tHD), cut("l0.o", 1, tHD)}},
		{Name: "kv_heads", Layer: 0, Units: tKV,
			Cuts: []Cut{cut("l0.k", 0, tHD), cut("l0.k.bias", 0, tHD), cut("l0.v", 0, tHD), cut("l0.v.bias", 0, tHD)}},
		{Name: "mlp", Layer: 0, Units: tMLP, Cuts: mlp(0)},
		// Layer 1: full-width q/k norms are cut with their heads.
		{Name: "heads", Layer: 1, Units: tHeads, GroupedBy: "layers.1.kv_heads",
			Cuts: []Cut{cut("l1.q", 0, tHD), cut("l1.q_norm", 0, tHD), cut("l1.o", 1, tHD)}},
		{Name: "kv_heads", Layer: 1, Units: tKV,
			Cuts: []Cut{cut("l1.k", 0, tHD), cut("l1.v", 0, tHD), cut("l1.k_norm", 0, tHD)}},
		{Name: "mlp", Layer: 1, Units: tMLP, Cuts: mlp(1)},
	}
	if !reflect.DeepEqual(g.Axes, want) {
		t.Errorf("axes differ\n got: %+v\nwant: %+v", g.Axes, want)
	}
	for _, a := range want {
		got, err := g.Axis(a.Name, a.Layer)
		if err != nil || got.ID() != a.ID() {
			t.Errorf("Axis(%s, %d) = %v, %v", a.Name, a.Layer, got, err)
		}
	}
	if _, err := g.Axis("heads", 2); err == nil {
		t.Error("Axis found heads in a layer the graph does not have")
	}
}

// TestParamCount counts the tied embedding once, against sizes summed by
// hand.
func TestParamCount(t *testing.T) {
	g := sandwich(t)
	q, kv := tHeads*tHD, tKV*tHD
	perLayer := 4*tHidden + 2*q*tHidden + 2*kv*tHidden + 3*tMLP*tHidden // 4 hidden norms, q/o, k/v, MLP
	layer0 := perLayer + q + 2*kv + 2*tHD                               // biases, per-head norms
	layer1 := perLayer + q + kv                                         // full-width norms
	want := int64(tVocab*tHidden + layer0 + layer1 + tHidden)
	if got := g.ParamCount(); got != want {
		t.Errorf("ParamCount = %d, want %d", got, want)
	}
}

// TestBuildErrors: graphs whose dataflow joins unequal dimensions, or
// misuse the ops, fail to build with a message naming the op.
func TestBuildErrors(t *testing.T) {
	hidden := D("hidden", 8)
	heads := Blocked("heads", 2, "head_dim", 4)
	cases := []struct {
		name  string
		build func(b *Builder) *Value
		want  string
	}{
		{"residual widths", func(b *Builder) *Value {
			x, _ := b.Embedding("e", b.Input(), D("vocab", 5), hidden, EmbeddingAttrs{})
			y := b.Linear("down", "w", "", x, D("hidden", 6))
			return b.Add("residual", x, y)
		}, "add residual in the whole model: dimension hidden=8 meets hidden=6"},
		{"names differ", func(b *Builder) *Value {
			x, _ := b.Embedding("e", b.Input(), D("vocab", 5), hidden, EmbeddingAttrs{})
			return b.Add("residual", x, b.Linear("up", "w", "", x, D("mlp", 8)))
		}, "dimension hidden=8 meets mlp=8"},
		{"rope without heads", func(b *Builder) *Value {
			x, _ := b.Embedding("e", b.Input(), D("vocab", 5), hidden, EmbeddingAttrs{})
			return b.RoPE("rope", x, RoPEAttrs{Theta: 1})
		}, "rope rope in the whole model: input hidden=8 is not split into heads"},
		{"heads meet flat", func(b *Builder) *Value {
			x, _ := b.Embedding("e", b.Input(), D("vocab", 5), hidden, EmbeddingAttrs{})
			return b.Add("residual", b.Linear("q", "w", "", x, heads), x)
		}, "one is split into heads, the other not"},
		{"per-head norm without heads", func(b *Builder) *Value {
			x, _ := b.Embedding("e", b.Input(), D("vocab", 5), hidden, EmbeddingAttrs{})
			return b.RMSNorm("q_norm", "w", x, NormAttrs{PerHead: true})
		}, "q_norm: per-head norm of"},
		{"embedding of activations", func(b *Builder) *Value {
			x, _ := b.Embedding("e", b.Input(), D("vocab", 5), hidden, EmbeddingAttrs{})
			y, _ := b.Embedding("e2", x, D("vocab", 5), hidden, EmbeddingAttrs{})
			return y
		}, "embedding: input is not token ids"},
		{"linear of token ids", func(b *Builder) *Value {
			return b.Linear("q", "w", "", b.Input(), hidden)
		}, "q: input %0 [tokens] is not a [tokens, features] activation"},
		{"unnamed parameter", func(b *Builder) *Value {
			x, _ := b.Embedding("", b.Input(), D("vocab", 5), hidden, EmbeddingAttrs{})
			return x
		}, "weight parameter has no name"},
		{"no output", func(b *Builder) *Value { return nil }, "no output"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := NewBuilder("bad")
			_, err := b.Build(c.build(b))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Build error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestTextShowsOptions: every option set in the hand-built graph is
// printed on its op's line.
func TestTextShowsOptions(t *testing.T) {
	var sb strings.Builder
	if err := sandwich(t).WriteText(&sb); err != nil {
		t.Fatal(err)
	}
	text := sb.String()
	for _, want := range []string{
		"= embedding embed_tokens {scale=√hidden} (%0 [tokens]) -> [tokens, hidden=12]; weight embed [vocab=20, hidden=12]",
		"= rms_norm q_norm {eps=1e-06 per_head} (",
		"; weight l0.q_norm [head_dim=6]",
		"; weight l1.q_norm [heads×head_dim=4×6]",
		"; weight l0.q [heads×head_dim=4×6, hidden=12]; bias l0.q.bias [heads×head_dim=4×6]",
		"{scale=0.25 softcap=50 window=8}",
		"= glu act {act=gelu_tanh}",
		"= rms_norm post_ffn_norm {eps=1e-06 offset=1}",
		"= lm_head lm_head {tied softcap=30} (",
		"  layers.0.heads=4 grouped by layers.0.kv_heads\n    l0.q[0] in blocks of 6\n    l0.q.bias[0] in blocks of 6\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "\n  %"); n != len(sandwich(t).Ops) {
		t.Errorf("text has %d op lines, graph has %d ops", n, len(sandwich(t).Ops))
	}
}
