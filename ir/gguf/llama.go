package gguf

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// Metadata keys of the Llama mapping. The llama.* keys are spelled with
// the architecture prefix by archKey.
const (
	KeyArchitecture = "general.architecture"
	KeyName         = "general.name"
	KeyFileType     = "general.file_type"

	keyContext     = "context_length"
	keyEmbedding   = "embedding_length"
	keyBlocks      = "block_count"
	keyFFN         = "feed_forward_length"
	keyHeads       = "attention.head_count"
	keyKVHeads     = "attention.head_count_kv"
	keyKeyLength   = "attention.key_length"
	keyValueLength = "attention.value_length"
	keyRMSEps      = "attention.layer_norm_rms_epsilon"
	keyRopeDim     = "rope.dimension_count"
	keyRopeBase    = "rope.freq_base"
	keyRopeType    = "rope.scaling.type"
	keyRopeFactor  = "rope.scaling.factor"
	keyRopeOrigCtx = "rope.scaling.original_context_length"
	keyRopeLinear  = "rope.scale_linear" // older spelling of a linear factor
	keyVocabSize   = "vocab_size"

	KeyTokModel     = "tokenizer.ggml.model"
	KeyTokTokens    = "tokenizer.ggml.tokens"
	KeyTokScores    = "tokenizer.ggml.scores"
	KeyTokTypes     = "tokenizer.ggml.token_type"
	KeyTokBOS       = "tokenizer.ggml.bos_token_id"
	KeyTokEOS       = "tokenizer.ggml.eos_token_id"
	KeyTokUNK       = "tokenizer.ggml.unknown_token_id"
	KeyTokAddBOS    = "tokenizer.ggml.add_bos_token"
	KeyTokAddEOS    = "tokenizer.ggml.add_eos_token"
	KeyTokAddSpace  = "tokenizer.ggml.add_space_prefix"
	KeyTokFoldSpace = "tokenizer.ggml.remove_extra_whitespaces"
	archLlama       = "llama"
	tokModelLlama   = "llama" // SentencePiece BPE with byte fallback
	tokModelGPT2    = "gpt2"  // byte-level BPE (Llama 3, GPT-2, Qwen)
	KeyTokMerges    = "tokenizer.ggml.merges"
	KeyTokPre       = "tokenizer.ggml.pre"
	defaultRopeBase = 10000
)

// llama.cpp's LLAMA_FTYPE values for general.file_type.
const (
	fileTypeF32  = 0
	fileTypeF16  = 1
	fileTypeBF16 = 32
	fileTypeQ8_0 = 7 // LLAMA_FTYPE_MOSTLY_Q8_0
	fileTypeQ4_0 = 2 // LLAMA_FTYPE_MOSTLY_Q4_0
)

func archKey(k string) string { return archLlama + "." + k }

// maxSize bounds every size read from metadata, so that products of two
// sizes cannot overflow and a hostile file cannot make the loader
// allocate for absurd shapes before they are checked against the tensors.
const maxSize = math.MaxInt32

// GGUF tensor names of the per-layer roles (blk.N.<name>.weight).
var ggufRoles = map[string]string{
	ir.RoleAttnNorm: "attn_norm",
	ir.RoleQ:        "attn_q",
	ir.RoleK:        "attn_k",
	ir.RoleV:        "attn_v",
	ir.RoleO:        "attn_output",
	ir.RoleMLPNorm:  "ffn_norm",
	ir.RoleGate:     "ffn_gate",
	ir.RoleUp:       "ffn_up",
	ir.RoleDown:     "ffn_down",
}

// GGUF names of the tensors outside the layers.
var ggufGlobals = map[string]string{
	ir.NameEmbed:      "token_embd.weight",
	ir.NameFinalNorm:  "output_norm.weight",
	ir.NameClassifier: "output.weight",
}

