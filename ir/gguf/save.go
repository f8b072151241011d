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

// Save writes m as a GGUF v3 llama model that llama.cpp loads: the llama.*
// metadata, the tokenizer in SentencePiece form when m has one, and the
// tensors under GGUF names with Q and K rows permuted back to the
// interleaved RoPE order. A tied classifier is written once, as
// token_embd.weight. Tensors are converted one at a time as they are
// written. The file appears at path only when complete.
//
// Limitations: without m.Tokenizer no tokenizer.ggml.* keys are written
// and llama.cpp will refuse the file (whittle still reads it). Layers that
// differ in size are written as per-layer arrays, which whittle reads but
// llama.cpp's llama architecture does not (it needs uniform layers). RoPE
// scaling is linear (metadata) or llama3 (the rope_freqs tensor, as
// llama.cpp's converter writes it).
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
	hd := c.Layers[0].HeadDim
	for i, l := range c.Layers {
		if l.HeadDim != hd {
			return nil, nil, fmt.Errorf("layer %d has head size %d, layer 0 %d; GGUF has one head size for all layers", i, l.HeadDim, hd)
		}
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
	kvs := []KV{
		{KeyArchitecture, Of(archLlama)},
		{KeyName, Of(name)},
		{KeyFileType, Of(ft)},
		{archKey(keyVocabSize), Of(uint32(c.Vocab))},
		{archKey(keyContext), Of(uint32(c.MaxSeq))},
		{archKey(keyEmbedding), Of(uint32(c.Hidden))},
		{archKey(keyBlocks), Of(uint32(len(c.Layers)))},
		layerKV(archKey(keyFFN), c.Layers, func(l ir.LayerConfig) int { return l.MLP }),
		layerKV(archKey(keyHeads), c.Layers, func(l ir.LayerConfig) int { return l.Heads }),
		layerKV(archKey(keyKVHeads), c.Layers, func(l ir.LayerConfig) int { return l.KVHeads }),
		// Always explicit: after head pruning the head size is no longer
		// embedding_length / head_count, llama.cpp's default.
		{archKey(keyKeyLength), Of(uint32(hd))},
		{archKey(keyValueLength), Of(uint32(hd))},
		{archKey(keyRopeDim), Of(uint32(hd))},
		{archKey(keyRopeBase), Of(float32(c.RopeTheta))},
		{archKey(keyRMSEps), Of(float32(c.NormEps))},
	}
	var tensors []WriteTensor
	if s := c.RopeScaling; s != nil && s.Factor != 0 {
		switch s.Type {
		case "", "default": // no scaling, as RopeInvFreq reads it
		case "linear":
			kvs = append(kvs, KV{archKey(keyRopeType), Of("linear")}, KV{archKey(keyRopeFactor), Of(float32(s.Factor))})
			if s.OriginalMaxPos > 0 {
				kvs = append(kvs, KV{archKey(keyRopeOrigCtx), Of(uint32(s.OriginalMaxPos))})
			}
		case "llama3":
			// As llama.cpp's converter: no scaling keys (llama.cpp would
			// apply a factor on top), only the per-pair divisors, first.
			ff := llama3FreqFactors(c.RopeTheta, hd, s)
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

	perms := interleavedPerms(c)
	for _, n := range m.TensorNames() {
		t := m.Tensors[n]
		gname, ok := GGUFName(n)
		if !ok {
			return nil, nil, fmt.Errorf("tensor %q has no GGUF name", n)
		}
		dt := t.DType
		if len(t.Shape) == 1 {
			dt = ir.F32
		} else if opts.DType != nil {
			dt = *opts.DType
		}
		if quantized && len(t.Shape) == 2 {
			if t.Shape[1]%qk == 0 {
				tensors = append(tensors, WriteTensor{Name: gname, Type: quant.typ, Shape: t.Shape, Data: quantizer(t, perms[n], quant.encode)})
				continue
			}
			dt = ir.F16
		}
		gt, err := GGMLTypeOf(dt)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", n, err)
		}
		tensors = append(tensors, WriteTensor{Name: gname, Type: gt, Shape: t.Shape, Data: converter(t, perms[n], dt)})
	}
	return kvs, tensors, nil
}

// converter returns a tensor's bytes permuted and converted, building the
// result only when the writer asks for it and keeping nothing afterwards.
func converter(t *ir.Tensor, perm []int, dt ir.DType) func() ([]byte, error) {
	return func() ([]byte, error) {
		var err error
		out := t
		if perm != nil {
			if out, err = out.PermuteRows(perm); err != nil {
				return nil, err
			}
		}
		if out, err = out.Convert(dt); err != nil {
			return nil, err
		}
		return out.Bytes()
	}
}

// quantizer is converter for block-quantized storage.
func quantizer(t *ir.Tensor, perm []int, encode func([]float32) ([]byte, error)) func() ([]byte, error) {
	return func() ([]byte, error) {
		var err error
		out := t
		if perm != nil {
			if out, err = out.PermuteRows(perm); err != nil {
				return nil, err
			}
		}
		v, err := out.Float32()
		if err != nil {
			return nil, err
		}
		return encode(v)
	}
}

// layerKV is a per-layer size: one uint32 when every layer agrees, else
// an int32 array as llama.cpp's converters write them.
func layerKV(key string, layers []ir.LayerConfig, get func(ir.LayerConfig) int) KV {
	vals := make([]int32, len(layers))
	uniform := true
	for i, l := range layers {
		vals[i] = int32(get(l))
		uniform = uniform && vals[i] == vals[0]
	}
	if uniform {
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
