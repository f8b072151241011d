package hf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/whittle-ml/whittle/ir"
)

// File names of a Hugging Face model directory that this package reads or
// writes.
const (
	ConfigFile           = "config.json"
	GenerationConfigFile = "generation_config.json"
	// Llama2cTokenizerFile is llama2.c's tokenizer format, which whittle
	// writes beside the weights so llama2.c-style tools find a vocabulary.
	Llama2cTokenizerFile = "tokenizer.bin"
	// SentencePieceFile is the SentencePiece model Llama checkpoints ship.
	SentencePieceFile = "tokenizer.model"
)

// WhittleLayersKey is the config.json key holding per-layer sizes of a
// non-uniform (width-pruned) model, which config.json cannot otherwise
// express.
const WhittleLayersKey = "whittle_layers"

// transformersVersion is recorded in the files Save writes. transformers
// only reads it for messages; it is the oldest release that honours every
// key Save writes (head_dim in LlamaConfig).
const transformersVersion = "4.46.0"

// Defaults transformers' LlamaConfig and MistralConfig use for keys a
// config.json leaves out.
const (
	defaultNormEps   = 1e-6
	defaultRopeTheta = 10000.0
	defaultBOS       = 1
	defaultEOS       = 2
)

// maxLayers bounds num_hidden_layers, so a hostile config.json cannot make
// Load allocate per-layer tables without limit; real models have under 200.
const maxLayers = 1 << 16

var defaultMaxSeq = map[string]int{"llama": 2048, "mistral": 4096 * 32}

// supportedArchitectures are the transformers classes whose weights are a
// plain Llama decoder.
var supportedArchitectures = []string{"LlamaForCausalLM", "MistralForCausalLM"}

// configJSON is the subset of config.json that determines the model.
// Pointers tell a missing key (default applies) from a zero value.
type configJSON struct {
	Architectures         []string         `json:"architectures"`
	ModelType             string           `json:"model_type"`
	HiddenSize            *int             `json:"hidden_size"`
	IntermediateSize      *int             `json:"intermediate_size"`
	NumHiddenLayers       *int             `json:"num_hidden_layers"`
	NumAttentionHeads     *int             `json:"num_attention_heads"`
	NumKeyValueHeads      *int             `json:"num_key_value_heads"`
	HeadDim               *int             `json:"head_dim"`
	RMSNormEps            *float64         `json:"rms_norm_eps"`
	RopeTheta             *float64         `json:"rope_theta"`
	RopeScaling           map[string]any   `json:"rope_scaling"`
	RopeParameters        map[string]any   `json:"rope_parameters"`
	MaxPositionEmbeddings *int             `json:"max_position_embeddings"`
	VocabSize             *int             `json:"vocab_size"`
	TieWordEmbeddings     *bool            `json:"tie_word_embeddings"`
	BOSTokenID            json.RawMessage  `json:"bos_token_id"`
	EOSTokenID            json.RawMessage  `json:"eos_token_id"`
	AttentionBias         *bool            `json:"attention_bias"`
	MLPBias               *bool            `json:"mlp_bias"`
	SlidingWindow         *int             `json:"sliding_window"`
	HiddenAct             *string          `json:"hidden_act"`
	QuantizationConfig    json.RawMessage  `json:"quantization_config"`
	WhittleLayers         []ir.LayerConfig `json:"whittle_layers"`
}

