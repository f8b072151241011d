package passtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// Tokenizer is a small llama2.c-style vocabulary: UNK, BOS, EOS, the 256
// byte pieces, space, the lowercase letters, '.', and a few merges.
func Tokenizer() *tokenizer.Tokenizer {
	t := &tokenizer.Tokenizer{UNK: 0, BOS: 1, EOS: 2}
	add := func(p string, score float32, typ tokenizer.TokenType) {
		t.Pieces = append(t.Pieces, p)
		t.Scores = append(t.Scores, score)
		t.Types = append(t.Types, typ)
	}
	add("<unk>", 0, tokenizer.Unknown)
	add("\n<s>\n", 0, tokenizer.Control)
	add("\n</s>\n", 0, tokenizer.Control)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), 0, tokenizer.Byte)
	}
	add(" ", -1, tokenizer.Normal)
	for c := 'a'; c <= 'z'; c++ {
		add(string(c), -1, tokenizer.Normal)
	}
	add(".", -1, tokenizer.Normal)
	for i, m := range []string{" t", "th", "he", " th", " the", " a", "at", " c", " s"} {
		add(m, float32(-2-i), tokenizer.Normal)
	}
	return t
}

// TinyConfig is the architecture of TinyModel.
func TinyConfig(vocab int) ir.Config {
	return ir.Config{Arch: "llama", Vocab: vocab, Hidden: 8,
		Layers:  ir.UniformLayers(4, ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 2, MLP: 12}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 64, Tied: true, BOS: 1, EOS: 2}
}

// WriteModel writes a random model of architecture cfg with Tokenizer()
// as a Hugging Face directory.
func WriteModel(t testing.TB, dir string, cfg ir.Config, seed uint64) {
	t.Helper()
	WriteModelTok(t, dir, cfg, seed, Tokenizer())
}

// WriteModelTok is WriteModel with another tokenizer.
func WriteModelTok(t testing.TB, dir string, cfg ir.Config, seed uint64, tok *tokenizer.Tokenizer) {
	t.Helper()
	names, shapes := cfg.ExpectedShapes()
	rng := rand.New(rand.NewPCG(seed, 7))
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Tokenizer: tok}
	for _, n := range names {
		sh := shapes[n]
		v := make([]float32, ir.NewTensor(ir.F32, sh, nil).NumElements())
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.1)
		}
		m.Tensors[n] = ir.FromFloat32(ir.F32, sh, v)
	}
	if err := hf.Save(m, dir, hf.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
}

var words = []string{"the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "sea", "tree", "hat", "sun", "big", "red"}

// Corpus returns n paragraphs of seeded lowercase sentences separated by
// blank lines.
func Corpus(n int, seed uint64) string {
	rng := rand.New(rand.NewPCG(seed, 11))
	var b strings.Builder
	for p := 0; p < n; p++ {
		for s := 0; s < 3; s++ {
			for w := 0; w < 5; w++ {
				if w > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(words[rng.IntN(len(words))])
			}
			b.WriteString(". ")
		}
		b.WriteString("\n\n")
	}
	return b.String()
}

// WriteFile writes a file under dir, creating directories.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Env is a work directory holding a tiny model ("model/"), a text corpus
// ("corpus.txt"), instruction pairs ("instruct.jsonl") and tasks
// ("choices.jsonl", "lambada.jsonl").
type Env struct {
	Dir    string
	Config ir.Config
}

// NewEnv writes the inputs.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	e := &Env{Dir: t.TempDir(), Config: TinyConfig(len(Tokenizer().Pieces))}
	WriteModel(t, filepath.Join(e.Dir, "model"), e.Config, 1)
	WriteFile(t, e.Dir, "corpus.txt", Corpus(60, 3))
	var ins strings.Builder
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&ins, "{\"prompt\": \"q: the cat %d.\\na:\", \"response\": \" the dog sat.\"}\n", i)
	}
	WriteFile(t, e.Dir, "instruct.jsonl", ins.String())
	WriteFile(t, e.Dir, "choices.jsonl", strings.Repeat(`{"query": "the cat sat on the", "choices": ["mat.", "sun."], "gold": 0}`+"\n", 6))
	WriteFile(t, e.Dir, "lambada.jsonl", strings.Repeat(`{"context": "the cat sat on the", "continuation": "mat"}`+"\n", 5))
	return e
}

