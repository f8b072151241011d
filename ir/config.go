package ir

import (
	"fmt"
	"maps"
	"math"
	"slices"
)

// Config is the architecture of a decoder of one of the families whittle
// reads (Llama, Mistral, Qwen2, Qwen3, Gemma 2, Phi-3): Llama's layout plus
// the options that set the others apart. Layer sizes may differ per layer:
// a width- or depth-pruned model is still a valid Config. The zero value of
// every family option is Llama's behaviour, so that a Llama config
// serializes as it always did.
type Config struct {
	// Arch names the family ("llama", "mistral", "qwen2", "qwen3",
	// "gemma2", "phi3"); it chooses tensor names and file layouts, while
	// the options below choose the computation.
	Arch   string `json:"arch"`
	Vocab  int    `json:"vocab_size"`
	Hidden int    `json:"hidden_size"`
	// Layers holds one entry per decoder layer, in order.
	Layers  []LayerConfig `json:"layers"`
	NormEps float64       `json:"rms_norm_eps"`
	// RopeTheta is the RoPE base frequency (10000 for Llama 2).
	RopeTheta   float64      `json:"rope_theta"`
	RopeScaling *RopeScaling `json:"rope_scaling,omitempty"`
	MaxSeq      int          `json:"max_position_embeddings"`
	// Tied means the classifier reuses the token embedding matrix.
	Tied bool `json:"tie_word_embeddings"`
	BOS  int  `json:"bos_token_id"`
	EOS  int  `json:"eos_token_id"`

	// AttnBias adds biases to the q, k and v projections (Qwen2).
	AttnBias bool `json:"attention_bias,omitempty"`
	// QKNorm normalizes each query and key head with its own RMSNorm
	// before RoPE (Qwen3).
	QKNorm bool `json:"qk_norm,omitempty"`
	// NormOffset is added to every norm weight: 1 for Gemma's (1 + w).
	NormOffset float64 `json:"norm_offset,omitempty"`
	// EmbedScale multiplies the looked-up embeddings by √hidden (Gemma).
	EmbedScale bool `json:"embed_scale,omitempty"`
	// Act is the gated MLP's activation: "" or ActSiLU (SwiGLU), or
	// ActGELUTanh (Gemma's GeGLU).
	Act string `json:"hidden_act,omitempty"`
	// PostNorms adds Gemma 2's norms on the attention and MLP outputs
	// before their residual adds (and renames the pre-MLP norm).
	PostNorms bool `json:"post_norms,omitempty"`
	// AttnScalar scales attention scores by AttnScalar^-½ (Gemma 2's
	// query_pre_attn_scalar); 0 means head_dim.
	AttnScalar float64 `json:"query_pre_attn_scalar,omitempty"`
	// AttnSoftCap and FinalSoftCap, when positive, cap attention scores
	// and logits as cap·tanh(x/cap) (Gemma 2).
	AttnSoftCap  float64 `json:"attn_logit_softcapping,omitempty"`
	FinalSoftCap float64 `json:"final_logit_softcapping,omitempty"`

	// ExpertsPerToken is how many experts each token is routed to in the
	// mixture-of-experts layers (LayerConfig.Experts); NormTopK
	// renormalizes the chosen experts' router probabilities to sum to 1
	// (Mixtral, Qwen3-MoE), else they are used as they are (Qwen2-MoE).
	ExpertsPerToken int  `json:"num_experts_per_tok,omitempty"`
	NormTopK        bool `json:"norm_topk_prob,omitempty"`
}

// Gated-MLP activations.
const (
	ActSiLU     = "silu"
	ActGELUTanh = "gelu_tanh"
)

// Activation is the MLP's activation with the default filled in.
func (c *Config) Activation() string {
	if c.Act == "" {
		return ActSiLU
	}
	return c.Act
}

// AttnScale is the factor attention scores are multiplied by in a layer
// with the given head_dim.
func (c *Config) AttnScale(headDim int) float64 {
	if c.AttnScalar > 0 {
		return 1 / math.Sqrt(c.AttnScalar)
	}
	return 1 / math.Sqrt(float64(headDim))
}

