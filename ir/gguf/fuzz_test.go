package gguf

import (
	"bytes"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// FuzzParse feeds arbitrary bytes to the parser and, when they parse, to
// the llama mapping and back through the writer. Nothing may panic; a
// file that parses and can be written again must parse to the same
// metadata and tensor bytes.
func FuzzParse(f *testing.F) {
	kvs, ts, err := saveLayout(tinyModel(f, ir.F16), "seed.gguf", SaveOptions{})
	if err != nil {
		f.Fatal(err)
	}
	var seed bytes.Buffer
	if err := Encode(&seed, kvs, ts); err != nil {
		f.Fatal(err)
	}
	valid := seed.Bytes()
	f.Add(valid)
	for _, n := range []int{0, 3, 4, 8, 23, 24, 100, 1000, len(valid) / 2, len(valid) - 1} {
		f.Add(valid[:n])
	}
	f.Add(handFile())
	// llama.cpp's conversion of a Llama 3.1-style checkpoint: rope_freqs.
	if conv, err := os.ReadFile(llama31Conv); err == nil {
		f.Add(conv)
	} else {
		f.Fatal(err)
	}
	// Every architecture, as whittle lays out each family, mixtures of
	// experts included (small; the
	// llama.cpp conversions of the family fixtures are read in
	// TestFamiliesReadLlamaCppConversions, and would slow fuzzing down).
	seeds := map[string]ir.Config{}
	for name, c := range irtest.Families() {
		seeds[name], _ = writableFamily(name, c)
	}
	for name, c := range irtest.MoEFamilies() {
		seeds[name] = writableMoE(name, c)
	}
	for _, name := range slices.Sorted(maps.Keys(seeds)) {
		wc := seeds[name]
		kvs, ts, err := saveLayout(irtest.RandomModel(f, wc, rand.New(rand.NewPCG(1, 2))), "seed.gguf", SaveOptions{})
		if err != nil {
			f.Fatal(err)
		}
		var b bytes.Buffer
		if err := Encode(&b, kvs, ts); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	var all bytes.Buffer
	if err := Encode(&all, allValues(), nil); err != nil {
		f.Fatal(err)
	}
	f.Add(all.Bytes())

	f.Fuzz(checkParse)
}

func checkParse(t *testing.T, data []byte) {
	file, err := Parse("fuzz", data)
	if err != nil {
		return
	}
	// Every tensor Parse accepted lies inside the data.
	for _, ti := range file.Tensors {
		if tt, err := file.Tensor(ti.Name); err == nil {
			if _, err := tt.Bytes(); err != nil {
				t.Fatalf("tensor %q: %v", ti.Name, err)
			}
		}
	}
	if m, err := file.Model(); err == nil {
		for n, tt := range m.Tensors {
			if _, err := tt.Bytes(); err != nil {
				t.Fatalf("model tensor %q: %v", n, err)
			}
		}
	}

	if file.Alignment > 1<<16 {
		return // legal, but re-encoding would write megabytes of padding
	}
	wts := make([]WriteTensor, len(file.Tensors))
	for i := range file.Tensors {
		ti := &file.Tensors[i]
		wts[i] = WriteTensor{Name: ti.Name, Type: ti.Type, Shape: ti.Shape(), Data: func() ([]byte, error) { return file.raw(ti) }}
	}
	var out bytes.Buffer
	if err := Encode(&out, file.KVs, wts); err != nil {
		return // e.g. names longer than llama.cpp accepts
	}
	again, err := Parse("again", out.Bytes())
	if err != nil {
		t.Fatalf("re-encoded file does not parse: %v", err)
	}
	if len(again.KVs) != len(file.KVs) || len(again.Tensors) != len(file.Tensors) {
		t.Fatalf("re-encoded file has %d KVs and %d tensors, want %d and %d", len(again.KVs), len(again.Tensors), len(file.KVs), len(file.Tensors))
	}
	for i, kv := range file.KVs {
		if again.KVs[i].Key != kv.Key || !again.KVs[i].Value.Equal(kv.Value) {
			t.Fatalf("KV %q changed: %s -> %s", kv.Key, kv.Value, again.KVs[i].Value)
		}
	}
	for i := range file.Tensors {
		a, _ := file.raw(&file.Tensors[i])
		b, _ := again.raw(&again.Tensors[i])
		if !bytes.Equal(a, b) || !slices.Equal(file.Tensors[i].Dims, again.Tensors[i].Dims) {
			t.Fatalf("tensor %q changed", file.Tensors[i].Name)
		}
	}
}

// FuzzVocab feeds arbitrary bytes to the vocabulary-only path: parsing,
// Tokenizer and Model. Nothing may panic; a vocabulary-only file must not
// read as a model; a vocabulary that loads must encode and decode text.
func FuzzVocab(f *testing.F) {
	spm, err := os.ReadFile(filepath.Join("testdata", "vocab-llama-spm.gguf"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(spm)
	for _, n := range []int{24, 100, len(spm) / 2, len(spm) - 1} {
		f.Add(spm[:n])
	}
	// A small byte-level vocabulary: the 256 byte tokens, one merge, one
	// special token.
	pieces := make([]string, 0, 258)
	for b := range 256 {
		pieces = append(pieces, gpt2BytePiece(byte(b)))
	}
	pieces = append(pieces, "ab", "<|end|>")
	types := make([]int32, len(pieces))
	types[len(types)-1] = int32(tokenizer.Control)
	var bpe bytes.Buffer
	err = Encode(&bpe, []KV{
		{KeyArchitecture, Of("gpt2")},
		{KeyTokModel, Of("gpt2")},
		{KeyTokPre, Of("gpt-2")},
		{KeyTokTokens, ArrayOf(pieces)},
		{KeyTokTypes, ArrayOf(types)},
		{KeyTokMerges, ArrayOf([]string{"a b"})},
		{KeyTokEOS, Of(uint32(len(pieces) - 1))},
	}, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{spm, bpe.Bytes()} {
		file, err := Parse("seed", seed)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := file.Tokenizer(); err != nil {
			f.Fatal(err) // the seeds must reach the tokenizer path
		}
	}
	f.Add(bpe.Bytes())

	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		if file.VocabOnly() {
			if _, err := file.Model(); err == nil {
				t.Fatal("a vocabulary-only file read as a model")
			}
		}
		tok, err := file.Tokenizer()
		if err != nil {
			return
		}
		for _, text := range []string{"", "ab ab", "Hello, world! 123 <|end|> <s>", "\xff\xfe"} {
			ids := tok.Encode(text, true, true)
			for _, id := range ids {
				if id < 0 || id >= tok.Size() {
					t.Fatalf("%q: id %d outside the vocabulary of %d", text, id, tok.Size())
				}
			}
			tok.Decode(ids)
		}
	})
}

// gpt2BytePiece is GPT-2's bytes_to_unicode: printable Latin-1 bytes
// stand for themselves, the others for U+0100 onwards in byte order.
func gpt2BytePiece(b byte) string {
	printable := func(c int) bool {
		return (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF)
	}
	if printable(int(b)) {
		return string(rune(b))
	}
	n := 0
	for c := 0; c < int(b); c++ {
		if !printable(c) {
			n++
		}
	}
	return string(rune(256 + n))
}
