package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// dataFile finds a shared test asset in ../shared/data beside the
// repository root (the directory holding go.mod), or skips.
func dataFile(t testing.TB, rel string) string {
	t.Helper()
	return shareddata.Path(t, rel)
}

const storiesDir = "models/stories260K/"

func loadStories(t *testing.T) *ir.Model {
	t.Helper()
	m, err := Load(dataFile(t, storiesDir+"stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestLoadStories260K(t *testing.T) {
	m := loadStories(t)
	c := m.Config
	want := ir.Config{
		Arch: "llama", Vocab: 512, Hidden: 64,
		Layers:  ir.UniformLayers(5, ir.LayerConfig{Heads: 8, KVHeads: 4, HeadDim: 8, MLP: 172}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 2048, Tied: true, BOS: 1, EOS: 2,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("config\n got %+v\nwant %+v", c, want)
	}
	if p := c.Params().Total; p != 260032 {
		t.Errorf("params = %d, want 260032", p)
	}
	if _, ok := m.Tensors[ir.NameClassifier]; ok {
		t.Error("tied model has a separate classifier tensor")
	}
	tok := m.Tokenizer
	if tok == nil || tok.Size() != 512 || tok.BOS != 1 || tok.EOS != 2 || tok.UNK != 0 {
		t.Fatalf("tokenizer %+v", tok)
	}
	if tok.Pieces[259] != "▁t" || tok.Types[3] != tokenizer.Byte || tok.Types[1] != tokenizer.Control {
		t.Errorf("pieces/types: %q %v %v", tok.Pieces[259], tok.Types[3], tok.Types[1])
	}
	if m.Source == "" {
		t.Error("no Source")
	}
}

// llama2cCheckpoint is stories260K.bin read independently of any loader:
// the header, then every weight as float32 in file order.
type llama2cCheckpoint struct {
	dim, hidden, layers, heads, kvHeads, vocab, seq int
	shared                                          bool
	w                                               map[string][]float32 // canonical name -> values in .bin order
}

func readLlama2c(t *testing.T, path string) *llama2cCheckpoint {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(raw)
	var h [7]int32
	if err := binary.Read(r, binary.LittleEndian, &h); err != nil {
		t.Fatal(err)
	}
	c := &llama2cCheckpoint{dim: int(h[0]), hidden: int(h[1]), layers: int(h[2]), heads: int(h[3]), kvHeads: int(h[4]), vocab: int(h[5]), seq: int(h[6]), w: map[string][]float32{}}
	c.shared = c.vocab > 0
	if c.vocab < 0 {
		c.vocab = -c.vocab
	}
	next := func(n int) []float32 {
		v := make([]float32, n)
		if err := binary.Read(r, binary.LittleEndian, v); err != nil {
			t.Fatalf("reading %d floats: %v", n, err)
		}
		return v
	}
	hd := c.dim / c.heads
	kv := c.kvHeads * hd
	perLayer := func(role string, n int) {
		for l := range c.layers {
			c.w[ir.LayerName(l, role)] = next(n)
		}
	}
	c.w[ir.NameEmbed] = next(c.vocab * c.dim)
	perLayer(ir.RoleAttnNorm, c.dim)
	perLayer(ir.RoleQ, c.dim*c.dim)
	perLayer(ir.RoleK, kv*c.dim)
	perLayer(ir.RoleV, kv*c.dim)
	perLayer(ir.RoleO, c.dim*c.dim)
	perLayer(ir.RoleMLPNorm, c.dim)
	perLayer(ir.RoleGate, c.hidden*c.dim) // w1
	perLayer(ir.RoleDown, c.dim*c.hidden) // w2
	perLayer(ir.RoleUp, c.hidden*c.dim)   // w3
	c.w[ir.NameFinalNorm] = next(c.dim)
	next(c.seq * hd / 2) // freq_cis_real
	next(c.seq * hd / 2) // freq_cis_imag
	if !c.shared {
		c.w[ir.NameClassifier] = next(c.vocab * c.dim)
	}
	if r.Len() != 0 {
		t.Fatalf("%d bytes left after the checkpoint", r.Len())
	}
	return c
}

// permuteRowsF32 applies a row permutation to a row-major matrix.
func permuteRowsF32(v []float32, perm []int) []float32 {
	cols := len(v) / len(perm)
	out := make([]float32, 0, len(v))
	for _, src := range perm {
		out = append(out, v[src*cols:(src+1)*cols]...)
	}
	return out
}

func TestStoriesMatchesLlama2cCheckpoint(t *testing.T) {
	ck := readLlama2c(t, dataFile(t, storiesDir+"stories260K.bin"))
	m := loadStories(t)
	c := m.Config
	if ck.dim != c.Hidden || ck.hidden != c.Layers[0].MLP || ck.layers != len(c.Layers) || ck.heads != c.Layers[0].Heads ||
		ck.kvHeads != c.Layers[0].KVHeads || ck.vocab != c.Vocab || ck.shared != c.Tied {
		t.Fatalf("llama2.c header %+v disagrees with config %+v", ck, c)
	}
	f, err := Open(dataFile(t, storiesDir+"stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hd := c.Layers[0].HeadDim
	for name, want := range ck.w {
		// The GGUF file holds llama2.c's (interleaved) order itself.
		gname, _ := GGUFName(name)
		gt, err := f.Tensor(gname)
		if err != nil {
			t.Fatal(err)
		}
		if g, _ := gt.Float32(); !reflect.DeepEqual(g, want) {
			t.Errorf("%s: GGUF data differs from the .bin", gname)
		}
		// The IR holds Hugging Face's order.
		if strings.HasSuffix(name, ir.RoleQ+".weight") {
			want = permuteRowsF32(want, ir.RopeToHalf(ck.heads, hd))
		} else if strings.HasSuffix(name, ir.RoleK+".weight") {
			want = permuteRowsF32(want, ir.RopeToHalf(ck.kvHeads, hd))
		}
		got, err := m.Tensors[name].Float32()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: IR tensor differs from the permuted .bin", name)
		}
	}
	if len(ck.w) != len(m.Tensors) {
		t.Errorf(".bin has %d tensors, the model %d", len(ck.w), len(m.Tensors))
	}
}

// The GGUF vocabulary is tok512.bin in SentencePiece spelling: the two
// encode text identically, and converting tok512.bin's pieces the way
// Save does reproduces the file's.
func TestStoriesTokenizerMatchesTok512(t *testing.T) {
	m := loadStories(t)
	ref, err := tokenizer.LoadLlama2c(dataFile(t, storiesDir+"tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	kvs, err := tokenizerKVs(ref, &m.Config)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(dataFile(t, storiesDir+"stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, kv := range kvs {
		if kv.Key == KeyTokAddBOS || kv.Key == KeyTokAddEOS {
			continue
		}
		if got, ok := f.Get(kv.Key); !ok || !got.Equal(kv.Value) {
			t.Errorf("%s: file has %s, tok512.bin converts to %s", kv.Key, got, kv.Value)
		}
	}
	for _, text := range []string{"Once upon a time, there was a little girl named Lily.", "  héllo\n wörld 123 ☃"} {
		if a, b := m.Tokenizer.Encode(text, true, false), ref.Encode(text, true, false); !reflect.DeepEqual(a, b) {
			t.Errorf("Encode(%q): GGUF %v, tok512.bin %v", text, a, b)
		}
	}
}

func saveLoad(t *testing.T, m *ir.Model, opts SaveOptions) (*ir.Model, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.gguf")
	if err := Save(m, path, opts); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { got.Close() })
	return got, path
}

func TestSaveLoadRoundTripF32(t *testing.T) {
	m := loadStories(t)
	got, path := saveLoad(t, m, SaveOptions{})
	if !reflect.DeepEqual(got.Config, m.Config) {
		t.Fatalf("config\n got %+v\nwant %+v", got.Config, m.Config)
	}
	if !reflect.DeepEqual(got.Tokenizer.Pieces, m.Tokenizer.Pieces) || !reflect.DeepEqual(got.Tokenizer.Scores, m.Tokenizer.Scores) ||
		!reflect.DeepEqual(got.Tokenizer.Types, m.Tokenizer.Types) || got.Tokenizer.UNK != m.Tokenizer.UNK {
		t.Error("tokenizer changed")
	}
	for name, want := range m.Tensors {
		a, _ := want.Bytes()
		b, err := got.Tensors[name].Bytes()
		if err != nil || !bytes.Equal(a, b) || got.Tensors[name].DType != ir.F32 {
			t.Errorf("%s: not bitwise equal after the round trip (%v)", name, err)
		}
	}

	// The written file stores what the original stores (Q and K are
	// permuted back), minus the duplicated classifier, with the metadata
	// llama.cpp reads.
	orig, err := Open(dataFile(t, storiesDir+"stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	out, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for _, ti := range orig.Tensors {
		oti, ok := out.Info(ti.Name)
		if ti.Name == "output.weight" {
			if ok {
				t.Error("tied classifier written as output.weight")
			}
			continue
		}
		a, _ := orig.raw(&ti)
		b, _ := out.raw(oti)
		if !ok || !bytes.Equal(a, b) || !reflect.DeepEqual(ti.Dims, oti.Dims) || oti.Type != ti.Type {
			t.Errorf("%s differs from the original file", ti.Name)
		}
	}
	for _, kv := range orig.KVs {
		switch kv.Key {
		case KeyName, "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id":
			continue
		}
		if v, ok := out.Get(kv.Key); !ok || !v.Equal(kv.Value) {
			t.Errorf("%s: wrote %s, original %s", kv.Key, v, kv.Value)
		}
	}
	for key, want := range map[string]Value{
		KeyFileType: Of(uint32(0)), KeyName: Of("out"), KeyTokAddBOS: Of(true),
		archKey(keyRopeBase): Of(float32(10000)), archKey(keyKeyLength): Of(uint32(8)),
	} {
		if v, ok := out.Get(key); !ok || !v.Equal(want) {
			t.Errorf("%s = %s, want %s", key, v, want)
		}
	}
}

func TestSaveLoadRoundTripHalf(t *testing.T) {
	m := loadStories(t)
	for _, c := range []struct {
		dt       ir.DType
		fileType uint32
		rel      float64 // half an ulp
		minNorm  float64 // smallest normal
	}{{ir.F16, 1, 0x1p-11, 0x1p-14}, {ir.BF16, 32, 0x1p-8, 0x1p-126}} {
		dt := c.dt
		got, path := saveLoad(t, m, SaveOptions{DType: &dt, Name: "tiny"})
		if !reflect.DeepEqual(got.Config, m.Config) {
			t.Fatalf("%s: config changed", dt)
		}
		for name, src := range m.Tensors {
			gt := got.Tensors[name]
			want, _ := src.Float32()
			v, err := gt.Float32()
			if err != nil {
				t.Fatal(err)
			}
			if len(gt.Shape) == 1 {
				if gt.DType != ir.F32 || !reflect.DeepEqual(v, want) {
					t.Errorf("%s %s: norms must stay exact F32", dt, name)
				}
				continue
			}
			if gt.DType != dt {
				t.Errorf("%s: stored as %s, want %s", name, gt.DType, dt)
			}
			for i := range v {
				a, b := float64(want[i]), float64(v[i])
				if math.Abs(a-b) > c.rel*math.Max(math.Abs(a), c.minNorm) {
					t.Fatalf("%s %s[%d]: %g became %g, beyond rounding", dt, name, i, a, b)
				}
			}
		}
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := f.Get(KeyFileType); !v.Equal(Of(c.fileType)) {
			t.Errorf("%s: file type %s, want %d", dt, v, c.fileType)
		}
		if v, _ := f.Get(KeyName); !v.Equal(Of("tiny")) {
			t.Errorf("general.name = %s", v)
		}
		f.Close()
	}
}

// A pruned model whose layers differ round-trips as llama.cpp's deci
// architecture, with per-layer arrays for every size (as its converter
// writes them), and the written Q rows are the kept
// heads' rows of the original file, in its interleaved order.
func TestSaveLoadNonUniform(t *testing.T) {
	m := loadStories(t)
	neurons := make([]int, 0, 100)
	for i := 0; i < 172; i += 2 {
		neurons = append(neurons, i)
	}
	p, err := m.KeepMLP(1, neurons)
	if err != nil {
		t.Fatal(err)
	}
	keep := []int{2, 3, 6, 7} // KV groups 1 and 3
	if p, err = p.KeepHeads(2, keep); err != nil {
		t.Fatal(err)
	}
	got, path := saveLoad(t, p, SaveOptions{})
	if !reflect.DeepEqual(got.Config, p.Config) {
		t.Fatalf("config\n got %+v\nwant %+v", got.Config, p.Config)
	}
	if got.Config.Layers[2].Heads != 4 || got.Config.Layers[2].KVHeads != 2 || got.Config.Layers[1].MLP != 86 {
		t.Fatalf("pruning not kept: %+v", got.Config.Layers)
	}
	for name, want := range p.Tensors {
		a, _ := want.Bytes()
		b, _ := got.Tensors[name].Bytes()
		if !bytes.Equal(a, b) {
			t.Errorf("%s changed in the round trip", name)
		}
	}

	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for key, want := range map[string]Value{
		KeyArchitecture:                 Of(archDeci),
		archKeyOf(archDeci, keyFFN):     ArrayOf([]int32{172, 86, 172, 172, 172}),
		archKeyOf(archDeci, keyHeads):   ArrayOf([]int32{8, 8, 4, 8, 8}),
		archKeyOf(archDeci, keyKVHeads): ArrayOf([]int32{4, 4, 2, 4, 4}),
		archKeyOf(archDeci, keyBlocks):  Of(uint32(5)),
	} {
		if v, _ := f.Get(key); !v.Equal(want) {
			t.Errorf("%s = %s, want %s", key, v, want)
		}
	}
	orig, err := Open(dataFile(t, storiesDir+"stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	for _, c := range []struct {
		name string
		rows []int // kept heads of 8 rows each
	}{{"blk.2.attn_q.weight", keep}, {"blk.2.attn_k.weight", []int{1, 3}}} {
		ot, _ := orig.Tensor(c.name)
		ov, _ := ot.Float32()
		var want []float32
		for _, h := range c.rows {
			want = append(want, ov[h*8*64:(h+1)*8*64]...)
		}
		nt, _ := f.Tensor(c.name)
		if nv, _ := nt.Float32(); !reflect.DeepEqual(nv, want) {
			t.Errorf("%s: written rows are not the kept heads of the original", c.name)
		}
	}
}

// tinyModel builds a random untied model with a small vocabulary.
func tinyModel(t testing.TB, dt ir.DType) *ir.Model {
	return tinyModelVocab(t, dt, 8)
}

func tinyModelVocab(t testing.TB, dt ir.DType, vocab int) *ir.Model {
	cfg := ir.Config{
		Arch: "llama", Vocab: vocab, Hidden: 8, NormEps: 1e-6, RopeTheta: 500000, MaxSeq: 64, BOS: 1, EOS: 2,
		Layers:      []ir.LayerConfig{{Heads: 2, KVHeads: 1, HeadDim: 4, MLP: 12}, {Heads: 2, KVHeads: 2, HeadDim: 4, MLP: 4}},
		RopeScaling: &ir.RopeScaling{Type: "linear", Factor: 4, OriginalMaxPos: 16},
	}
	r := rand.New(rand.NewPCG(1, 2))
	names, shapes := cfg.ExpectedShapes()
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Source: "tiny"}
	for _, n := range names {
		s := shapes[n]
		size := 1
		for _, d := range s {
			size *= d
		}
		v := make([]float32, size)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		m.Tensors[n] = ir.FromFloat32(dt, s, v)
	}
	if vocab == 8 {
		m.Tokenizer = &tokenizer.Tokenizer{
			Pieces: []string{"<unk>", "\n<s>\n", "\n</s>\n", " ", "a", "b", " a", "<0x41>"},
			Scores: []float32{0, 0, 0, -1, -2, -3, -4, 0},
			BOS:    1, EOS: 2, UNK: 0,
		}
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSaveLoadTinyUntied(t *testing.T) {
	m := tinyModel(t, ir.BF16)
	got, path := saveLoad(t, m, SaveOptions{})
	if !reflect.DeepEqual(got.Config, m.Config) {
		t.Fatalf("config\n got %+v\nwant %+v", got.Config, m.Config)
	}
	for name, want := range m.Tensors {
		a, _ := want.Bytes()
		b, _ := got.Tensors[name].Bytes()
		if len(want.Shape) == 2 && !bytes.Equal(a, b) {
			t.Errorf("%s changed", name)
		}
	}
	wantPieces := []string{"<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "<0x41>"}
	wantTypes := []tokenizer.TokenType{2, 3, 3, 1, 1, 1, 1, 6}
	if !reflect.DeepEqual(got.Tokenizer.Pieces, wantPieces) || !reflect.DeepEqual(got.Tokenizer.Types, wantTypes) {
		t.Errorf("tokenizer pieces %q types %v", got.Tokenizer.Pieces, got.Tokenizer.Types)
	}
	// Same encoding in both spellings.
	if a, b := got.Tokenizer.Encode("a ab", true, true), m.Tokenizer.Encode("a ab", true, true); !reflect.DeepEqual(a, b) {
		t.Errorf("Encode: %v vs %v", a, b)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.Info("output.weight"); !ok {
		t.Error("untied classifier not written")
	}
	if v, _ := f.Get(KeyFileType); !v.Equal(Of(uint32(fileTypeBF16))) {
		t.Errorf("file type %s", v)
	}
	// Its layers differ, so it is deci.
	if v, _ := f.Get(archKeyOf(archDeci, keyRopeType)); !v.Equal(Of("linear")) {
		t.Errorf("rope scaling type %s", v)
	}
}

// TestSaveLoadNormalizerFlags: a vocabulary without the dummy prefix and
// with space folding keeps both through a GGUF file, under llama.cpp's
// keys, which Llama-style vocabularies leave out.
func TestSaveLoadNormalizerFlags(t *testing.T) {
	m := tinyModel(t, ir.F32)
	_, plain := saveLoad(t, m, SaveOptions{})
	f, err := Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	_, a := f.Get(KeyTokAddSpace)
	_, b := f.Get(KeyTokFoldSpace)
	f.Close()
	if a || b {
		t.Error("default normalizer flags written")
	}
	m.Tokenizer.NoDummyPrefix, m.Tokenizer.FoldSpaces = true, true
	got, path := saveLoad(t, m, SaveOptions{})
	if !got.Tokenizer.NoDummyPrefix || !got.Tokenizer.FoldSpaces {
		t.Errorf("flags after the round trip: NoDummyPrefix %v FoldSpaces %v", got.Tokenizer.NoDummyPrefix, got.Tokenizer.FoldSpaces)
	}
	if x, y := got.Tokenizer.Encode("  a  ab ", true, false), m.Tokenizer.Encode("  a  ab ", true, false); !reflect.DeepEqual(x, y) || !reflect.DeepEqual(x, m.Tokenizer.Encode("a ab", true, false)) {
		t.Errorf("Encode: %v vs %v", x, y)
	}
	f, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v, _ := f.Get(KeyTokAddSpace); !v.Equal(Of(false)) {
		t.Errorf("%s = %s", KeyTokAddSpace, v)
	}
	if v, _ := f.Get(KeyTokFoldSpace); !v.Equal(Of(true)) {
		t.Errorf("%s = %s", KeyTokFoldSpace, v)
	}
}

// TestSaveLoadByteLevel: a byte-level BPE vocabulary (Llama 3's, cut down)
// goes into GGUF as llama.cpp's "gpt2" model with the "llama-bpe"
// pre-tokenizer and its merges, and comes back encoding identically.
func TestSaveLoadByteLevel(t *testing.T) {
	tok, err := tokenizer.LoadTokenizerJSON(filepath.Join("..", "tokenizer", "testdata", "llama3", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	m := tinyModelVocab(t, ir.F32, tok.Size())
	m.Config.BOS, m.Config.EOS = 128000, 128009
	tok.EOS = 128009
	m.Tokenizer = tok
	got, path := saveLoad(t, m, SaveOptions{})
	if got.Tokenizer == nil || got.Tokenizer.ByteLevel == nil || got.Tokenizer.Fingerprint() != tok.Fingerprint() {
		t.Fatalf("tokenizer after the round trip: %v", got.Tokenizer)
	}
	text := "<|begin_of_text|>I'm sure   they'll go\n\n123456 🦙"
	if a, b := got.Tokenizer.Encode(text, true, true), tok.Encode(text, true, true); !reflect.DeepEqual(a, b) {
		t.Errorf("Encode: %v vs %v", a, b)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for key, want := range map[string]Value{KeyTokModel: Of("gpt2"), KeyTokPre: Of("llama-bpe"), KeyTokEOS: Of(uint32(128009))} {
		if v, _ := f.Get(key); !v.Equal(want) {
			t.Errorf("%s = %s, want %s", key, v, want)
		}
	}
	if v, _ := f.Get(KeyTokMerges); v.Len() != len(tok.ByteLevel.Merges(tok)) {
		t.Errorf("%d merges written", v.Len())
	}
}

// Without a tokenizer the file still round-trips (llama.cpp would need
// the vocabulary), taking the vocabulary size from llama.vocab_size.
func TestSaveLoadWithoutTokenizer(t *testing.T) {
	m := tinyModel(t, ir.F32)
	m.Tokenizer = nil
	got, _ := saveLoad(t, m, SaveOptions{})
	if got.Tokenizer != nil || !reflect.DeepEqual(got.Config, m.Config) {
		t.Fatalf("got tokenizer %v, config %+v", got.Tokenizer, got.Config)
	}
}

func TestSaveRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.gguf")
	m := tinyModel(t, ir.F32)
	delete(m.Tensors, ir.LayerName(0, ir.RoleUp))
	if err := Save(m, path, SaveOptions{}); err == nil || !strings.Contains(err.Error(), "mlp.up_proj") {
		t.Errorf("invalid model: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Error("failed Save left a file")
	}
}

// llamaFile writes a tiny model's layout with edits applied, for loader
// error tests.
func llamaFile(t *testing.T, edit func(kvs []KV, ts []WriteTensor) ([]KV, []WriteTensor)) string {
	t.Helper()
	kvs, ts, err := saveLayout(tinyModel(t, ir.F32), "x.gguf", SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kvs, ts = edit(llamaKeys(kvs), ts)
	path := filepath.Join(t.TempDir(), "x.gguf")
	if err := Write(path, kvs, ts); err != nil {
		t.Fatal(err)
	}
	return path
}

// llamaKeys respells a deci file's metadata as the llama architecture
// with per-layer arrays, as whittle wrote non-uniform models before it
// wrote deci (and still reads).
func llamaKeys(kvs []KV) []KV {
	out := make([]KV, len(kvs))
	for i, kv := range kvs {
		if rest, ok := strings.CutPrefix(kv.Key, archDeci+"."); ok {
			kv.Key = archKey(rest)
		}
		if kv.Key == KeyArchitecture {
			kv.Value = Of(archLlama)
		}
		out[i] = kv
	}
	return out
}

func setKV(kvs []KV, key string, v Value) []KV {
	for i := range kvs {
		if kvs[i].Key == key {
			kvs[i].Value = v
			return kvs
		}
	}
	return append(kvs, KV{key, v})
}

func dropKV(kvs []KV, key string) []KV {
	out := kvs[:0]
	for _, kv := range kvs {
		if kv.Key != key {
			out = append(out, kv)
		}
	}
	return out
}

func TestLoadErrors(t *testing.T) {
	type edit = func([]KV, []WriteTensor) ([]KV, []WriteTensor)
	cases := []struct {
		name string
		edit edit
		want string
	}{
		{"architecture", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, KeyArchitecture, Of("gpt2")), ts
		}, `architecture "gpt2" is not supported`},
		{"quantized", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			for i := range ts {
				if ts[i].Name == "blk.1.ffn_up.weight" {
					ts[i].Type = GGMLQ4_K // a type whittle does not dequantize
					ts[i].Shape = []int{1, 256}
					ts[i].Data = func() ([]byte, error) { return make([]byte, 144), nil }
				}
			}
			return k, ts
		}, `tensor "blk.1.ffn_up.weight" is stored as Q4_K`},
		{"missing key", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return dropKV(k, archKey(keyRMSEps)), ts
		}, `missing metadata key "llama.attention.layer_norm_rms_epsilon"`},
		{"wrong type", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, archKey(keyEmbedding), Of("64")), ts
		}, `key "llama.embedding_length": want an integer`},
		{"array length", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, archKey(keyFFN), ArrayOf([]int32{12})), ts
		}, "want an integer or 2 integers"},
		{"huge block count", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, archKey(keyBlocks), Of(uint32(1<<30))), ts
		}, "file holds only"},
		{"partial rope", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, archKey(keyRopeDim), Of(uint32(2))), ts
		}, "only full rotation"},
		{"yarn", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, archKey(keyRopeType), Of("yarn")), ts
		}, `RoPE scaling type "yarn"`},
		{"tokenizer model", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, KeyTokModel, Of("gpt2")), ts
		}, `tokenizer model "gpt2"`},
		{"bos range", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, KeyTokBOS, Of(uint32(8))), ts
		}, "BOS id 8 outside"},
		{"scores", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, KeyTokScores, ArrayOf([]float32{1})), ts
		}, "want 8 float32 scores"},
		{"unknown tensor", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return k, append(ts, WriteTensor{Name: "rope_factors_long.weight", Type: GGMLF32, Shape: []int{2}, Data: func() ([]byte, error) { return make([]byte, 8), nil }})
		}, `tensor "rope_factors_long.weight" is not part of the llama architecture`},
		{"layer beyond blocks", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return k, append(ts, WriteTensor{Name: "blk.7.attn_norm.weight", Type: GGMLF32, Shape: []int{8}, Data: func() ([]byte, error) { return make([]byte, 32), nil }})
		}, "belongs to layer 7"},
		{"missing tensor", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return k, ts[1:]
		}, `missing tensor "model.embed_tokens.weight"`},
		{"shape", func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return setKV(k, archKey(keyEmbedding), Of(uint32(16))), ts
		}, "the architecture needs"},
	}
	for _, c := range cases {
		path := llamaFile(t, c.edit)
		m, err := Load(path)
		if err == nil {
			m.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: got %v, want an error containing %q and the path", c.name, err, c.want)
		}
	}
}

