package tokenizer

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestLoadTok512(t *testing.T) {
	tok := tok512(t)
	if err := tok.Check(); err != nil {
		t.Fatal(err)
	}
	if tok.Size() != 512 || tok.BOS != 1 || tok.EOS != 2 || tok.UNK != 0 {
		t.Fatalf("size %d BOS %d EOS %d UNK %d, want 512 1 2 0", tok.Size(), tok.BOS, tok.EOS, tok.UNK)
	}
	for id, want := range map[int]string{0: "<unk>", 1: "\n<s>\n", 2: "\n</s>\n", 3: "<0x00>", 13: "<0x0A>", 258: "<0xFF>", 259: " t", 410: " "} {
		if got := tok.Piece(id); got != want {
			t.Errorf("piece %d = %q, want %q", id, got, want)
		}
	}
	wantTypes := map[int]TokenType{0: Unknown, 1: Control, 2: Control, 3: Byte, 258: Byte, 259: Normal, 511: Normal}
	for id, want := range wantTypes {
		if tok.Types[id] != want {
			t.Errorf("type of %d = %d, want %d", id, tok.Types[id], want)
		}
	}
	// Merges are numbered by rank: piece 259+k has score -k.
	for id := 259; id < 512; id++ {
		if want := float32(259 - id); tok.Scores[id] != want {
			t.Fatalf("score of %d (%q) = %g, want %g", id, tok.Pieces[id], tok.Scores[id], want)
		}
	}
	if id, ok := tok.ID(" upon"); !ok || id != 407 {
		t.Errorf("ID(\" upon\") = %d, %v; want 407", id, ok)
	}
	if _, ok := tok.ID(" dog"); ok {
		t.Errorf("ID(\" dog\") found a piece; tok512 has none")
	}
}

type goldenCase struct {
	Text string `json:"text"`
	BOS  bool   `json:"bos"`
	EOS  bool   `json:"eos"`
	IDs  []int  `json:"ids"`
	Note string `json:"note"`
}

// TestEncodeGolden checks Encode, and the naive port of run.c, against ids
// that Google's SentencePiece produced for the same vocabulary (see
// testdata/gen_tok512_golden.py).
func TestEncodeGolden(t *testing.T) {
	tok := tok512(t)
	b, err := os.ReadFile("testdata/tok512_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []goldenCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 20 {
		t.Fatalf("golden file holds %d cases", len(cases))
	}
	for _, c := range cases {
		if got := tok.Encode(c.Text, c.BOS, c.EOS); !slices.Equal(got, c.IDs) {
			t.Errorf("Encode(%q, %v, %v) (%s)\n got %v\nwant %v", c.Text, c.BOS, c.EOS, c.Note, got, c.IDs)
		}
		if got := naiveEncode(tok.Pieces, tok.Scores, c.Text, c.BOS, c.EOS); !slices.Equal(got, c.IDs) {
			t.Errorf("naiveEncode(%q) (%s)\n got %v\nwant %v", c.Text, c.Note, got, c.IDs)
		}
	}
}

// TestEncodeByHand pins a few encodings derived by hand from tok512's
// pieces and scores, independently of any encoder.
func TestEncodeByHand(t *testing.T) {
	tok := tok512(t)
	for _, c := range []struct {
		text string
		want []string
		why  string
	}{
		{"a", []string{" a"}, `[" ","a"]: " a" (-2) merges`},
		{"Once", []string{" Once"}, `[" ","O","n","c","e"]: " O" (-60), then " On" (-62) before "ce" (-72), then " Once" (-144)`},
		{"dog", []string{" do", "g"}, `[" ","d","o","g"]: " d" (-20), " do" (-141); " dog" and "og" are no pieces`},
		{"\n", []string{" ", "<0x0A>"}, `no piece "\n": byte fallback, id 0x0A+3`},
		{"é", []string{" ", "é"}, `"é" is a piece (485) but " é" is not`},
		{"ï", []string{" ", "<0xC3>", "<0xAF>"}, `no piece "ï": its two UTF-8 bytes`},
	} {
		var want []int
		for _, p := range c.want {
			id, ok := tok.ID(p)
			if !ok {
				t.Fatalf("no piece %q", p)
			}
			want = append(want, id)
		}
		if got := tok.Encode(c.text, false, false); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want %v %q (%s)", c.text, got, want, c.want, c.why)
		}
	}
	// The byte fallback is id byte+3, as run.c hard-codes.
	if got, want := tok.Encode("\n", false, false), []int{410, 0x0A + 3}; !slices.Equal(got, want) {
		t.Errorf("Encode(\"\\n\") = %v, want %v", got, want)
	}
}