// GGUFName is the GGUF tensor name of a canonical IR tensor name.
func GGUFName(canonical string) (string, bool) {
	if n, ok := ggufGlobals[canonical]; ok {
		return n, true
	}
	rest, ok := strings.CutPrefix(canonical, "model.layers.")
	if !ok {
		return "", false
	}
	num, role, ok := strings.Cut(rest, ".")
	if !ok || !canonicalInt(num) {
		return "", false
	}
	role, ok = strings.CutSuffix(role, ".weight")
	if !ok {
		return "", false
	}
	g, ok := ggufRoles[role]
	if !ok {
		return "", false
	}
	return "blk." + num + "." + g + ".weight", true
}

// CanonicalName is the IR name of a GGUF tensor name, with the layer
// number of a per-layer tensor (-1 for the others).
func CanonicalName(gguf string) (name string, layer int, ok bool) {
	for c, g := range ggufGlobals {
		if g == gguf {
			return c, -1, true
		}
	}
	rest, ok := strings.CutPrefix(gguf, "blk.")
	if !ok {
		return "", 0, false
	}
	num, role, ok := strings.Cut(rest, ".")
	if !ok || !canonicalInt(num) {
		return "", 0, false
	}
	role, ok = strings.CutSuffix(role, ".weight")
	if !ok {
		return "", 0, false
	}
	for r, g := range ggufRoles {
		if g == role {
			l, _ := strconv.Atoi(num)
			return ir.LayerName(l, r), l, true
		}
	}
	return "", 0, false
}

// canonicalInt accepts a decimal without sign or leading zeros that fits
// an int32, so every layer number has exactly one spelling.
func canonicalInt(s string) bool {
	n, err := strconv.ParseInt(s, 10, 32)
	return err == nil && n >= 0 && strconv.FormatInt(n, 10) == s
}

// Load reads a GGUF file of the llama architecture as an IR model. Tensors
// stay in the memory-mapped file until used; Q and K rows are permuted
// from GGUF's interleaved RoPE order to the IR's half order when read.
// The map is released by the model's Close.
func Load(path string) (*ir.Model, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	m, err := f.Model()
	if err != nil {
		f.Close()
		return nil, err
	}
	m.AddCloser(f)
	return m, nil
}

// Model maps the file's llama metadata and tensors to an IR model whose
// tensors read from f, so f must stay open while the model is used.
//
// Supported: F32, F16 and BF16 tensors; per-layer arrays of
// feed_forward_length, attention.head_count and attention.head_count_kv;
// RoPE unscaled or linearly scaled; SentencePiece ("llama") tokenizers.
// An output.weight byte-identical to token_embd.weight (as llama2.c's
// converter writes for tied models) is read as a tied classifier.
func (f *File) Model() (*ir.Model, error) {
	arch, err := f.str(KeyArchitecture, true)
	if err != nil {
		return nil, err
	}
	if arch != archLlama {
		return nil, f.keyErr(KeyArchitecture, "architecture %q is not supported (whittle reads %q)", arch, archLlama)
	}
	cfg, err := f.config()
	if err != nil {
		return nil, err
	}
	tok, err := f.tokenizer()
	if err != nil {
		return nil, err
	}
	if tok != nil {
		cfg.Vocab, cfg.BOS, cfg.EOS = tok.Size(), tok.BOS, tok.EOS
	} else {
		if cfg.BOS, err = f.tokenID(KeyTokBOS, -1); err != nil {
			return nil, err
		}
		if cfg.EOS, err = f.tokenID(KeyTokEOS, -1); err != nil {
			return nil, err
		}
	}

	tensors := make(map[string]*ir.Tensor, len(f.Tensors))
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		name, layer, ok := CanonicalName(ti.Name)
		if !ok {
			return nil, fmt.Errorf("%s: offset %d: tensor %q is not part of the llama architecture whittle reads", f.Path, ti.InfoOffset, ti.Name)
		}
		if layer >= len(cfg.Layers) {
			return nil, fmt.Errorf("%s: offset %d: tensor %q belongs to layer %d, but %s is %d", f.Path, ti.InfoOffset, ti.Name, layer, archKey(keyBlocks), len(cfg.Layers))
		}
		t, err := f.tensor(ti)
		if err != nil {
			return nil, err
		}
		switch {
		case name == ir.LayerName(layer, ir.RoleQ):
			t = permuted(t, cfg.Layers[layer].Heads, cfg.Layers[layer].HeadDim, ir.RopeToHalf)
		case name == ir.LayerName(layer, ir.RoleK):
			t = permuted(t, cfg.Layers[layer].KVHeads, cfg.Layers[layer].HeadDim, ir.RopeToHalf)
		}
		tensors[name] = t
	}

	// Vocabulary without a tokenizer: llama.vocab_size, else the
	// embedding's rows.
	if tok == nil {
		v, ok, err := f.size(archKey(keyVocabSize))
		if err != nil {
			return nil, err
		}
		if !ok {
			if ti, found := f.Info(ggufGlobals[ir.NameEmbed]); found && len(ti.Dims) == 2 {
				v = int(ti.Dims[1])
			}
		}
		cfg.Vocab = v
	}

	if cfg.Tied, err = f.tied(); err != nil {
		return nil, err
	}
	if cfg.Tied {
		delete(tensors, ir.NameClassifier)
	}

	m := &ir.Model{Config: cfg, Tensors: tensors, Tokenizer: tok, Source: f.Path}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// permuted reorders the rows of a Q or K matrix lazily, when its bytes
