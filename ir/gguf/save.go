package gguf

import (
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/whittle-ml/whittle/ir"
)

// SaveOptions tune Save.
type SaveOptions struct {
	// DType stores every matrix in this dtype; nil keeps each tensor's.
	// Norm weights are always F32, which llama.cpp requires of 1-D
	// tensors.
	DType *ir.DType
	// Quantize, "q8_0" or "q4_0", stores every matrix whose rows are a
	// multiple of 32 long in that ggml block format (the others as F16).
	// It overrides DType for them.
	Quantize string
	// Name is general.name; empty means the file name without its
	// extension.
	Name string
	// Deci writes a Llama-family model as llama.cpp's deci architecture
	// even when its layers are alike (those that differ always are).
	Deci bool
}

// Quantizations lists the Quantize values Save accepts.
var Quantizations = slices.Sorted(maps.Keys(quantTypes))

// quantTypes maps Quantize values to their ggml type and file type.
var quantTypes = map[string]struct {
	typ      GGMLType
	fileType uint32
	encode   func([]float32) ([]byte, error)
}{
	"q8_0": {GGMLQ8_0, fileTypeQ8_0, quantizeQ8_0},
	"q4_0": {GGMLQ4_0, fileTypeQ4_0, quantizeQ4_0},
}

// Save writes m as a GGUF v3 model that llama.cpp loads, laid out as
// llama.cpp's convert_hf_to_gguf.py writes its family: Llama, Mistral and
// Mixtral as the llama architecture (Q and K rows permuted back to the
// interleaved RoPE order; Mixtral's experts stacked in ffn_*_exps with
// the router ffn_gate_inp), Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE, Gemma 2
// and Phi-3 as qwen2, qwen3, qwen2moe, qwen3moe, gemma2 and phi3 (half
// RoPE order, as in the IR; Gemma's norm weights stored as 1 + w; Phi-3's
// q/k/v and gate/up fused into attn_qkv and ffn_up). Routers are F32. It
// writes the architecture's metadata, the tokenizer in SentencePiece form
// when m has one, and the tensors under GGUF names. A tied classifier is
// written once, as token_embd.weight (phi3 also as output.weight, which
// its llama.cpp requires). Tensors are converted one at a time as they
// are written. The file appears at path only when complete.
//
// Save refuses a model whose family options the architecture cannot
// express (llama.cpp fixes them per architecture; see checkFamily), and,
// outside the Llama family, layers that differ in size. A Llama or
// Mistral model whose layers differ in size (non-uniform width pruning)
// is written as llama.cpp's deci architecture (DeciLM, Llama-3.1-
// Nemotron-51B), which computes as llama with per-layer arrays of head
// counts, KV-head counts and FFN widths, as llama.cpp's converter writes
// them; llama.cpp's llama architecture refuses per-layer sizes. Without m.Tokenizer no tokenizer.ggml.* keys
// are written and llama.cpp will refuse the file (whittle still reads
// it). RoPE scaling is linear (metadata) or, in the llama architecture
// only, llama3 (the rope_freqs tensor, as llama.cpp's converter writes
// it). The shared llama.cpp build runs gemma2 only with 26, 42 or 46
// layers, and qwen2 and phi3 only with heads × head size = hidden size.
func Save(m *ir.Model, path string, opts SaveOptions) error {
	kvs, tensors, err := saveLayout(m, path, opts)
	if err != nil {
		return fmt.Errorf("gguf %s: %w", path, err)
	}
	return Write(path, kvs, tensors)
}

