package tokenizer

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Hand assembly of protobuf bytes, kept apart from pbWriter so that tests
// of the writer have an independent reference. Keys and lengths here are
// single-byte varints unless spelled out.
func rec(key byte, payload ...[]byte) []byte {
	body := bytes.Join(payload, nil)
	if len(body) > 127 {
		panic("rec: payload too long for a one-byte length")
	}
	return append([]byte{key, byte(len(body))}, body...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func str(s string) []byte { return []byte(s) }

// f32 is a little-endian fixed32 float.
func f32(v float32) []byte {
	u := math.Float32bits(v)
	return []byte{byte(u), byte(u >> 8), byte(u >> 16), byte(u >> 24)}
}

// minusOne is int32 -1 as protobuf writes it: sign-extended, ten bytes.
var minusOne = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}

// tinyModelProto is a small ModelProto assembled byte by byte, with fields
// out of order, defaults left out and unknown fields of every wire type.
func tinyModelProto() []byte {
	return cat(
		// pieces (field 1): {piece 1, score 2 (fixed32), type 3}
		rec(0x0a, rec(0x0a, str("<unk>")), []byte{0x15}, f32(0), []byte{0x18, 2}),
		rec(0x0a, rec(0x0a, str("<s>")), []byte{0x18, 3}), // score left out: 0
		rec(0x0a, rec(0x0a, str("</s>")), []byte{0x15}, f32(0), []byte{0x18, 3}),
		rec(0x0a, rec(0x0a, str("▁a")), []byte{0x15}, f32(-1.5),
			[]byte{0xc0, 0x0c, 7}), // unknown field 200, varint 7
		rec(0x0a, []byte{0x18, 6}, rec(0x0a, str("<0x41>")), []byte{0x15}, f32(0)), // type first
		rec(0x0a, rec(0x0a, str("b")), []byte{0x15}, f32(-2)),                      // type left out: NORMAL
		// normalizer_spec (field 3) before trainer_spec: order is free
		rec(0x1a, rec(0x0a, str("identity")), []byte{0x18, 1}),
		// trainer_spec (field 2)
		rec(0x12,
			[]byte{0x18, 2},              // model_type BPE
			[]byte{0xc8, 0x02}, minusOne, // bos_id (41) = -1
			[]byte{0xd0, 0x02, 2},                      // eos_id (42) = 2
			[]byte{0x91, 0x03, 1, 2, 3, 4, 5, 6, 7, 8}, // unknown field 50, fixed64
			[]byte{0xe3, 0x03, 0x08, 0x05, 0xe4, 0x03}, // unknown group 60 holding a varint
			[]byte{0xa5, 0x03, 0, 0, 0, 0},             // unknown field 52, fixed32
		),
		rec(0x4a, str("xx")), // unknown top-level field 9
		rec(0x22),            // self_test_data (field 4), empty
	)
}

func TestParseSentencePieceHandAssembled(t *testing.T) {
	tok, err := ParseSentencePiece(tinyModelProto())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"<unk>", "<s>", "</s>", "▁a", "<0x41>", "b"}; !slices.Equal(tok.Pieces, want) {
		t.Errorf("pieces %q, want %q", tok.Pieces, want)
	}
	if want := []float32{0, 0, 0, -1.5, 0, -2}; !slices.Equal(tok.Scores, want) {
		t.Errorf("scores %v, want %v", tok.Scores, want)
	}
	if want := []TokenType{Unknown, Control, Control, Normal, Byte, Normal}; !slices.Equal(tok.Types, want) {
		t.Errorf("types %v, want %v", tok.Types, want)
	}
	if tok.UNK != 0 || tok.BOS != -1 || tok.EOS != 2 {
		t.Errorf("UNK %d BOS %d EOS %d, want 0 (default) -1 2", tok.UNK, tok.BOS, tok.EOS)
	}
	if err := tok.Check(); err != nil {
		t.Error(err)
	}
	// The text form of "▁a" is " a", and "<0x41>" decodes to "A".
	if id, ok := tok.ID(" a"); !ok || id != 3 {
		t.Errorf("ID(\" a\") = %d, %v", id, ok)
	}
	if got := tok.Decode([]int{3, 4, 5, 2}); got != " aAb" {
		t.Errorf("Decode = %q", got)
	}
}

