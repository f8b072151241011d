package gguf

// How each llama.cpp architecture maps to the IR's families: which family
// options it implies, what its tensors are called, and how their data
// differs from Hugging Face's (RoPE row order, Gemma's norm offset,
// Phi-3's fused projections). The reader and the writer share this table,
// so that what Save writes Load reads back.

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/ir"
)

// llama.cpp architectures besides llama.
const (
	archQwen2    = "qwen2"
	archQwen3    = "qwen3"
	archGemma2   = "gemma2"
	archPhi3     = "phi3"
	archQwen2MoE = "qwen2moe"
	archQwen3MoE = "qwen3moe"
	// archDeci is llama.cpp's DeciLM (Llama-3.1-Nemotron-51B): Llama's
	// computation with every layer's head count, KV-head count and FFN
	// width read from per-layer arrays, which llama.cpp's llama
	// architecture refuses.
	archDeci = "deci"
)

// IR families that llama.cpp names otherwise.
const (
	irMixtral  = "mixtral"
	irQwen2MoE = "qwen2_moe"
	irQwen3MoE = "qwen3_moe"
)

// readableArchs lists the architectures whittle reads and writes.
var readableArchs = []string{archLlama, archDeci, archQwen2, archQwen3, archGemma2, archPhi3, archQwen2MoE, archQwen3MoE}

func readableArch(a string) bool { return slices.Contains(readableArchs, a) }

// ggufArch is the llama.cpp architecture a model of config c is written
// as: Mistral and Mixtral are Llama to llama.cpp's converter (Mixtral
// with expert tensors), and a dense Llama-family model whose layers differ
// in size (or any when deci is asked for) is deci.
func ggufArch(c *ir.Config, deci bool) (string, error) {
	switch c.Arch {
	case "", archLlama, "mistral":
		if deci || !c.Uniform() {
			return archDeci, nil
		}
		return archLlama, nil
	case irMixtral, archQwen2, archQwen3, archGemma2, archPhi3, irQwen2MoE, irQwen3MoE:
		if deci {
			return "", fmt.Errorf("llama.cpp's deci architecture computes as dense Llama; a %s model cannot be written as deci", c.Arch)
		}
		switch c.Arch {
		case irMixtral:
			return archLlama, nil
		case irQwen2MoE:
			return archQwen2MoE, nil
		case irQwen3MoE:
			return archQwen3MoE, nil
		}
		return c.Arch, nil
	}
	return "", fmt.Errorf("architecture %q has no GGUF mapping (whittle writes llama, mistral, mixtral, qwen2, qwen3, qwen2_moe, qwen3_moe, gemma2 and phi3)", c.Arch)
}

// irArch is the IR family a dense GGUF architecture reads as: deci is
// Llama with per-layer sizes.
func irArch(arch string) string {
	if arch == archDeci {
		return archLlama
	}
	return arch
}

// moeArch reports whether every layer of arch is a mixture of experts;
// llama may be either (Mixtral's files are llama with experts).
func moeArch(arch string) bool { return arch == archQwen2MoE || arch == archQwen3MoE }

// irArchOf is the IR family of a file of arch, with experts or not.
func irArchOf(arch string, experts bool) string {
	switch {
	case arch == archLlama && experts:
		return irMixtral
	case arch == archQwen2MoE:
		return irQwen2MoE
	case arch == archQwen3MoE:
		return irQwen3MoE
	}
	return arch
}

// normTopK is how llama.cpp weighs the chosen experts in arch (its
// build_moe_ffn's norm_w): renormalized for Mixtral (llama) and
// qwen3moe, as they are for qwen2moe.
func normTopK(arch string) bool { return arch != archQwen2MoE }

// llamaLike reports the architectures that keep Q and K rows in the
// interleaved RoPE order and read llama3 scaling from a rope_freqs tensor,
// as llama.cpp's converter writes both llama and deci.
func llamaLike(arch string) bool { return arch == archLlama || arch == archDeci }

// Family metadata keys (spelled with the architecture prefix).
const (
	keyAttnSoftCap   = "attn_logit_softcapping"
	keyFinalSoftCap  = "final_logit_softcapping"
	keySlidingWindow = "attention.sliding_window"
)

// llama.cpp's Gemma 2 defaults when the keys are absent.
const (
	gemma2DefaultWindow   = 4096
	gemma2DefaultAttnCap  = 50
	gemma2DefaultFinalCap = 30
	// gemma2Layers27B is the layer count at which llama.cpp scales Gemma
	// 2's queries by 1/sqrt(hidden/heads) (27B) instead of
	// 1/sqrt(head_dim) (2B, 9B).
	gemma2Layers27B = 46
)

