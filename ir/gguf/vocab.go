package gguf

import (
	"fmt"
	"math"
	"strings"

	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// LoadTokenizer reads the vocabulary of any GGUF file: a model's, or a
// vocabulary-only file such as llama.cpp's ggml-vocab-*.gguf (the
// architecture's metadata and the tokenizer.ggml.* keys, no tensors).
// The architecture does not matter; the tokenizer model must be one
// whittle reads.
func LoadTokenizer(path string) (*tokenizer.Tokenizer, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Tokenizer()
}

// Tokenizer reads the file's vocabulary, whatever the architecture; an
// error names the file when it has none or one whittle cannot read. The
// result holds no reference to the file's memory.
func (f *File) Tokenizer() (*tokenizer.Tokenizer, error) {
	t, err := f.tokenizer()
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("%s: no vocabulary (metadata key %q is absent)", f.Path, KeyTokModel)
	}
	return t, nil
}

// VocabOnly reports whether the file holds a vocabulary and no tensors,
// as llama.cpp's tokenizer-test files do.
func (f *File) VocabOnly() bool {
	_, ok := f.Get(KeyTokModel)
	return ok && len(f.Tensors) == 0
}

// tokenizer reads a SentencePiece or byte-level vocabulary; nil when the
// file has none.
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

// qwen2Pattern is Qwen2's split: Llama 3's with single digits.
const qwen2Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// bytePre maps llama.cpp's byte-level pre-tokenizer names to the split
// pattern and ignore_merges of the Hugging Face tokenizers they stand for:
// the names whose llama.cpp split is one expression whittle runs (checked
// against llama-tokenize by TestVocabMatchesLlamaCpp). The first name of
// a pattern is the one Save writes. llama.cpp's "default" (and a missing
// name) chains four splits and is not among them.
var bytePre = []struct {
	name         string
	pattern      string
	ignoreMerges bool
}{
	{"llama-bpe", tokenizer.Llama3Pattern, true},
	{"llama3", tokenizer.Llama3Pattern, true},
	{"llama-v3", tokenizer.Llama3Pattern, true},
	{"dbrx", tokenizer.Llama3Pattern, false},
	{"smaug-bpe", tokenizer.Llama3Pattern, false},
	{"gpt-2", tokenizer.GPT2Pattern, false},
	{"phi-2", tokenizer.GPT2Pattern, false},
	{"roberta-bpe", tokenizer.GPT2Pattern, false},
	{"mpt", tokenizer.GPT2Pattern, false},
	{"olmo", tokenizer.GPT2Pattern, false},
	{"jais", tokenizer.GPT2Pattern, false},
	{"qwen2", qwen2Pattern, false},
	{"stablelm2", qwen2Pattern, false},
}

// bytePreNames lists bytePre's names for error messages.
func bytePreNames() string {
	names := make([]string, len(bytePre))
	for i, p := range bytePre {
		names[i] = p.name
	}
	return strings.Join(names, ", ")
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
		return nil, fmt.Errorf("%s: byte-level (%q) vocabulary without %q: llama.cpp then uses its \"default\" pre-tokenizer, which whittle does not support (supported: %s)", f.Path, tokModelGPT2, KeyTokPre, bytePreNames())
	}
	var pattern string
	ignore := false
	for _, p := range bytePre {
		if p.name == pre {
			pattern, ignore = p.pattern, p.ignoreMerges
			break
		}
	}
	if pattern == "" {
		return nil, f.keyErr(KeyTokPre, "byte-level (%q) pre-tokenizer %q is not supported (supported: %s)", tokModelGPT2, pre, bytePreNames())
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
