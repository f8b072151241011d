package gguf

import (
	"bytes"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// The llama3 fixtures (gen_llama31.py): a tiny random checkpoint in Llama
// 3.1's Hugging Face layout and llama.cpp's own conversion of it.
const (
	llama31HF    = "testdata/llama31"
	llama31Conv  = "testdata/llama31-llamacpp.gguf"
	llama31Scale = "llama3"
)

// exportLlama31 loads the HF fixture and writes whittle's F32 GGUF of it.
func exportLlama31(t *testing.T) (*ir.Model, string) {
	t.Helper()
	m, err := hf.Load(llama31HF)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if s := m.Config.RopeScaling; s == nil || s.Type != llama31Scale {
		t.Fatalf("fixture rope scaling %+v, want llama3", s)
	}
	path := filepath.Join(t.TempDir(), "whittle.gguf")
	f32 := ir.F32
	if err := Save(m, path, SaveOptions{DType: &f32}); err != nil {
		t.Fatal(err)
	}
	return m, path
}

func openGGUF(t *testing.T, path string) *File {
	t.Helper()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestLlama3ExportMatchesConverter compares whittle's export of the HF
// fixture with llama.cpp's converter output: the rope_freqs tensor (and
// every other tensor) bitwise, and the llama.rope.* metadata.
func TestLlama3ExportMatchesConverter(t *testing.T) {
	_, path := exportLlama31(t)
	got, want := openGGUF(t, path), openGGUF(t, llama31Conv)

	ropeKeys := func(f *File) map[string]string {
		out := map[string]string{}
		for _, kv := range f.KVs {
			if strings.HasPrefix(kv.Key, archLlama+".rope.") {
				out[kv.Key] = kv.Value.String()
			}
		}
		return out
	}
	if g, w := ropeKeys(got), ropeKeys(want); !reflect.DeepEqual(g, w) {
		t.Errorf("rope metadata:\nwhittle   %v\nllama.cpp %v", g, w)
	}
	if len(want.Tensors) != len(got.Tensors) {
		t.Errorf("%d tensors, llama.cpp %d", len(got.Tensors), len(want.Tensors))
	}
	for i := range want.Tensors {
		wi := &want.Tensors[i]
		gi, ok := got.Info(wi.Name)
		if !ok {
			t.Errorf("tensor %s missing from whittle's export", wi.Name)
			continue
		}
		if gi.Type != wi.Type || !slices.Equal(gi.Dims, wi.Dims) {
			t.Errorf("tensor %s: %s %v, llama.cpp %s %v", wi.Name, gi.Type, gi.Dims, wi.Type, wi.Dims)
			continue
		}
		a, err := got.raw(gi)
		if err != nil {
			t.Fatal(err)
		}
		b, err := want.raw(wi)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("tensor %s differs from llama.cpp's", wi.Name)
		}
	}
	if _, ok := want.Info(tensorRopeFreqs); !ok {
		t.Fatalf("the converter's fixture has no %s", tensorRopeFreqs)
	}
}

// TestLlama3ReadBack reads both files, whittle's and the converter's, back
// into the IR: the scaling is the HF config's, RoPE frequencies agree
// with the file's divisors, and tensors equal the HF checkpoint's.
func TestLlama3ReadBack(t *testing.T) {
	src, path := exportLlama31(t)
	for name, p := range map[string]string{"whittle": path, "llama.cpp": llama31Conv} {
		t.Run(name, func(t *testing.T) {
			m, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if !reflect.DeepEqual(m.Config, src.Config) {
				t.Errorf("config\n got %+v %+v\nwant %+v %+v", m.Config, m.Config.RopeScaling, src.Config, src.Config.RopeScaling)
			}
			for n, want := range src.Tensors {
				got, ok := m.Tensors[n]
				if !ok {
					t.Errorf("tensor %s missing", n)
					continue
				}
				a, err := got.Float32()
				if err != nil {
					t.Fatal(err)
				}
				b, err := want.Float32()
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(a, b) || !slices.Equal(got.Shape, want.Shape) {
					t.Errorf("tensor %s differs", n)
				}
			}
			if len(m.Tensors) != len(src.Tensors) {
				t.Errorf("%d tensors, want %d", len(m.Tensors), len(src.Tensors))
			}
			checkInvFreq(t, openGGUF(t, p), &m.Config)
		})
	}
}

// checkInvFreq compares whittle's RoPE frequencies for c with llama.cpp's:
// base^(-2i/d) divided by the file's rope_freqs, to float32 precision.
func checkInvFreq(t *testing.T, f *File, c *ir.Config) {
	t.Helper()
	ff, err := f.Tensor(tensorRopeFreqs)
	if err != nil {
		t.Fatal(err)
	}
	div, err := ff.Float32()
	if err != nil {
		t.Fatal(err)
	}
	hd := c.Layers[0].HeadDim
	got := c.RopeInvFreq(hd)
	for i, d := range div {
		want := math.Pow(c.RopeTheta, -float64(2*i)/float64(hd)) / float64(d)
		if math.Abs(got[i]-want) > 1e-6*want {
			t.Errorf("pair %d: whittle frequency %g, llama.cpp %g", i, got[i], want)
		}
	}
}

// TestLlama3Parameters round-trips llama3 scalings through GGUF: these
// come back exactly (an original context other than the converter's 8192
// is recorded in rope.scaling.original_context_length); in general the
// parameters come back as ones that give the same frequencies (the tensor
// fixes only the factor and the two wavelength thresholds).
func TestLlama3Parameters(t *testing.T) {
	for _, tc := range []struct {
		name  string
		theta float64
		hd    int
		s     ir.RopeScaling
		exact bool
	}{
		{"llama 3.1 8B", 500000, 128, ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 8192}, true},
		{"llama 3.2 1B", 500000, 64, ir.RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 8192}, true},
		{"other factors", 500000, 128, ir.RopeScaling{Type: "llama3", Factor: 16, LowFreqFactor: 2, HighFreqFactor: 8, OriginalMaxPos: 8192}, true},
		{"other context", 10000, 128, ir.RopeScaling{Type: "llama3", Factor: 4, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 2048}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := randomModel(t, ir.Config{
				Arch: "llama", Vocab: 8, Hidden: 16, NormEps: 1e-5, RopeTheta: tc.theta, RopeScaling: &tc.s,
				MaxSeq: 131072, BOS: 1, EOS: 2, Layers: ir.UniformLayers(1, ir.LayerConfig{Heads: 2, KVHeads: 1, HeadDim: tc.hd, MLP: 8}),
			})
			got, path := saveLoad(t, m, SaveOptions{})
			gs := got.Config.RopeScaling
			if tc.exact && (gs == nil || *gs != tc.s) {
				t.Errorf("scaling %+v, want %+v", gs, tc.s)
			}
			checkInvFreq(t, openGGUF(t, path), &got.Config)
			want := m.Config.RopeInvFreq(tc.hd)
			for i, g := range got.Config.RopeInvFreq(tc.hd) {
				if math.Abs(g-want[i]) > 1e-6*want[i] {
					t.Errorf("pair %d: frequency %g after the round trip, %g before", i, g, want[i])
				}
			}
		})
	}
}