func saveLayout(m *ir.Model, path string, opts SaveOptions) ([]KV, []WriteTensor, error) {
	if err := m.Validate(); err != nil {
		return nil, nil, err
	}
	c := &m.Config
	arch, err := ggufArch(c, opts.Deci)
	if err != nil {
		return nil, nil, err
	}
	if err := checkFamily(c, arch); err != nil {
		return nil, nil, fmt.Errorf("%s as GGUF %s: %w", c.Arch, arch, err)
	}
	hd := c.Layers[0].HeadDim
	for i, l := range c.Layers {
		if l.HeadDim != hd {
			return nil, nil, fmt.Errorf("layer %d has head size %d, layer 0 %d; GGUF has one head size for all layers", i, l.HeadDim, hd)
		}
	}
	if arch != archDeci && !c.Uniform() {
		return nil, nil, fmt.Errorf("layers differ in size; llama.cpp's %s architecture sizes every layer alike (only the Llama family has per-layer sizes in llama.cpp, as its deci architecture)", arch)
	}
	if c.MaxSeq < 0 || c.MaxSeq > math.MaxUint32 {
		return nil, nil, fmt.Errorf("context length %d does not fit a uint32", c.MaxSeq)
	}
	if opts.DType != nil {
		if _, err := GGMLTypeOf(*opts.DType); err != nil {
			return nil, nil, err
		}
	}

	name := opts.Name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	ft, err := fileType(m, opts.DType)
	if err != nil {
		return nil, nil, err
	}
	quant, quantized := quantTypes[opts.Quantize]
	if quantized {
		ft = quant.fileType
	} else if opts.Quantize != "" {
		return nil, nil, fmt.Errorf("unknown quantization %q (known: %s)", opts.Quantize, strings.Join(Quantizations, ", "))
	}
	ak := func(k string) string { return archKeyOf(arch, k) }
	kvs := []KV{
		{KeyArchitecture, Of(arch)},
		{KeyName, Of(name)},
		{KeyFileType, Of(ft)},
		{ak(keyVocabSize), Of(uint32(c.Vocab))},
		{ak(keyContext), Of(uint32(c.MaxSeq))},
		{ak(keyEmbedding), Of(uint32(c.Hidden))},
		{ak(keyBlocks), Of(uint32(len(c.Layers)))},
		layerKV(ak(keyFFN), c.Layers, arch == archDeci, func(l ir.LayerConfig) int { return l.MLP }),
		layerKV(ak(keyHeads), c.Layers, arch == archDeci, func(l ir.LayerConfig) int { return l.Heads }),
		layerKV(ak(keyKVHeads), c.Layers, arch == archDeci, func(l ir.LayerConfig) int { return l.KVHeads }),
		// Always explicit: after head pruning the head size is no longer
		// embedding_length / head_count, llama.cpp's default.
		{ak(keyKeyLength), Of(uint32(hd))},
		{ak(keyValueLength), Of(uint32(hd))},
		{ak(keyRopeDim), Of(uint32(hd))},
		{ak(keyRopeBase), Of(float32(c.RopeTheta))},
		{ak(keyRMSEps), Of(float32(c.NormEps))},
	}
	if moe := c.Layers[0]; moe.MoE() {
		// checkFamily has made every layer alike in experts. In llama
		// (Mixtral) feed_forward_length is the experts' width; the qwen
		// MoE architectures read it only as a default, written as the
		// chosen experts' width together, as the published configs
		// have it.
		kvs = append(kvs, KV{ak(keyExperts), Of(uint32(moe.Experts))}, KV{ak(keyExpertsUsed), Of(uint32(c.ExpertsPerToken))})
		if arch == archLlama {
			kvs[slices.IndexFunc(kvs, func(kv KV) bool { return kv.Key == ak(keyFFN) })] =
				layerKV(ak(keyFFN), c.Layers, false, func(l ir.LayerConfig) int { return l.ExpertMLP })
		} else {
			kvs[slices.IndexFunc(kvs, func(kv KV) bool { return kv.Key == ak(keyFFN) })] = KV{ak(keyFFN), Of(uint32(moe.ExpertMLP * c.ExpertsPerToken))}
			kvs = append(kvs, KV{ak(keyExpertFFN), Of(uint32(moe.ExpertMLP))})
			if moe.SharedMLP > 0 {
				kvs = append(kvs, KV{ak(keySharedExpertFFN), Of(uint32(moe.SharedMLP))})
			}
		}
	}
	switch arch {
	case archGemma2:
		kvs = append(kvs,
			KV{ak(keyAttnSoftCap), Of(float32(c.AttnSoftCap))},
			KV{ak(keyFinalSoftCap), Of(float32(c.FinalSoftCap))},
			KV{ak(keySlidingWindow), Of(uint32(c.Layers[0].Window))})
	case archPhi3:
		// As the converter: 0 is no window.
		kvs = append(kvs, KV{ak(keySlidingWindow), Of(uint32(c.Layers[0].Window))})
	}
	var tensors []WriteTensor
	if s := c.RopeScaling; s != nil && s.Factor != 0 {
		switch s.Type {
		case "", "default": // no scaling, as RopeInvFreq reads it
		case "linear":
			kvs = append(kvs, KV{ak(keyRopeType), Of("linear")}, KV{ak(keyRopeFactor), Of(float32(s.Factor))})
			if s.OriginalMaxPos > 0 {
				kvs = append(kvs, KV{ak(keyRopeOrigCtx), Of(uint32(s.OriginalMaxPos))})
			}
		case "llama3":
			if !llamaLike(arch) {
				return nil, nil, fmt.Errorf("llama3 RoPE scaling: llama.cpp reads its rope_freqs tensor only in the llama and deci architectures, not %s", arch)
			}
			// As llama.cpp's converter: no scaling keys (llama.cpp would
			// apply a factor on top), only the per-pair divisors, first.
			ff := llama3FreqFactors(c.RopeTheta, hd, s)
			if s.OriginalMaxPos != converterOrigCtx {
				// The divisors alone do not say which original context
				// they were computed with; the reader assumes the
				// converter's 8192 unless told. llama.cpp reads this key
				// only for YaRN, so it changes nothing there.
				kvs = append(kvs, KV{ak(keyRopeOrigCtx), Of(uint32(s.OriginalMaxPos))})
			}
			tensors = append(tensors, WriteTensor{Name: tensorRopeFreqs, Type: GGMLF32, Shape: []int{len(ff)},
				Data: func() ([]byte, error) { return float32Bytes(ff), nil }})
		default:
			return nil, nil, fmt.Errorf("RoPE scaling %q cannot be written to GGUF by whittle (only linear and llama3)", s.Type)
		}
	}
	if m.Tokenizer != nil {
		tkv, err := tokenizerKVs(m.Tokenizer, c)
		if err != nil {
			return nil, nil, err
		}
		kvs = append(kvs, tkv...)
	} else {
		kvs = append(kvs, specialTokenKVs(c)...)
	}

	covered := map[string]bool{}
	for _, lt := range layout(c, arch) {
		parts := make([]*ir.Tensor, len(lt.parts))
		for i, p := range lt.parts {
			if parts[i] = m.Tensors[p]; parts[i] == nil {
				return nil, nil, fmt.Errorf("tensor %q (part of GGUF %s) is missing", p, lt.name)
			}
			covered[p] = true
		}
		shape := parts[0].Shape
		if len(parts) > 1 {
			shape = []int{0, parts[0].Shape[1]}
			for _, p := range parts {
				shape[0] += p.Shape[0]
			}
		}
		src := layoutSource(lt, parts)
		dt := parts[0].DType
		if len(shape) == 1 || lt.f32 {
			dt = ir.F32
		} else if opts.DType != nil {
			dt = *opts.DType
		}
		if quantized && len(shape) >= 2 && !lt.f32 {
			// Blocks run along the rows, so stacked experts quantize
			// as matrices do.
			if shape[len(shape)-1]%qk == 0 {
				tensors = append(tensors, WriteTensor{Name: lt.name, Type: quant.typ, Shape: shape, Data: quantizer(src, quant.encode)})
				continue
			}
			dt = ir.F16
		}
		gt, err := GGMLTypeOf(dt)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", lt.parts[0], err)
		}
		tensors = append(tensors, WriteTensor{Name: lt.name, Type: gt, Shape: shape, Data: converter(src, dt)})
	}
	for n := range m.Tensors {
		if !covered[n] {
			return nil, nil, fmt.Errorf("tensor %q has no GGUF name in the %s architecture", n, arch)
		}
	}
	return kvs, tensors, nil
}