// Older files and other converters spell a few things differently.
func TestLoadVariants(t *testing.T) {
	path := llamaFile(t, func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
		k = dropKV(k, archKey(keyRopeType))
		k = dropKV(k, archKey(keyRopeFactor))
		k = setKV(k, archKey(keyRopeLinear), Of(float32(2)))
		k = setKV(k, archKey(keyHeads), ArrayOf([]uint32{2, 2})) // uniform array
		k = dropKV(k, archKey(keyKeyLength))                     // 8 / 2 heads = 4
		k = setKV(k, KeyTokUNK, Of(int32(-1)))
		k = setKV(k, KeyTokEOS, Of(uint32(math.MaxUint32)))
		k = setKV(k, archKey(keyRMSEps), Of(1e-6)) // float64
		return k, ts
	})
	m, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config
	if c.RopeScaling == nil || *c.RopeScaling != (ir.RopeScaling{Type: "linear", Factor: 2, OriginalMaxPos: 16}) {
		t.Errorf("rope scaling %+v", c.RopeScaling)
	}
	if c.Layers[1].Heads != 2 || c.Layers[0].HeadDim != 4 || c.EOS != -1 || m.Tokenizer.UNK != -1 || c.NormEps != 1e-6 {
		t.Errorf("config %+v, UNK %d", c, m.Tokenizer.UNK)
	}
}

