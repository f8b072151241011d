package tokenizer

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// llama3 loads the cut-down Llama 3 tokenizer.json of testdata/llama3.
func llama3(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := LoadTokenizerJSON("testdata/llama3/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestLlama3Golden: the byte-level BPE encodes every text as the
// independent JavaScript implementation (llama3-tokenizer-js, see
// testdata/gen_llama3_golden.js) does under the same vocabulary, special
// tokens included, and decodes back to the text.
func TestLlama3Golden(t *testing.T) {
	raw, err := os.ReadFile("testdata/llama3/llama3_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Texts []string `json:"texts"`
		IDs   [][]int  `json:"ids"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	tok := llama3(t)
	if tok.Size() != 128256 || tok.BOS != 128000 || tok.Types[128009] != Control || tok.Types[7000] != Unused {
		t.Fatalf("size %d BOS %d types %v %v", tok.Size(), tok.BOS, tok.Types[128009], tok.Types[7000])
	}
	for i, text := range golden.Texts {
		got := tok.Encode(text, false, false)
		if !slices.Equal(got, golden.IDs[i]) {
			t.Errorf("Encode(%q)\n got %v\nwant %v", text, got, golden.IDs[i])
			continue
		}
		var specials []string
		for _, id := range got {
			if tok.Types[id] == Control {
				specials = append(specials, tok.Pieces[id])
			}
		}
		want := text
		for _, s := range specials {
			want = strings.Replace(want, s, "", 1)
		}
		if dec := tok.Decode(got); dec != want {
			t.Errorf("Decode(Encode(%q)) = %q, want %q", text, dec, want)
		}
	}
	if got := tok.Encode("Hi", true, false); got[0] != 128000 {
		t.Errorf("BOS: %v", got)
	}
}

// TestParseTokenizerJSONRejects: what whittle cannot encode faithfully is
// refused with the reason, never encoded differently.
func TestParseTokenizerJSONRejects(t *testing.T) {
	base, err := os.ReadFile("testdata/llama3/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(base, &doc); err != nil {
		t.Fatal(err)
	}
	edit := func(f func(d map[string]any)) []byte {
		var d map[string]any
		json.Unmarshal(base, &d)
		f(d)
		b, _ := json.Marshal(d)
		return b
	}
	model := func(d map[string]any) map[string]any { return d["model"].(map[string]any) }
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"not json", []byte("{"), "tokenizer.json"},
		{"unigram", edit(func(d map[string]any) { model(d)["type"] = "Unigram" }), `model type "Unigram"`},
		{"byte fallback", edit(func(d map[string]any) { model(d)["byte_fallback"] = true }), "tokenizer.model"},
		{"metaspace", edit(func(d map[string]any) {
			d["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁"}
		}), `pre-tokenizer "Metaspace"`},
		{"lowercase", edit(func(d map[string]any) { d["normalizer"] = map[string]any{"type": "Lowercase"} }), `normalizer "Lowercase"`},
		{"bad merge", edit(func(d map[string]any) { model(d)["merges"] = []any{"Ġ zzzz"} }), "outside the vocabulary"},
		{"missing byte", edit(func(d map[string]any) { delete(model(d)["vocab"].(map[string]any), "Ā") }), "byte 0x00"},
		{"bad regex", edit(func(d map[string]any) {
			d["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[0].(map[string]any)["pattern"] = map[string]any{"Regex": "("}
		}), "pattern"},
	} {
		if _, err := ParseTokenizerJSON(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// TestByteLevelNotExportable: the SentencePiece formats cannot hold a
// byte-level vocabulary; saying so beats writing a wrong one.
func TestByteLevelNotExportable(t *testing.T) {
	tok := llama3(t)
	if _, err := MarshalLlama2c(tok); err == nil {
		t.Error("MarshalLlama2c accepted a byte-level vocabulary")
	}
	if _, err := MarshalSentencePiece(tok); err == nil {
		t.Error("MarshalSentencePiece accepted a byte-level vocabulary")
	}
	other := llama3(t)
	if tok.Fingerprint() != other.Fingerprint() || tok.Fingerprint() == tok512(t).Fingerprint() {
		t.Error("fingerprints")
	}
}

func FuzzParseTokenizerJSON(f *testing.F) {
	if b, err := os.ReadFile("testdata/llama3/tokenizer.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}}`))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 99999999}, "merges": [["a", "a"]]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := ParseTokenizerJSON(data)
		if err != nil {
			return
		}
		if err := tok.Check(); err != nil {
			t.Fatalf("parsed tokenizer is inconsistent: %v", err)
		}
		for _, s := range []string{"", "Hello world!", "  \n\t x", "é🙂"} {
			if got := tok.Decode(tok.Encode(s, false, false)); got != s && !tok.ByteLevel.nfc && !tok.ByteLevel.prefixSpace {
				t.Fatalf("Decode(Encode(%q)) = %q", s, got)
			}
		}
	})
}