// setFamily sets the family options an architecture implies; the values
// that metadata carries (caps, windows) are read separately.
func setFamily(c *ir.Config, arch string) {
	switch arch {
	case archQwen2, archQwen2MoE:
		c.AttnBias = true
	case archQwen3, archQwen3MoE:
		c.QKNorm = true
	case archGemma2:
		c.NormOffset = 1
		c.EmbedScale = true
		c.Act = ir.ActGELUTanh
		c.PostNorms = true
	}
}

// gemma2AttnScalar is the query_pre_attn_scalar llama.cpp's Gemma 2 graph
// implies: it picks the scaling by layer count (26 and 42 layers:
// head_dim, 46: hidden/heads; this build aborts on other counts, later
// ones take head_dim).
func gemma2AttnScalar(c *ir.Config) float64 {
	if len(c.Layers) == gemma2Layers27B && c.Layers[0].Heads > 0 {
		return float64(c.Hidden / c.Layers[0].Heads)
	}
	return float64(c.Layers[0].HeadDim)
}

// checkFamily reports the first family option of c that arch cannot
// express, so that Save refuses a model llama.cpp would run differently.
func checkFamily(c *ir.Config, arch string) error {
	want := ir.Config{}
	setFamily(&want, arch)
	type opt struct {
		name      string
		got, want any
		why       string
	}
	opts := []opt{
		{"attention biases (AttnBias)", c.AttnBias, want.AttnBias, "q/k/v biases"},
		{"q/k norms (QKNorm)", c.QKNorm, want.QKNorm, "per-head q/k RMSNorms"},
		{"norm offset (NormOffset)", c.NormOffset, want.NormOffset, "(offset + w) norms"},
		{"embedding scale (EmbedScale)", c.EmbedScale, want.EmbedScale, "√hidden embedding scaling"},
		{"activation (Act)", c.Activation(), want.Activation(), "MLP activation"},
		{"post norms (PostNorms)", c.PostNorms, want.PostNorms, "norms on the attention and MLP outputs"},
	}
	for _, o := range opts {
		if o.got != o.want {
			return fmt.Errorf("%s is %v, but llama.cpp's %s architecture has %v (its %s are fixed by the architecture)", o.name, o.got, arch, o.want, o.why)
		}
	}
	if err := checkMoE(c, arch); err != nil {
		return err
	}
	hd := c.Layers[0].HeadDim
	windows := make([]int, len(c.Layers))
	for i, l := range c.Layers {
		windows[i] = l.Window
	}
	switch arch {
	case archGemma2:
		if s := gemma2AttnScalar(c); c.AttnScalar != s && !(c.AttnScalar == 0 && s == float64(hd)) {
			return fmt.Errorf("query_pre_attn_scalar (AttnScalar) is %g, but llama.cpp's gemma2 scales queries of a %d-layer model by 1/sqrt(%g) (it picks the scaling by layer count)", c.AttnScalar, len(c.Layers), s)
		}
		if !(c.AttnSoftCap > 0) || !(c.FinalSoftCap > 0) {
			return fmt.Errorf("soft caps (AttnSoftCap %g, FinalSoftCap %g) must be positive: llama.cpp's gemma2 always caps attention scores and logits", c.AttnSoftCap, c.FinalSoftCap)
		}
		w := windows[0]
		for i, x := range windows {
			if (i%2 == 0 && (x != w || x <= 0)) || (i%2 == 1 && x != 0) {
				return fmt.Errorf("sliding windows %v: llama.cpp's gemma2 has one window on every even layer (0, 2, ...) and none on odd ones", windows)
			}
		}
		if !c.Tied {
			return fmt.Errorf("untied classifier: llama.cpp's gemma2 always uses the token embedding as classifier")
		}
		return nil
	}
	if c.AttnScalar != 0 && c.AttnScalar != float64(hd) {
		return fmt.Errorf("query_pre_attn_scalar (AttnScalar) is %g, but llama.cpp's %s scales queries by 1/sqrt(head_dim %d)", c.AttnScalar, arch, hd)
	}
	if c.AttnSoftCap != 0 || c.FinalSoftCap != 0 {
		return fmt.Errorf("soft caps (AttnSoftCap %g, FinalSoftCap %g): llama.cpp's %s has none", c.AttnSoftCap, c.FinalSoftCap, arch)
	}
	for i, x := range windows {
		switch {
		case arch == archPhi3 && x != windows[0]:
			return fmt.Errorf("sliding windows %v: llama.cpp's phi3 has one window for every layer", windows)
		case arch != archPhi3 && x != 0:
			return fmt.Errorf("layer %d has sliding window %d: llama.cpp's %s has no sliding-window attention", i, x, arch)
		}
	}
	if arch == archPhi3 {
		if l := c.Layers[0]; l.Heads*l.HeadDim != c.Hidden {
			return fmt.Errorf("%d heads of size %d: llama.cpp's phi3 needs heads × head size = hidden size %d", l.Heads, l.HeadDim, c.Hidden)
		}
	}
	return nil
}

