package tokenizer

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// llama2cFile assembles a tokenizer.bin by hand.
func llama2cFile(maxLen int32, entries ...any) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(maxLen))
	for i := 0; i+1 < len(entries); i += 2 {
		p := entries[i+1].(string)
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(entries[i].(float32)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

func TestMarshalLlama2cIdentical(t *testing.T) {
	path := dataFile(t, "models/stories260K/tok512.bin")
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ParseLlama2c(want, 512)
	if err != nil {
		t.Fatal(err)
	}
	got, err := MarshalLlama2c(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("MarshalLlama2c(ParseLlama2c(tok512.bin)) differs from the file (%d vs %d bytes)", len(got), len(want))
	}
	// The GGUF spelling exports to the same file, as llama2.c's export
	// script writes it.
	got, err = MarshalLlama2c(ggufForm(tok))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("MarshalLlama2c of the GGUF-form vocabulary differs from tok512.bin")
	}
}

func TestParseLlama2cHandMade(t *testing.T) {
	data := llama2cFile(6, float32(0), "<unk>", float32(0), "\n<s>\n", float32(0), "\n</s>\n", float32(-1.5), " hi", float32(2), "<0x41>")
	tok, err := ParseLlama2c(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tok.Pieces, []string{"<unk>", "\n<s>\n", "\n</s>\n", " hi", "<0x41>"}) ||
		!slices.Equal(tok.Scores, []float32{0, 0, 0, -1.5, 2}) ||
		!slices.Equal(tok.Types, []TokenType{Unknown, Control, Control, Normal, Byte}) {
		t.Fatalf("parsed %q %v %v", tok.Pieces, tok.Scores, tok.Types)
	}
	if tok, err := ParseLlama2c(data, 5); err != nil || tok.Size() != 5 {
		t.Fatalf("with vocabSize 5: %v", err)
	}
	if got, _ := MarshalLlama2c(tok); !bytes.Equal(got, data) {
		t.Fatalf("re-marshalled file differs:\n%q\n%q", got, data)
	}
}

func TestParseLlama2cErrors(t *testing.T) {
	good := llama2cFile(5, float32(0), "<unk>", float32(0), "<s>", float32(0), "</s>", float32(0), "x")
	for _, c := range []struct {
		name  string
		data  []byte
		vocab int
		want  string
	}{
		{"empty", nil, 0, "too short"},
		{"negative max length", llama2cFile(-1), 0, "negative"},
		{"too few entries", llama2cFile(5, float32(0), "<unk>"), 0, "at least"},
		{"truncated header", good[:len(good)-6], 0, "entry header needs"},
		{"truncated piece", good[:len(good)-1], 0, "runs past the end"},
		{"piece longer than max", llama2cFile(2, float32(0), "<unk>", float32(0), "a", float32(0), "b"), 0, "exceeds"},
		{"negative length", append(slices.Clone(good), 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff), 0, "negative piece length"},
		{"bytes beyond vocab", good, 3, "more than 3 entries"},
		{"vocab beyond file", good, 5, "entry header needs"},
		{"huge vocab", good, 1 << 30, "entries need at least"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseLlama2c(c.data, c.vocab)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if _, err := ParseLlama2c(good, 4); err != nil {
		t.Fatalf("good file: %v", err)
	}
}

func TestWriteLlama2c(t *testing.T) {
	tok := tinyVocab()
	dir := t.TempDir()
	path := filepath.Join(dir, "tok.bin")
	if err := os.WriteFile(path, []byte("old contents"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLlama2c(tok, path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadLlama2c(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Pieces, tok.Pieces) || !slices.Equal(back.Scores, tok.Scores) || !slices.Equal(back.Types, tok.Types) {
		t.Fatal("written tokenizer reads back differently")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after the write; a temp file was left", len(entries))
	}
	bad := &Tokenizer{Pieces: []string{"a"}, Scores: nil}
	if err := WriteLlama2c(bad, filepath.Join(dir, "bad.bin")); err == nil {
		t.Fatal("writing an inconsistent tokenizer succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.bin")); !os.IsNotExist(err) {
		t.Fatal("a failed write left a file behind")
	}
	if _, err := LoadLlama2c(filepath.Join(dir, "missing.bin")); err == nil {
		t.Fatal("loading a missing file succeeded")
	}
}

// FuzzParseLlama2c: arbitrary input never panics, and whatever parses
// exports to a file that parses back to the same vocabulary (the export
// normalises spellings, so the second export is byte-identical).
func FuzzParseLlama2c(f *testing.F) {
	f.Add(llama2cFile(6, float32(0), "<unk>", float32(0), "\n<s>\n", float32(0), "\n</s>\n", float32(-1), " a"))
	f.Add(llama2cFile(3, float32(0), "<unk>", float32(0), "<s>", float32(0), "</s>", float32(-1), "\u2581a"))
	f.Add(llama2cFile(1, float32(0), "a"))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f})
	if dataAvailable(f) {
		if b, err := os.ReadFile(dataFile(f, "models/stories260K/tok512.bin")); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := ParseLlama2c(data, 0)
		if err != nil {
			return
		}
		if err := tok.Check(); err != nil {
			t.Fatalf("parsed tokenizer is inconsistent: %v", err)
		}
		out, err := MarshalLlama2c(tok)
		if err != nil {
			t.Fatalf("MarshalLlama2c: %v", err)
		}
		back, err := ParseLlama2c(out, tok.Size())
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		for i := range tok.Pieces {
			if back.Pieces[i] != tok.llama2cPiece(i) || math.Float32bits(back.Scores[i]) != math.Float32bits(tok.Scores[i]) {
				t.Fatalf("entry %d: %q %g became %q %g", i, tok.Pieces[i], tok.Scores[i], back.Pieces[i], back.Scores[i])
			}
		}
		again, err := MarshalLlama2c(back)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("second export differs (%v)", err)
		}
		// Encoding must not panic on any vocabulary that parses.
		tok.Decode(tok.Encode("ab \xff", true, true))
	})
}