// FuzzLlama3RoundTrip: any text encodes to valid ids that decode back to
// it (added tokens aside, which the cut-down vocabulary's texts rarely
// spell).
func FuzzLlama3RoundTrip(f *testing.F) {
	tok := llama3(f)
	for _, s := range []string{"", "Hello world!", "  \n\t x", "é🙂", "<|eot_id|>x", "\xff\xfe", "I'M 123456"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s, false, false)
		for _, id := range ids {
			if id < 0 || id >= tok.Size() || tok.Types[id] == Unused {
				t.Fatalf("Encode(%q) gives id %d", s, id)
			}
		}
		if strings.Contains(s, "<|") {
			return
		}
		if got := tok.Decode(ids); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q", s, got)
		}
	})
}

// TestByteLevelFromParts: rebuilding the vocabulary from its parts (what a
// GGUF file holds) and writing it as a fresh tokenizer.json give the same
// tokenizer.
func TestByteLevelFromParts(t *testing.T) {
	tok := llama3(t)
	bl := tok.ByteLevel
	if bl.Pattern() != Llama3Pattern || !bl.IgnoreMerges() {
		t.Fatalf("pattern %q ignore_merges %v", bl.Pattern(), bl.IgnoreMerges())
	}
	re, err := NewByteLevel(tok.Pieces, tok.Types, bl.Merges(tok), bl.Pattern(), true, tok.BOS, 128009)
	if err != nil {
		t.Fatal(err)
	}
	tok.EOS = 128009 // tokenizer.json holds no EOS; NewByteLevel takes one
	if re.Fingerprint() != tok.Fingerprint() || re.EOS != 128009 || re.BOS != tok.BOS {
		t.Fatalf("rebuilt: BOS %d EOS %d, fingerprints differ: %v", re.BOS, re.EOS, re.Fingerprint() != tok.Fingerprint())
	}
	re.ByteLevel.Raw = nil
	data, err := MarshalTokenizerJSON(re)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseTokenizerJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	back.EOS = 128009
	if back.Fingerprint() != tok.Fingerprint() {
		t.Error("MarshalTokenizerJSON lost something")
	}
	text := "<|begin_of_text|>I'm sure   they'll go\\n\\n123456 🦙"
	if a, b := back.Encode(text, false, false), tok.Encode(text, false, false); !slices.Equal(a, b) {
		t.Errorf("Encode: %v vs %v", a, b)
	}
	if _, err := NewByteLevel(tok.Pieces[:10], tok.Types[:10], nil, GPT2Pattern, false, -1, -1); err == nil {
		t.Error("a vocabulary without the 256 byte tokens was accepted")
	}
}

// TestByteLevelConcurrent: goroutines sharing a tokenizer (the dataset
// preparation encodes documents on every core) get what one alone gets.
func TestByteLevelConcurrent(t *testing.T) {
	tok := llama3(t)
	texts := []string{"Once upon a time", "I'm here   now\n\n", "🦙 12345", "<|eot_id|>x y z"}
	want := make([][]int, len(texts))
	for i, s := range texts {
		want[i] = llama3(t).Encode(s, true, false)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 50; k++ {
				i := (g + k) % len(texts)
				if got := tok.Encode(texts[i], true, false); !slices.Equal(got, want[i]) {
					t.Errorf("concurrent Encode(%q) = %v, want %v", texts[i], got, want[i])
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkEncodeByteLevel encodes 100 kB of TinyStories with the cut-down
// Llama 3 vocabulary; the pre-token cache is cleared every round, so this
// is the cold rate a first pass over a corpus sees.
func BenchmarkEncodeByteLevel(b *testing.B) {
	tok := llama3(b)
	text := readText(b, "corpora/tinystories_val.txt")[:100000]
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tok.ByteLevel.mu.Lock()
		clear(tok.ByteLevel.cache)
		tok.ByteLevel.mu.Unlock()
		tok.Encode(text, true, false)
	}
}

// TestSplitIsolatedGaps: with a Split pattern that does not cover the
// text, the text between matches is a piece of its own (Hugging Face's
// "Isolated" behavior), so nothing is lost.
func TestSplitIsolatedGaps(t *testing.T) {
	var doc map[string]any
	raw, _ := os.ReadFile("testdata/llama3/tokenizer.json")
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[0].(map[string]any)["pattern"] = map[string]any{"Regex": `\p{N}+|x*`}
	b, _ := json.Marshal(doc)
	tok, err := ParseTokenizerJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ab12cd345", "12", "no digits here", ""} {
		if got := tok.Decode(tok.Encode(s, false, false)); got != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
	}
	// The pieces are the digit runs and the text between them: "ab" and
	// "12" never merge across the boundary.
	ids := tok.Encode("ab12", false, false)
	if want := append(tok.Encode("ab", false, false), tok.Encode("12", false, false)...); !slices.Equal(ids, want) {
		t.Errorf("Encode(ab12) = %v, want %v", ids, want)
	}
}

// TestTokenizerJSONErrorPosition: a malformed file's error says where.
func TestTokenizerJSONErrorPosition(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"{\n  \"model\": {\n    \"type\": 7\n  }\n}", "tokenizer.json:3:"},
		{"{\n  \"added_tokens\": [,]\n}", "tokenizer.json:2:20"},
	} {
		if _, err := ParseTokenizerJSON([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.in, err, c.want)
		}
	}
}
