package main

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir/gguf"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// TestTokenize: the command prints what the tokenizer's Encode gives, for
// a tokenizer file and for a model's own, from arguments and from
// standard input.
func TestTokenize(t *testing.T) {
	tj := filepath.Join("..", "..", "ir", "tokenizer", "testdata", "llama3", "tokenizer.json")
	tok, err := tokenizer.LoadTokenizerJSON(tj)
	if err != nil {
		t.Fatal(err)
	}
	text := "I'm sure   it's 12345 <|eot_id|>"
	want := tok.Encode(text, true, false)
	out := mustWhittle(t, "tokenize", "--tokenizer", tj, "--bos", "--json", text)
	var got struct {
		IDs    []int    `json:"ids"`
		Pieces []string `json:"pieces"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	if !reflect.DeepEqual(got.IDs, want) || strings.Join(got.Pieces[1:], "") != text || got.Pieces[0] != "<|begin_of_text|>" {
		t.Errorf("ids %v pieces %q, want %v", got.IDs, got.Pieces, want)
	}
	ids := mustWhittle(t, "tokenize", "--tokenizer", tj, "--ids", "a", "b")
	var wantIDs []string
	for _, id := range tok.Encode("a b", false, false) {
		wantIDs = append(wantIDs, strconv.Itoa(id))
	}
	if strings.TrimSpace(ids) != strings.Join(wantIDs, " ") {
		t.Errorf("--ids: %q, want %q", ids, strings.Join(wantIDs, " "))
	}
	if _, _, err := whittle(t, "tokenize", "x"); err == nil {
		t.Error("no tokenizer given, yet it ran")
	}
}

// TestTokenizeVocabOnlyGGUF: a vocabulary-only GGUF works as --model and
// as --tokenizer of tokenize, giving the ids of its own tokenizer; model
// commands say it holds no weights.
func TestTokenizeVocabOnlyGGUF(t *testing.T) {
	text := "Hello world, it's 12345 cats   here 🐈"
	for _, name := range []string{"vocab-llama-spm.gguf", "vocab-llama-bpe.gguf", "vocab-gpt-2.gguf"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("..", "..", "ir", "gguf", "testdata", name)
			tok, err := gguf.LoadTokenizer(path)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, id := range tok.Encode(text, false, false) {
				want = append(want, strconv.Itoa(id))
			}
			for _, flag := range []string{"--model", "--tokenizer"} {
				out := mustWhittle(t, "tokenize", flag, path, "--ids", text)
				if strings.TrimSpace(out) != strings.Join(want, " ") {
					t.Errorf("%s: %q, want %q", flag, out, strings.Join(want, " "))
				}
			}
			for _, args := range [][]string{{"generate", "--model", path, "--steps", "1"}, {"inspect", path}} {
				_, _, err := whittle(t, args...)
				if err == nil || !strings.Contains(err.Error(), "no weights") || !strings.Contains(err.Error(), name) {
					t.Errorf("%s: %v, want an error naming the file and saying it holds no weights", args[0], err)
				}
			}
		})
	}
}
