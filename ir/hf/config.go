package hf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
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

// transformersVersion is recorded in the files Save writes for Llama (see
// family.version for the others). transformers only reads it for
// messages; it is the oldest release that honours every key Save writes
// (head_dim in LlamaConfig).
const transformersVersion = "4.46.0"

// maxLayers bounds num_hidden_layers, so a hostile config.json cannot make
// Load allocate per-layer tables without limit; real models have under 200.
const maxLayers = 1 << 16

// Gemma2Config's defaults for Gemma 2's own keys.
const (
	defaultGemmaActivation  = "gelu_pytorch_tanh"
	defaultGemmaAttnScalar  = 256
	defaultGemmaAttnSoftCap = 50
	defaultGemmaFinalCap    = 30
)

// opt is a config.json key that may be missing (the class default
// applies), null, or set to v.
type opt[T any] struct {
	set, null bool
	v         T
}

func (o *opt[T]) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(b) == "null" {
		o.null = true
		return nil
	}
	return json.Unmarshal(b, &o.v)
}

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
	PartialRotaryFactor   *float64         `json:"partial_rotary_factor"`
	MaxPositionEmbeddings *int             `json:"max_position_embeddings"`
	VocabSize             *int             `json:"vocab_size"`
	TieWordEmbeddings     *bool            `json:"tie_word_embeddings"`
	BOSTokenID            json.RawMessage  `json:"bos_token_id"`
	EOSTokenID            json.RawMessage  `json:"eos_token_id"`
	AttentionBias         *bool            `json:"attention_bias"`
	MLPBias               *bool            `json:"mlp_bias"`
	HiddenAct             *string          `json:"hidden_act"`
	QuantizationConfig    json.RawMessage  `json:"quantization_config"`
	WhittleLayers         []ir.LayerConfig `json:"whittle_layers"`
	BlockConfigs          []deciBlock      `json:"block_configs"`

	// Sliding windows (Mistral, Qwen2/3, Gemma 2, Phi-3).
	SlidingWindow    opt[int] `json:"sliding_window"`
	UseSlidingWindow *bool    `json:"use_sliding_window"`
	MaxWindowLayers  *int     `json:"max_window_layers"`
	LayerTypes       []string `json:"layer_types"`

	// Mixtures of experts (Mixtral's num_local_experts, Qwen-MoE's
	// num_experts). router_aux_loss_coef and output_router_logits only
	// matter to training in transformers, so they are not read; whittle's
	// training passes take the auxiliary loss's weight as an option.
	NumLocalExperts              *int  `json:"num_local_experts"`
	NumExperts                   *int  `json:"num_experts"`
	NumExpertsPerTok             *int  `json:"num_experts_per_tok"`
	NormTopKProb                 *bool `json:"norm_topk_prob"`
	MoEIntermediateSize          *int  `json:"moe_intermediate_size"`
	SharedExpertIntermediateSize *int  `json:"shared_expert_intermediate_size"`
	DecoderSparseStep            *int  `json:"decoder_sparse_step"`
	MLPOnlyLayers                []int `json:"mlp_only_layers"`

	// Gemma 2.
	HiddenActivation      *string      `json:"hidden_activation"`
	QueryPreAttnScalar    opt[float64] `json:"query_pre_attn_scalar"`
	AttnLogitSoftcapping  opt[float64] `json:"attn_logit_softcapping"`
	FinalLogitSoftcapping opt[float64] `json:"final_logit_softcapping"`
}

func errUnsupported(format string, args ...any) error {
	return fmt.Errorf("unsupported: "+format, args...)
}

// ParseConfig converts a config.json into an ir.Config. It accepts the
// causal LMs of the families in families (Llama, Mistral, Qwen2, Qwen3,
// Gemma 2, Phi-3), with each family's transformers defaults for missing
// keys, and refuses, naming the key, every setting that would change the
// computation in a way whittle does not implement (extra biases, other
// activations and RoPE scalings, quantization).
func ParseConfig(data []byte) (ir.Config, error) {
	var c configJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return ir.Config{}, fmt.Errorf("invalid JSON: %v", err)
	}
	cfg, err := parseConfig(&c)
	if err != nil {
		return ir.Config{}, err
	}
	return cfg, nil
}

