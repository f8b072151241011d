package ir

import (
	"fmt"

	"github.com/whittle-ml/whittle/ir/graph"
)

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
// with its shape, in a stable order: the parameters of the config's graph
// (Config.Graph), in the graph's order, shared ones once. A config whose
// graph cannot be built expects nothing; Model.Validate says why.
func (c *Config) ExpectedShapes() ([]string, map[string][]int) {
	g, err := c.Graph()
	if err != nil {
		return nil, map[string][]int{}
	}
	return paramShapes(g)
}

// paramShapes lists a graph's parameters with their shapes, in order.
func paramShapes(g *graph.Graph) ([]string, map[string][]int) {
	names := make([]string, len(g.Params))
	shapes := make(map[string][]int, len(g.Params))
	for i, p := range g.Params {
		names[i] = p.Name
		shapes[p.Name] = p.Shape.Sizes()
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
