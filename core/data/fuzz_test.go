package data

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func FuzzParseTask(f *testing.F) {
	for _, s := range []string{
		`{"context_options": ["a b", "c"], "continuation": "d.", "gold": 1}`,
		`{"query": "q", "choices": ["x", "y"], "gold": 0}` + "\n" + `{"query": "r", "choices": ["z"], "gold": 0}`,
		`{"context": "c", "continuation": "w"}`,
		`{"context": "c", "continuation": "w", "gold": 0}`,
		"\ufeff{\"context\": \"c\", \"continuation\": \"w\"}\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseTask("f.jsonl", b)
		if err != nil {
			return
		}
		for _, ex := range d.Examples {
			if len(ex.Contexts) == 0 || len(ex.Contexts) != len(ex.Continuations) || ex.Gold < 0 || ex.Gold >= len(ex.Contexts) {
				t.Fatalf("inconsistent example %+v", ex)
			}
		}
	})
}

func FuzzParseInstruct(f *testing.F) {
	f.Add([]byte(`{"prompt": "p", "response": "r"}`))
	f.Add([]byte(`{"prompt": "p", "response": "r"}` + "\n" + `{"prompt": "\u00e9", "response": ""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseInstruct("f.jsonl", b)
		ParseTextJSONL("f.jsonl", b)
	})
}

func FuzzSplitDocuments(f *testing.F) {
	f.Add("a\n\nb")
	f.Add(" x \r\n\r\n\ty\n z")
	f.Fuzz(func(t *testing.T, s string) {
		for _, d := range SplitDocuments(s) {
			if d == "" || d != strings.TrimSpace(d) || strings.Contains(d, "\r\n") {
				t.Fatalf("document %q", d)
			}
			for _, line := range strings.Split(d, "\n") {
				if strings.TrimSpace(line) == "" {
					t.Fatalf("document %q holds a blank line", d)
				}
			}
		}
	})
}

// FuzzSplitTokens checks the split's contract on arbitrary text: the two
// parts concatenate to the joined tokenization and the continuation is
// never empty.
func FuzzSplitTokens(f *testing.F) {
	tok := tok512(f)
	if b, err := os.ReadFile(filepath.Join(sharedData(f), "evals", "hellaswag_small.jsonl")); err == nil {
		f.Add(string(b[:40]), string(b[40:80]))
	}
	f.Add("They were hap", "py")
	f.Add("a\n", "\xff b")
	f.Fuzz(func(t *testing.T, ctx, cont string) {
		if cont == "" || len(ctx)+len(cont) > 2000 {
			return
		}
		c, k := SplitTokens(tok, ctx, cont)
		if !slices.Equal(slices.Concat(c, k), tok.Encode(ctx+cont, true, false)) {
			t.Fatalf("split of %q|%q does not concatenate to the joined tokens", ctx, cont)
		}
		if len(k) == 0 || len(c) == 0 || c[0] != tok.BOS {
			t.Fatalf("split of %q|%q: %v | %v", ctx, cont, c, k)
		}
	})
}
