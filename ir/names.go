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

// Roles of the per-layer parameters only some families have.
const (
	// RoleQNorm and RoleKNorm are Qwen3's per-head q/k norms.
	RoleQNorm = "self_attn.q_norm"
	RoleKNorm = "self_attn.k_norm"
	// RolePostAttnNorm is Gemma 2's norm on the attention output; it has
	// the name Llama gives its pre-MLP norm.
	RolePostAttnNorm = "post_attention_layernorm"
	// RolePreFFNorm and RolePostFFNorm are Gemma 2's MLP input and output
	// norms.
	RolePreFFNorm  = "pre_feedforward_layernorm"
	RolePostFFNorm = "post_feedforward_layernorm"
)

// LayerRoles lists Llama's per-layer roles in file order.
var LayerRoles = []string{RoleAttnNorm, RoleQ, RoleK, RoleV, RoleO, RoleMLPNorm, RoleGate, RoleUp, RoleDown}

// LayerName is the canonical name of a per-layer weight.
func LayerName(layer int, role string) string {
	return fmt.Sprintf("model.layers.%d.%s.weight", layer, role)
}

// LayerBiasName is the canonical name of a per-layer bias.
func LayerBiasName(layer int, role string) string {
	return fmt.Sprintf("model.layers.%d.%s.bias", layer, role)
}

// LayerTensors names one layer's parameters by what they do, whatever the
// family calls them; "" marks a parameter the family does not have.
type LayerTensors struct {
	AttnNorm            string
	Q, K, V             string
	QBias, KBias, VBias string
	QNorm, KNorm        string
	O                   string
	AttnPostNorm        string
	MLPNorm             string
	Gate, Up, Down      string
	MLPPostNorm         string

	// A mixture-of-experts layer has no Gate, Up, Down but a router
	// [experts, hidden], the routed experts stacked along dimension 0
	// (ExpertGate and ExpertUp [experts, expert_mlp, hidden], ExpertDown
	// [experts, hidden, expert_mlp]: whittle's own layout, which formats
	// split into one tensor per expert), and optionally a shared expert
	// with its sigmoid gate [1, hidden].
	Router                           string
	ExpertGate, ExpertUp, ExpertDown string
	SharedGate, SharedUp, SharedDown string
	SharedExpertGate                 string
}

// LayerTensors names layer i's parameters under c's family options.
func (c *Config) LayerTensors(i int) LayerTensors {
	t := LayerTensors{
		AttnNorm: LayerName(i, RoleAttnNorm),
		Q:        LayerName(i, RoleQ), K: LayerName(i, RoleK), V: LayerName(i, RoleV),
		O:       LayerName(i, RoleO),
		MLPNorm: LayerName(i, RoleMLPNorm),
		Gate:    LayerName(i, RoleGate), Up: LayerName(i, RoleUp), Down: LayerName(i, RoleDown),
	}
	if c.AttnBias {
		t.QBias, t.KBias, t.VBias = LayerBiasName(i, RoleQ), LayerBiasName(i, RoleK), LayerBiasName(i, RoleV)
	}
	if c.QKNorm {
		t.QNorm, t.KNorm = LayerName(i, RoleQNorm), LayerName(i, RoleKNorm)
	}
	if c.PostNorms {
		t.AttnPostNorm = LayerName(i, RolePostAttnNorm)
		t.MLPNorm = LayerName(i, RolePreFFNorm)
		t.MLPPostNorm = LayerName(i, RolePostFFNorm)
	}
	if i < len(c.Layers) && c.Layers[i].MoE() {
		t.Gate, t.Up, t.Down = "", "", ""
		// Mixtral's module is block_sparse_moe with experts' w1 (gate),
		// w3 (up) and w2 (down); the Qwen MoE families use mlp and the
		// dense names.
		moe, gate, up, down := "mlp", "gate_proj", "up_proj", "down_proj"
		if c.Arch == "mixtral" {
			moe, gate, up, down = "block_sparse_moe", "w1", "w3", "w2"
		}
		t.Router = LayerName(i, moe+".gate")
		t.ExpertGate = LayerName(i, moe+".experts."+gate)
		t.ExpertUp = LayerName(i, moe+".experts."+up)
		t.ExpertDown = LayerName(i, moe+".experts."+down)
		if c.Layers[i].SharedMLP > 0 {
			t.SharedGate = LayerName(i, moe+".shared_expert.gate_proj")
			t.SharedUp = LayerName(i, moe+".shared_expert.up_proj")
			t.SharedDown = LayerName(i, moe+".shared_expert.down_proj")
			t.SharedExpertGate = LayerName(i, moe+".shared_expert_gate")
		}
	}
	return t
}

// All lists the layer's parameter names in file order.
func (t LayerTensors) All() []string {
	var out []string
	for _, n := range []string{t.AttnNorm, t.Q, t.QBias, t.K, t.KBias, t.V, t.VBias, t.QNorm, t.KNorm, t.O, t.AttnPostNorm, t.MLPNorm,
		t.Gate, t.Up, t.Down, t.Router, t.ExpertGate, t.ExpertUp, t.ExpertDown, t.SharedGate, t.SharedUp, t.SharedDown, t.SharedExpertGate, t.MLPPostNorm} {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
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
