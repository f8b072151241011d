package hf

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/safetensors"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

func tinyConfig() ir.Config {
	return ir.Config{
		Arch: "llama", Vocab: 16, Hidden: 8,
		Layers:  ir.UniformLayers(2, ir.LayerConfig{Heads: 2, KVHeads: 1, HeadDim: 4, MLP: 12}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 32, Tied: true, BOS: 1, EOS: 2,
	}
}

// randomModel fills every tensor cfg implies with random values of dtype d.
func randomModel(cfg ir.Config, d ir.DType, seed uint64) *ir.Model {
	rng := rand.New(rand.NewPCG(seed, 99))
	names, shapes := cfg.ExpectedShapes()
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Source: "random"}
	for _, n := range names {
		size := 1
		for _, s := range shapes[n] {
			size *= s
		}
		v := make([]float32, size)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		m.Tensors[n] = ir.FromFloat32(d, shapes[n], v)
	}
	return m
}

func mustBytes(t *testing.T, tt *ir.Tensor) []byte {
	t.Helper()
	b, err := tt.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameWeights checks that got holds exactly want's tensors, converted to
// dtype d when d is set.
func sameWeights(t *testing.T, got, want *ir.Model, d *ir.DType) {
	t.Helper()
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for name, w := range want.Tensors {
		g, ok := got.Tensors[name]
		if !ok {
			t.Fatalf("tensor %q missing", name)
		}
		if d != nil {
			var err error
			if w, err = w.Convert(*d); err != nil {
				t.Fatal(err)
			}
		}
		if g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) || !bytes.Equal(mustBytes(t, g), mustBytes(t, w)) {
			t.Fatalf("tensor %q differs: %v %v, want %v %v", name, g.DType, g.Shape, w.DType, w.Shape)
		}
	}
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// TestSaveGolden compares the JSON files with hand-written ones laid out
// as transformers writes them (json.dumps(indent=2, sort_keys=True)).
func TestSaveGolden(t *testing.T) {
	m := randomModel(tinyConfig(), ir.BF16, 1)
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := Save(m, dir, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ got, golden string }{
		{ConfigFile, "testdata/tiny-config.json"},
		{GenerationConfigFile, "testdata/tiny-generation_config.json"},
	} {
		got, err := os.ReadFile(filepath.Join(dir, f.got))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(f.golden)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n%s\nwant (%s):\n%s", f.got, got, f.golden, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		if info, _ := e.Info(); info.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v, want 0644", e.Name(), info.Mode().Perm())
		}
	}
	if want := []string{ConfigFile, GenerationConfigFile, safetensors.SingleFileName}; !reflect.DeepEqual(names, want) {
		t.Errorf("directory holds %v, want %v", names, want)
	}
	f, err := safetensors.Open(filepath.Join(dir, safetensors.SingleFileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !reflect.DeepEqual(f.Metadata, map[string]string{"format": "pt"}) {
		t.Errorf("safetensors metadata = %v", f.Metadata)
	}
	if _, ok := f.Info(ir.NameClassifier); ok {
		t.Error("tied model saved lm_head.weight")
	}
	if got, want := len(f.Names()), len(m.Tensors); got != want {
		t.Errorf("file has %d tensors, model %d", got, want)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	llama3 := tinyConfig()
	llama3.RopeScaling = &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 16}
	llama3.RopeTheta = 500000
	llama3.Tied = false
	linear := tinyConfig()
	linear.RopeScaling = &ir.RopeScaling{Type: "linear", Factor: 2.5}
	linear.BOS, linear.EOS = -1, 15
	mha := tinyConfig()
	mha.Layers = ir.UniformLayers(3, ir.LayerConfig{Heads: 4, KVHeads: 4, HeadDim: 2, MLP: 5})
	mha.Arch = "mistral"
	cases := []struct {
		name  string
		cfg   ir.Config
		store ir.DType
		opt   *ir.DType
	}{
		{"tied f32", tinyConfig(), ir.F32, nil},
		{"llama3 untied bf16", llama3, ir.BF16, nil},
		{"linear to f16", linear, ir.F32, ptr(ir.F16)},
		{"mha to bf16", mha, ir.F16, ptr(ir.BF16)},
		{"to f32", tinyConfig(), ir.BF16, ptr(ir.F32)},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := randomModel(c.cfg, c.store, uint64(i))
			dir := filepath.Join(t.TempDir(), "model")
			if err := Save(m, dir, SaveOptions{DType: c.opt}); err != nil {
				t.Fatal(err)
			}
			back, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer back.Close()
			want := c.cfg.Clone()
			if !reflect.DeepEqual(back.Config, want) {
				t.Errorf("config = %+v\nwant %+v", back.Config, want)
			}
			sameWeights(t, back, m, c.opt)
			if back.Source != dir {
				t.Errorf("source = %q", back.Source)
			}
			cfg := readJSON(t, filepath.Join(dir, ConfigFile))
			wantDType := map[ir.DType]string{ir.F32: "float32", ir.F16: "float16", ir.BF16: "bfloat16"}[c.store]
			if c.opt != nil {
				wantDType = map[ir.DType]string{ir.F32: "float32", ir.F16: "float16", ir.BF16: "bfloat16"}[*c.opt]
			}
			if cfg["torch_dtype"] != wantDType {
				t.Errorf("torch_dtype = %v, want %s", cfg["torch_dtype"], wantDType)
			}
			if _, ok := cfg[WhittleLayersKey]; ok {
				t.Errorf("uniform model has %s", WhittleLayersKey)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestNonUniform saves a width-pruned model: layer 0's sizes at the top
// level, every layer's under whittle_layers, which Load honours.
func TestNonUniform(t *testing.T) {
	cfg := tinyConfig()
	cfg.Layers = ir.UniformLayers(3, ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 2, MLP: 6})
	m := randomModel(cfg, ir.F32, 5)
	m, err := m.KeepMLP(1, []int{0, 2, 5})
	if err != nil {
		t.Fatal(err)
	}
	if m, err = m.KeepHeads(2, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "pruned")
	if err := Save(m, dir, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	raw := readJSON(t, filepath.Join(dir, ConfigFile))
	for key, want := range map[string]float64{"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 2, "intermediate_size": 6, "num_hidden_layers": 3} {
		if raw[key] != want {
			t.Errorf("%s = %v, want %v (layer 0)", key, raw[key], want)
		}
	}
	wl, _ := json.Marshal(raw[WhittleLayersKey])
	const wantLayers = `[{"head_dim":2,"intermediate_size":6,"num_attention_heads":4,"num_key_value_heads":2},` +
		`{"head_dim":2,"intermediate_size":3,"num_attention_heads":4,"num_key_value_heads":2},` +
		`{"head_dim":2,"intermediate_size":6,"num_attention_heads":2,"num_key_value_heads":1}]`
	if string(wl) != wantLayers {
		t.Errorf("%s = %s\nwant %s", WhittleLayersKey, wl, wantLayers)
	}
	back, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if !reflect.DeepEqual(back.Config, m.Config) {
		t.Errorf("config = %+v\nwant %+v", back.Config, m.Config)
	}
	sameWeights(t, back, m, nil)
}

func TestSharded(t *testing.T) {
	cfg := tinyConfig()
	cfg.Tied = false
	m := randomModel(cfg, ir.F32, 7)
	// In canonical order the tensors are 512 bytes (embedding), then per
	// layer norm 32, q 256, k 128, v 128, o 256, norm 32, gate 384, up 384,
	// down 384, then 32 (final norm) and 512 (classifier). A 600-byte cap
	// gives [embed norm] [q k v] [o norm] [gate] [up] [down norm] [q k v]
	// [o norm] [gate] [up] [down final-norm] [classifier]: 12 shards.
	const max = 600
	dir := filepath.Join(t.TempDir(), "sharded")
	if err := Save(m, dir, SaveOptions{MaxShardBytes: max}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, safetensors.SingleFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sharded save also wrote %s", safetensors.SingleFileName)
	}
	data, err := os.ReadFile(filepath.Join(dir, safetensors.IndexFileName))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := safetensors.ParseIndex(data)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	shardBytes := map[string]int64{}
	for name, shard := range ix.WeightMap {
		n := int64(m.Tensors[name].NumBytes())
		total += n
		shardBytes[shard] += n
	}
	if len(ix.WeightMap) != len(m.Tensors) {
		t.Errorf("index maps %d tensors, model has %d", len(ix.WeightMap), len(m.Tensors))
	}
	if got := ix.Metadata["total_size"]; got != float64(total) {
		t.Errorf("total_size = %v, want %d", got, total)
	}
	// Filling 600-byte shards in canonical order by hand.
	names := m.TensorNames()
	var want []int64
	var cur int64
	for i, n := range names {
		b := int64(m.Tensors[n].NumBytes())
		if i > 0 && cur+b > max {
			want = append(want, cur)
			cur = 0
		}
		cur += b
	}
	want = append(want, cur)
	if len(want) != 12 {
		t.Fatalf("hand count: %d shards, want 12", len(want))
	}
	shards := ix.Shards()
	if len(shards) != len(want) {
		t.Fatalf("%d shards, want %d", len(shards), len(want))
	}
	for i, s := range shards {
		if name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(want)); s != name {
			t.Errorf("shard %d is %s, want %s", i, s, name)
		}
		if shardBytes[s] != want[i] {
			t.Errorf("shard %s holds %d bytes, want %d", s, shardBytes[s], want[i])
		}
	}
	// The index is written as transformers writes it.
	var pretty bytes.Buffer
	json.Indent(&pretty, data, "", "  ")
	if !bytes.Equal(bytes.TrimSpace(pretty.Bytes()), bytes.TrimSpace(data)) || !bytes.HasPrefix(data, []byte("{\n  \"metadata\": {\n    \"total_size\": ")) {
		t.Errorf("index layout:\n%s", data)
	}
	back, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	sameWeights(t, back, m, nil)
}

// listDir names the entries of dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// TestOverwriteInPlace loads a model lazily from a directory, prunes it and
// saves it back over the same directory: the old files must still be
// readable while the new ones are written, and no stale shard survives.
func TestOverwriteInPlace(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "m")
	orig := randomModel(tinyConfig(), ir.F32, 11)
	if err := Save(orig, dir, SaveOptions{MaxShardBytes: 300}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("old"), 0o644)
	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer loaded.Close()
	pruned, err := loaded.KeepMLP(0, []int{1, 3, 5, 7})
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(pruned, dir, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := listDir(t, dir), []string{ConfigFile, GenerationConfigFile, safetensors.SingleFileName}; !reflect.DeepEqual(got, want) {
		t.Errorf("directory after overwrite = %v, want %v", got, want)
	}
	if got := listDir(t, parent); !reflect.DeepEqual(got, []string{"m"}) {
		t.Errorf("parent holds %v, want only the model", got)
	}
	back, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if !reflect.DeepEqual(back.Config, pruned.Config) {
		t.Errorf("config = %+v\nwant %+v", back.Config, pruned.Config)
	}
	// The pruned model's untouched tensors still read from the old,
	// now unlinked, mapping; their values must match what was saved.
	sameWeights(t, back, pruned, nil)
	sameWeights(t, back, func() *ir.Model {
		w, err := orig.KeepMLP(0, []int{1, 3, 5, 7})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}(), nil)
}

func TestSaveRefusesAndLeavesNoTrace(t *testing.T) {
	m := randomModel(tinyConfig(), ir.F32, 2)

	t.Run("not a model directory", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "home")
		os.Mkdir(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("precious"), 0o644)
		err := Save(m, dir, SaveOptions{})
		if err == nil || !strings.Contains(err.Error(), "refusing to replace") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("error = %v", err)
		}
		if got := listDir(t, dir); !reflect.DeepEqual(got, []string{"notes.txt"}) {
			t.Errorf("directory now holds %v", got)
		}
		if got := listDir(t, parent); !reflect.DeepEqual(got, []string{"home"}) {
			t.Errorf("parent holds %v", got)
		}
	})
	t.Run("a file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "file")
		os.WriteFile(path, []byte("x"), 0o644)
		if err := Save(m, path, SaveOptions{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("through a symlink", func(t *testing.T) {
		parent := t.TempDir()
		real, link := filepath.Join(parent, "v1"), filepath.Join(parent, "current")
		if err := Save(m, real, SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("v1", link); err != nil {
			t.Skip(err)
		}
		if err := Save(randomModel(tinyConfig(), ir.BF16, 5), link, SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := listDir(t, parent); !reflect.DeepEqual(got, []string{"current", "v1"}) {
			t.Errorf("parent holds %v", got)
		}
		back, err := Load(link)
		if err != nil {
			t.Fatal(err)
		}
		defer back.Close()
		if back.Tensors[ir.NameEmbed].DType != ir.BF16 {
			t.Error("the linked directory still holds the old model")
		}
	})
	t.Run("empty directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := Save(m, dir, SaveOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("failing tensor keeps the old model", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "m")
		if err := Save(m, dir, SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(filepath.Join(dir, safetensors.SingleFileName))
		bad := &ir.Model{Config: m.Config, Tensors: map[string]*ir.Tensor{}}
		for n, tt := range m.Tensors {
			bad.Tensors[n] = tt
		}
		name := ir.LayerName(1, ir.RoleDown)
		bad.Tensors[name] = ir.LazyTensor(ir.F32, m.Tensors[name].Shape, func() ([]byte, error) { return nil, errors.New("disk on fire") })
		err := Save(bad, dir, SaveOptions{})
		if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), name) {
			t.Fatalf("error = %v", err)
		}
		after, _ := os.ReadFile(filepath.Join(dir, safetensors.SingleFileName))
		if !bytes.Equal(before, after) {
			t.Error("failed save changed the existing model")
		}
		if got := listDir(t, parent); !reflect.DeepEqual(got, []string{"m"}) {
			t.Errorf("parent holds %v after a failed save", got)
		}
	})
	t.Run("invalid model", func(t *testing.T) {
		bad := randomModel(tinyConfig(), ir.F32, 2)
		delete(bad.Tensors, ir.NameFinalNorm)
		dir := filepath.Join(t.TempDir(), "m")
		if err := Save(bad, dir, SaveOptions{}); err == nil || !strings.Contains(err.Error(), ir.NameFinalNorm) {
			t.Fatalf("error = %v", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Error("failed save created the directory")
		}
	})
	t.Run("creates parents", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b", "m")
		if err := Save(m, dir, SaveOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestDeterministic: the pipeline hashes saved models, so the same model
// must give the same bytes.
func TestDeterministic(t *testing.T) {
	m := randomModel(tinyConfig(), ir.BF16, 4)
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	for _, d := range []string{a, b} {
		if err := Save(m, d, SaveOptions{MaxShardBytes: 200}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range listDir(t, a) {
		x, _ := os.ReadFile(filepath.Join(a, name))
		y, err := os.ReadFile(filepath.Join(b, name))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two saves", name)
		}
	}
}

func TestTokenizer(t *testing.T) {
	m := randomModel(tinyConfig(), ir.F32, 3)
	tok := &tokenizer.Tokenizer{BOS: 1, EOS: 2, UNK: 0}
	for i := 0; i < 16; i++ {
		tok.Pieces = append(tok.Pieces, fmt.Sprintf(" p%d", i))
		tok.Scores = append(tok.Scores, float32(-i))
	}
	tok.Pieces[0], tok.Pieces[1], tok.Pieces[2], tok.Pieces[3] = "<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>"
	wantBin, err := tokenizer.MarshalLlama2c(tok)
	if err != nil {
		t.Fatal(err)
	}
	m.Tokenizer = tok
	dir := filepath.Join(t.TempDir(), "m")
	if err := Save(m, dir, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{Llama2cTokenizerFile, SentencePieceFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("Save did not write %s: %v", f, err)
		}
	}
	check := func(t *testing.T, dir string) {
		t.Helper()
		back, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer back.Close()
		if back.Tokenizer == nil {
			t.Fatal("no tokenizer")
		}
		// Spellings may change between the formats (' ' and '▁'); the
		// llama2.c rendering, which is what encoding uses, must not.
		got, err := tokenizer.MarshalLlama2c(back.Tokenizer)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, wantBin) {
			t.Error("tokenizer changed through the model directory")
		}
	}
	t.Run("sentencepiece", func(t *testing.T) { check(t, dir) })
	t.Run("llama2c fallback", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, SentencePieceFile)); err != nil {
			t.Fatal(err)
		}
		check(t, dir)
	})

	t.Run("no UNK writes tokenizer.bin only", func(t *testing.T) {
		noUNK := &tokenizer.Tokenizer{Pieces: tok.Pieces, Scores: tok.Scores, BOS: 1, EOS: 2, UNK: -1}
		m.Tokenizer = noUNK
		d := filepath.Join(t.TempDir(), "m")
		if err := Save(m, d, SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(d, SentencePieceFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("wrote %s for a vocabulary without UNK", SentencePieceFile)
		}
		check(t, d)
	})

	// A tokenizer of another vocabulary is an error naming both sizes.
	small := &tokenizer.Tokenizer{Pieces: tok.Pieces[:5], Scores: tok.Scores[:5], BOS: 1, EOS: 2}
	if err := tokenizer.WriteSentencePiece(small, filepath.Join(dir, SentencePieceFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "5 pieces") || !strings.Contains(err.Error(), "16") || !strings.Contains(err.Error(), filepath.Join(dir, SentencePieceFile)) {
		t.Errorf("error = %v", err)
	}
	os.WriteFile(filepath.Join(dir, SentencePieceFile), []byte("\xff\xff"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), SentencePieceFile) {
		t.Errorf("corrupt tokenizer.model: error = %v", err)
	}
}

// sharedData finds the project's shared/data directory by walking up from
// the package directory, and skips the test when it is absent.
func sharedData(t testing.TB, rel string) string {
	t.Helper()
	return shareddata.Path(t, rel)
}

// TestPublishedTokenizerModel attaches a real SentencePiece file.
func TestPublishedTokenizerModel(t *testing.T) {
	src := sharedData(t, "models/stories260K/tok512.model")
	want, err := tokenizer.LoadSentencePiece(src)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tinyConfig()
	cfg.Vocab = 512
	m := randomModel(cfg, ir.BF16, 1)
	dir := filepath.Join(t.TempDir(), "m")
	if err := Save(m, dir, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, SentencePieceFile), data, 0o644)
	back, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Tokenizer == nil || !reflect.DeepEqual(back.Tokenizer.Pieces, want.Pieces) || !reflect.DeepEqual(back.Tokenizer.Types, want.Types) {
		t.Fatal("tokenizer.model not attached as read")
	}
}

// slidingEven gives the even layers window w, as Gemma 2 does.
func slidingEven(layers []ir.LayerConfig, w int) []ir.LayerConfig {
	for i := range layers {
		if i%2 == 0 {
			layers[i].Window = w
		}
	}
	return layers
}

// TestParseConfigPublished parses published config.json files and checks
// the parameter count against the count each model card publishes (0:
// none checked). The mixtures of experts were counted by hand from their
// configs and agree with the cards' rounded figures: Mixtral 8x7B 46.7B
// total, 12.9B active (attention 41,943,040 + router 32,768 + norms 8,192
// + 2 of 8 experts of 3·4096·14336 per layer, ×32, + embeddings, head and
// final norm 262,148,096; a figure of 12,879,138,816 that circulates
// counts only 2/8 of the router, which every token computes whole);
// Qwen1.5-MoE-A2.7B 14.3B total, 2.7B active (4 of 60 experts plus the
// shared expert); Qwen3-30B-A3B 30.5B total, 3.3B active (8 of 128).
func TestParseConfigPublished(t *testing.T) {
	llama3 := &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 8192}
	gemma := func(c ir.Config) ir.Config {
		c.Arch, c.Vocab, c.NormEps, c.RopeTheta, c.MaxSeq, c.Tied, c.BOS, c.EOS = "gemma2", 256000, 1e-6, 10000, 8192, true, 2, 1
		c.NormOffset, c.EmbedScale, c.Act, c.PostNorms = 1, true, ir.ActGELUTanh, true
		c.AttnScalar, c.AttnSoftCap, c.FinalSoftCap = 256, 50, 30
		return c
	}
	qwen3 := func(c ir.Config) ir.Config {
		c.Arch, c.Vocab, c.NormEps, c.RopeTheta, c.MaxSeq, c.BOS, c.EOS, c.QKNorm = "qwen3", 151936, 1e-6, 1e6, 40960, 151643, 151645, true
		return c
	}
	// The MoE parameter counts are worked out by hand from each config
	// (see TestParseConfigPublished's doc comment); the active figures
	// count the router whole, as every token computes all its rows.
	cases := []struct {
		file   string
		want   ir.Config
		params int64
		active int64 // 0: as params (dense)
	}{
		{file: "mixtral-8x7b-v0.1.json", params: 46_702_792_704, active: 12_879_925_248, want: ir.Config{
			Arch: "mixtral", Vocab: 32000, Hidden: 4096, ExpertsPerToken: 2, NormTopK: true,
			Layers:  ir.UniformLayers(32, ir.LayerConfig{Heads: 32, KVHeads: 8, HeadDim: 128, Experts: 8, ExpertMLP: 14336}),
			NormEps: 1e-5, RopeTheta: 1e6, MaxSeq: 32768, BOS: 1, EOS: 2,
		}},
		{file: "qwen1.5-moe-a2.7b.json", params: 14_315_784_192, active: 2_689_173_504, want: ir.Config{
			Arch: "qwen2_moe", Vocab: 151936, Hidden: 2048, ExpertsPerToken: 4, AttnBias: true,
			Layers:  ir.UniformLayers(24, ir.LayerConfig{Heads: 16, KVHeads: 16, HeadDim: 128, Experts: 60, ExpertMLP: 1408, SharedMLP: 5632}),
			NormEps: 1e-6, RopeTheta: 1e6, MaxSeq: 8192, BOS: 151643, EOS: 151643,
		}},
		{file: "qwen3-30b-a3b.json", params: 30_532_122_624, active: 3_353_032_704, want: ir.Config{
			Arch: "qwen3_moe", Vocab: 151936, Hidden: 2048, ExpertsPerToken: 8, NormTopK: true, QKNorm: true,
			Layers:  ir.UniformLayers(48, ir.LayerConfig{Heads: 32, KVHeads: 4, HeadDim: 128, Experts: 128, ExpertMLP: 768}),
			NormEps: 1e-6, RopeTheta: 1e6, MaxSeq: 40960, BOS: 151643, EOS: 151645,
		}},
		{file: "llama-2-7b.json", params: 6_738_415_616, want: ir.Config{
			Arch: "llama", Vocab: 32000, Hidden: 4096,
			Layers:  ir.UniformLayers(32, ir.LayerConfig{Heads: 32, KVHeads: 32, HeadDim: 128, MLP: 11008}),
			NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 4096, BOS: 1, EOS: 2,
		}},
		{file: "llama-3.1-8b-instruct.json", params: 8_030_261_248, want: ir.Config{
			Arch: "llama", Vocab: 128256, Hidden: 4096,
			Layers:  ir.UniformLayers(32, ir.LayerConfig{Heads: 32, KVHeads: 8, HeadDim: 128, MLP: 14336}),
			NormEps: 1e-5, RopeTheta: 500000, RopeScaling: llama3, MaxSeq: 131072, BOS: 128000, EOS: 128001,
		}},
		{file: "llama-3.2-1b.json", params: 1_235_814_400, want: ir.Config{
			Arch: "llama", Vocab: 128256, Hidden: 2048,
			Layers:  ir.UniformLayers(16, ir.LayerConfig{Heads: 32, KVHeads: 8, HeadDim: 64, MLP: 8192}),
			NormEps: 1e-5, RopeTheta: 500000, MaxSeq: 131072, Tied: true, BOS: 128000, EOS: 128001,
			RopeScaling: &ir.RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 8192},
		}},
		{file: "mistral-7b-v0.3.json", params: 7_248_023_552, want: ir.Config{
			Arch: "mistral", Vocab: 32768, Hidden: 4096,
			Layers:  ir.UniformLayers(32, ir.LayerConfig{Heads: 32, KVHeads: 8, HeadDim: 128, MLP: 14336}),
			NormEps: 1e-5, RopeTheta: 1e6, MaxSeq: 32768, BOS: 1, EOS: 2,
		}},
		{file: "mistral-7b-v0.1.json", params: 7_241_732_096, want: ir.Config{
			Arch: "mistral", Vocab: 32000, Hidden: 4096,
			Layers:  ir.UniformLayers(32, ir.LayerConfig{Heads: 32, KVHeads: 8, HeadDim: 128, MLP: 14336, Window: 4096}),
			NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 32768, BOS: 1, EOS: 2,
		}},
		{file: "mistral-nemo-base-2407.json", params: 12_247_782_400, want: ir.Config{
			Arch: "mistral", Vocab: 131072, Hidden: 5120,
			Layers:  ir.UniformLayers(40, ir.LayerConfig{Heads: 32, KVHeads: 8, HeadDim: 128, MLP: 14336}),
			NormEps: 1e-5, RopeTheta: 1e6, MaxSeq: 1024000, BOS: 1, EOS: 2,
		}},
		{file: "qwen2.5-7b.json", params: 7_615_616_512, want: ir.Config{
			Arch: "qwen2", Vocab: 152064, Hidden: 3584,
			Layers:  ir.UniformLayers(28, ir.LayerConfig{Heads: 28, KVHeads: 4, HeadDim: 128, MLP: 18944}),
			NormEps: 1e-6, RopeTheta: 1e6, MaxSeq: 131072, BOS: 151643, EOS: 151643, AttnBias: true,
		}},
		{file: "qwen3-8b.json", params: 8_190_735_360, want: qwen3(ir.Config{Hidden: 4096,
			Layers: ir.UniformLayers(36, ir.LayerConfig{Heads: 32, KVHeads: 8, HeadDim: 128, MLP: 12288})})},
		{file: "qwen3-0.6b.json", params: 596_049_920, want: qwen3(ir.Config{Hidden: 1024, Tied: true,
			Layers: ir.UniformLayers(28, ir.LayerConfig{Heads: 16, KVHeads: 8, HeadDim: 128, MLP: 3072})})},
		{file: "gemma-2-2b.json", params: 2_614_341_888, want: gemma(ir.Config{Hidden: 2304,
			Layers: slidingEven(ir.UniformLayers(26, ir.LayerConfig{Heads: 8, KVHeads: 4, HeadDim: 256, MLP: 9216}), 4096)})},
		{file: "gemma-2-9b.json", params: 9_241_705_984, want: gemma(ir.Config{Hidden: 3584,
			Layers: slidingEven(ir.UniformLayers(42, ir.LayerConfig{Heads: 16, KVHeads: 8, HeadDim: 256, MLP: 14336}), 4096)})},
		{file: "phi-3-mini-4k-instruct.json", params: 3_821_079_552, want: ir.Config{
			Arch: "phi3", Vocab: 32064, Hidden: 3072,
			Layers:  ir.UniformLayers(32, ir.LayerConfig{Heads: 32, KVHeads: 32, HeadDim: 96, MLP: 8192, Window: 2047}),
			NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 4096, BOS: 1, EOS: 32000,
		}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/configs", c.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("config = %+v\nwant %+v", got, c.want)
			}
			p := got.Params()
			if c.params != 0 && p.Total != c.params {
				t.Errorf("%d parameters, published %d", p.Total, c.params)
			}
			if want := cmp.Or(c.active, p.Total); p.Active != want {
				t.Errorf("%d active parameters, want %d", p.Active, want)
			}
			// What Save writes parses back to the same config.
			out, err := MarshalConfig(&got, ir.BF16)
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseConfig(out)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, c.want) {
				t.Errorf("after MarshalConfig: %+v\nwant %+v", again, c.want)
			}
			// And so does a directory holding only the config.
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, ConfigFile), data, 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := LoadConfigOnly(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.Config, c.want) || !m.ConfigOnly() {
				t.Errorf("LoadConfigOnly: config-only %v, %+v", m.ConfigOnly(), m.Config)
			}
		})
	}
}

