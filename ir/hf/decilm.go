package hf

// DeciLM (DeciLMForCausalLM, model_type nemotron-nas: Llama-3.1-Nemotron-
// 51B and its kin) is Llama with a block_configs list that sizes every
// layer: its KV heads as num_attention_heads / n_heads_in_group and its
// MLP width from an ffn_mult by DeciLMIntermediateSize. It is the
// published Hugging Face form of a Llama whose layers differ in size, read
// by vLLM and llama.cpp's converter (as GGUF deci).

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/ir"
)

// DeciLM's config.json identity.
const (
	DeciLMModelType    = "nemotron-nas"
	DeciLMArchitecture = "DeciLMForCausalLM"
	// deciFFNMultiple is what DeciLM rounds MLP widths up to.
	deciFFNMultiple = 256
)

// DeciLMIntermediateSize is DeciLM's MLP width for an ffn_mult at a
// hidden size: int(2·ffn_mult·hidden/3) rounded up to a multiple of 256
// (_ffn_mult_to_intermediate_size in DeciLM's modeling code and llama.cpp's
// converter), evaluated in the same float64 order as Python.
func DeciLMIntermediateSize(ffnMult float64, hidden int) int {
	n := int(2 * ffnMult * float64(hidden) / 3)
	if r := n % deciFFNMultiple; r != 0 {
		n += deciFFNMultiple - r
	}
	return n
}

// deciFFNMult is the ffn_mult that DeciLMIntermediateSize maps to width,
// or false when none does (width not a positive multiple of 256).
func deciFFNMult(width, hidden int) (float64, bool) {
	if width <= 0 || width%deciFFNMultiple != 0 {
		return 0, false
	}
	m := float64(3*width) / float64(2*hidden)
	return m, DeciLMIntermediateSize(m, hidden) == width
}

// CheckDeciLM reports why cfg cannot be written as DeciLM (nil when it
// can): it must be a Llama (or window-free Mistral) decoder whose layers
// all have num_attention_heads query heads of size hidden/heads (DeciLM
// varies only the KV heads and the MLP width per layer), KV heads that
// divide them, and MLP widths its ffn_mult rule yields.
func CheckDeciLM(cfg *ir.Config) error {
	if len(cfg.Layers) == 0 {
		return fmt.Errorf("model has no layers")
	}
	switch cfg.Arch {
	case "", "llama", "mistral":
	default:
		return fmt.Errorf("%s computes as Llama; a %s model cannot be written as one", DeciLMArchitecture, cfg.Arch)
	}
	if got := options(cfg); got != families["llama"].opts || cfg.AttnScalar != 0 || cfg.AttnSoftCap != 0 || cfg.FinalSoftCap != 0 {
		return fmt.Errorf("%s computes as Llama, but the config has options %+v", DeciLMArchitecture, cfg.Options())
	}
	heads := cfg.Layers[0].Heads
	for i, l := range cfg.Layers {
		switch {
		case l.MoE():
			return fmt.Errorf("layer %d is a mixture of experts; %s's blocks are dense", i, DeciLMArchitecture)
		case l.Window != 0:
			return fmt.Errorf("layer %d has sliding window %d; whittle writes %s without windows", i, l.Window, DeciLMArchitecture)
		case l.Heads != heads:
			return fmt.Errorf("layer %d has %d query heads, layer 0 %d: %s gives every layer num_attention_heads query heads (it varies only KV heads and MLP widths); %s (Save's default) holds such a model", i, l.Heads, heads, DeciLMArchitecture, WhittleLayersKey)
		case l.HeadDim*heads != cfg.Hidden:
			return fmt.Errorf("layer %d has heads of size %d, but %s's are hidden_size / num_attention_heads = %d / %d", i, l.HeadDim, DeciLMArchitecture, cfg.Hidden, heads)
		}
		if _, ok := deciFFNMult(l.MLP, cfg.Hidden); !ok {
			return fmt.Errorf("layer %d's MLP width %d cannot be expressed by %s, whose widths are int(2·ffn_mult·hidden/3) rounded up to a multiple of %d; %s (Save's default for layers that differ) holds it", i, l.MLP, DeciLMArchitecture, deciFFNMultiple, WhittleLayersKey)
		}
	}
	return nil
}

// pyFloat renders as Python's json.dumps does a float: always with a
// fraction or exponent (6.0, not 6), which llama.cpp's converter checks
// ffn_mult for.
type pyFloat float64

func (f pyFloat) MarshalJSON() ([]byte, error) {
	x := float64(f)
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil, fmt.Errorf("%g is not a JSON number", x)
	}
	s := strconv.FormatFloat(x, 'g', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return []byte(s), nil
}