// LayerConfig sizes one decoder layer. Query heads are grouped by KV head:
// query head h uses KV head h / (Heads/KVHeads).
type LayerConfig struct {
	Heads   int `json:"num_attention_heads"`
	KVHeads int `json:"num_key_value_heads"`
	HeadDim int `json:"head_dim"`
	MLP     int `json:"intermediate_size"`
	// Window, when positive, limits each query to the Window most recent
	// positions, itself included (sliding-window attention); 0 is global.
	Window int `json:"sliding_window,omitempty"`
	// Experts, when positive, makes the layer's MLP a mixture of that many
	// routed experts of ExpertMLP neurons each (MLP is then 0), plus a
	// shared expert of SharedMLP neurons with a sigmoid gate when
	// SharedMLP is positive (Qwen2-MoE).
	Experts   int `json:"num_experts,omitempty"`
	ExpertMLP int `json:"moe_intermediate_size,omitempty"`
	SharedMLP int `json:"shared_expert_intermediate_size,omitempty"`
}

// MoE reports whether the layer's MLP is a mixture of experts.
func (l LayerConfig) MoE() bool { return l.Experts > 0 }

// RopeScaling mirrors Hugging Face's rope_scaling dictionary for the
// "linear" and "llama3" schemes.
type RopeScaling struct {
	Type           string  `json:"rope_type"`
	Factor         float64 `json:"factor"`
	LowFreqFactor  float64 `json:"low_freq_factor,omitempty"`
	HighFreqFactor float64 `json:"high_freq_factor,omitempty"`
	OriginalMaxPos int     `json:"original_max_position_embeddings,omitempty"`
}

// GroupSize is the number of query heads sharing one KV head.
func (l LayerConfig) GroupSize() int {
	if l.KVHeads == 0 {
		return 0
	}
	return l.Heads / l.KVHeads
}

// Uniform reports whether every layer has the same sizes, which formats
// without per-layer fields (Hugging Face's config.json) require. Attention
// windows are not sizes: Gemma 2 alternates them by design.
func (c *Config) Uniform() bool {
	for _, l := range c.Layers {
		if l.Sizes() != c.Layers[0].Sizes() {
			return false
		}
	}
	return true
}

// Sizes is the layer without its attention window.
func (l LayerConfig) Sizes() LayerConfig {
	l.Window = 0
	return l
}

// UniformLayers builds n identical layer configs.
func UniformLayers(n int, l LayerConfig) []LayerConfig {
	out := make([]LayerConfig, n)
	for i := range out {
		out[i] = l
	}
	return out
}

// Check reports the first inconsistency in the sizes themselves.
func (c *Config) Check() error {
	if c.Vocab <= 0 || c.Hidden <= 0 {
		return fmt.Errorf("vocab_size (%d) and hidden_size (%d) must be positive", c.Vocab, c.Hidden)
	}
	if len(c.Layers) == 0 {
		return fmt.Errorf("model has no layers")
	}
	// Written as !(x > 0) so that NaN is rejected too.
	if !(c.NormEps > 0) {
		return fmt.Errorf("rms_norm_eps must be positive, got %g", c.NormEps)
	}
	if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		return fmt.Errorf("rope_theta must be positive and finite, got %g", c.RopeTheta)
	}
	if err := c.RopeScaling.check(); err != nil {
		return err
	}
	switch c.Act {
	case "", ActSiLU, ActGELUTanh:
	default:
		return fmt.Errorf("hidden_act %q is not supported (want %s or %s)", c.Act, ActSiLU, ActGELUTanh)
	}
	for _, f := range []struct {
		key string
		v   float64
	}{{"norm_offset", c.NormOffset}, {"query_pre_attn_scalar", c.AttnScalar}, {"attn_logit_softcapping", c.AttnSoftCap}, {"final_logit_softcapping", c.FinalSoftCap}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
			return fmt.Errorf("%s must be finite and not negative, got %g", f.key, f.v)
		}
	}
	for i, l := range c.Layers {
		if err := c.checkMLP(i, l); err != nil {
			return err
		}
		switch {
		case l.Window < 0:
			return fmt.Errorf("layer %d: sliding window %d must not be negative", i, l.Window)
		case l.Heads <= 0 || l.KVHeads <= 0 || l.HeadDim <= 0:
			return fmt.Errorf("layer %d: heads (%d), kv heads (%d) and head_dim (%d) must be positive", i, l.Heads, l.KVHeads, l.HeadDim)
		case l.Heads%l.KVHeads != 0:
			return fmt.Errorf("layer %d: %d query heads do not divide into %d KV groups", i, l.Heads, l.KVHeads)
		case l.HeadDim%2 != 0:
			return fmt.Errorf("layer %d: head_dim %d must be even for RoPE", i, l.HeadDim)
		}
	}
	for _, id := range []int{c.BOS, c.EOS} {
		if id < -1 || id >= c.Vocab {
			return fmt.Errorf("special token id %d outside vocabulary of %d", id, c.Vocab)
		}
	}
	return nil
}