// TestMarshalSentencePieceBytes pins the writer's output for a small
// llama2.c-style vocabulary against bytes assembled by hand.
func TestMarshalSentencePieceBytes(t *testing.T) {
	tok := &Tokenizer{
		Pieces: []string{"<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", " a", "b c"},
		Scores: []float32{0, 0, 0, 0, -1, -2},
		BOS:    1, EOS: 2, UNK: 0,
	}
	got, err := MarshalSentencePiece(tok)
	if err != nil {
		t.Fatal(err)
	}
	want := cat(
		rec(0x0a, rec(0x0a, str("<unk>")), []byte{0x15}, f32(0), []byte{0x18, 2}),
		rec(0x0a, rec(0x0a, str("<s>")), []byte{0x15}, f32(0), []byte{0x18, 3}),
		rec(0x0a, rec(0x0a, str("</s>")), []byte{0x15}, f32(0), []byte{0x18, 3}),
		rec(0x0a, rec(0x0a, str("<0x0A>")), []byte{0x15}, f32(0), []byte{0x18, 6}),
		rec(0x0a, rec(0x0a, str("▁a")), []byte{0x15}, f32(-1)),
		rec(0x0a, rec(0x0a, str("b▁c")), []byte{0x15}, f32(-2)),
		rec(0x12,
			[]byte{0x18, 2},              // model_type BPE
			[]byte{0x20, 6},              // vocab_size
			[]byte{0x98, 0x02, 1},        // byte_fallback (35)
			[]byte{0xc0, 0x02, 0},        // unk_id (40)
			[]byte{0xc8, 0x02, 1},        // bos_id (41)
			[]byte{0xd0, 0x02, 2},        // eos_id (42)
			[]byte{0xd8, 0x02}, minusOne, // pad_id (43) = -1
		),
		rec(0x1a,
			rec(0x0a, str("identity")), // name
			[]byte{0x18, 1},            // add_dummy_prefix
			[]byte{0x20, 0},            // remove_extra_whitespaces
			[]byte{0x28, 1},            // escape_whitespaces
		),
	)
	if !bytes.Equal(got, want) {
		t.Fatalf("MarshalSentencePiece:\n got % x\nwant % x", got, want)
	}
	back, err := ParseSentencePiece(got)
	if err != nil {
		t.Fatal(err)
	}
	l2c, err := MarshalLlama2c(back)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := MarshalLlama2c(tok)
	if !bytes.Equal(l2c, orig) {
		t.Fatal("llama2.c export changed across the SentencePiece round trip")
	}
}

