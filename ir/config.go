package ir

import (
	"fmt"
	"math"
)

// Config is the architecture of a Llama-family decoder. Layer sizes may
// differ per layer: a width- or depth-pruned model is still a valid Config.
type Config struct {
	// Arch names the family as the source format did ("llama", "mistral").
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
}

// LayerConfig sizes one decoder layer. Query heads are grouped by KV head:
// query head h uses KV head h / (Heads/KVHeads).
type LayerConfig struct {
	Heads   int `json:"num_attention_heads"`
	KVHeads int `json:"num_key_value_heads"`
	HeadDim int `json:"head_dim"`
	MLP     int `json:"intermediate_size"`
}

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
// without per-layer fields (Hugging Face's config.json) require.
func (c *Config) Uniform() bool {
	for _, l := range c.Layers {
		if l != c.Layers[0] {
			return false
		}
	}
	return true
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
	for i, l := range c.Layers {
		switch {
		case l.Heads <= 0 || l.KVHeads <= 0 || l.HeadDim <= 0 || l.MLP <= 0:
			return fmt.Errorf("layer %d: heads (%d), kv heads (%d), head_dim (%d) and intermediate size (%d) must be positive", i, l.Heads, l.KVHeads, l.HeadDim, l.MLP)
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