// randomModel is a model of config c with random weights.
func randomModel(t *testing.T, c ir.Config) *ir.Model {
	return irtest.RandomModel(t, c, rand.New(rand.NewPCG(3, 4)))
}

// TestLlama3LoadErrors: rope_freqs that no llama3 scaling explains, of the
// wrong size or type, or next to linear scaling metadata are refused.
func TestLlama3LoadErrors(t *testing.T) {
	freqs := func(v ...float32) WriteTensor {
		return WriteTensor{Name: tensorRopeFreqs, Type: GGMLF32, Shape: []int{len(v)}, Data: func() ([]byte, error) { return float32Bytes(v), nil }}
	}
	for _, tc := range []struct {
		name string
		edit func(kvs []KV, ts []WriteTensor) ([]KV, []WriteTensor)
		want string
	}{
		{"not llama3", func(kvs []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return dropKV(kvs, archKey(keyRopeFactor)), append(ts, freqs(3, 1))
		}, "no llama3 scaling"},
		{"wrong length", func(kvs []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return dropKV(kvs, archKey(keyRopeFactor)), append(ts, freqs(1, 2, 8))
		}, "half the head size"},
		{"with linear", func(kvs []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			return kvs, append(ts, freqs(1, 8))
		}, "both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(llamaFile(t, tc.edit))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	// All-ones divisors are no scaling.
	m, err := Load(llamaFile(t, func(kvs []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
		return dropKV(kvs, archKey(keyRopeFactor)), append(ts, freqs(1, 1))
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Config.RopeScaling != nil {
		t.Errorf("all-ones rope_freqs read as %+v", m.Config.RopeScaling)
	}
}

// TestLlama3LogitsMatchLlamaCpp runs llama.cpp's forward pass on whittle's
// export and on llama.cpp's own conversion of the same HF checkpoint.
func TestLlama3LogitsMatchLlamaCpp(t *testing.T) {
	bin := shareddata.LlamaCpp(t, "llama-logits")
	_, path := exportLlama31(t)
	dir := t.TempDir()
	const rows, length = 2, 256
	r := rand.New(rand.NewPCG(5, 6))
	toks := make([]int32, rows*length)
	for i := range toks {
		toks[i] = int32(3 + r.IntN(509))
	}
	tokPath := filepath.Join(dir, "tokens.npy")
	if err := npy.WriteInt32(tokPath, []int{rows, length}, toks); err != nil {
		t.Fatal(err)
	}
	_, got := llamaLogits(t, bin, path, tokPath)
	_, want := llamaLogits(t, bin, llama31Conv, tokPath)
	if len(got) != rows*length*512 || len(got) != len(want) {
		t.Fatalf("%d and %d logits, want %d", len(got), len(want), rows*length*512)
	}
	var worst float64
	for i := range got {
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
	}
	if worst > 1e-4 {
		t.Errorf("max |Δlogit| = %g between whittle's export and llama.cpp's conversion", worst)
	}
}