func TestParseSentencePieceErrors(t *testing.T) {
	piece := func(p string, typ byte) []byte {
		return rec(0x0a, rec(0x0a, str(p)), []byte{0x15}, f32(0), []byte{0x18, typ})
	}
	base := cat(piece("<unk>", 2), piece("<s>", 3), piece("</s>", 3))
	bpe := rec(0x12, []byte{0x18, 2})
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no pieces"},
		{"no trainer spec means unigram", base, "unsupported SentencePiece model type UNIGRAM"},
		{"unigram", cat(base, rec(0x12, []byte{0x18, 1})), "UNIGRAM"},
		{"word", cat(base, rec(0x12, []byte{0x18, 3})), "WORD"},
		{"char", cat(base, rec(0x12, []byte{0x18, 4})), "CHAR"},
		{"unknown model type", cat(base, rec(0x12, []byte{0x18, 9})), "unknown (9)"},
		{"truncated key", cat(base, bpe, []byte{0x80}), "truncated"},
		{"truncated length", cat(base, bpe, []byte{0x0a}), "truncated"},
		{"length past end", cat(base, bpe, []byte{0x0a, 0x7f, 0x0a}), "runs past the end"},
		{"pieces as varint", cat(base, bpe, []byte{0x08, 1}), "wire type varint, want length-delimited"},
		{"score as varint", cat(base, bpe, rec(0x0a, rec(0x0a, str("x")), []byte{0x10, 1})), "want fixed32"},
		{"type as fixed32", cat(base, bpe, rec(0x0a, rec(0x0a, str("x")), []byte{0x1d, 0, 0, 0, 0})), "want varint"},
		{"truncated score", cat(base, bpe, rec(0x0a, rec(0x0a, str("x")), []byte{0x15, 0})), "truncated"},
		{"empty piece", cat(base, bpe, rec(0x0a, []byte{0x15}, f32(1))), "piece 3 at offset"},
		{"unknown type", cat(base, bpe, piece("x", 7)), "unknown type 7"},
		{"byte type misspelled", cat(base, bpe, piece("<0x4G>", 6)), "type BYTE"},
		{"unk out of range", cat(base, rec(0x12, []byte{0x18, 2, 0xc0, 0x02, 3})), "unk_id 3"},
		{"negative unk", cat(base, rec(0x12, []byte{0x18, 2, 0xc0, 0x02}, minusOne)), "unk_id -1"},
		{"bos out of range", cat(base, rec(0x12, []byte{0x18, 2, 0xc8, 0x02, 9})), "bos_id 9"},
		{"eos below -1", cat(base, rec(0x12, []byte{0x18, 2, 0xd0, 0x02, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})), "eos_id -2"},
		{"trainer field as bytes", cat(base, rec(0x12, []byte{0x18, 2}, rec(0x1a))), "wire type length-delimited, want varint"},
		{"field number 0", cat(base, bpe, []byte{0x02, 0}), "invalid field number 0"},
		{"wire type 6", cat(base, bpe, []byte{0x4e}), "invalid wire type 6"},
		{"stray end group", cat(base, bpe, []byte{0x4c}), "unexpected end-group"},
		{"unterminated group", cat(base, bpe, []byte{0x4b, 0x08, 1}), "has no end"},
		{"mismatched group end", cat(base, bpe, []byte{0x4b, 0x54}), "ended by end-group 10"},
		{"deep groups", cat(base, bpe, bytes.Repeat([]byte{0x4b}, 100)), "nests deeper"},
		{"varint overflow", cat(base, bpe, []byte{0x48}, bytes.Repeat([]byte{0xff}, 10), []byte{1}), "overflows"},
		{"truncated fixed64", cat(base, bpe, []byte{0x49, 1, 2}), "truncated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSentencePiece(c.data)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if _, err := ParseSentencePiece(cat(base, bpe)); err != nil {
		t.Fatalf("minimal BPE model: %v", err)
	}
}

func TestParseSentencePieceErrorOffsets(t *testing.T) {
	// An empty piece inside the 4th piece message: the error names the
	// absolute offset of that message's body.
	data := cat(rec(0x0a, rec(0x0a, str("ab"))), rec(0x0a, []byte{0x15}, f32(0)))
	_, err := ParseSentencePiece(data)
	if err == nil || !strings.Contains(err.Error(), "piece 1 at offset 8 is empty") {
		t.Fatalf("error %v", err)
	}
}