// checkMLP checks one layer's MLP: dense with a positive width, or a
// mixture of experts that routes each token to at most as many experts as
// it has.
func (c *Config) checkMLP(i int, l LayerConfig) error {
	if !l.MoE() {
		if l.MLP <= 0 || l.ExpertMLP != 0 || l.SharedMLP != 0 || l.Experts < 0 {
			return fmt.Errorf("layer %d: a dense MLP needs a positive intermediate size (%d) and no expert sizes (experts %d, expert width %d, shared %d)", i, l.MLP, l.Experts, l.ExpertMLP, l.SharedMLP)
		}
		return nil
	}
	switch {
	case l.MLP != 0:
		return fmt.Errorf("layer %d: a mixture of experts has no dense intermediate size (got %d)", i, l.MLP)
	case l.ExpertMLP <= 0 || l.SharedMLP < 0:
		return fmt.Errorf("layer %d: expert width %d must be positive and shared expert width %d not negative", i, l.ExpertMLP, l.SharedMLP)
	case c.ExpertsPerToken < 1 || c.ExpertsPerToken > l.Experts:
		return fmt.Errorf("layer %d: num_experts_per_tok %d must be between 1 and the layer's %d experts", i, c.ExpertsPerToken, l.Experts)
	}
	return nil
}

// Clone returns a deep copy.
func (c Config) Clone() Config {
	c.Layers = append([]LayerConfig(nil), c.Layers...)
	if c.RopeScaling != nil {
		r := *c.RopeScaling
		c.RopeScaling = &r
	}
	return c
}

// check rejects scalings that RopeInvFreq would not apply, or would apply
// with a division by zero: an unsupported scheme must fail loudly rather
// than run with unscaled frequencies.
func (s *RopeScaling) check() error {
	if s == nil {
		return nil
	}
	switch s.Type {
	case "", "default":
		return nil
	case "linear", "llama3":
	default:
		return fmt.Errorf("rope_scaling type %q is not supported (want linear or llama3)", s.Type)
	}
	if !(s.Factor > 0) || math.IsInf(s.Factor, 0) {
		return fmt.Errorf("rope_scaling %s: factor must be positive and finite, got %g", s.Type, s.Factor)
	}
	if s.Type == "llama3" {
		switch {
		case s.OriginalMaxPos <= 0:
			return fmt.Errorf("rope_scaling llama3: original_max_position_embeddings must be positive, got %d", s.OriginalMaxPos)
		case !(s.LowFreqFactor > 0) || !(s.HighFreqFactor > s.LowFreqFactor) || math.IsInf(s.HighFreqFactor, 0):
			return fmt.Errorf("rope_scaling llama3: need 0 < low_freq_factor (%g) < high_freq_factor (%g)", s.LowFreqFactor, s.HighFreqFactor)
		}
	}
	return nil
}

// Options describes the family options that are on, in words, for
// people reading `whittle inspect`; nil for a plain Llama decoder.
func (c *Config) Options() []string {
	var out []string
	add := func(on bool, format string, args ...any) {
		if on {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	add(c.AttnBias, "q/k/v bias")
	add(c.QKNorm, "q/k norm")
	add(c.NormOffset != 0, "norm weights %g+w", c.NormOffset)
	add(c.EmbedScale, "embedding ×√hidden")
	add(c.Activation() != ActSiLU, "MLP %s", c.Activation())
	add(c.PostNorms, "post-attention and post-MLP norms")
	add(c.AttnScalar > 0, "attention scale %g^-½", c.AttnScalar)
	add(c.AttnSoftCap > 0, "attention soft cap %g", c.AttnSoftCap)
	add(c.FinalSoftCap > 0, "logit soft cap %g", c.FinalSoftCap)
	windows := map[int]int{}
	for _, l := range c.Layers {
		if l.Window > 0 {
			windows[l.Window]++
		}
	}
	for _, w := range slices.Sorted(maps.Keys(windows)) {
		add(true, "sliding window %d on %d of %d layers", w, windows[w], len(c.Layers))
	}
	return out
}