// TestEncodeMatchesNaive compares the priority-queue encoder with the
// literal port of run.c's quadratic loop on real text.
func TestEncodeMatchesNaive(t *testing.T) {
	tok := tok512(t)
	var texts []string
	texts = append(texts, corpusSample(t, "tinystories_val.txt", 60, 37)...)
	texts = append(texts, corpusSample(t, "tinyshakespeare.txt", 60, 41)...)
	texts = append(texts, chunks(readText(t, "corpora/tinyshakespeare.txt")[200000:], 700, 20)...)
	for _, s := range texts {
		for _, bos := range []bool{false, true} {
			got := tok.Encode(s, bos, !bos)
			want := naiveEncode(tok.Pieces, tok.Scores, s, bos, !bos)
			if !slices.Equal(got, want) {
				t.Fatalf("Encode(%q, %v) differs from run.c's algorithm\n got %v\nwant %v", s, bos, got, want)
			}
		}
	}
}

// TestRoundTripCorpora: with BOS, Decode(Encode(s)) == s, since Decode drops
// exactly the dummy-prefix space after BOS.
func TestRoundTripCorpora(t *testing.T) {
	tok := tok512(t)
	for _, name := range []string{"tinystories_val.txt", "tinyshakespeare.txt"} {
		paras := corpusSample(t, name, 2000, 2)
		if len(paras) < 1000 {
			t.Fatalf("%s: only %d paragraphs", name, len(paras))
		}
		tokens := 0
		for _, p := range paras {
			ids := tok.Encode(p, true, true)
			tokens += len(ids)
			if got := tok.Decode(ids); got != p {
				t.Fatalf("%s: round trip of %q gave %q", name, p, got)
			}
		}
		// BPE must compress: without merges there would be one token per
		// byte plus the dummy prefix.
		bytes := 0
		for _, p := range paras {
			bytes += len(p)
		}
		if ratio := float64(tokens) / float64(bytes); ratio > 0.7 {
			t.Errorf("%s: %.2f tokens per byte; merges are not being applied", name, ratio)
		}
	}
}

func TestByteFallback(t *testing.T) {
	tok := tok512(t)
	for _, s := range []string{
		"emoji 🙂🚀 and ümlauts, 中文, עברית, Ελληνικά",
		"mojibake â€œquotedâ€\u009d",
		"\x00nul\x00",
		"\xff\xfe invalid \x80\x80\x80\x80\x80 continuation",
		"\xe4\xb8", // a truncated 3-byte sequence
		" leading and trailing spaces  ",
		"\t\r\n",
	} {
		ids := tok.Encode(s, true, false)
		if got := tok.Decode(ids); got != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
		if want := naiveEncode(tok.Pieces, tok.Scores, s, true, false); !slices.Equal(ids, want) {
			t.Errorf("Encode(%q) = %v, run.c's algorithm gives %v", s, ids, want)
		}
	}
	// Every byte of a character without a piece becomes its own token.
	ids := tok.Encode("🙂", false, false)
	want := []int{410, 0xF0 + 3, 0x9F + 3, 0x99 + 3, 0x82 + 3}
	if !slices.Equal(ids, want) {
		t.Errorf("Encode(🙂) = %v, want %v", ids, want)
	}
}

func TestDecodeToken(t *testing.T) {
	tok := tok512(t)
	for _, c := range []struct {
		prev, id int
		want     string
	}{
		{1, 403, "Once"},      // after BOS the leading space goes
		{259, 403, " Once"},   // elsewhere it stays
		{-1, 403, " Once"},    // no predecessor
		{1, 410, ""},          // the dummy prefix alone
		{1, 13, "\n"},         // <0x0A> is the raw byte
		{5, 0xE4 + 3, "\xe4"}, // even a lone non-ASCII byte
		{1, 2, "\n</s>\n"},    // control pieces are spelled out, as run.c prints them
		{1, 512, ""},          // out of range
		{1, -3, ""},
	} {
		if got := tok.DecodeToken(c.prev, c.id); got != c.want {
			t.Errorf("DecodeToken(%d, %d) = %q, want %q", c.prev, c.id, got, c.want)
		}
	}
	// Decode drops control tokens and out-of-range ids.
	if got := tok.Decode([]int{1, 403, 2, 259, 9999, -1, 261, 1, 403}); got != "Once t aOnce" {
		t.Errorf("Decode = %q", got)
	}
}

// TestGGUFFormEncodesIdentically: the same vocabulary stored the GGUF way
// ('▁', "<s>", "</s>") encodes and decodes exactly as its llama2.c form.
func TestGGUFFormEncodesIdentically(t *testing.T) {
	vocabs := map[string]*Tokenizer{"tiny": tinyVocab()}
	if dataAvailable(t) {
		vocabs["tok512"] = tok512(t)
	}
	texts := []string{
		"", "a", " ", "the cat sat on the mat", "<s> is not BOS, </s> not EOS",
		"é€ 🙂 \x00\xff", "  double  spaces\n", "▁ is a character too",
	}
	if dataAvailable(t) {
		texts = append(texts, corpusSample(t, "tinystories_val.txt", 100, 29)...)
		texts = append(texts, corpusSample(t, "tinyshakespeare.txt", 100, 31)...)
	}
	for name, l2c := range vocabs {
		g := ggufForm(l2c)
		if g.Pieces[1] != "<s>" || (name == "tok512" && g.Pieces[259] != "▁t") {
			t.Fatalf("%s: conversion failed: %q %q", name, g.Pieces[1], g.Pieces[259])
		}
		for _, s := range texts {
			a, b := l2c.Encode(s, true, true), g.Encode(s, true, true)
			if !slices.Equal(a, b) {
				t.Fatalf("%s: Encode(%q): llama2.c form %v, GGUF form %v", name, s, a, b)
			}
			if da, db := l2c.Decode(a), g.Decode(b); da != db || da != s {
				t.Fatalf("%s: Decode: %q vs %q, want %q", name, da, db, s)
			}
		}
	}
}