// TestLoadSentencePieceTok512 reads the SentencePiece model shipped beside
// tok512.bin: its llama2.c export must be that file, byte for byte.
func TestLoadSentencePieceTok512(t *testing.T) {
	sp, err := LoadSentencePiece(dataFile(t, "models/stories260K/tok512.model"))
	if err != nil {
		t.Fatal(err)
	}
	if sp.Size() != 512 || sp.UNK != 0 || sp.BOS != 1 || sp.EOS != 2 {
		t.Fatalf("size %d UNK %d BOS %d EOS %d", sp.Size(), sp.UNK, sp.BOS, sp.EOS)
	}
	for id, want := range map[int]string{0: "<unk>", 1: "<s>", 2: "</s>", 3: "<0x00>", 259: "▁t", 410: "▁"} {
		if sp.Pieces[id] != want {
			t.Errorf("piece %d = %q, want %q", id, sp.Pieces[id], want)
		}
	}
	if sp.Types[0] != Unknown || sp.Types[1] != Control || sp.Types[3] != Byte || sp.Types[259] != Normal {
		t.Errorf("types %v", sp.Types[:5])
	}
	got, err := MarshalLlama2c(sp)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(dataFile(t, "models/stories260K/tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("llama2.c export of tok512.model differs from tok512.bin")
	}
	// The file leaves remove_extra_whitespaces unset, which SentencePiece
	// reads as true; llama2.c's tokenizer.bin keeps every space. On folded
	// text the two agree.
	if !sp.FoldSpaces || sp.NoDummyPrefix {
		t.Errorf("normalizer: FoldSpaces %v NoDummyPrefix %v, want true, false", sp.FoldSpaces, sp.NoDummyPrefix)
	}
	tok := tok512(t)
	for _, s := range corpusSample(t, "tinystories_val.txt", 200, 13) {
		if a, b := tok.Encode(foldSpaces(s), true, false), sp.Encode(s, true, false); !slices.Equal(a, b) {
			t.Fatalf("Encode(%q): tok512.bin %v, tok512.model %v", s, a, b)
		}
	}
	if _, err := LoadSentencePiece(filepath.Join(t.TempDir(), "missing.model")); err == nil {
		t.Fatal("loading a missing file succeeded")
	}
}

// topLevel splits a ModelProto into its top-level records (key+value).
func topLevel(t *testing.T, data []byte) map[int][][]byte {
	t.Helper()
	out := map[int][][]byte{}
	r := &pbReader{data: data}
	for !r.done() {
		start := r.off
		num, wire, err := r.key()
		if err != nil {
			t.Fatal(err)
		}
		if err := r.skip(num, wire, 0); err != nil {
			t.Fatal(err)
		}
		out[num] = append(out[num], data[start:r.off])
	}
	return out
}

// TestMarshalSentencePieceTok512: writing tok512.bin as a SentencePiece
// model reproduces the piece records of the published tok512.model byte for
// byte, and reads back to a tokenizer that encodes identically.
func TestMarshalSentencePieceTok512(t *testing.T) {
	tok := tok512(t)
	out, err := MarshalSentencePiece(tok)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := os.ReadFile(dataFile(t, "models/stories260K/tok512.model"))
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := topLevel(t, out), topLevel(t, ref)
	if len(ours[1]) != 512 || !slices.EqualFunc(ours[1], theirs[1], bytes.Equal) {
		t.Fatal("piece records differ from tok512.model's")
	}
	if len(ours[2]) != 1 || len(ours[3]) != 1 {
		t.Fatalf("%d trainer and %d normalizer specs", len(ours[2]), len(ours[3]))
	}

	path := filepath.Join(t.TempDir(), "tokenizer.model")
	if err := WriteSentencePiece(tok, path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadSentencePiece(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Pieces[1] != "<s>" || back.Pieces[2] != "</s>" || back.Pieces[410] != "▁" || back.Types[100] != Byte {
		t.Fatalf("pieces not in SentencePiece spelling: %q %q %q", back.Pieces[1], back.Pieces[2], back.Pieces[410])
	}
	l2c, err := MarshalLlama2c(back)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := MarshalLlama2c(tok)
	if !bytes.Equal(l2c, orig) {
		t.Fatal("llama2.c export changed across the SentencePiece round trip")
	}
	texts := corpusSample(t, "tinystories_val.txt", 300, 7)
	texts = append(texts, corpusSample(t, "tinyshakespeare.txt", 300, 7)...)
	texts = append(texts, "", " ", "  lead", "é€🙂\xff", "<s></s><unk>")
	for _, s := range texts {
		a, b := tok.Encode(s, true, true), back.Encode(s, true, true)
		if !slices.Equal(a, b) {
			t.Fatalf("Encode(%q): tok512.bin %v, its SentencePiece form %v", s, a, b)
		}
		if d := back.Decode(b); d != s {
			t.Fatalf("Decode(Encode(%q)) = %q via the SentencePiece form", s, d)
		}
	}
}

func TestMarshalSentencePieceErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		tok  *Tokenizer
		want string
	}{
		{"inconsistent", &Tokenizer{Pieces: []string{"a"}}, "scores"},
		{"no unk", &Tokenizer{Pieces: []string{"a"}, Scores: []float32{0}, UNK: -1, BOS: -1, EOS: -1}, "no UNK"},
		{"empty piece", &Tokenizer{Pieces: []string{"<unk>", ""}, Scores: []float32{0, 0}, BOS: -1, EOS: -1}, "piece 1 is empty"},
		{"bad type", &Tokenizer{Pieces: []string{"<unk>", "x"}, Scores: []float32{0, 0}, Types: []TokenType{Unknown, 9}, BOS: -1, EOS: -1}, "token type 9"},
		{"byte misspelled", &Tokenizer{Pieces: []string{"<unk>", "x"}, Scores: []float32{0, 0}, Types: []TokenType{Unknown, Byte}, BOS: -1, EOS: -1}, "not spelled <0xHH>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.model")
			err := WriteSentencePiece(c.tok, path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatal("a failed write left a file")
			}
		})
	}
	// An empty UNK piece gets SentencePiece's name; other special pieces
	// that are not the defaults are named in the trainer spec.
	tok := &Tokenizer{Pieces: []string{"", "[BOS]", "x"}, Scores: []float32{0, 0, 0}, UNK: 0, BOS: 1, EOS: -1}
	out, err := MarshalSentencePiece(tok)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSentencePiece(out)
	if err != nil {
		t.Fatal(err)
	}
	if back.Pieces[0] != "<unk>" || back.BOS != 1 || back.EOS != -1 || back.Types[1] != Control {
		t.Fatalf("round trip gave %q BOS %d EOS %d types %v", back.Pieces, back.BOS, back.EOS, back.Types)
	}
	if !bytes.Contains(out, cat([]byte{0xf2, 0x02, 5}, str("[BOS]"))) { // bos_piece (46)
		t.Fatal("bos_piece not written")
	}
}