// layoutSource builds a GGUF tensor's content from its canonical parts,
// in the IR's dtype, when the writer asks for it: stacked, permuted to
// the interleaved RoPE order, or offset as the layout says.
func layoutSource(lt layoutTensor, parts []*ir.Tensor) func() (*ir.Tensor, error) {
	return func() (*ir.Tensor, error) {
		if len(parts) > 1 {
			return concatRows(parts)
		}
		t := parts[0]
		if lt.ropeHeads > 0 {
			return t.PermuteRows(ir.RopeToInterleaved(lt.ropeHeads, lt.headDim))
		}
		if lt.normOffset != 0 {
			return offsetTensor(t, lt.normOffset), nil
		}
		return t, nil
	}
}

// converter returns a tensor's bytes built and converted, only when the
// writer asks for them, keeping nothing afterwards.
func converter(src func() (*ir.Tensor, error), dt ir.DType) func() ([]byte, error) {
	return func() ([]byte, error) {
		out, err := src()
		if err != nil {
			return nil, err
		}
		if out, err = out.Convert(dt); err != nil {
			return nil, err
		}
		return out.Bytes()
	}
}

// quantizer is converter for block-quantized storage.
func quantizer(src func() (*ir.Tensor, error), encode func([]float32) ([]byte, error)) func() ([]byte, error) {
	return func() ([]byte, error) {
		out, err := src()
		if err != nil {
			return nil, err
		}
		v, err := out.Float32()
		if err != nil {
			return nil, err
		}
		return encode(v)
	}
}