// are first read; the model is validated before that can happen, so the
// permutation fits the shape.
func permuted(t *ir.Tensor, heads, headDim int, perm func(heads, headDim int) []int) *ir.Tensor {
	return ir.LazyTensor(t.DType, t.Shape, func() ([]byte, error) {
		p, err := t.PermuteRows(perm(heads, headDim))
		if err != nil {
			return nil, err
		}
		return p.Bytes()
	})
}

// tied reports whether the classifier is the embedding: output.weight is
// absent, or holds exactly the embedding's bytes.
func (f *File) tied() (bool, error) {
	out, ok := f.Info(ggufGlobals[ir.NameClassifier])
	if !ok {
		return true, nil
	}
	emb, ok := f.Info(ggufGlobals[ir.NameEmbed])
	if !ok || emb.Type != out.Type || !equalDims(emb.Dims, out.Dims) {
		return false, nil
	}
	a, err := f.raw(emb)
	if err != nil {
		return false, err
	}
	b, err := f.raw(out)
	if err != nil {
		return false, err
	}
	return bytes.Equal(a, b), nil
}

func equalDims(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// config reads the architecture (everything but the vocabulary, special
// tokens and tying, which come from elsewhere).
func (f *File) config() (ir.Config, error) {
	cfg := ir.Config{Arch: archLlama}
	var err error
	req := func(key string) int {
		if err != nil {
			return 0
		}
		v, ok, e := f.size(archKey(key))
		switch {
		case e != nil:
			err = e
		case !ok:
			err = fmt.Errorf("%s: missing metadata key %q", f.Path, archKey(key))
		}
		return v
	}
	cfg.MaxSeq = req(keyContext)
	cfg.Hidden = req(keyEmbedding)
	n := req(keyBlocks)
	if err != nil {
		return cfg, err
	}
	if n == 0 {
		return cfg, f.keyErr(archKey(keyBlocks), "the model has no blocks")
	}
	// Every layer has nine tensors: refuse a count the file cannot hold
	// before allocating per-layer state for it.
	if n > len(f.Tensors) {
		return cfg, f.keyErr(archKey(keyBlocks), "%d blocks, but the file holds only %d tensors", n, len(f.Tensors))
	}
	heads, err := f.perLayer(archKey(keyHeads), n, nil)
	if err != nil {
		return cfg, err
	}
	kvHeads, err := f.perLayer(archKey(keyKVHeads), n, heads)
	if err != nil {
		return cfg, err
	}
	mlp, err := f.perLayer(archKey(keyFFN), n, nil)
	if err != nil {
		return cfg, err
	}

	// llama.cpp derives the head size from layer 0 unless key_length
	// says otherwise.
	headDim, ok, err := f.size(archKey(keyKeyLength))
	if err != nil {
		return cfg, err
	}
	if !ok {
		if heads[0] == 0 || cfg.Hidden%heads[0] != 0 {
			return cfg, fmt.Errorf("%s: cannot derive the head size: %s %d is not a multiple of %s %v and %s is absent",
				f.Path, archKey(keyEmbedding), cfg.Hidden, archKey(keyHeads), heads, archKey(keyKeyLength))
		}
		headDim = cfg.Hidden / heads[0]
	}
	if v, ok, err := f.size(archKey(keyValueLength)); err != nil {
		return cfg, err
	} else if ok && v != headDim {
		return cfg, f.keyErr(archKey(keyValueLength), "value head size %d differs from the key head size %d; whittle needs them equal", v, headDim)
	}
	if r, ok, err := f.size(archKey(keyRopeDim)); err != nil {
		return cfg, err
	} else if ok && r != headDim {
		return cfg, f.keyErr(archKey(keyRopeDim), "RoPE rotates %d of the %d dimensions of each head; whittle supports only full rotation", r, headDim)
	}
	cfg.Layers = make([]ir.LayerConfig, n)
	for i := range cfg.Layers {
		cfg.Layers[i] = ir.LayerConfig{Heads: heads[i], KVHeads: kvHeads[i], HeadDim: headDim, MLP: mlp[i]}
	}

	eps, ok, err := f.float(archKey(keyRMSEps))
	if err != nil {
		return cfg, err
	}
	if !ok {
		return cfg, fmt.Errorf("%s: missing metadata key %q", f.Path, archKey(keyRMSEps))
	}
	if !(eps > 0) || math.IsInf(eps, 0) {
		return cfg, f.keyErr(archKey(keyRMSEps), "RMS norm epsilon %g must be positive and finite", eps)
	}
	cfg.NormEps = eps
	cfg.RopeTheta = defaultRopeBase
	if base, ok, err := f.float(archKey(keyRopeBase)); err != nil {
		return cfg, err
	} else if ok {
		if !(base > 0) || math.IsInf(base, 0) {
			return cfg, f.keyErr(archKey(keyRopeBase), "RoPE base %g must be positive and finite", base)
		}
		cfg.RopeTheta = base
	}
	cfg.RopeScaling, err = f.ropeScaling()
	return cfg, err
}

// ropeScaling reads llama.rope.scaling.*; as in llama.cpp a factor
// without a type is linear, and the old rope.scale_linear key is read
// too.
func (f *File) ropeScaling() (*ir.RopeScaling, error) {
	typ, err := f.str(archKey(keyRopeType), false)
	if err != nil {
		return nil, err
	}
	factor, hasFactor, err := f.float(archKey(keyRopeFactor))
	if err != nil {
		return nil, err
	}
	if !hasFactor {
		if factor, hasFactor, err = f.float(archKey(keyRopeLinear)); err != nil {
			return nil, err
		}
	}
	orig, _, err := f.size(archKey(keyRopeOrigCtx))
	if err != nil {
		return nil, err
	}
	switch typ {
	case "none":
		return nil, nil
	case "", "linear":
		// llama.cpp treats a factor of 0 as "no scaling".
		if !hasFactor || factor == 0 || (typ == "" && factor == 1) {
			return nil, nil
		}
		if !(factor > 0) || math.IsInf(factor, 0) {
			return nil, f.keyErr(archKey(keyRopeFactor), "RoPE scaling factor %g must be positive", factor)
		}
		return &ir.RopeScaling{Type: "linear", Factor: factor, OriginalMaxPos: orig}, nil
	}
	return nil, f.keyErr(archKey(keyRopeType), "RoPE scaling type %q is not supported (whittle reads none and linear)", typ)
}

// tokenizer reads a SentencePiece vocabulary; nil when the file has none.
func (f *File) tokenizer() (*tokenizer.Tokenizer, error) {
	model, err := f.str(KeyTokModel, false)
	if err != nil || model == "" {
		return nil, err
	}
	if model == tokModelGPT2 {
		return f.byteLevelTokenizer()
	}
	if model != tokModelLlama {
		return nil, f.keyErr(KeyTokModel, "tokenizer model %q is not supported (whittle reads SentencePiece %q and byte-level %q vocabularies)", model, tokModelLlama, tokModelGPT2)
	}
	pieces, err := f.strs(model, KeyTokTokens)
	if err != nil {
		return nil, err
	}
	n := len(pieces)
	t := &tokenizer.Tokenizer{Pieces: pieces, Scores: make([]float32, n)}
	if v, ok := f.Get(KeyTokScores); ok {
		s, ok := v.Float32s()
		if !ok || len(s) != n {
			return nil, f.keyErr(KeyTokScores, "want %d float32 scores, got %s", n, v)
		}
		t.Scores = s
	}
	if t.Types, err = f.tokenTypes(n); err != nil {
		return nil, err
	}
	// llama.cpp's defaults for SentencePiece vocabularies.
	if t.BOS, err = f.tokenID(KeyTokBOS, 1); err != nil {
		return nil, err
	}
	if t.EOS, err = f.tokenID(KeyTokEOS, 2); err != nil {
		return nil, err
	}
	if t.UNK, err = f.tokenID(KeyTokUNK, 0); err != nil {
		return nil, err
	}
	// llama.cpp's defaults: a space prefix, spaces kept.
	for _, flag := range []struct {
		key    string
		dst    *bool
		invert bool
	}{{KeyTokAddSpace, &t.NoDummyPrefix, true}, {KeyTokFoldSpace, &t.FoldSpaces, false}} {
		if v, ok := f.Get(flag.key); ok {
			b, ok := v.Bool()
			if !ok {
				return nil, f.keyErr(flag.key, "want a bool, got %s %s", v.Type, v)
			}
			*flag.dst = b != flag.invert
		}
	}
	if err := t.Check(); err != nil {
		return nil, fmt.Errorf("%s: tokenizer: %w", f.Path, err)
	}
	return t, nil
}

// strs reads a tokenizer model's required string-array key.
func (f *File) strs(model, key string) ([]string, error) {
	v, ok := f.Get(key)
	if !ok {
		return nil, fmt.Errorf("%s: tokenizer model %q without %q", f.Path, model, key)
	}
	out, ok := v.Strs()
	if !ok {
		return nil, f.keyErr(key, "want an array of strings, got %s", v)
	}
	return out, nil
}

// tokenTypes reads the types of n tokens; nil when the file has none.
func (f *File) tokenTypes(n int) ([]tokenizer.TokenType, error) {
	v, ok := f.Get(KeyTokTypes)
	if !ok {
		return nil, nil
	}
	ids, ok := v.Ints()
	if !ok || len(ids) != n {
		return nil, f.keyErr(KeyTokTypes, "want %d integer token types, got %s", n, v)
	}
	types := make([]tokenizer.TokenType, n)
	for i, x := range ids {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return nil, f.keyErr(KeyTokTypes, "token %d: type %d out of range", i, x)
		}
		types[i] = tokenizer.TokenType(x)
	}
	return types, nil
}