// checkMoE reports what of c's mixtures of experts llama.cpp's arch
// cannot run: it routes every layer or none (llama), every layer
// (qwen2moe, qwen3moe), with one expert count for all, weighs the chosen
// experts as normTopK says, and has a shared expert in qwen2moe only
// (always there).
func checkMoE(c *ir.Config, arch string) error {
	moe := 0
	for _, l := range c.Layers {
		if l.MoE() {
			moe++
			if l.Experts != c.Layers[0].Experts {
				return fmt.Errorf("layers have %d and %d experts; llama.cpp's %s has one expert_count for all layers", c.Layers[0].Experts, l.Experts, arch)
			}
		}
	}
	switch {
	case moe == 0 && !moeArch(arch):
		return nil
	case moe == 0 && moeArch(arch):
		return fmt.Errorf("no mixture-of-experts layers: llama.cpp's %s routes every layer", arch)
	case arch != archLlama && !moeArch(arch):
		return fmt.Errorf("mixture-of-experts layers: llama.cpp's %s has none", arch)
	case moe != len(c.Layers) && moeArch(arch):
		return fmt.Errorf("%d of %d layers are mixtures of experts: llama.cpp's %s routes every layer", moe, len(c.Layers), arch)
	case moe != len(c.Layers):
		return fmt.Errorf("%d of %d layers are mixtures of experts: llama.cpp's %s routes every layer or none", moe, len(c.Layers), arch)
	case c.NormTopK != normTopK(arch):
		return fmt.Errorf("norm_topk_prob (NormTopK) is %v, but llama.cpp's %s weighs the chosen experts with renormalization %v", c.NormTopK, arch, normTopK(arch))
	}
	for i, l := range c.Layers {
		if (l.SharedMLP > 0) != (arch == archQwen2MoE) {
			return fmt.Errorf("layer %d has a shared expert of %d neurons: llama.cpp's %s has one in every layer of qwen2moe only", i, l.SharedMLP, arch)
		}
	}
	return nil
}

// layoutTensor is one GGUF tensor and the canonical tensors it holds.
type layoutTensor struct {
	name string // GGUF name
	// parts are the canonical tensors, their rows stacked in this order
	// (several only for Phi-3's fused projections), with their row counts.
	parts []string
	rows  []int
	// ropeHeads, when positive, marks a Q or K matrix whose rows llama.cpp
	// keeps in the interleaved RoPE order, with its head count.
	ropeHeads int
	headDim   int
	// normOffset is added to the weight on the way out (Gemma: the
	// converter stores 1 + w) and subtracted on the way in.
	normOffset float32
	// f32 stores the tensor in F32 whatever the requested dtype, as the
	// converter keeps routers (ffn_gate_inp).
	f32 bool
	// rowVector is a [1, n] matrix that may be stored as a vector [n]
	// (qwen2moe's shared expert gate).
	rowVector bool
}