// layerKV is a per-layer size: one uint32 when every layer agrees, else
// (or always, with array, as the deci converter writes them) an int32
// array as llama.cpp's converters write them.
func layerKV(key string, layers []ir.LayerConfig, array bool, get func(ir.LayerConfig) int) KV {
	vals := make([]int32, len(layers))
	uniform := true
	for i, l := range layers {
		vals[i] = int32(get(l))
		uniform = uniform && vals[i] == vals[0]
	}
	if uniform && !array {
		return KV{key, Of(uint32(vals[0]))}
	}
	return KV{key, ArrayOf(vals)}
}

// fileType is general.file_type: the dtype most matrix weights are
// stored in ("mostly F16" and so on), or the requested one.
func fileType(m *ir.Model, d *ir.DType) (uint32, error) {
	dt := ir.F32
	if d != nil {
		dt = *d
	} else {
		count := map[ir.DType]int{}
		for _, t := range m.Tensors {
			if len(t.Shape) == 2 {
				count[t.DType] += t.NumElements()
			}
		}
		for _, c := range []ir.DType{ir.BF16, ir.F16} {
			if count[c] > count[dt] {
				dt = c
			}
		}
	}
	switch dt {
	case ir.F32:
		return fileTypeF32, nil
	case ir.F16:
		return fileTypeF16, nil
	case ir.BF16:
		return fileTypeBF16, nil
	}
	return 0, fmt.Errorf("dtype %s has no GGUF file type", dt)
}

// specialTokenKVs are the BOS/EOS ids of c that are set (≥ 0).
func specialTokenKVs(c *ir.Config) []KV {
	var kvs []KV
	for _, s := range []struct {
		key string
		id  int
	}{{KeyTokBOS, c.BOS}, {KeyTokEOS, c.EOS}} {
		if s.id >= 0 {
			kvs = append(kvs, KV{s.key, Of(uint32(s.id))})
		}
	}
	return kvs
}
