package main

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

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