// layout lists the GGUF tensors of a model of config c in arch, in file
// order. A tied classifier is absent (llama.cpp reuses token_embd),
// except in phi3, whose llama.cpp needs output.weight: there it is the
// embedding again.
func layout(c *ir.Config, arch string) []layoutTensor {
	var off float32
	if arch == archGemma2 {
		off = 1
	}
	one := func(name, canonical string) layoutTensor {
		return layoutTensor{name: name, parts: []string{canonical}}
	}
	norm := func(name, canonical string) layoutTensor {
		t := one(name, canonical)
		t.normOffset = off
		return t
	}
	out := []layoutTensor{one(ggufGlobals[ir.NameEmbed], ir.NameEmbed)}
	switch {
	case !c.Tied:
		out = append(out, one(ggufGlobals[ir.NameClassifier], ir.NameClassifier))
	case arch == archPhi3:
		out = append(out, one(ggufGlobals[ir.NameClassifier], ir.NameEmbed))
	}
	out = append(out, norm(ggufGlobals[ir.NameFinalNorm], ir.NameFinalNorm))
	for i, l := range c.Layers {
		lt := c.LayerTensors(i)
		blk := "blk." + strconv.Itoa(i) + "."
		w := func(role, canonical string) layoutTensor { return one(blk+role+".weight", canonical) }
		out = append(out, norm(blk+"attn_norm.weight", lt.AttnNorm))
		if arch == archPhi3 {
			out = append(out, layoutTensor{name: blk + "attn_qkv.weight", parts: []string{lt.Q, lt.K, lt.V},
				rows: []int{l.Heads * l.HeadDim, l.KVHeads * l.HeadDim, l.KVHeads * l.HeadDim}})
		} else {
			q, k := w("attn_q", lt.Q), w("attn_k", lt.K)
			if llamaLike(arch) {
				q.ropeHeads, q.headDim = l.Heads, l.HeadDim
				k.ropeHeads, k.headDim = l.KVHeads, l.HeadDim
			}
			out = append(out, q, k, w("attn_v", lt.V))
		}
		for _, b := range []struct{ role, name string }{{"attn_q", lt.QBias}, {"attn_k", lt.KBias}, {"attn_v", lt.VBias}} {
			if b.name != "" {
				out = append(out, one(blk+b.role+".bias", b.name))
			}
		}
		if lt.QNorm != "" {
			out = append(out, w("attn_q_norm", lt.QNorm), w("attn_k_norm", lt.KNorm))
		}
		out = append(out, w("attn_output", lt.O))
		if lt.AttnPostNorm != "" {
			out = append(out, norm(blk+"post_attention_norm.weight", lt.AttnPostNorm))
		}
		out = append(out, norm(blk+"ffn_norm.weight", lt.MLPNorm))
		if l.MoE() {
			// Experts stacked as in the IR: ggml's ne [in, out, experts].
			router := w("ffn_gate_inp", lt.Router)
			router.f32 = true
			out = append(out, router, w("ffn_gate_exps", lt.ExpertGate), w("ffn_up_exps", lt.ExpertUp), w("ffn_down_exps", lt.ExpertDown))
			if lt.SharedGate != "" {
				gate := w("ffn_gate_inp_shexp", lt.SharedExpertGate)
				gate.f32, gate.rowVector = true, true
				out = append(out, gate, w("ffn_gate_shexp", lt.SharedGate), w("ffn_up_shexp", lt.SharedUp), w("ffn_down_shexp", lt.SharedDown))
			}
		} else if arch == archPhi3 {
			// llama.cpp's phi3 takes the first half of ffn_up's output as
			// the gate, as Hugging Face's gate_up_proj.chunk(2) does.
			out = append(out, layoutTensor{name: blk + "ffn_up.weight", parts: []string{lt.Gate, lt.Up}, rows: []int{l.MLP, l.MLP}})
			out = append(out, w("ffn_down", lt.Down))
		} else {
			out = append(out, w("ffn_gate", lt.Gate), w("ffn_up", lt.Up), w("ffn_down", lt.Down))
		}
		if lt.MLPPostNorm != "" {
			out = append(out, norm(blk+"post_ffw_norm.weight", lt.MLPPostNorm))
		}
	}
	return out
}

// layerOf is the layer number of a blk.N.* tensor name.
func layerOf(gguf string) (int, bool) {
	rest, ok := strings.CutPrefix(gguf, "blk.")
	if !ok {
		return 0, false
	}
	num, _, ok := strings.Cut(rest, ".")
	if !ok || !canonicalInt(num) {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	return n, err == nil
}

// offsetTensor is t in float32 with d added to every element, computed in
// float32 as the converter's torch arithmetic does, when first read.
func offsetTensor(t *ir.Tensor, d float32) *ir.Tensor {
	return ir.LazyTensor(ir.F32, t.Shape, func() ([]byte, error) {
		v, err := t.Float32()
		if err != nil {
			return nil, err
		}
		out := make([]float32, len(v))
		for i, x := range v {
			out[i] = x + d
		}
		return float32Bytes(out), nil
	})
}

// rowSlice is rows [from, from+n) of t, cut when first read.
func rowSlice(t *ir.Tensor, from, n int) *ir.Tensor {
	shape := append([]int{n}, t.Shape[1:]...)
	return ir.LazyTensor(t.DType, shape, func() ([]byte, error) {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = from + i
		}
		s, err := t.KeepIndices(0, idx)
		if err != nil {
			return nil, err
		}
		return s.Bytes()
	})
}

// concatRows stacks tensors of equal row length along dimension 0, in
// the first one's dtype.
func concatRows(ts []*ir.Tensor) (*ir.Tensor, error) {
	dt := ts[0].DType
	rows := 0
	var raw []byte
	for _, t := range ts {
		if len(t.Shape) != 2 || t.Shape[1] != ts[0].Shape[1] {
			return nil, fmt.Errorf("cannot stack shapes %v and %v", ts[0].Shape, t.Shape)
		}
		c, err := t.Convert(dt)
		if err != nil {
			return nil, err
		}
		b, err := c.Bytes()
		if err != nil {
			return nil, err
		}
		raw = append(raw, b...)
		rows += t.Shape[0]
	}
	return ir.NewTensor(dt, []int{rows, ts[0].Shape[1]}, raw), nil
}

// finiteNonNeg reports whether a metadata float can be an IR option.
func finiteNonNeg(x float64) bool { return x >= 0 && !math.IsInf(x, 0) }