// FuzzParseSentencePiece: arbitrary input never panics; whatever parses is
// consistent and survives MarshalSentencePiece and a second parse with the
// same vocabulary as run.c sees it.
func FuzzParseSentencePiece(f *testing.F) {
	f.Add(tinyModelProto())
	if b, err := MarshalSentencePiece(tinyVocab()); err == nil {
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x02, 0x18, 0x02})
	f.Add([]byte{0x4b, 0x4b, 0x4c, 0x4c})
	if dataAvailable(f) {
		if b, err := os.ReadFile(dataFile(f, "models/stories260K/tok512.model")); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := ParseSentencePiece(data)
		if err != nil {
			return
		}
		if err := tok.Check(); err != nil {
			t.Fatalf("parsed tokenizer is inconsistent: %v", err)
		}
		out, err := MarshalSentencePiece(tok)
		if err != nil {
			t.Fatalf("MarshalSentencePiece of a parsed model: %v", err)
		}
		back, err := ParseSentencePiece(out)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if back.NoDummyPrefix != tok.NoDummyPrefix || back.FoldSpaces != tok.FoldSpaces {
			t.Fatalf("normalizer flags %v %v became %v %v", tok.NoDummyPrefix, tok.FoldSpaces, back.NoDummyPrefix, back.FoldSpaces)
		}
		if back.Size() != tok.Size() || back.UNK != tok.UNK || back.BOS != tok.BOS || back.EOS != tok.EOS {
			t.Fatalf("size/UNK/BOS/EOS %d %d %d %d became %d %d %d %d", tok.Size(), tok.UNK, tok.BOS, tok.EOS, back.Size(), back.UNK, back.BOS, back.EOS)
		}
		for i := range tok.Pieces {
			if back.llama2cPiece(i) != tok.llama2cPiece(i) || math.Float32bits(back.Scores[i]) != math.Float32bits(tok.Scores[i]) {
				t.Fatalf("piece %d %q %g became %q %g", i, tok.Pieces[i], tok.Scores[i], back.Pieces[i], back.Scores[i])
			}
			if i != tok.UNK && back.Types[i] != tok.Types[i] {
				t.Fatalf("type of piece %d: %d became %d", i, tok.Types[i], back.Types[i])
			}
		}
		s := "a b\xff"
		if a, b := tok.Encode(s, true, true), back.Encode(s, true, true); !slices.Equal(a, b) {
			t.Fatalf("Encode differs after the round trip: %v vs %v", a, b)
		}
	})
}

// TestFingerprintIgnoresSpelling: one vocabulary read from tokenizer.bin and
// from its tokenizer.model export fingerprints alike; a changed score does not.
func TestFingerprintIgnoresSpelling(t *testing.T) {
	bin := tok512(t)
	data, err := MarshalSentencePiece(bin)
	if err != nil {
		t.Fatal(err)
	}
	spm, err := ParseSentencePiece(data)
	if err != nil {
		t.Fatal(err)
	}
	if spm.Pieces[1] == bin.Pieces[1] {
		t.Fatalf("test needs differing spellings, both hold %q", spm.Pieces[1])
	}
	if a, b := bin.Fingerprint(), spm.Fingerprint(); a != b {
		t.Errorf("fingerprints differ: %s (tokenizer.bin) vs %s (tokenizer.model)", a, b)
	}
	changed := &Tokenizer{Pieces: spm.Pieces, Scores: append([]float32(nil), spm.Scores...), Types: spm.Types, BOS: spm.BOS, EOS: spm.EOS, UNK: spm.UNK}
	if changed.Fingerprint() != spm.Fingerprint() {
		t.Fatal("a copy fingerprints differently")
	}
	changed.Scores[300] += 1
	if changed.Fingerprint() == spm.Fingerprint() {
		t.Error("a changed score kept the fingerprint")
	}
}