// ParseConfig converts a config.json into an ir.Config. It accepts
// LlamaForCausalLM and MistralForCausalLM checkpoints whose computation is
// a plain Llama decoder, and refuses, naming the key, every setting that
// would change the computation in a way whittle does not implement
// (biases, sliding-window attention, other RoPE scalings, quantization).
func ParseConfig(data []byte) (ir.Config, error) {
	var c configJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return ir.Config{}, fmt.Errorf("invalid JSON: %v", err)
	}
	var cfg ir.Config

	switch c.ModelType {
	case "llama", "mistral":
		cfg.Arch = c.ModelType
	case "":
		return cfg, fmt.Errorf("no model_type (want llama or mistral)")
	default:
		return cfg, fmt.Errorf("unsupported model_type %q (want llama or mistral)", c.ModelType)
	}
	if len(c.Architectures) > 0 && !slices.ContainsFunc(c.Architectures, func(a string) bool { return slices.Contains(supportedArchitectures, a) }) {
		return cfg, fmt.Errorf("unsupported architectures %q (want %q)", c.Architectures, supportedArchitectures)
	}

	unsupported := func(format string, args ...any) (ir.Config, error) {
		return ir.Config{}, fmt.Errorf("unsupported: "+format, args...)
	}
	if c.AttentionBias != nil && *c.AttentionBias {
		return unsupported("attention_bias is true (whittle's Llama has no attention biases)")
	}
	if c.MLPBias != nil && *c.MLPBias {
		return unsupported("mlp_bias is true (whittle's Llama has no MLP biases)")
	}
	if c.HiddenAct != nil && *c.HiddenAct != "silu" {
		return unsupported("hidden_act %q (want silu)", *c.HiddenAct)
	}
	if len(c.QuantizationConfig) > 0 && string(c.QuantizationConfig) != "null" {
		return unsupported("quantized checkpoint (quantization_config is set)")
	}

	required := []struct {
		key string
		v   *int
		dst *int
	}{
		{"hidden_size", c.HiddenSize, &cfg.Hidden},
		{"vocab_size", c.VocabSize, &cfg.Vocab},
	}
	for _, r := range required {
		if r.v == nil {
			return cfg, fmt.Errorf("missing %s", r.key)
		}
		if *r.v <= 0 {
			return cfg, fmt.Errorf("%s must be positive, got %d", r.key, *r.v)
		}
		*r.dst = *r.v
	}

	layers, err := parseLayers(&c, cfg.Hidden)
	if err != nil {
		return cfg, err
	}
	cfg.Layers = layers

	cfg.NormEps = defaultNormEps
	if c.RMSNormEps != nil {
		cfg.NormEps = *c.RMSNormEps
	}
	cfg.MaxSeq = defaultMaxSeq[cfg.Arch]
	if c.MaxPositionEmbeddings != nil {
		cfg.MaxSeq = *c.MaxPositionEmbeddings
	}
	if cfg.MaxSeq <= 0 {
		return cfg, fmt.Errorf("max_position_embeddings must be positive, got %d", cfg.MaxSeq)
	}
	if c.SlidingWindow != nil && *c.SlidingWindow < cfg.MaxSeq {
		return unsupported("sliding_window %d is shorter than max_position_embeddings %d (whittle has no sliding-window attention)", *c.SlidingWindow, cfg.MaxSeq)
	}
	cfg.Tied = c.TieWordEmbeddings != nil && *c.TieWordEmbeddings

	// Newer transformers nest rope_theta and the scaling in
	// rope_parameters; older ones use two top-level keys.
	cfg.RopeTheta = defaultRopeTheta
	if c.RopeTheta != nil {
		cfg.RopeTheta = *c.RopeTheta
	}
	scaling, key := c.RopeScaling, "rope_scaling"
	if c.RopeParameters != nil {
		scaling, key = c.RopeParameters, "rope_parameters"
		if th, ok := c.RopeParameters["rope_theta"]; ok {
			f, ok := th.(float64)
			if !ok {
				return cfg, fmt.Errorf("rope_parameters.rope_theta is %v, want a number", th)
			}
			cfg.RopeTheta = f
		}
	}
	if cfg.RopeScaling, err = parseRopeScaling(scaling); err != nil {
		return cfg, fmt.Errorf("%s: %w", key, err)
	}

	if cfg.BOS, err = tokenID(c.BOSTokenID, defaultBOS); err != nil {
		return cfg, fmt.Errorf("bos_token_id: %w", err)
	}
	if cfg.EOS, err = tokenID(c.EOSTokenID, defaultEOS); err != nil {
		return cfg, fmt.Errorf("eos_token_id: %w", err)
	}
	if err := cfg.Check(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// parseLayers builds the per-layer sizes: whittle_layers when present,
// else num_hidden_layers copies of the top-level sizes.
func parseLayers(c *configJSON, hidden int) ([]ir.LayerConfig, error) {
	if c.NumHiddenLayers == nil {
		return nil, fmt.Errorf("missing num_hidden_layers")
	}
	n := *c.NumHiddenLayers
	if n <= 0 || n > maxLayers {
		return nil, fmt.Errorf("num_hidden_layers must be in [1, %d], got %d", maxLayers, n)
	}
	if c.WhittleLayers != nil {
		if len(c.WhittleLayers) != n {
			return nil, fmt.Errorf("%s has %d entries for num_hidden_layers %d", WhittleLayersKey, len(c.WhittleLayers), n)
		}
		return slices.Clone(c.WhittleLayers), nil
	}
	var l ir.LayerConfig
	if c.NumAttentionHeads == nil {
		return nil, fmt.Errorf("missing num_attention_heads")
	}
	if c.IntermediateSize == nil {
		return nil, fmt.Errorf("missing intermediate_size")
	}
	l.Heads, l.MLP = *c.NumAttentionHeads, *c.IntermediateSize
	if l.Heads <= 0 {
		return nil, fmt.Errorf("num_attention_heads must be positive, got %d", l.Heads)
	}
	l.KVHeads = l.Heads
	if c.NumKeyValueHeads != nil {
		l.KVHeads = *c.NumKeyValueHeads
	}
	if c.HeadDim != nil {
		l.HeadDim = *c.HeadDim
	} else {
		if hidden%l.Heads != 0 {
			return nil, fmt.Errorf("no head_dim, and hidden_size %d does not divide into %d heads", hidden, l.Heads)
		}
		l.HeadDim = hidden / l.Heads
	}
	return ir.UniformLayers(n, l), nil
}

// parseRopeScaling reads rope_scaling (or rope_parameters): "type" or
// "rope_type" linear or llama3 with their parameters; absent or "default"
// means none.
func parseRopeScaling(m map[string]any) (*ir.RopeScaling, error) {
	if m == nil {
		return nil, nil
	}
	typ, _ := m["rope_type"].(string)
	if typ == "" {
		typ, _ = m["type"].(string)
	}
	num := func(key string) (float64, error) {
		v, ok := m[key].(float64)
		if !ok {
			return 0, fmt.Errorf("%s rope scaling needs a numeric %s, got %v", typ, key, m[key])
		}
		return v, nil
	}
	var s ir.RopeScaling
	var err error
	switch typ {
	case "", "default":
		return nil, nil
	case "linear":
		s.Type = typ
		if s.Factor, err = num("factor"); err != nil {
			return nil, err
		}
	case "llama3":
		s.Type = typ
		if s.Factor, err = num("factor"); err != nil {
			return nil, err
		}
		if s.LowFreqFactor, err = num("low_freq_factor"); err != nil {
			return nil, err
		}
		if s.HighFreqFactor, err = num("high_freq_factor"); err != nil {
			return nil, err
		}
		orig, err := num("original_max_position_embeddings")
		if err != nil {
			return nil, err
		}
		if orig != float64(int(orig)) || orig <= 0 {
			return nil, fmt.Errorf("original_max_position_embeddings %v must be a positive integer", orig)
		}
		s.OriginalMaxPos = int(orig)
		if s.LowFreqFactor <= 0 || s.HighFreqFactor <= s.LowFreqFactor {
			return nil, fmt.Errorf("llama3 rope scaling needs 0 < low_freq_factor (%g) < high_freq_factor (%g)", s.LowFreqFactor, s.HighFreqFactor)
		}
	default:
		return nil, fmt.Errorf("unsupported rope scaling type %q (want linear or llama3)", typ)
	}
	if s.Factor <= 0 {
		return nil, fmt.Errorf("factor must be positive, got %g", s.Factor)
	}
	return &s, nil
}

// tokenID reads a special token id: a number, a list of numbers (the first
// is taken, as generation uses it), or null for none (-1).
func tokenID(raw json.RawMessage, def int) (int, error) {
	if len(raw) == 0 {
		return def, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, err
	}
	if list, ok := v.([]any); ok {
		if len(list) == 0 {
			return -1, nil
		}
		v = list[0]
	}
	switch x := v.(type) {
	case nil:
		return -1, nil
	case float64:
		if x != float64(int(x)) || x < 0 {
			return 0, fmt.Errorf("%v is not a token id", x)
		}
		return int(x), nil
	}
	return 0, fmt.Errorf("%s is not a token id or a list of them", raw)
}

// torchDType is transformers' spelling of a dtype.
func torchDType(d ir.DType) string {
	switch d {
	case ir.F16:
		return "float16"
	case ir.BF16:
		return "bfloat16"
	}
	return "float32"
}

// MarshalConfig renders cfg as the config.json transformers writes for a
// LlamaForCausalLM: sorted keys, two-space indent. A non-uniform cfg gets
// layer 0's sizes at the top level plus whittle_layers (see Save).
func MarshalConfig(cfg *ir.Config, dtype ir.DType) ([]byte, error) {
	if len(cfg.Layers) == 0 {
		return nil, fmt.Errorf("model has no layers")
	}
	l0 := cfg.Layers[0]
	m := map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"torch_dtype":             torchDType(dtype),
		"hidden_size":             cfg.Hidden,
		"intermediate_size":       l0.MLP,
		"num_hidden_layers":       len(cfg.Layers),
		"num_attention_heads":     l0.Heads,
		"num_key_value_heads":     l0.KVHeads,
		"head_dim":                l0.HeadDim,
		"rms_norm_eps":            cfg.NormEps,
		"rope_theta":              cfg.RopeTheta,
		"rope_scaling":            nil,
		"max_position_embeddings": cfg.MaxSeq,
		"vocab_size":              cfg.Vocab,
		"tie_word_embeddings":     cfg.Tied,
		"bos_token_id":            nullableID(cfg.BOS),
		"eos_token_id":            nullableID(cfg.EOS),
		"hidden_act":              "silu",
		"initializer_range":       0.02,
		"use_cache":               true,
		"attention_bias":          false,
		"attention_dropout":       0.0,
		"mlp_bias":                false,
		"pretraining_tp":          1,
		"transformers_version":    transformersVersion,
	}
	if s := cfg.RopeScaling; s != nil {
		rs := map[string]any{"rope_type": s.Type, "factor": s.Factor}
		if s.Type == "llama3" {
			rs["low_freq_factor"] = s.LowFreqFactor
			rs["high_freq_factor"] = s.HighFreqFactor
			rs["original_max_position_embeddings"] = s.OriginalMaxPos
		}
		m["rope_scaling"] = rs
	}
	if !cfg.Uniform() {
		m[WhittleLayersKey] = cfg.Layers
	}
	return marshalJSON(m)
}

// marshalGenerationConfig renders generation_config.json.
func marshalGenerationConfig(cfg *ir.Config) ([]byte, error) {
	return marshalJSON(map[string]any{
		"_from_model_config":   true,
		"bos_token_id":         nullableID(cfg.BOS),
		"eos_token_id":         nullableID(cfg.EOS),
		"transformers_version": transformersVersion,
	})
}

func nullableID(id int) any {
	if id < 0 {
		return nil
	}
	return id
}

// marshalJSON is Python's json.dumps(v, indent=2, sort_keys=True) plus the
// newline transformers appends (Go sorts map keys too).
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