// MarshalDeciLMConfig renders cfg as a DeciLMForCausalLM config.json:
// Llama's keys (see MarshalConfig) without the per-model sizes
// block_configs replaces (intermediate_size, num_key_value_heads,
// head_dim), and one block config per layer. It fails, saying why, for
// a config CheckDeciLM rejects. The file names no auto_map: transformers
// loads DeciLM only with its remote modeling code, which a Nemotron
// checkpoint carries and whittle does not write.
func MarshalDeciLMConfig(cfg *ir.Config, dtype ir.DType) ([]byte, error) {
	if err := CheckDeciLM(cfg); err != nil {
		return nil, err
	}
	llama := cfg.Clone()
	llama.Arch = "llama"
	for i := range llama.Layers {
		llama.Layers[i] = llama.Layers[0] // sizes move to block_configs
	}
	m, err := configMap(&llama, dtype)
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"intermediate_size", "num_key_value_heads", "head_dim"} {
		delete(m, k)
	}
	m["architectures"] = []string{DeciLMArchitecture}
	m["model_type"] = DeciLMModelType
	blocks := make([]map[string]any, len(cfg.Layers))
	for i, l := range cfg.Layers {
		mult, _ := deciFFNMult(l.MLP, cfg.Hidden)
		blocks[i] = map[string]any{
			"attention": map[string]any{
				"n_heads_in_group":                     l.Heads / l.KVHeads,
				"no_op":                                false,
				"replace_with_linear":                  false,
				"sparsify":                             nil,
				"num_sink_tokens":                      nil,
				"unshifted_sink":                       false,
				"use_prefill_window_in_sink_attention": false,
				"window_length":                        nil,
			},
			"ffn": map[string]any{
				"ffn_mult":            pyFloat(mult),
				"no_op":               false,
				"replace_with_linear": false,
				"sparsify":            nil,
			},
		}
	}
	m["block_configs"] = blocks
	return marshalJSON(m)
}

// deciBlock is one entry of block_configs, as far as whittle reads it.
type deciBlock struct {
	Attention struct {
		NHeadsInGroup     *int            `json:"n_heads_in_group"`
		NoOp              bool            `json:"no_op"`
		ReplaceWithLinear bool            `json:"replace_with_linear"`
		Sparsify          json.RawMessage `json:"sparsify"`
		WindowLength      *int            `json:"window_length"`
		NumSinkTokens     *int            `json:"num_sink_tokens"`
	} `json:"attention"`
	FFN struct {
		FFNMult           *float64        `json:"ffn_mult"`
		NoOp              bool            `json:"no_op"`
		ReplaceWithLinear bool            `json:"replace_with_linear"`
		Sparsify          json.RawMessage `json:"sparsify"`
	} `json:"ffn"`
}

// parseDeciLayers sizes the layers of a DeciLM config from block_configs,
// refusing the block variants whittle does not run (no-op, linear or
// sparse blocks, windowed or sink attention).
func parseDeciLayers(c *configJSON, hidden int) ([]ir.LayerConfig, error) {
	n := *c.NumHiddenLayers
	switch {
	case c.ModelType != DeciLMModelType:
		return nil, errUnsupported("block_configs in a %s config (it is %s's, model_type %s)", c.ModelType, DeciLMArchitecture, DeciLMModelType)
	case c.BlockConfigs == nil:
		return nil, errUnsupported("%s config without block_configs", DeciLMModelType)
	case len(c.BlockConfigs) != n:
		return nil, fmt.Errorf("block_configs has %d entries for num_hidden_layers %d", len(c.BlockConfigs), n)
	case c.WhittleLayers != nil:
		return nil, fmt.Errorf("both block_configs and %s give per-layer sizes", WhittleLayersKey)
	case c.NumAttentionHeads == nil || *c.NumAttentionHeads <= 0:
		return nil, fmt.Errorf("%s needs a positive num_attention_heads", DeciLMModelType)
	}
	heads := *c.NumAttentionHeads
	if hidden%heads != 0 {
		return nil, fmt.Errorf("hidden_size %d does not divide into %d heads", hidden, heads)
	}
	headDim := hidden / heads
	if c.HeadDim != nil && *c.HeadDim != headDim {
		return nil, errUnsupported("head_dim %d (%s's heads are hidden_size / num_attention_heads = %d)", *c.HeadDim, DeciLMArchitecture, headDim)
	}
	null := func(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }
	out := make([]ir.LayerConfig, n)
	for i, b := range c.BlockConfigs {
		a, f := b.Attention, b.FFN
		switch {
		case a.NoOp || a.ReplaceWithLinear || a.NHeadsInGroup == nil:
			return nil, errUnsupported("block_configs[%d].attention is a no-op or linear layer (whittle runs attention layers only)", i)
		case f.NoOp || f.ReplaceWithLinear:
			return nil, errUnsupported("block_configs[%d].ffn is a no-op or linear layer (whittle runs gated MLPs only)", i)
		case !null(a.Sparsify) || !null(f.Sparsify):
			return nil, errUnsupported("block_configs[%d] is sparsified", i)
		case a.WindowLength != nil || a.NumSinkTokens != nil:
			return nil, errUnsupported("block_configs[%d].attention has a window or sink tokens", i)
		case f.FFNMult == nil || !(*f.FFNMult > 0) || math.IsInf(*f.FFNMult, 0):
			return nil, fmt.Errorf("block_configs[%d].ffn.ffn_mult must be a positive number", i)
		}
		if *f.FFNMult*float64(hidden) > 1<<30 {
			return nil, fmt.Errorf("block_configs[%d].ffn.ffn_mult %g is too large for hidden_size %d", i, *f.FFNMult, hidden)
		}
		g := *a.NHeadsInGroup
		if g <= 0 || heads%g != 0 {
			return nil, fmt.Errorf("block_configs[%d].attention.n_heads_in_group %d does not divide num_attention_heads %d", i, g, heads)
		}
		width := DeciLMIntermediateSize(*f.FFNMult, hidden)
		if width <= 0 {
			return nil, fmt.Errorf("block_configs[%d].ffn.ffn_mult %g gives MLP width %d", i, *f.FFNMult, width)
		}
		out[i] = ir.LayerConfig{Heads: heads, KVHeads: heads / g, HeadDim: headDim, MLP: width}
	}
	return out, nil
}