// bytePre maps llama.cpp's byte-level pre-tokenizer names to the split
// pattern and ignore_merges of the Hugging Face tokenizers they stand for.
var bytePre = []struct {
	name         string
	pattern      string
	ignoreMerges bool
}{
	{"llama-bpe", tokenizer.Llama3Pattern, true},
	{"gpt-2", tokenizer.GPT2Pattern, false},
	{"default", tokenizer.GPT2Pattern, false},
}

// byteLevelTokenizer reads a "gpt2" vocabulary: tokens, types, merges and
// the pre-tokenizer's name.
func (f *File) byteLevelTokenizer() (*tokenizer.Tokenizer, error) {
	pieces, err := f.strs(tokModelGPT2, KeyTokTokens)
	if err != nil {
		return nil, err
	}
	mergeStrs, err := f.strs(tokModelGPT2, KeyTokMerges)
	if err != nil {
		return nil, err
	}
	merges := make([][2]string, len(mergeStrs))
	for i, m := range mergeStrs {
		a, b, ok := strings.Cut(m, " ")
		if !ok {
			return nil, f.keyErr(KeyTokMerges, "merge %d %q is not two tokens", i, m)
		}
		merges[i] = [2]string{a, b}
	}
	read, err := f.tokenTypes(len(pieces))
	if err != nil {
		return nil, err
	}
	// Of the types, a byte-level vocabulary needs only which tokens are
	// special (added) and which are placeholders.
	types := make([]tokenizer.TokenType, len(pieces))
	for i := range types {
		types[i] = tokenizer.Normal
		if read != nil && (read[i] == tokenizer.Control || read[i] == tokenizer.Unused) {
			types[i] = read[i]
		}
	}
	pre, err := f.str(KeyTokPre, false)
	if err != nil {
		return nil, err
	}
	if pre == "" {
		pre = "default"
	}
	var pattern string
	ignore := false
	for _, p := range bytePre {
		if p.name == pre {
			pattern, ignore = p.pattern, p.ignoreMerges
		}
	}
	if pattern == "" {
		return nil, f.keyErr(KeyTokPre, "pre-tokenizer %q is not supported (known: llama-bpe, gpt-2, default)", pre)
	}
	bos, err := f.tokenID(KeyTokBOS, -1)
	if err != nil {
		return nil, err
	}
	eos, err := f.tokenID(KeyTokEOS, -1)
	if err != nil {
		return nil, err
	}
	t, err := tokenizer.NewByteLevel(pieces, types, merges, pattern, ignore, bos, eos)
	if err != nil {
		return nil, fmt.Errorf("%s: tokenizer: %w", f.Path, err)
	}
	return t, nil
}