// Inputs are recipe blocks declaring Env's files.
const Inputs = `
model "base" {
  path = "model"
}
dataset "corpus" {
  path                = "corpus.txt"
  validation_fraction = 0.2
}
dataset "pairs" {
  path                = "instruct.jsonl"
  format              = "instruct"
  validation_fraction = 0.2
}
task "choice" {
  path = "choices.jsonl"
}
task "lambada" {
  path = "lambada.jsonl"
}
`

// Load parses a recipe written into the env's directory.
func (e *Env) Load(t testing.TB, reg *pipeline.Registry, src string) (*recipe.Recipe, hcl.Diagnostics) {
	t.Helper()
	path := WriteFile(t, e.Dir, "recipe.hcl", src)
	return recipe.Load(path, nil, reg.Language())
}

// MustLoad is Load failing the test on any error.
func (e *Env) MustLoad(t testing.TB, reg *pipeline.Registry, src string) *recipe.Recipe {
	t.Helper()
	r, diags := e.Load(t, reg, src)
	if diags.HasErrors() {
		t.Fatalf("recipe does not load: %s", diags.Error())
	}
	return r
}

// Run runs a recipe into e.Dir/run with the fake backend.
func (e *Env) Run(t testing.TB, reg *pipeline.Registry, src string, f *Fake, ev pipeline.Events) (*pipeline.Manifest, error) {
	t.Helper()
	r := e.MustLoad(t, reg, src)
	return pipeline.Run(context.Background(), r, reg, pipeline.Options{Dir: filepath.Join(e.Dir, "run"), Backends: &Provider{Fake: f}}, ev)
}

// Registry registers passes into a fresh pipeline registry.
func Registry(t testing.TB, passes ...pipeline.Pass) *pipeline.Registry {
	t.Helper()
	reg := pipeline.NewRegistry()
	for _, p := range passes {
		if err := reg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// ReadInt32 reads a whole int32 .npy file, returning its shape and values.
func ReadInt32(t testing.TB, path string) ([]int, []int32) {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Int32()
	if err != nil {
		t.Fatal(err)
	}
	return a.Shape, v
}

// ReadUint8 reads a whole uint8 .npy file.
func ReadUint8(t testing.TB, path string) ([]int, []uint8) {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Uint8()
	if err != nil {
		t.Fatal(err)
	}
	return a.Shape, v
}

// Pass returns the manifest record of the pass named name.
func Pass(t testing.TB, man *pipeline.Manifest, name string) pipeline.PassRecord {
	t.Helper()
	for _, p := range man.Passes {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no pass %q in the manifest", name)
	return pipeline.PassRecord{}
}

// Pos is the "recipe.hcl:line:col" of the first occurrence of needle in
// src (a recipe Env.Load wrote), as diagnostics and pass errors print it.
func Pos(t testing.TB, src, needle string) string {
	t.Helper()
	i := strings.Index(src, needle)
	if i < 0 {
		t.Fatalf("%q is not in the recipe", needle)
	}
	line := strings.Count(src[:i], "\n") + 1
	col := i - strings.LastIndex(src[:i], "\n")
	return fmt.Sprintf("recipe.hcl:%d:%d", line, col)
}

// DiagPos is the "recipe.hcl:line:col" of the first error diagnostic.
func DiagPos(diags hcl.Diagnostics) string {
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject != nil {
			return fmt.Sprintf("%s:%d:%d", filepath.Base(d.Subject.Filename), d.Subject.Start.Line, d.Subject.Start.Column)
		}
	}
	return ""
}

// DataFile finds the one file in the run's data cache matching a glob
// pattern (e.g. "corpus-train-L16-*[0-9a-f].npy").
func (e *Env) DataFile(t testing.TB, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(e.Dir, "run", "data", pattern))
	if err != nil || len(m) != 1 {
		t.Fatalf("data files matching %s: %v (%v)", pattern, m, err)
	}
	return m[0]
}
