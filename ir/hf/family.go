package hf

import (
	"fmt"
	"slices"

	"github.com/whittle-ml/whittle/ir"
)

// family is what sets one transformers model family apart in config.json:
// its classes, the defaults its config class gives keys a file leaves out,
// and the options of ir.Config it implies.
type family struct {
	arch         string // ir.Config.Arch and config.json's model_type
	architecture string // the transformers class whittle reads and writes
	// Defaults of the family's transformers config class. A -1 token id is
	// None.
	normEps   float64
	ropeTheta float64
	maxSeq    int
	tied      bool
	bos, eos  int
	// headDim is the config class's head_dim default; 0 means
	// hidden_size / num_attention_heads.
	headDim int
	// version is the transformers_version Save records: the oldest release
	// that honours every key Save writes for the family.
	version string
	// opts are the ir.Config options the family's computation implies.
	opts familyOptions
	// moe, for a mixture-of-experts family, is how it lays out and
	// defaults its experts; nil for a dense family.
	moe *moeFamily
}

// moeFamily is what sets a mixture-of-experts family apart: its config
// class's defaults and which keys size the experts.
type moeFamily struct {
	experts, perToken int
	// expertMLP and sharedMLP are the defaults of moe_intermediate_size
	// and shared_expert_intermediate_size; 0 for Mixtral, whose experts
	// are intermediate_size wide and which has neither key.
	expertMLP, sharedMLP int
	// qwen: Qwen-MoE's keys (num_experts, norm_topk_prob,
	// decoder_sparse_step, mlp_only_layers); else Mixtral's
	// (num_local_experts, every layer sparse, always renormalized).
	qwen bool
	// shared: the family has a shared expert (Qwen2-MoE).
	shared bool
}

// familyOptions are the ir.Config options fixed by the family, as opposed
// to those read from config.json (Gemma 2's scalar and soft caps).
type familyOptions struct {
	AttnBias   bool
	QKNorm     bool
	NormOffset float64
	EmbedScale bool
	Act        string
	PostNorms  bool
}

// options reads the family-fixed options of cfg.
func options(cfg *ir.Config) familyOptions {
	return familyOptions{cfg.AttnBias, cfg.QKNorm, cfg.NormOffset, cfg.EmbedScale, cfg.Act, cfg.PostNorms}
}

func (o familyOptions) apply(cfg *ir.Config) {
	cfg.AttnBias, cfg.QKNorm, cfg.NormOffset, cfg.EmbedScale, cfg.Act, cfg.PostNorms = o.AttnBias, o.QKNorm, o.NormOffset, o.EmbedScale, o.Act, o.PostNorms
}

// windowedVersion is recorded for the families whose configs may carry
// layer_types or per-family sliding windows: transformers 4.53 built
// every layer's window from layer_types and read head_dim in all of them.
const windowedVersion = "4.53.0"