// TestNormalizerGolden: four models that differ only in add_dummy_prefix
// and remove_extra_whitespaces encode texts with awkward spacing exactly as
// Google's SentencePiece does (testdata/gen_normalizer_golden.py), keep
// their flags through MarshalSentencePiece, and decode back to the text
// SentencePiece's normalization leaves.
func TestNormalizerGolden(t *testing.T) {
	raw, err := os.ReadFile("testdata/normalizer/normalizer_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Texts []string           `json:"texts"`
		IDs   map[string][][]int `json:"ids"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	flags := map[string][2]bool{"llama": {false, false}, "nodummy": {true, false}, "fold": {false, true}, "nodummy_fold": {true, true}}
	for name, want := range flags {
		t.Run(name, func(t *testing.T) {
			tok, err := LoadSentencePiece(filepath.Join("testdata", "normalizer", name+".model"))
			if err != nil {
				t.Fatal(err)
			}
			if tok.NoDummyPrefix != want[0] || tok.FoldSpaces != want[1] {
				t.Fatalf("NoDummyPrefix %v FoldSpaces %v, want %v", tok.NoDummyPrefix, tok.FoldSpaces, want)
			}
			data, err := MarshalSentencePiece(tok)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseSentencePiece(data)
			if err != nil {
				t.Fatal(err)
			}
			if back.NoDummyPrefix != tok.NoDummyPrefix || back.FoldSpaces != tok.FoldSpaces || back.Fingerprint() != tok.Fingerprint() {
				t.Errorf("flags lost in MarshalSentencePiece: %v %v", back.NoDummyPrefix, back.FoldSpaces)
			}
			if _, err := MarshalLlama2c(tok); (err != nil) != tok.NoDummyPrefix {
				t.Errorf("MarshalLlama2c: %v (NoDummyPrefix %v)", err, tok.NoDummyPrefix)
			}
			for i, text := range golden.Texts {
				got := tok.Encode(text, false, false)
				if !slices.Equal(got, golden.IDs[name][i]) {
					t.Errorf("Encode(%q) = %v, SentencePiece %v", text, got, golden.IDs[name][i])
				}
				wantText := text
				if tok.FoldSpaces {
					wantText = foldSpaces(text)
				}
				if dec := tok.Decode(append([]int{tok.BOS}, got...)); dec != wantText {
					t.Errorf("Decode(Encode(%q)) = %q, want %q", text, dec, wantText)
				}
			}
		})
	}
	// The flags change the encoding, so they change the fingerprint.
	a, _ := LoadSentencePiece("testdata/normalizer/llama.model")
	b, _ := LoadSentencePiece("testdata/normalizer/llama.model")
	b.NoDummyPrefix = true
	if a.Fingerprint() == b.Fingerprint() {
		t.Error("NoDummyPrefix does not change the fingerprint")
	}
}

// FuzzNormalizerRoundTrip: under every combination of the normalizer
// flags, decoding what Encode made (after BOS) gives back the text as
// SentencePiece normalizes it.
func FuzzNormalizerRoundTrip(f *testing.F) {
	var toks []*Tokenizer
	for _, name := range []string{"llama", "nodummy", "fold", "nodummy_fold"} {
		tok, err := LoadSentencePiece(filepath.Join("testdata", "normalizer", name+".model"))
		if err != nil {
			f.Fatal(err)
		}
		toks = append(toks, tok)
	}
	for _, s := range []string{"", " ", "  a  b  ", "x\t y\n", "é 🙂  ", "\xff \x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range toks {
			want := s
			if tok.FoldSpaces {
				want = foldSpaces(s)
			}
			if got := tok.Decode(tok.Encode(s, true, false)); got != want {
				t.Fatalf("NoDummyPrefix %v FoldSpaces %v: Decode(Encode(%q)) = %q, want %q", tok.NoDummyPrefix, tok.FoldSpaces, s, got, want)
			}
		}
	})
}