// byteLevelKVs writes a byte-level vocabulary as llama.cpp's "gpt2" model.
func byteLevelKVs(t *tokenizer.Tokenizer, c *ir.Config) ([]KV, error) {
	bl := t.ByteLevel
	pre := ""
	for _, p := range bytePre {
		if p.pattern == bl.Pattern() && p.ignoreMerges == bl.IgnoreMerges() {
			pre = p.name
			break
		}
	}
	if pre == "" {
		return nil, fmt.Errorf("tokenizer: llama.cpp has no pre-tokenizer for the split %q (ignore_merges %v); GGUF export supports Llama 3's and GPT-2's", bl.Pattern(), bl.IgnoreMerges())
	}
	types := make([]int32, t.Size())
	for i, typ := range t.Types {
		types[i] = int32(typ)
	}
	merges := bl.Merges(t)
	ms := make([]string, len(merges))
	for i, m := range merges {
		ms[i] = m[0] + " " + m[1]
	}
	kvs := []KV{
		{KeyTokModel, Of(tokModelGPT2)},
		{KeyTokPre, Of(pre)},
		{KeyTokTokens, ArrayOf(append([]string(nil), t.Pieces...))},
		{KeyTokTypes, ArrayOf(types)},
		{KeyTokMerges, ArrayOf(ms)},
	}
	for _, s := range []struct {
		key string
		id  int
	}{{KeyTokBOS, c.BOS}, {KeyTokEOS, c.EOS}} {
		if s.id >= 0 {
			kvs = append(kvs, KV{s.key, Of(uint32(s.id))})
		}
	}
	return append(kvs, KV{KeyTokAddBOS, Of(t.BOS >= 0)}, KV{KeyTokAddEOS, Of(false)}), nil
}