// families maps model_type to the family. Defaults are those of
// LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config, Gemma2Config and
// Phi3Config.
var families = map[string]family{
	"llama": {arch: "llama", architecture: "LlamaForCausalLM",
		normEps: 1e-6, ropeTheta: 10000, maxSeq: 2048, bos: 1, eos: 2, version: transformersVersion},
	"mistral": {arch: "mistral", architecture: "MistralForCausalLM",
		normEps: 1e-6, ropeTheta: 10000, maxSeq: 4096 * 32, bos: 1, eos: 2, version: windowedVersion},
	"qwen2": {arch: "qwen2", architecture: "Qwen2ForCausalLM",
		normEps: 1e-6, ropeTheta: 10000, maxSeq: 32768, bos: -1, eos: -1, version: windowedVersion,
		opts: familyOptions{AttnBias: true}},
	"qwen3": {arch: "qwen3", architecture: "Qwen3ForCausalLM",
		normEps: 1e-6, ropeTheta: 10000, maxSeq: 32768, bos: -1, eos: -1, headDim: 128, version: windowedVersion,
		opts: familyOptions{QKNorm: true}},
	"gemma2": {arch: "gemma2", architecture: "Gemma2ForCausalLM",
		normEps: 1e-6, ropeTheta: 10000, maxSeq: 8192, tied: true, bos: 2, eos: 1, headDim: 256, version: windowedVersion,
		opts: familyOptions{NormOffset: 1, EmbedScale: true, Act: ir.ActGELUTanh, PostNorms: true}},
	// DeciLM is read as Llama with per-layer sizes (see decilm.go);
	// DeciLMConfig extends LlamaConfig, so it has Llama's defaults.
	DeciLMModelType: {arch: "llama", architecture: DeciLMArchitecture,
		normEps: 1e-6, ropeTheta: 10000, maxSeq: 2048, bos: 1, eos: 2, version: transformersVersion},
	"phi3": {arch: "phi3", architecture: "Phi3ForCausalLM",
		normEps: 1e-5, ropeTheta: 10000, maxSeq: 4096, bos: 1, eos: 32000, version: windowedVersion},
	// MixtralConfig, Qwen2MoeConfig and Qwen3MoeConfig.
	"mixtral": {arch: "mixtral", architecture: "MixtralForCausalLM",
		normEps: 1e-5, ropeTheta: 1e6, maxSeq: 4096 * 32, bos: 1, eos: 2, version: windowedVersion,
		moe: &moeFamily{experts: 8, perToken: 2}},
	"qwen2_moe": {arch: "qwen2_moe", architecture: "Qwen2MoeForCausalLM",
		normEps: 1e-6, ropeTheta: 10000, maxSeq: 32768, bos: -1, eos: -1, version: windowedVersion,
		opts: familyOptions{AttnBias: true},
		moe:  &moeFamily{experts: 60, perToken: 4, expertMLP: 1408, sharedMLP: 5632, qwen: true, shared: true}},
	"qwen3_moe": {arch: "qwen3_moe", architecture: "Qwen3MoeForCausalLM",
		normEps: 1e-6, ropeTheta: 10000, maxSeq: 32768, bos: -1, eos: -1, version: windowedVersion,
		opts: familyOptions{QKNorm: true},
		moe:  &moeFamily{experts: 128, perToken: 8, expertMLP: 768, qwen: true}},
}

