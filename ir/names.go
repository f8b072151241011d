package ir

import "fmt"

// Canonical tensor names are Hugging Face's, and so is the layout: every
// matrix is [out, in], and the rows of Q and K are in Hugging Face's RoPE
// order (the two halves of each head's dimensions rotate together).
// Loaders of formats that use the interleaved order (llama2.c, GGUF)
// permute on the way in and out; see RopeToHalf.
const (
	NameEmbed      = "model.embed_tokens.weight"
	NameFinalNorm  = "model.norm.weight"
	NameClassifier = "lm_head.weight"
)

// Per-layer tensor roles.
const (
	RoleAttnNorm = "input_layernorm"
	RoleQ        = "self_attn.q_proj"
	RoleK        = "self_attn.k_proj"
	RoleV        = "self_attn.v_proj"
	RoleO        = "self_attn.o_proj"
	RoleMLPNorm  = "post_attention_layernorm"
	RoleGate     = "mlp.gate_proj"
	RoleUp       = "mlp.up_proj"
	RoleDown     = "mlp.down_proj"
)

// LayerRoles lists the per-layer roles in file order.
var LayerRoles = []string{RoleAttnNorm, RoleQ, RoleK, RoleV, RoleO, RoleMLPNorm, RoleGate, RoleUp, RoleDown}

// LayerName is the canonical name of a per-layer weight.
func LayerName(layer int, role string) string {
	return fmt.Sprintf("model.layers.%d.%s.weight", layer, role)
}

// ExpectedShapes lists every tensor a model with this config must hold,
// with its shape, in a stable order.
func (c *Config) ExpectedShapes() ([]string, map[string][]int) {
	names := []string{NameEmbed}
	shapes := map[string][]int{NameEmbed: {c.Vocab, c.Hidden}}
	add := func(n string, s ...int) {
		names = append(names, n)
		shapes[n] = s
	}
	for i, l := range c.Layers {
		q, kv := l.Heads*l.HeadDim, l.KVHeads*l.HeadDim
		add(LayerName(i, RoleAttnNorm), c.Hidden)
		add(LayerName(i, RoleQ), q, c.Hidden)
		add(LayerName(i, RoleK), kv, c.Hidden)
		add(LayerName(i, RoleV), kv, c.Hidden)
		add(LayerName(i, RoleO), c.Hidden, q)
		add(LayerName(i, RoleMLPNorm), c.Hidden)
		add(LayerName(i, RoleGate), l.MLP, c.Hidden)
		add(LayerName(i, RoleUp), l.MLP, c.Hidden)
		add(LayerName(i, RoleDown), c.Hidden, l.MLP)
	}
	add(NameFinalNorm, c.Hidden)
	if !c.Tied {
		add(NameClassifier, c.Vocab, c.Hidden)
	}
	return names, shapes
}

// RopeToHalf is the row permutation that turns one Q or K matrix from the
// interleaved RoPE order (Meta, llama2.c, llama.cpp: dimensions 2i and 2i+1
// of a head rotate together) into Hugging Face's half order (dimensions i
// and i+hd/2). Row r of the result is row perm[r] of the input.
func RopeToHalf(heads, headDim int) []int {
	perm := make([]int, heads*headDim)
	half := headDim / 2
	for h := 0; h < heads; h++ {
		for j := 0; j < 2; j++ {
			for i := 0; i < half; i++ {
				perm[h*headDim+j*half+i] = h*headDim + 2*i + j
			}
		}
	}
	return perm
}

// RopeToInterleaved is the inverse of RopeToHalf.
func RopeToInterleaved(heads, headDim int) []int {
	fwd := RopeToHalf(heads, headDim)
	inv := make([]int, len(fwd))
	for r, src := range fwd {
		inv[src] = r
	}
	return inv
}