// tokenID reads a special token id; -1 (however stored, including as
// uint32 0xFFFFFFFF) means none.
func (f *File) tokenID(key string, def int) (int, error) {
	v, ok := f.Get(key)
	if !ok {
		return def, nil
	}
	if u, ok := v.Uint(); ok && (u == math.MaxUint32 || u == math.MaxUint64) {
		return -1, nil
	}
	i, ok := v.Int()
	if !ok || i < -1 || i > maxSize {
		return 0, f.keyErr(key, "want a token id, got %s %s", v.Type, v)
	}
	return int(i), nil
}

// keyErr reports a problem with a metadata value at its offset.
func (f *File) keyErr(key, format string, args ...any) error {
	at := -1
	if i, ok := f.kvIndex[key]; ok && i < len(f.kvAt) {
		at = f.kvAt[i]
	}
	msg := fmt.Sprintf(format, args...)
	if at < 0 {
		return fmt.Errorf("%s: key %q: %s", f.Path, key, msg)
	}
	return fmt.Errorf("%s: offset %d: key %q: %s", f.Path, at, key, msg)
}

func (f *File) str(key string, required bool) (string, error) {
	v, ok := f.Get(key)
	if !ok {
		if required {
			return "", fmt.Errorf("%s: missing metadata key %q", f.Path, key)
		}
		return "", nil
	}
	s, ok := v.Str()
	if !ok {
		return "", f.keyErr(key, "want a string, got %s %s", v.Type, v)
	}
	return s, nil
}

