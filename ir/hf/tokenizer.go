package hf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// TokenizerJSONFile is the Hugging Face tokenizers library's file, read
// for byte-level BPE vocabularies (Llama 3, Qwen, GPT-2).
const TokenizerJSONFile = "tokenizer.json"

// loadTokenizer reads the first tokenizer file the directory has:
// tokenizer.model (SentencePiece, what Llama checkpoints ship; it keeps
// token types and spelling exactly), else tokenizer.bin (llama2.c's
// format), else a byte-level BPE tokenizer.json, and its path. None is not
// an error, and neither is a tokenizer.json whittle cannot read (the model
// still loads; RunContext.Tokenizer explains when a pass needs it).
func loadTokenizer(dir string) (*tokenizer.Tokenizer, string, error) {
	for _, f := range []struct {
		name string
		load func(string) (*tokenizer.Tokenizer, error)
	}{
		{SentencePieceFile, tokenizer.LoadSentencePiece},
		{Llama2cTokenizerFile, tokenizer.LoadLlama2c},
		{TokenizerJSONFile, tokenizer.LoadTokenizerJSON},
	} {
		path := filepath.Join(dir, f.name)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, "", err
		}
		t, err := f.load(path)
		if err != nil && f.name == TokenizerJSONFile {
			return nil, "", nil
		}
		return t, path, err
	}
	return nil, "", nil
}

// writeByteLevel writes a byte-level vocabulary back as the tokenizer.json
// it was read from, with a tokenizer_config.json naming the fast tokenizer
// class and the special tokens.
func writeByteLevel(t *tokenizer.Tokenizer, dir string, maxSeq int) error {
	raw, err := tokenizer.MarshalTokenizerJSON(t)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, TokenizerJSONFile), raw); err != nil {
		return fmt.Errorf("writing %s: %w", TokenizerJSONFile, err)
	}
	cfg := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"model_max_length":             maxSeq,
		"clean_up_tokenization_spaces": true,
	}
	if t.BOS >= 0 && t.BOS < t.Size() {
		cfg["bos_token"] = t.Piece(t.BOS)
	}
	if t.EOS >= 0 && t.EOS < t.Size() {
		cfg["eos_token"] = t.Piece(t.EOS)
	}
	return writeJSONFile(filepath.Join(dir, TokenizerConfigFile), cfg)
}

// writeTokenizer writes tokenizer.bin and, when t can be expressed as a
// SentencePiece model, tokenizer.model. Not every vocabulary can (one
// needs an UNK piece and no empty pieces); tokenizer.bin alone then
// carries it, and Load falls back to it.
func writeTokenizer(t *tokenizer.Tokenizer, dir string, maxSeq int) error {
	if t.ByteLevel != nil {
		return writeByteLevel(t, dir, maxSeq)
	}
	if err := tokenizer.WriteLlama2c(t, filepath.Join(dir, Llama2cTokenizerFile)); err != nil {
		return fmt.Errorf("writing %s: %w", Llama2cTokenizerFile, err)
	}
	sp, err := tokenizer.MarshalSentencePiece(t)
	if err != nil {
		return nil
	}
	if err := writeFile(filepath.Join(dir, SentencePieceFile), sp); err != nil {
		return fmt.Errorf("writing %s: %w", SentencePieceFile, err)
	}
	return writeTokenizerConfig(t, dir, maxSeq)
}

// TokenizerConfigFile tells transformers' AutoTokenizer which class reads
// tokenizer.model and which pieces are special.
const TokenizerConfigFile = "tokenizer_config.json"

func writeTokenizerConfig(t *tokenizer.Tokenizer, dir string, maxSeq int) error {
	piece := func(id int, fallback string) string {
		if id < 0 || id >= t.Size() {
			return fallback
		}
		p := strings.Trim(t.Piece(id), "\n")
		if p == "" {
			return fallback
		}
		return p
	}
	cfg := map[string]any{
		"tokenizer_class":              "LlamaTokenizer",
		"bos_token":                    piece(t.BOS, "<s>"),
		"eos_token":                    piece(t.EOS, "</s>"),
		"unk_token":                    piece(t.UNK, "<unk>"),
		"add_bos_token":                true,
		"add_eos_token":                false,
		"legacy":                       true,
		"model_max_length":             maxSeq,
		"clean_up_tokenization_spaces": false,
	}
	return writeJSONFile(filepath.Join(dir, TokenizerConfigFile), cfg)
}

func writeJSONFile(path string, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "<s>", not "\u003cs\u003e"
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	if err := writeFile(path, b.Bytes()); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	return nil
}
