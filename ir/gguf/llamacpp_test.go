package gguf

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// tokenizeTexts are the texts both tokenizers split: spaces, digits,
// contractions, scripts, emoji, code and special-token spellings, where
// pre-tokenizers differ.
var tokenizeTexts = []string{
	"",
	"a",
	"Hello world",
	" Hello world",
	"   ",
	"  two  spaces   three    ",
	"tabs\tand\nnewlines\n\n\r\nend",
	"I'm sure it's 12345 and 1234567, not 3.14159!",
	"UPPER'S CASE'LL 'VE 'd",
	"Ünïcödé: naïve café, 日本語, 한국어, emoji 🐈🦙",
	"code: for (int i = 0; i < n; ++i) { x += y[i]; }",
	"$100 +5 <=> ^~| punctuation!!! ... ???",
	"<|begin_of_text|>special in text<|eot_id|> and <s> </s>",
}

// vocabFixtures are the vocabulary-only files in testdata, written by
// llama.cpp's gguf-py (gen_vocab.py).
var vocabFixtures = []string{"vocab-llama-spm.gguf", "vocab-llama-bpe.gguf", "vocab-gpt-2.gguf"}

// TestVocabMatchesLlamaCpp tokenizes the same texts with the same
// vocabulary files as llama.cpp's llama-tokenize and compares the ids:
// every fixture, and the byte-level vocabulary under every pre-tokenizer
// name whittle accepts. It needs the shared llama.cpp build and fails,
// rather than skips, when shared/ is there without it.
func TestVocabMatchesLlamaCpp(t *testing.T) {
	bin := shareddata.LlamaCpp(t, "llama-tokenize")
	files := map[string]string{}
	for _, name := range vocabFixtures {
		files[name] = filepath.Join("testdata", name)
	}
	for _, p := range bytePre {
		path := filepath.Join(t.TempDir(), "vocab-pre-"+p.name+".gguf")
		rewriteVocab(t, filepath.Join("testdata", "vocab-llama-bpe.gguf"), path, map[string]Value{KeyTokPre: Of(p.name)})
		files["pre "+p.name] = path
	}
	for name, path := range files {
		t.Run(name, func(t *testing.T) {
			tok, err := LoadTokenizer(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, text := range tokenizeTexts {
				want := llamaTokenize(t, bin, path, text, tok.ByteLevel != nil)
				if got := tok.Encode(text, false, false); !slices.Equal(got, want) {
					t.Errorf("%q:\nwhittle   %v\nllama.cpp %v", text, got, want)
				}
			}
		})
	}
}

// llamaTokenize runs llama-tokenize on one text, without BOS and without
// escape processing. Special tokens spelled in the text are parsed for
// byte-level vocabularies (as Hugging Face's tokenizers match added
// tokens) and not for SentencePiece ones (whittle, like the
// sentencepiece library, reads "<s>" in text as text).
func llamaTokenize(t *testing.T, bin, vocab, text string, parseSpecial bool) []int {
	t.Helper()
	args := []string{"-m", vocab, "--ids", "--no-bos", "--no-escape", "--log-disable", "-p", text}
	if !parseSpecial {
		args = append(args, "--no-parse-special")
	}
	cmd := exec.Command(bin, args...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("llama-tokenize %s %q: %v", vocab, text, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var ids []int
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ids); err != nil {
		t.Fatalf("llama-tokenize %s %q: output %q: %v", vocab, text, out, err)
	}
	return ids
}

// rewriteVocab copies a tensor-free GGUF file with some metadata values
// replaced (a nil Value drops the key).
func rewriteVocab(t testing.TB, src, dst string, set map[string]Value) {
	t.Helper()
	f, err := Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var kvs []KV
	for _, kv := range f.KVs {
		if v, ok := set[kv.Key]; ok {
			if v.v != nil {
				kvs = append(kvs, KV{kv.Key, v})
			}
			delete(set, kv.Key)
			continue
		}
		kvs = append(kvs, kv)
	}
	for k, v := range set {
		if v.v != nil {
			kvs = append(kvs, KV{k, v})
		}
	}
	if err := Write(dst, kvs, nil); err != nil {
		t.Fatal(err)
	}
}

// TestVocabOnlyFiles: the fixtures read as tokenizers whatever their
// architecture, refuse to read as models, and the byte-level one encodes
// as the tokenizer.json it was written from.
func TestVocabOnlyFiles(t *testing.T) {
	for _, name := range vocabFixtures {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name)
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if !f.VocabOnly() {
				t.Error("VocabOnly is false")
			}
			tok, err := f.Tokenizer()
			if err != nil {
				t.Fatal(err)
			}
			v, _ := f.Get(KeyTokTokens)
			pieces, _ := v.Strs()
			if tok.Size() != len(pieces) || len(pieces) == 0 {
				t.Errorf("%d pieces, file holds %d", tok.Size(), len(pieces))
			}
			if _, err := f.Model(); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no weights") {
				t.Errorf("Model: %v, want an error naming %s and saying it has no weights", err, path)
			}
			if m, err := Load(path); err == nil {
				m.Close()
				t.Error("Load read a vocabulary-only file as a model")
			}
		})
	}

	ref, err := tokenizer.LoadTokenizerJSON(filepath.Join("..", "tokenizer", "testdata", "llama3", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	bpe, err := LoadTokenizer(filepath.Join("testdata", "vocab-llama-bpe.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range tokenizeTexts[:len(tokenizeTexts)-1] { // the last spells special tokens, renumbered in the fixture
		if got, want := bpe.Encode(text, false, false), ref.Encode(text, false, false); !slices.Equal(got, want) {
			t.Errorf("%q: GGUF vocabulary %v, tokenizer.json %v", text, got, want)
		}
	}
}

// TestVocabUnsupported: a vocabulary whittle cannot read is refused with
// an error naming the file and the tokenizer model or pre-tokenizer.
func TestVocabUnsupported(t *testing.T) {
	spm, bpe := filepath.Join("testdata", "vocab-llama-spm.gguf"), filepath.Join("testdata", "vocab-llama-bpe.gguf")
	cases := []struct {
		name string
		src  string
		set  map[string]Value
		want []string
	}{
		{"wordpiece", spm, map[string]Value{KeyTokModel: Of("bert")}, []string{`"bert"`, "not supported"}},
		{"t5", spm, map[string]Value{KeyTokModel: Of("t5")}, []string{`"t5"`, "not supported"}},
		{"falcon pre", bpe, map[string]Value{KeyTokPre: Of("falcon")}, []string{`"falcon"`, "pre-tokenizer", "llama-bpe"}},
		{"deepseek pre", bpe, map[string]Value{KeyTokPre: Of("deepseek-llm")}, []string{`"deepseek-llm"`, "pre-tokenizer"}},
		{"no pre", bpe, map[string]Value{KeyTokPre: {}}, []string{KeyTokPre, "default"}},
		{"no tokenizer", spm, map[string]Value{KeyTokModel: {}}, []string{"no vocabulary", KeyTokModel}},
		{"no merges", bpe, map[string]Value{KeyTokMerges: {}}, []string{KeyTokMerges}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vocab.gguf")
			rewriteVocab(t, c.src, path, c.set)
			_, err := LoadTokenizer(path)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range append(c.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestVocabPreRoundTrip: a byte-level vocabulary read under any accepted
// pre-tokenizer name is written back under the first name of its split
// and reads back encoding the same ids.
func TestVocabPreRoundTrip(t *testing.T) {
	for _, p := range bytePre {
		t.Run(p.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "in.gguf")
			rewriteVocab(t, filepath.Join("testdata", "vocab-llama-bpe.gguf"), src, map[string]Value{KeyTokPre: Of(p.name)})
			tok, err := LoadTokenizer(src)
			if err != nil {
				t.Fatal(err)
			}
			kvs, err := tokenizerKVs(tok, &ir.Config{BOS: tok.BOS, EOS: tok.EOS})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := Encode(&buf, kvs, nil); err != nil {
				t.Fatal(err)
			}
			f, err := Parse("out.gguf", buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			want := ""
			for _, q := range bytePre {
				if q.pattern == p.pattern && q.ignoreMerges == p.ignoreMerges {
					want = q.name
					break
				}
			}
			if got, _ := f.str(KeyTokPre, true); got != want {
				t.Errorf("written as %q, want %q", got, want)
			}
			back, err := f.Tokenizer()
			if err != nil {
				t.Fatal(err)
			}
			for _, text := range tokenizeTexts {
				if a, b := tok.Encode(text, false, false), back.Encode(text, false, false); !slices.Equal(a, b) {
					t.Errorf("%q: %v after the round trip, %v before", text, b, a)
				}
			}
		})
	}
}