// modelTypes lists the supported model_type values, for messages.
func modelTypes() []string {
	out := make([]string, 0, len(families))
	for k := range families {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// familyOf is cfg's family; an empty Arch is Llama, as whittle's oldest
// configs have none.
func familyOf(cfg *ir.Config) (family, error) {
	arch := cfg.Arch
	if arch == "" {
		arch = "llama"
	}
	f, ok := families[arch]
	if !ok {
		return f, fmt.Errorf("architecture %q cannot be saved as a Hugging Face model (want one of %q)", cfg.Arch, modelTypes())
	}
	return f, nil
}

// Values of layer_types.
const (
	layerSliding = "sliding_attention"
	layerFull    = "full_attention"
)

// Default keys of the sliding-window families' config classes.
const (
	defaultSlidingWindow   = 4096
	defaultMaxWindowLayers = 28
)

// parseWindows sets every layer's attention window from the family's
// keys, as transformers' config class and attention module would.
func parseWindows(f family, c *configJSON, cfg *ir.Config) error {
	n := len(cfg.Layers)
	// window reads sliding_window: missing means the class default, null
	// none (0).
	window := func(def int) (int, error) {
		switch {
		case !c.SlidingWindow.set:
			return def, nil
		case c.SlidingWindow.null:
			return 0, nil
		case c.SlidingWindow.v <= 0:
			return 0, fmt.Errorf("sliding_window must be positive or null, got %d", c.SlidingWindow.v)
		}
		return c.SlidingWindow.v, nil
	}
	// sliding gives the layers listed as sliding in layer_types, or def's.
	sliding := func(def func(i int) bool) ([]bool, error) {
		out := make([]bool, n)
		if c.LayerTypes == nil {
			for i := range out {
				out[i] = def(i)
			}
			return out, nil
		}
		if len(c.LayerTypes) != n {
			return nil, fmt.Errorf("layer_types has %d entries for num_hidden_layers %d", len(c.LayerTypes), n)
		}
		for i, t := range c.LayerTypes {
			switch t {
			case layerSliding:
				out[i] = true
			case layerFull:
			default:
				return nil, fmt.Errorf("layer_types[%d] is %q (want %q or %q)", i, t, layerSliding, layerFull)
			}
		}
		return out, nil
	}
	set := func(w int, slide []bool) error {
		for i := range cfg.Layers {
			if !slide[i] {
				continue
			}
			if w == 0 {
				// transformers cannot build this layer's mask either.
				return fmt.Errorf("layer %d is a %s layer but no sliding window is set (sliding_window null, or use_sliding_window false)", i, layerSliding)
			}
			cfg.Layers[i].Window = w
		}
		return nil
	}
	switch f.arch {
	case "llama":
		// LlamaConfig has no sliding window; one shorter than the context
		// means a checkpoint built for other code.
		if c.SlidingWindow.set && !c.SlidingWindow.null && c.SlidingWindow.v < cfg.MaxSeq {
			return errUnsupported("sliding_window %d is shorter than max_position_embeddings %d (Llama has no sliding-window attention)", c.SlidingWindow.v, cfg.MaxSeq)
		}
		if c.LayerTypes != nil {
			return errUnsupported("layer_types (Llama has no sliding-window attention)")
		}
		return nil
	case "mistral", "phi3", "mixtral":
		// Every layer slides when sliding_window is set; none of these
		// classes reads layer_types.
		if c.LayerTypes != nil {
			return errUnsupported("layer_types (%s applies sliding_window to every layer)", f.arch)
		}
		def := 0 // Phi3Config's and MixtralConfig's sliding_window is None
		if f.arch == "mistral" {
			def = defaultSlidingWindow
		}
		w, err := window(def)
		if err != nil || w == 0 {
			return err
		}
		return set(w, slices.Repeat([]bool{true}, n))
	case "qwen2", "qwen3", "qwen2_moe", "qwen3_moe":
		// The class drops sliding_window unless use_sliding_window; the
		// default layer_types slide the layers from max_window_layers on.
		w := 0
		if c.UseSlidingWindow != nil && *c.UseSlidingWindow {
			var err error
			if w, err = window(defaultSlidingWindow); err != nil {
				return err
			}
		}
		first := defaultMaxWindowLayers
		if c.MaxWindowLayers != nil {
			first = *c.MaxWindowLayers
		}
		slide, err := sliding(func(i int) bool { return w > 0 && i >= first })
		if err != nil {
			return err
		}
		return set(w, slide)
	case "gemma2":
		w, err := window(defaultSlidingWindow)
		if err != nil {
			return err
		}
		slide, err := sliding(func(i int) bool { return i%2 == 0 })
		if err != nil {
			return err
		}
		return set(w, slide)
	}
	return nil
}

// windowKeys renders the layers' attention windows as the family's
// config.json keys, refusing windows the family's transformers classes
// cannot express. Sliding layers must share one window size.
func windowKeys(f family, layers []ir.LayerConfig) (map[string]any, error) {
	n := len(layers)
	w := 0
	slide := make([]bool, n)
	for i, l := range layers {
		if l.Window == 0 {
			continue
		}
		if w != 0 && l.Window != w {
			return nil, fmt.Errorf("layers have sliding windows %d and %d, but %s config.json has one sliding_window", w, l.Window, f.architecture)
		}
		w, slide[i] = l.Window, true
	}
	var window any // null when no layer slides
	if w > 0 {
		window = w
	}
	types := func() []string {
		out := make([]string, n)
		for i, s := range slide {
			out[i] = layerFull
			if s {
				out[i] = layerSliding
			}
		}
		return out
	}
	switch f.arch {
	case "llama":
		if w > 0 {
			return nil, fmt.Errorf("%s has no sliding-window attention, but layers have window %d", f.architecture, w)
		}
		return map[string]any{}, nil
	case "mistral", "phi3", "mixtral":
		if w > 0 && slices.Contains(slide, false) {
			return nil, fmt.Errorf("%s applies sliding_window to every layer, but only some layers have window %d", f.architecture, w)
		}
		return map[string]any{"sliding_window": window}, nil
	case "qwen2", "qwen3", "qwen2_moe", "qwen3_moe":
		// Layers from max_window_layers on slide; another pattern needs
		// layer_types, which releases before windowedVersion ignore.
		first := slices.Index(slide, true)
		if w == 0 {
			return map[string]any{"use_sliding_window": false, "sliding_window": nil, "max_window_layers": n}, nil
		}
		m := map[string]any{"use_sliding_window": true, "sliding_window": w, "max_window_layers": first}
		if slices.Contains(slide[first:], false) {
			m["max_window_layers"] = n
			m["layer_types"] = types()
		}
		return m, nil
	case "gemma2":
		// Even layers slide unless layer_types says otherwise (as above).
		m := map[string]any{"sliding_window": window}
		for i, s := range slide {
			if s != (i%2 == 0) || w == 0 {
				m["layer_types"] = types()
				break
			}
		}
		return m, nil
	}
	return nil, fmt.Errorf("no sliding-window keys for %s", f.arch)
}