// base is a minimal valid config.json body; cases add or override keys.
func configWith(t *testing.T, kv map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"model_type": "llama", "architectures": []string{"LlamaForCausalLM"},
		"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
		"num_attention_heads": 2, "vocab_size": 16,
	}
	for k, v := range kv {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// null is a JSON null value for configWith (nil deletes the key).
var null = json.RawMessage("null")

func TestParseConfigDefaultsAndVariants(t *testing.T) {
	def := ir.Config{
		Arch: "llama", Vocab: 16, Hidden: 8,
		Layers:  ir.UniformLayers(2, ir.LayerConfig{Heads: 2, KVHeads: 2, HeadDim: 4, MLP: 12}),
		NormEps: 1e-6, RopeTheta: 10000, MaxSeq: 2048, Tied: false, BOS: 1, EOS: 2,
	}
	cases := []struct {
		name   string
		kv     map[string]any
		modify func(c *ir.Config)
	}{
		{"defaults", nil, func(c *ir.Config) {}},
		{"null kv heads and head_dim", map[string]any{"num_key_value_heads": null, "head_dim": null}, func(c *ir.Config) {}},
		{"no architectures", map[string]any{"architectures": nil}, func(c *ir.Config) {}},
		{"mistral defaults", map[string]any{"model_type": "mistral", "architectures": []string{"MistralForCausalLM"}},
			func(c *ir.Config) {
				c.Arch, c.MaxSeq = "mistral", 131072
				for i := range c.Layers {
					c.Layers[i].Window = 4096 // MistralConfig's default
				}
			}},
		{"mistral without window", map[string]any{"model_type": "mistral", "architectures": []string{"MistralForCausalLM"}, "sliding_window": null},
			func(c *ir.Config) { c.Arch, c.MaxSeq = "mistral", 131072 }},
		{"eos list and null bos", map[string]any{"eos_token_id": []int{7, 8}, "bos_token_id": null}, func(c *ir.Config) { c.BOS, c.EOS = -1, 7 }},
		{"legacy type key", map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 4.0}},
			func(c *ir.Config) { c.RopeScaling = &ir.RopeScaling{Type: "linear", Factor: 4} }},
		{"default rope type", map[string]any{"rope_scaling": map[string]any{"rope_type": "default"}}, func(c *ir.Config) {}},
		{"rope_parameters", map[string]any{"rope_theta": nil, "rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 500000.0}},
			func(c *ir.Config) { c.RopeTheta = 500000 }},
		{"explicit head_dim", map[string]any{"head_dim": 6, "num_key_value_heads": 1}, func(c *ir.Config) {
			c.Layers = ir.UniformLayers(2, ir.LayerConfig{Heads: 2, KVHeads: 1, HeadDim: 6, MLP: 12})
		}},
		{"sliding window covering the context", map[string]any{"sliding_window": 2048}, func(c *ir.Config) {}},
		{"biases false", map[string]any{"attention_bias": false, "mlp_bias": false, "quantization_config": null}, func(c *ir.Config) {}},
		{"whittle_layers", map[string]any{"whittle_layers": []map[string]int{
			{"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 12},
			{"num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 3},
		}}, func(c *ir.Config) {
			c.Layers = []ir.LayerConfig{{Heads: 2, KVHeads: 1, HeadDim: 4, MLP: 12}, {Heads: 1, KVHeads: 1, HeadDim: 4, MLP: 3}}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseConfig(configWith(t, c.kv))
			if err != nil {
				t.Fatal(err)
			}
			want := def.Clone()
			c.modify(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("config = %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		kv   map[string]any
		want string
	}{
		{"attention bias", map[string]any{"attention_bias": true}, "unsupported: attention_bias"},
		{"mlp bias", map[string]any{"mlp_bias": true}, "unsupported: mlp_bias"},
		{"sliding window", map[string]any{"sliding_window": 4096, "max_position_embeddings": 8192}, "unsupported: sliding_window 4096"},
		{"gelu", map[string]any{"hidden_act": "gelu"}, `unsupported: hidden_act "gelu"`},
		{"quantized", map[string]any{"quantization_config": map[string]any{"quant_method": "gptq"}}, "unsupported: quantized"},
		{"dynamic rope", map[string]any{"rope_scaling": map[string]any{"type": "dynamic", "factor": 2.0}}, `rope_scaling: unsupported rope scaling type "dynamic"`},
		{"yarn in rope_parameters", map[string]any{"rope_parameters": map[string]any{"rope_type": "yarn", "factor": 2.0}}, `rope_parameters: unsupported rope scaling type "yarn"`},
		{"llama3 incomplete", map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"},
		{"linear no factor", map[string]any{"rope_scaling": map[string]any{"rope_type": "linear"}}, "factor"},
		{"linear zero factor", map[string]any{"rope_scaling": map[string]any{"rope_type": "linear", "factor": 0}}, "factor must be positive"},
		{"gpt2", map[string]any{"model_type": "gpt2"}, `unsupported model_type "gpt2"`},
		{"no model_type", map[string]any{"model_type": nil}, "no model_type"},
		{"qwen architecture", map[string]any{"architectures": []string{"Qwen2ForCausalLM"}}, "unsupported architectures"},
		{"missing hidden", map[string]any{"hidden_size": nil}, "missing hidden_size"},
		{"missing layers", map[string]any{"num_hidden_layers": nil}, "missing num_hidden_layers"},
		{"absurd layers", map[string]any{"num_hidden_layers": 2000000000}, "num_hidden_layers must be in [1, 65536]"},
		{"missing heads", map[string]any{"num_attention_heads": nil}, "missing num_attention_heads"},
		{"negative vocab", map[string]any{"vocab_size": -3}, "vocab_size must be positive"},
		{"indivisible heads", map[string]any{"num_attention_heads": 3}, "does not divide into 3 heads"},
		{"kv groups", map[string]any{"num_key_value_heads": 3, "head_dim": 4}, "do not divide into 3 KV groups"},
		{"whittle_layers count", map[string]any{"whittle_layers": []map[string]int{{"num_attention_heads": 2}}}, "whittle_layers has 1 entries"},
		{"eos out of range", map[string]any{"eos_token_id": 99}, "special token id 99"},
		{"eos string", map[string]any{"eos_token_id": "</s>"}, "eos_token_id"},
		{"bad max seq", map[string]any{"max_position_embeddings": 0}, "max_position_embeddings must be positive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig(configWith(t, c.kv))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want %q", err, c.want)
			}
		})
	}
	if _, err := ParseConfig([]byte("{")); err == nil || !strings.Contains(err.Error(), "invalid JSON") {
		t.Errorf("error = %v", err)
	}
}

// writeDir writes a config.json and a model.safetensors with the given
// tensors.
func writeDir(t *testing.T, cfg []byte, tensors map[string]*ir.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(filepath.Join(dir, safetensors.SingleFileName), nil, tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadTensorSets(t *testing.T) {
	tied := randomModel(tinyConfig(), ir.F32, 8)
	tiedCfg, _ := MarshalConfig(&tied.Config, ir.F32)
	with := func(extra map[string]*ir.Tensor, drop ...string) map[string]*ir.Tensor {
		out := map[string]*ir.Tensor{}
		for n, tt := range tied.Tensors {
			out[n] = tt
		}
		for _, n := range drop {
			delete(out, n)
		}
		for n, tt := range extra {
			out[n] = tt
		}
		return out
	}
	embed := tied.Tensors[ir.NameEmbed]
	other := randomModel(tinyConfig(), ir.F32, 9).Tensors[ir.NameEmbed]
	invFreq := ir.FromFloat32(ir.F32, []int{2}, []float32{1, 0.01})

	t.Run("tied with equal lm_head", func(t *testing.T) {
		m, err := Load(writeDir(t, tiedCfg, with(map[string]*ir.Tensor{ir.NameClassifier: embed})))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if _, ok := m.Tensors[ir.NameClassifier]; ok {
			t.Error("lm_head kept")
		}
		sameWeights(t, m, tied, nil)
	})
	t.Run("rotary buffers dropped", func(t *testing.T) {
		m, err := Load(writeDir(t, tiedCfg, with(map[string]*ir.Tensor{"model.layers.0.self_attn.rotary_emb.inv_freq": invFreq})))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		sameWeights(t, m, tied, nil)
	})
	errCases := []struct {
		name    string
		tensors map[string]*ir.Tensor
		want    []string
	}{
		{"tied with different lm_head", with(map[string]*ir.Tensor{ir.NameClassifier: other}), []string{"tie_word_embeddings is true", "different values"}},
		{"tied with lm_head of other dtype", with(map[string]*ir.Tensor{ir.NameClassifier: ir.FromFloat32(ir.BF16, embed.Shape, make([]float32, embed.NumElements()))}), []string{"differs from"}},
		{"missing tensor", with(nil, ir.LayerName(1, ir.RoleUp)), []string{"missing tensor", ir.LayerName(1, ir.RoleUp)}},
		{"bias", with(map[string]*ir.Tensor{"model.layers.0.self_attn.q_proj.bias": invFreq}), []string{"unexpected tensors", "q_proj.bias"}},
		{"wrong shape", with(map[string]*ir.Tensor{ir.NameFinalNorm: invFreq}), []string{ir.NameFinalNorm, "shape [2]"}},
	}
	for _, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeDir(t, tiedCfg, c.tensors)
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range append(c.want, dir) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	t.Run("untied without lm_head", func(t *testing.T) {
		cfg := tinyConfig()
		cfg.Tied = false
		c, _ := MarshalConfig(&cfg, ir.F32)
		if _, err := Load(writeDir(t, c, tied.Tensors)); err == nil || !strings.Contains(err.Error(), ir.NameClassifier) {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("no config", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, ConfigFile)) {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("bad config names the file", func(t *testing.T) {
		dir := writeDir(t, []byte(`{"model_type":"gpt2"}`), tied.Tensors)
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, ConfigFile)) || !strings.Contains(err.Error(), "gpt2") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("no weights", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, ConfigFile), tiedCfg, 0o644)
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), safetensors.SingleFileName) {
			t.Errorf("error = %v", err)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	entries, err := os.ReadDir("testdata/configs")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("testdata/configs", e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	fixtures, err := filepath.Glob(filepath.Join(familiesDir, "*", ConfigFile))
	if err != nil || len(fixtures) == 0 {
		f.Fatalf("no family fixtures: %v", err)
	}
	for _, p := range fixtures {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"model_type":"llama","hidden_size":8,"num_hidden_layers":1,"whittle_layers":[{}],"vocab_size":1}`))
	f.Add([]byte(`{"model_type":"qwen2","hidden_size":8,"num_hidden_layers":3,"num_attention_heads":2,"intermediate_size":4,"vocab_size":4,"use_sliding_window":true,"sliding_window":2,"layer_types":["full_attention","sliding_attention","full_attention"]}`))
	f.Add([]byte(`{"model_type":"qwen2_moe","hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":4,"vocab_size":4,"num_experts":3,"num_experts_per_tok":2,"moe_intermediate_size":2,"shared_expert_intermediate_size":3,"decoder_sparse_step":2,"mlp_only_layers":[0]}`))
	f.Add([]byte(`{"model_type":"mixtral","hidden_size":8,"num_hidden_layers":2,"vocab_size":4,"num_experts_per_tok":1,"whittle_layers":[{"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,"num_experts":2,"moe_intermediate_size":3},{"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,"intermediate_size":5}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := cfg.Check(); err != nil {
			t.Fatalf("ParseConfig accepted an inconsistent config: %v", err)
		}
		// Every config read is one its family can write, and what is
		// written reads back the same.
		out, err := MarshalConfig(&cfg, ir.F32)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !reflect.DeepEqual(again, cfg) {
			t.Fatalf("round trip: %+v\nwant %+v", again, cfg)
		}
		// So is every config DeciLM can express, written as DeciLM.
		if CheckDeciLM(&cfg) != nil {
			return
		}
		if out, err = MarshalDeciLMConfig(&cfg, ir.F32); err != nil {
			t.Fatal(err)
		}
		if again, err = ParseConfig(out); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		want := cfg.Clone()
		want.Arch = "llama" // a window-free Mistral is Llama to DeciLM
		if !reflect.DeepEqual(again, want) {
			t.Fatalf("DeciLM round trip: %+v\nwant %+v", again, want)
		}
	})
}

// TestByteLevelTokenizerJSON: a directory whose vocabulary is a byte-level
// BPE tokenizer.json (Llama 3's layout) loads with it, takes EOS from
// config.json, pads to vocab_size, and saves it back unchanged beside a
// tokenizer_config.json for transformers' fast tokenizer.
func TestByteLevelTokenizerJSON(t *testing.T) {
	src := filepath.Join("..", "tokenizer", "testdata", "llama3", "tokenizer.json")
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tinyConfig()
	cfg.Vocab, cfg.BOS, cfg.EOS = 128264, 128000, 128009 // vocab_size padded past the tokenizer's 128,256
	dir := filepath.Join(t.TempDir(), "m")
	if err := Save(randomModel(cfg, ir.F32, 3), dir, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, TokenizerJSONFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := m.Tokenizer
	if tok == nil || tok.ByteLevel == nil || tok.Size() != 128264 || tok.BOS != 128000 || tok.EOS != 128009 {
		t.Fatalf("tokenizer %v", tok)
	}
	body := tok.Encode("This is a test sentence.", false, false)
	if got := tok.Encode("This is a test sentence.", true, true); !reflect.DeepEqual(got, append(append([]int{128000}, body...), 128009)) || !reflect.DeepEqual(body[:4], []int{2028, 374, 264, 1296}) {
		t.Errorf("Encode = %v", got)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := Save(m, out, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	back, err := os.ReadFile(filepath.Join(out, TokenizerJSONFile))
	if err != nil || !bytes.Equal(back, raw) {
		t.Fatalf("tokenizer.json not written back as read: %v", err)
	}
	for _, name := range []string{SentencePieceFile, Llama2cTokenizerFile} {
		if _, err := os.Stat(filepath.Join(out, name)); err == nil {
			t.Errorf("%s written for a byte-level vocabulary", name)
		}
	}
	var tc map[string]any
	b, _ := os.ReadFile(filepath.Join(out, TokenizerConfigFile))
	if err := json.Unmarshal(b, &tc); err != nil || tc["tokenizer_class"] != "PreTrainedTokenizerFast" || tc["eos_token"] != "<|eot_id|>" {
		t.Errorf("tokenizer_config.json %s (%v)", b, err)
	}
	again, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.Tokenizer.Fingerprint() != tok.Fingerprint() {
		t.Error("the reloaded vocabulary differs")
	}
}