// Tied detection: output.weight equal to token_embd.weight is tied; a
// single differing byte is not.
func TestTiedDetection(t *testing.T) {
	for _, differ := range []bool{false, true} {
		path := llamaFile(t, func(k []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			emb, out := -1, -1
			for i := range ts {
				switch ts[i].Name {
				case "token_embd.weight":
					emb = i
				case "output.weight":
					out = i
				}
			}
			src := ts[emb].Data
			ts[out].Data = func() ([]byte, error) {
				b, err := src()
				b = append([]byte(nil), b...)
				if differ {
					b[len(b)-1] ^= 1
				}
				return b, err
			}
			return k, ts
		})
		m, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if m.Config.Tied == differ {
			t.Errorf("differ=%v: tied=%v", differ, m.Config.Tied)
		}
		m.Close()
	}
}

func TestNameMapping(t *testing.T) {
	for canon, g := range map[string]string{
		ir.NameEmbed:                     "token_embd.weight",
		ir.NameFinalNorm:                 "output_norm.weight",
		ir.NameClassifier:                "output.weight",
		ir.LayerName(0, ir.RoleAttnNorm): "blk.0.attn_norm.weight",
		ir.LayerName(12, ir.RoleO):       "blk.12.attn_output.weight",
		ir.LayerName(3, ir.RoleMLPNorm):  "blk.3.ffn_norm.weight",
		ir.LayerName(7, ir.RoleDown):     "blk.7.ffn_down.weight",
	} {
		if got, ok := GGUFName(canon); !ok || got != g {
			t.Errorf("GGUFName(%q) = %q", canon, got)
		}
		if got, _, ok := CanonicalName(g); !ok || got != canon {
			t.Errorf("CanonicalName(%q) = %q", g, got)
		}
	}
	for _, bad := range []string{"blk.01.attn_q.weight", "blk.-1.attn_q.weight", "blk.1.attn_q.bias", "blk.1.attn_qkv.weight", "rope_freqs.weight", "blk.99999999999.attn_q.weight"} {
		if n, _, ok := CanonicalName(bad); ok {
			t.Errorf("CanonicalName(%q) = %q, want no mapping", bad, n)
		}
	}
}

func TestLoadTruncatedStories(t *testing.T) {
	data, err := os.ReadFile(dataFile(t, storiesDir+"stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, c := range []struct {
		n    int
		want string
	}{
		{len(data) - 1000, `tensor "blk.4.ffn_up.weight": data at file bytes [1141088, 1185120)`}, // the last tensors' data cut
		{5000, `tokenizer.ggml.tokens`}, // inside the vocabulary
		{2, "offset 0: not a GGUF file"},
	} {
		path := filepath.Join(dir, fmt.Sprintf("cut%d.gguf", c.n))
		if err := os.WriteFile(path, data[:c.n], 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Load(path)
		if err == nil {
			m.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path+": offset ") {
			t.Errorf("cut at %d: got %v, want an error with the path, an offset and %q", c.n, err, c.want)
		}
	}
}
