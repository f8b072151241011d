package irtest

import "github.com/whittle-ml/whittle/ir"

// Families returns one small config per family whittle reads, each with
// its family's options as the real checkpoints set them, sized so that
// every test can afford a forward and backward pass: grouped-query
// attention, head_dim independent of hidden (Mistral NeMo, Qwen3, Gemma 2
// do this), untied and tied classifiers.
func Families() map[string]ir.Config {
	layer := ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 6, MLP: 20}
	base := ir.Config{Vocab: 37, Hidden: 16, Layers: ir.UniformLayers(3, layer), NormEps: 1e-6, RopeTheta: 10000, MaxSeq: 64, BOS: 1, EOS: 2}
	with := func(arch string, f func(c *ir.Config)) ir.Config {
		c := base.Clone()
		c.Arch = arch
		f(&c)
		return c
	}
	return map[string]ir.Config{
		"llama": with("llama", func(c *ir.Config) {
			c.RopeScaling = &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 16}
		}),
		"mistral": with("mistral", func(c *ir.Config) {
			for i := range c.Layers {
				c.Layers[i].HeadDim = 8 // heads·head_dim ≠ hidden, as in Mistral NeMo
				c.Layers[i].Window = 5
			}
		}),
		"qwen2": with("qwen2", func(c *ir.Config) {
			c.AttnBias = true
			c.Tied = true
		}),
		"qwen3": with("qwen3", func(c *ir.Config) {
			c.QKNorm = true
			for i := range c.Layers {
				c.Layers[i].HeadDim = 8
			}
		}),
		"gemma2": with("gemma2", func(c *ir.Config) {
			c.Tied = true
			c.NormOffset = 1
			c.EmbedScale = true
			c.Act = ir.ActGELUTanh
			c.PostNorms = true
			c.AttnScalar = 10
			c.AttnSoftCap = 5
			c.FinalSoftCap = 3
			for i := range c.Layers {
				c.Layers[i].HeadDim = 8
				if i%2 == 0 {
					c.Layers[i].Window = 4 // Gemma 2 alternates local and global layers
				}
			}
		}),
		"phi3": with("phi3", func(c *ir.Config) {
			c.Layers = ir.UniformLayers(3, ir.LayerConfig{Heads: 4, KVHeads: 4, HeadDim: 4, MLP: 20})
		}),
	}
}

// MoEFamilies returns one small mixture-of-experts config per MoE family:
// Mixtral (every layer routed, renormalized top-2), Qwen2-MoE (a shared
// expert with its sigmoid gate, top-k probabilities not renormalized, a
// dense layer among the sparse ones as decoder_sparse_step/mlp_only_layers
// make) and Qwen3-MoE (q/k norms, renormalized top-k).
func MoEFamilies() map[string]ir.Config {
	base := ir.Config{Vocab: 37, Hidden: 16, NormEps: 1e-6, RopeTheta: 10000, MaxSeq: 64, BOS: 1, EOS: 2, ExpertsPerToken: 2}
	moe := ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 6, Experts: 4, ExpertMLP: 10}
	mixtral := base.Clone()
	mixtral.Arch, mixtral.NormTopK = "mixtral", true
	mixtral.Layers = ir.UniformLayers(3, moe)

	qwen2 := base.Clone()
	qwen2.Arch, qwen2.AttnBias, qwen2.Tied = "qwen2_moe", true, true
	shared := moe
	shared.SharedMLP = 12
	dense := ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 6, MLP: 20}
	qwen2.Layers = []ir.LayerConfig{shared, dense, shared}

	qwen3 := base.Clone()
	qwen3.Arch, qwen3.QKNorm, qwen3.NormTopK = "qwen3_moe", true, true
	wide := moe
	wide.HeadDim, wide.Experts, wide.ExpertMLP = 8, 6, 8
	qwen3.Layers = ir.UniformLayers(3, wide)
	return map[string]ir.Config{"mixtral": mixtral, "qwen2_moe": qwen2, "qwen3_moe": qwen3}
}
