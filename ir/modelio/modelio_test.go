package modelio

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"

	"github.com/whittle-ml/whittle/ir/tokenizer"
)

func stories(t *testing.T) string {
	t.Helper()
	return shareddata.Path(t, "models/stories260K")
}

func TestDetect(t *testing.T) {
	dir := stories(t)
	tmp := t.TempDir()
	fake := filepath.Join(tmp, "fake.gguf")
	os.WriteFile(fake, []byte("nope"), 0o644)
	cases := []struct {
		path string
		want Format
		err  bool
	}{
		{filepath.Join(dir, "stories260K.gguf"), GGUF, false},
		{filepath.Join(dir, "stories260K.bin"), Llama2c, false},
		{fake, "", true},
		{filepath.Join(tmp, "missing.bin"), "", true},
	}
	for _, c := range cases {
		got, err := Detect(c.path)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("Detect(%s) = %q, %v; want %q (error %v)", filepath.Base(c.path), got, err, c.want, c.err)
		}
	}
}

// TestEveryFormatRoundTrips saves the shipped model in each format and
// loads it back: same config, same tensors, same tokenizer.
func TestEveryFormatRoundTrips(t *testing.T) {
	dir := stories(t)
	src, err := Load(filepath.Join(dir, "stories260K.bin"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Tokenizer == nil || src.Tokenizer.Size() != 512 {
		t.Fatal("tok512.bin was not found beside the checkpoint")
	}
	tmp := t.TempDir()
	for _, c := range []struct {
		format Format
		path   string
	}{{HF, "hf"}, {GGUF, "m.gguf"}, {Llama2c, "sub/m.bin"}} {
		path := filepath.Join(tmp, c.path)
		if err := Save(src, path, c.format, SaveOptions{}); err != nil {
			t.Fatalf("%s: %v", c.format, err)
		}
		got, err := Load(path, LoadOptions{})
		if err != nil {
			t.Fatalf("%s: %v", c.format, err)
		}
		if got.Config.Params() != src.Config.Params() || got.Config.Hidden != src.Config.Hidden {
			t.Errorf("%s: config changed: %+v", c.format, got.Config)
		}
		for _, name := range src.TensorNames() {
			a, _ := src.Tensors[name].Float32()
			b, err := got.Tensors[name].Float32()
			if err != nil {
				t.Fatalf("%s: %s: %v", c.format, name, err)
			}
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("%s: %s[%d] = %g, want %g", c.format, name, i, b[i], a[i])
				}
			}
		}
		if got.Tokenizer == nil {
			t.Fatalf("%s: tokenizer lost", c.format)
		}
		text := "Once upon a time, a little dog ran."
		if a, b := src.Tokenizer.Encode(text, true, false), got.Tokenizer.Encode(text, true, false); !equal(a, b) {
			t.Errorf("%s: tokenizer encodes %v, want %v", c.format, b, a)
		}
		got.Close()
	}
}

