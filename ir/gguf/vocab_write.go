package gguf

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

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
		return nil, fmt.Errorf("tokenizer: llama.cpp has no pre-tokenizer for the split %q (ignore_merges %v); GGUF export supports Llama 3's, GPT-2's and Qwen2's", bl.Pattern(), bl.IgnoreMerges())
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
	kvs = append(kvs, specialTokenKVs(c)...)
	return append(kvs, KV{KeyTokAddBOS, Of(t.BOS >= 0)}, KV{KeyTokAddEOS, Of(false)}), nil
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