// size reads a non-negative integer of any integer type.
func (f *File) size(key string) (int, bool, error) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false, nil
	}
	i, ok := v.Int()
	if !ok || i < 0 || i > maxSize {
		return 0, false, f.keyErr(key, "want an integer in [0, %d], got %s %s", maxSize, v.Type, v)
	}
	return int(i), true, nil
}

// float reads a float32 or float64. A float32 is widened to the shortest
// decimal that rounds to it, which is the value its writer meant: 1e-5
// stored as float32 reads back as 1e-5, not 9.99999974737875e-06, so
// configs survive a trip through GGUF unchanged.
func (f *File) float(key string) (float64, bool, error) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false, nil
	}
	if x, ok := v.Any().(float32); ok {
		d, err := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		if err != nil {
			d = float64(x)
		}
		return d, true, nil
	}
	x, ok := v.Float()
	if !ok {
		return 0, false, f.keyErr(key, "want a float, got %s %s", v.Type, v)
	}
	return x, true, nil
}

// perLayer reads a key that is either one integer for every layer or an
// array with one per layer. Absent, it takes def (an error when def is
// nil).
func (f *File) perLayer(key string, n int, def []int) ([]int, error) {
	v, ok := f.Get(key)
	if !ok {
		if def == nil {
			return nil, fmt.Errorf("%s: missing metadata key %q", f.Path, key)
		}
		return def, nil
	}
	out := make([]int, n)
	if v.Type != TypeArray {
		x, _, err := f.size(key)
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i] = x
		}
		return out, nil
	}
	xs, ok := v.Ints()
	if !ok || len(xs) != n {
		return nil, f.keyErr(key, "want an integer or %d integers (one per block), got %s", n, v)
	}
	for i, x := range xs {
		if x < 0 || x > maxSize {
			return nil, f.keyErr(key, "layer %d: %d out of range [0, %d]", i, x, maxSize)
		}
		out[i] = int(x)
	}
	return out, nil
}

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
// scaling other than linear (llama3's) is refused.
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
	if s := c.RopeScaling; s != nil && s.Factor != 0 {
		if s.Type != "linear" {
			return nil, nil, fmt.Errorf("RoPE scaling %q cannot be written to GGUF by whittle (only linear)", s.Type)
		}
		kvs = append(kvs, KV{archKey(keyRopeType), Of("linear")}, KV{archKey(keyRopeFactor), Of(float32(s.Factor))})
		if s.OriginalMaxPos > 0 {
			kvs = append(kvs, KV{archKey(keyRopeOrigCtx), Of(uint32(s.OriginalMaxPos))})
		}
	}
	if m.Tokenizer != nil {
		tkv, err := tokenizerKVs(m.Tokenizer, c)
		if err != nil {
			return nil, nil, err
		}
		kvs = append(kvs, tkv...)
	} else {
		for _, s := range []struct {
			key string
			id  int
		}{{KeyTokBOS, c.BOS}, {KeyTokEOS, c.EOS}} {
			if s.id >= 0 {
				kvs = append(kvs, KV{s.key, Of(uint32(s.id))})
			}
		}
	}

	perms := map[string][]int{}
	for l, lc := range c.Layers {
		perms[ir.LayerName(l, ir.RoleQ)] = ir.RopeToInterleaved(lc.Heads, lc.HeadDim)
		perms[ir.LayerName(l, ir.RoleK)] = ir.RopeToInterleaved(lc.KVHeads, lc.HeadDim)
	}
	var tensors []WriteTensor
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