func parseConfig(c *configJSON) (ir.Config, error) {
	var cfg ir.Config
	if c.ModelType == "" {
		return cfg, fmt.Errorf("no model_type (want one of %q)", modelTypes())
	}
	f, ok := families[c.ModelType]
	if !ok {
		return cfg, fmt.Errorf("unsupported model_type %q (want one of %q)", c.ModelType, modelTypes())
	}
	cfg.Arch = f.arch
	if len(c.Architectures) > 0 && !slices.Contains(c.Architectures, f.architecture) {
		return cfg, fmt.Errorf("unsupported architectures %q for model_type %s (want %q)", c.Architectures, c.ModelType, f.architecture)
	}
	f.opts.apply(&cfg)

	switch {
	case c.AttentionBias != nil && *c.AttentionBias && !f.opts.AttnBias:
		// Qwen2's q/k/v biases are built in (its class ignores the key);
		// elsewhere the key adds an o_proj bias whittle does not have.
		return cfg, errUnsupported("attention_bias is true (whittle's %s has no attention output bias)", f.arch)
	case c.MLPBias != nil && *c.MLPBias:
		return cfg, errUnsupported("mlp_bias is true (whittle's %s has no MLP biases)", f.arch)
	case len(c.QuantizationConfig) > 0 && string(c.QuantizationConfig) != "null":
		return cfg, errUnsupported("quantized checkpoint (quantization_config is set)")
	case c.PartialRotaryFactor != nil && *c.PartialRotaryFactor != 1:
		return cfg, errUnsupported("partial_rotary_factor %g (whittle rotates whole heads)", *c.PartialRotaryFactor)
	}
	if f.arch == "gemma2" {
		// Gemma2Config reads hidden_activation; checkpoints also carry
		// hidden_act, which must not say otherwise.
		for _, a := range []struct {
			key string
			v   *string
		}{{"hidden_activation", c.HiddenActivation}, {"hidden_act", c.HiddenAct}} {
			if a.v != nil && *a.v != defaultGemmaActivation {
				return cfg, errUnsupported("%s %q (want %s)", a.key, *a.v, defaultGemmaActivation)
			}
		}
	} else if c.HiddenAct != nil && *c.HiddenAct != "silu" {
		return cfg, errUnsupported("hidden_act %q (want silu)", *c.HiddenAct)
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

	layers, err := parseLayers(c, cfg.Hidden, f.headDim)
	if err != nil {
		return cfg, err
	}
	cfg.Layers = layers
	if err := parseMoE(f, c, &cfg); err != nil {
		return cfg, err
	}

	cfg.NormEps = f.normEps
	if c.RMSNormEps != nil {
		cfg.NormEps = *c.RMSNormEps
	}
	cfg.MaxSeq = f.maxSeq
	if c.MaxPositionEmbeddings != nil {
		cfg.MaxSeq = *c.MaxPositionEmbeddings
	}
	if cfg.MaxSeq <= 0 {
		return cfg, fmt.Errorf("max_position_embeddings must be positive, got %d", cfg.MaxSeq)
	}
	if err := parseWindows(f, c, &cfg); err != nil {
		return cfg, err
	}
	if c.WhittleLayers != nil {
		// Sizes come from whittle_layers, windows from the family's keys
		// (what transformers sees); a window in both must agree.
		for i, l := range c.WhittleLayers {
			if l.Window != 0 && l.Window != cfg.Layers[i].Window {
				return cfg, fmt.Errorf("%s[%d] has sliding_window %d, but the config's keys give layer %d window %d", WhittleLayersKey, i, l.Window, i, cfg.Layers[i].Window)
			}
		}
	}
	cfg.Tied = f.tied
	if c.TieWordEmbeddings != nil {
		cfg.Tied = *c.TieWordEmbeddings
	}
	if f.arch == "gemma2" {
		if err := parseGemma2(c, &cfg); err != nil {
			return cfg, err
		}
	}

	// Newer transformers nest rope_theta and the scaling in
	// rope_parameters; older ones use two top-level keys.
	cfg.RopeTheta = f.ropeTheta
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
	if f.arch == "phi3" && cfg.RopeScaling != nil {
		// Phi3Config accepts only longrope, which whittle lacks.
		return cfg, errUnsupported("%s type %q on phi3 (Phi3Config allows only longrope)", key, cfg.RopeScaling.Type)
	}

	if cfg.BOS, err = tokenID(c.BOSTokenID, f.bos); err != nil {
		return cfg, fmt.Errorf("bos_token_id: %w", err)
	}
	if cfg.EOS, err = tokenID(c.EOSTokenID, f.eos); err != nil {
		return cfg, fmt.Errorf("eos_token_id: %w", err)
	}
	if err := cfg.Check(); err != nil {
		return cfg, err
	}
	// whittle_layers may give layers experts the family's class cannot
	// have (a shared expert outside Qwen2-MoE, experts in a dense family).
	if _, _, err := moeConfigKeys(f, &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// parseGemma2 reads Gemma 2's attention scalar and soft caps. A null cap
// means none, as in transformers; a null scalar transformers cannot use.
func parseGemma2(c *configJSON, cfg *ir.Config) error {
	vals := []struct {
		key  string
		o    opt[float64]
		def  float64
		null bool // null allowed, meaning 0
		dst  *float64
	}{
		{"query_pre_attn_scalar", c.QueryPreAttnScalar, defaultGemmaAttnScalar, false, &cfg.AttnScalar},
		{"attn_logit_softcapping", c.AttnLogitSoftcapping, defaultGemmaAttnSoftCap, true, &cfg.AttnSoftCap},
		{"final_logit_softcapping", c.FinalLogitSoftcapping, defaultGemmaFinalCap, true, &cfg.FinalSoftCap},
	}
	for _, v := range vals {
		switch {
		case !v.o.set:
			*v.dst = v.def
		case v.o.null && v.null:
			*v.dst = 0
		case v.o.null:
			return fmt.Errorf("%s is null (want a positive number)", v.key)
		case !(v.o.v > 0) || math.IsInf(v.o.v, 0):
			return fmt.Errorf("%s must be positive and finite, got %g", v.key, v.o.v)
		default:
			*v.dst = v.o.v
		}
	}
	return nil
}

// parseLayers builds the per-layer sizes: whittle_layers when present,
// else num_hidden_layers copies of the top-level sizes.
func parseLayers(c *configJSON, hidden, defHeadDim int) ([]ir.LayerConfig, error) {
	if c.NumHiddenLayers == nil {
		return nil, fmt.Errorf("missing num_hidden_layers")
	}
	n := *c.NumHiddenLayers
	if n <= 0 || n > maxLayers {
		return nil, fmt.Errorf("num_hidden_layers must be in [1, %d], got %d", maxLayers, n)
	}
	if c.ModelType == DeciLMModelType || c.BlockConfigs != nil {
		return parseDeciLayers(c, hidden)
	}
	if c.WhittleLayers != nil {
		if len(c.WhittleLayers) != n {
			return nil, fmt.Errorf("%s has %d entries for num_hidden_layers %d", WhittleLayersKey, len(c.WhittleLayers), n)
		}
		out := make([]ir.LayerConfig, n)
		for i, l := range c.WhittleLayers {
			out[i] = l.Sizes()
		}
		return out, nil
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
	} else if defHeadDim > 0 {
		l.HeadDim = defHeadDim
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

// MarshalConfig renders cfg as the config.json transformers writes for
// its family's CausalLM class (LlamaForCausalLM for Llama and for configs
// without Arch): sorted keys, two-space indent, the family's own keys. A
// non-uniform cfg gets layer 0's sizes at the top level plus
// whittle_layers (see Save). It refuses configs the family's classes
// cannot express: options of another family, or sliding windows other
// than the family's patterns (one window size; every layer for Mistral
// and Phi-3; for Qwen2/3 and Gemma 2 any set of layers, other sets than
// theirs written as layer_types, which transformers reads from 4.53).
func MarshalConfig(cfg *ir.Config, dtype ir.DType) ([]byte, error) {
	m, err := configMap(cfg, dtype)
	if err != nil {
		return nil, err
	}
	return marshalJSON(m)
}

// configMap is MarshalConfig's content, before rendering.
func configMap(cfg *ir.Config, dtype ir.DType) (map[string]any, error) {
	if len(cfg.Layers) == 0 {
		return nil, fmt.Errorf("model has no layers")
	}
	f, err := familyOf(cfg)
	if err != nil {
		return nil, err
	}
	if got := options(cfg); got != f.opts {
		return nil, fmt.Errorf("a %s config has options %+v, but %s's are %+v", f.architecture, got, f.arch, f.opts)
	}
	gemma := f.arch == "gemma2"
	if !gemma && (cfg.AttnScalar != 0 || cfg.AttnSoftCap != 0 || cfg.FinalSoftCap != 0) {
		return nil, fmt.Errorf("%s has no query_pre_attn_scalar or soft caps (config has %g, %g, %g)", f.architecture, cfg.AttnScalar, cfg.AttnSoftCap, cfg.FinalSoftCap)
	}
	if gemma && cfg.AttnScalar == 0 {
		return nil, fmt.Errorf("%s needs query_pre_attn_scalar, and the config has none", f.architecture)
	}
	if f.arch == "phi3" && cfg.RopeScaling != nil {
		return nil, fmt.Errorf("%s allows only longrope scaling, not %q", f.architecture, cfg.RopeScaling.Type)
	}
	windows, err := windowKeys(f, cfg.Layers)
	if err != nil {
		return nil, err
	}
	moeKeys, uniform, err := moeConfigKeys(f, cfg)
	if err != nil {
		return nil, err
	}

	l0 := cfg.Layers[0]
	m := map[string]any{
		"architectures":           []string{f.architecture},
		"model_type":              f.arch,
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
		"transformers_version":    f.version,
	}
	if f.arch != "llama" {
		// Llama-only keys; the other classes ignore them.
		delete(m, "mlp_bias")
		delete(m, "pretraining_tp")
	}
	switch f.arch {
	case "mistral", "qwen2", "mixtral", "qwen2_moe":
		delete(m, "attention_bias") // not a key of their classes
	case "gemma2":
		m["hidden_act"] = defaultGemmaActivation // beside the key Gemma2Config reads, as published
		m["hidden_activation"] = defaultGemmaActivation
		m["query_pre_attn_scalar"] = cfg.AttnScalar
		m["attn_logit_softcapping"] = nullableCap(cfg.AttnSoftCap)
		m["final_logit_softcapping"] = nullableCap(cfg.FinalSoftCap)
		m["pad_token_id"] = 0
	case "phi3":
		m["original_max_position_embeddings"] = cfg.MaxSeq
		m["resid_pdrop"] = 0.0
		m["embd_pdrop"] = 0.0
		// Phi3Config's pad default (32000) is the embedding's padding_idx,
		// which must lie inside the vocabulary.
		m["pad_token_id"] = nil
		if cfg.Vocab > 32000 {
			m["pad_token_id"] = 32000
		}
	}
	for k, v := range windows {
		m[k] = v
	}
	for k, v := range moeKeys {
		m[k] = v
	}
	if s := cfg.RopeScaling; s != nil {
		rs := map[string]any{"rope_type": s.Type, "factor": s.Factor}
		if s.Type == "llama3" {
			rs["low_freq_factor"] = s.LowFreqFactor
			rs["high_freq_factor"] = s.HighFreqFactor
			rs["original_max_position_embeddings"] = s.OriginalMaxPos
			// llama.cpp's converter reads the llama3 context from the top
			// level (8192 when absent); transformers keeps the key as an
			// unused attribute. Written so that both read one model.
			m["original_max_position_embeddings"] = s.OriginalMaxPos
		}
		m["rope_scaling"] = rs
	}
	if !uniform {
		sizes := make([]ir.LayerConfig, len(cfg.Layers))
		for i, l := range cfg.Layers {
			sizes[i] = l.Sizes()
		}
		m[WhittleLayersKey] = sizes
	}
	return m, nil
}

// nullableCap is a soft cap as Gemma 2 writes it: null for none.
func nullableCap(c float64) any {
	if c == 0 {
		return nil
	}
	return c
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