func TestLoadTokenizerBothFormats(t *testing.T) {
	dir := stories(t)
	bin := filepath.Join(dir, "tok512.bin")
	want, err := tokenizer.LoadLlama2c(bin)
	if err != nil {
		t.Fatal(err)
	}
	spm := filepath.Join(t.TempDir(), "tokenizer.model")
	if err := tokenizer.WriteSentencePiece(want, spm); err != nil {
		t.Fatal(err)
	}
	noExt := filepath.Join(t.TempDir(), "tok")
	b, _ := os.ReadFile(spm)
	os.WriteFile(noExt, b, 0o644)
	// A GGUF file is told by its magic, whatever its name.
	ggufFile := filepath.Join(dir, "stories260K.gguf")
	ggufNoExt := filepath.Join(t.TempDir(), "vocab")
	g, _ := os.ReadFile(ggufFile)
	os.WriteFile(ggufNoExt, g, 0o644)
	for _, p := range []string{bin, spm, noExt, ggufFile, ggufNoExt} {
		got, err := LoadTokenizer(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		text := "The cat sat on the mat. 🐈"
		if a, b := want.Encode(text, true, false), got.Encode(text, true, false); !equal(a, b) {
			t.Errorf("%s: encodes %v, want %v", p, b, a)
		}
	}
	fake := filepath.Join(t.TempDir(), "fake.gguf")
	os.WriteFile(fake, b, 0o644)
	if _, err := LoadTokenizer(fake); err == nil || !strings.Contains(err.Error(), "GGUF magic") {
		t.Errorf("a .gguf without the magic: %v, want an error naming the magic", err)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestVocabOnlyGGUF: a vocabulary-only GGUF serves wherever a tokenizer
// path is taken (here, attached to a llama2.c checkpoint as a recipe's
// tokenizer = "x.gguf" is), is told by its magic under any name, and
// refuses to load as a model with an error saying it holds no weights.
func TestVocabOnlyGGUF(t *testing.T) {
	vocab := filepath.Join("..", "gguf", "testdata", "vocab-llama-spm.gguf")
	if !VocabOnly(vocab) {
		t.Error("VocabOnly is false for a vocabulary-only file")
	}
	dir := stories(t)
	for _, p := range []string{filepath.Join(dir, "stories260K.gguf"), filepath.Join(dir, "tok512.bin")} {
		if VocabOnly(p) {
			t.Errorf("VocabOnly(%s) is true", p)
		}
	}
	renamed := filepath.Join(t.TempDir(), "tokenizer.bin")
	b, err := os.ReadFile(vocab)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(renamed, b, 0o644)
	want, err := tokenizer.LoadLlama2c(filepath.Join(dir, "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{vocab, renamed} {
		m, err := Load(filepath.Join(dir, "stories260K.bin"), LoadOptions{Tokenizer: tok})
		if err != nil {
			t.Fatalf("tokenizer %s: %v", tok, err)
		}
		text := "Once upon a time, a cat sat. 🐈"
		if a, b := want.Encode(text, true, false), m.Tokenizer.Encode(text, true, false); !equal(a, b) {
			t.Errorf("tokenizer %s: encodes %v, want %v", tok, b, a)
		}
		m.Close()
	}
	if _, err := Load(vocab, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "no weights") {
		t.Errorf("loading a vocabulary-only file as a model: %v, want an error saying it holds no weights", err)
	}
}

// TestConfigOnly: a Hugging Face directory stripped of its weights loads
// as the same configuration (and tokenizer) without tensors, but only
// when asked; a full directory loads its weights either way.
func TestConfigOnly(t *testing.T) {
	dir := stories(t)
	src, err := Load(filepath.Join(dir, "stories260K.bin"), LoadOptions{Tokenizer: filepath.Join(dir, "tok512.bin")})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	hfDir := filepath.Join(t.TempDir(), "hf")
	if err := Save(src, hfDir, HF, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	full, err := Load(hfDir, LoadOptions{AllowConfigOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if full.ConfigOnly() || len(full.Tensors) != len(src.Tensors) {
		t.Errorf("a directory with weights loaded %d tensors, config-only %v", len(full.Tensors), full.ConfigOnly())
	}
	full.Close()
	entries, err := os.ReadDir(hfDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".safetensors") {
			if err := os.Remove(filepath.Join(hfDir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := Load(hfDir, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "model.safetensors") {
		t.Errorf("loading weights that are not there: %v", err)
	}
	for _, path := range []string{hfDir, filepath.Join(hfDir, "config.json")} {
		m, err := Load(path, LoadOptions{AllowConfigOnly: true})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !m.ConfigOnly() || !reflect.DeepEqual(m.Config, src.Config) {
			t.Errorf("%s: config-only %v, config %+v, want %+v", path, m.ConfigOnly(), m.Config, src.Config)
		}
		if m.Tokenizer == nil || m.Tokenizer.Size() != src.Tokenizer.Size() {
			t.Errorf("%s: tokenizer %v not attached", path, m.Tokenizer)
		}
	}
}