// tokenizerKVs writes a vocabulary the way llama.cpp's converters do:
// SentencePiece pieces, with spaces as '▁' and "<s>"/"</s>" for BOS and
// EOS, whichever form the tokenizer holds them in.
func tokenizerKVs(t *tokenizer.Tokenizer, c *ir.Config) ([]KV, error) {
	if err := t.Check(); err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if t.ByteLevel != nil {
		return byteLevelKVs(t, c)
	}
	n := t.Size()
	pieces := make([]string, n)
	types := make([]int32, n)
	for i, p := range t.Pieces {
		pieces[i] = sentencePiece(p, i, t)
		switch {
		case i < len(t.Types):
			types[i] = int32(t.Types[i])
		case i == t.UNK:
			types[i] = int32(tokenizer.Unknown)
		case i == t.BOS || i == t.EOS:
			types[i] = int32(tokenizer.Control)
		case isBytePiece(p):
			types[i] = int32(tokenizer.Byte)
		default:
			types[i] = int32(tokenizer.Normal)
		}
	}
	kvs := []KV{
		{KeyTokModel, Of(tokModelLlama)},
		{KeyTokTokens, ArrayOf(pieces)},
		{KeyTokScores, ArrayOf(append([]float32(nil), t.Scores...))},
		{KeyTokTypes, ArrayOf(types)},
	}
	// The model's special tokens win over the tokenizer's: they are what
	// the weights were trained with.
	for _, s := range []struct {
		key string
		id  int
	}{{KeyTokBOS, c.BOS}, {KeyTokEOS, c.EOS}, {KeyTokUNK, t.UNK}} {
		if s.id >= 0 {
			kvs = append(kvs, KV{s.key, Of(uint32(s.id))})
		}
	}
	kvs = append(kvs, KV{KeyTokAddBOS, Of(true)}, KV{KeyTokAddEOS, Of(false)})
	// Written only when not llama.cpp's defaults, so that Llama-style
	// vocabularies give the same bytes as before these keys were known.
	if t.NoDummyPrefix {
		kvs = append(kvs, KV{KeyTokAddSpace, Of(false)})
	}
	if t.FoldSpaces {
		kvs = append(kvs, KV{KeyTokFoldSpace, Of(true)})
	}
	return kvs, nil
}

// sentencePiece spells a piece as SentencePiece (and llama.cpp) does.
// llama2.c's export turned '▁' into ' ' and wrapped BOS and EOS in
// newlines; undo both. A SentencePiece vocabulary never holds a plain
// space (its normalizer rewrites them), so the rewrite cannot collide.
func sentencePiece(p string, id int, t *tokenizer.Tokenizer) string {
	switch {
	case id == t.BOS && p == "\n<s>\n":
		return "<s>"
	case id == t.EOS && p == "\n</s>\n":
		return "</s>"
	}
	return strings.ReplaceAll(p, " ", "\u2581")
}

func isBytePiece(p string) bool {
	if len(p) != 6 || !strings.HasPrefix(p, "<0x") || p[5] != '>' {
		return false
	}
	_, err := strconv.ParseUint(p[3:5], 16, 8)
	return err == nil
}