// TestControlPiecesNotSpelledByText: in the tiny vocabulary "<s" and ">"
// merge into "<s>", which is BOS in the GGUF spelling. run.c only knows
// the llama2.c spelling "\n<s>\n", so text "<s>" must stay text.
func TestControlPiecesNotSpelledByText(t *testing.T) {
	g := ggufForm(tinyVocab())
	ids := g.Encode("<s>", false, false)
	if slices.Contains(ids, g.BOS) {
		t.Fatalf("Encode(\"<s>\") = %v contains BOS", ids)
	}
	if got := g.Decode(append([]int{g.BOS}, ids...)); got != "<s>" {
		t.Fatalf("Decode = %q", got)
	}
}

func TestEncodeEmptyVocabulary(t *testing.T) {
	var tok Tokenizer
	if got := tok.Encode("abc", true, true); len(got) != 0 {
		t.Errorf("Encode on an empty vocabulary = %v", got)
	}
	if got := tok.Decode([]int{0, 1}); got != "" {
		t.Errorf("Decode on an empty vocabulary = %q", got)
	}
}

// TestIndexFollowsFieldChanges: replacing a slice rebuilds the lookup index.
func TestIndexFollowsFieldChanges(t *testing.T) {
	tok := tinyVocab()
	before := tok.Encode("the", false, false)
	scores := slices.Clone(tok.Scores)
	the, _ := tok.ID(" the")
	scores[the] = -1e11 // below run.c's floor: never merged
	tok.Scores = scores
	after := tok.Encode("the", false, false)
	if slices.Equal(before, after) || slices.Contains(after, the) {
		t.Fatalf("changing Scores did not change the encoding: %v then %v", before, after)
	}
}

// FuzzEncodeDecode checks, for any byte string s:
//   - Encode agrees with the literal port of run.c's encode;
//   - Decode(Encode(s, bos=true)) == s: the dummy prefix is the first
//     token's leading space and Decode strips exactly that one space after
//     BOS, so even text starting with spaces, invalid UTF-8 and NUL bytes
//     (byte fallback) come back unchanged;
//   - without BOS nothing is stripped: Decode gives " "+s (s non-empty);
//   - EOS only appends the EOS id.
func FuzzEncodeDecode(f *testing.F) {
	vocabs := []*Tokenizer{tinyVocab()}
	if dataAvailable(f) {
		vocabs = append(vocabs, tok512(f))
	}
	for _, s := range []string{"", " ", "a", "Once upon a time", "  x  ", "é€🙂", "\xff\x80\x80", "<s>\x00", "the cat\n\nthe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 512 {
			s = s[:512] // keep the quadratic reference fast
		}
		for _, tok := range vocabs {
			ids := tok.Encode(s, true, false)
			if want := naiveEncode(tok.Pieces, tok.Scores, s, true, false); !slices.Equal(ids, want) {
				t.Fatalf("Encode(%q) = %v, run.c's algorithm gives %v", s, ids, want)
			}
			if got := tok.Decode(ids); got != s {
				t.Fatalf("Decode(Encode(%q, bos)) = %q", s, got)
			}
			var sb strings.Builder
			for k := 1; k < len(ids); k++ {
				sb.WriteString(tok.DecodeToken(ids[k-1], ids[k]))
			}
			if sb.String() != s {
				t.Fatalf("DecodeToken over Encode(%q) gives %q", s, sb.String())
			}
			noBOS := tok.Encode(s, false, false)
			want := ""
			if s != "" {
				want = " " + s
			}
			if got := tok.Decode(noBOS); got != want {
				t.Fatalf("Decode(Encode(%q, no bos)) = %q, want %q", s, got, want)
			}
			withEOS := tok.Encode(s, true, true)
			if !slices.Equal(withEOS, append(slices.Clone(ids), tok.EOS)) {
				t.Fatalf("Encode(%q, eos) = %v, want %v + EOS", s, withEOS, ids)
			}
			if len(ids) > len(s)+2 {
				t.Fatalf("Encode(%q) gave %d tokens for %d bytes", s, len(ids), len(s))
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	tok := tok512(b)
	text := readText(b, "corpora/tinystories_val.txt")[:100000]
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tok.Encode(text, true, false)
	}
}
