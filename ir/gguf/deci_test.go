package gguf

import (
	"bytes"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
)

// nonUniformLlama3 is the llama3 fixture (llama3 RoPE scaling, untied)
// pruned to different widths per layer: MLP 48 → 32 and 16 neurons, KV
// groups 2 → 2 and 1 (layer 1 keeps group 1 with its two query heads).
func nonUniformLlama3(t *testing.T) *ir.Model {
	t.Helper()
	m := hfModel(t, "llama3")
	sel := ir.Selection{
		MLP:   map[int][]int{0: seq(0, 32, 1), 1: seq(1, 48, 3)},
		Heads: map[int][]int{1: {2, 3}},
	}
	p, err := m.Keep(sel)
	if err != nil {
		t.Fatal(err)
	}
	if p.Config.Uniform() {
		t.Fatal("pruned fixture is uniform")
	}
	return p
}

func seq(from, to, step int) []int {
	var out []int
	for i := from; i < to; i += step {
		out = append(out, i)
	}
	return out
}

// A non-uniform Llama-family model is written as deci, with every size
// as a per-layer int32 array (as llama.cpp's DeciModel converter writes
// them), and reads back as the same Llama model.
func TestDeciRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    func(t *testing.T) *ir.Model
		opts SaveOptions
		arch string
	}{
		{"non-uniform", nonUniformLlama3, SaveOptions{}, archDeci},
		{"uniform asked as deci", func(t *testing.T) *ir.Model { return hfModel(t, "llama3") }, SaveOptions{Deci: true}, archDeci},
		{"uniform", func(t *testing.T) *ir.Model { return hfModel(t, "llama3") }, SaveOptions{}, archLlama},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.m(t)
			got, path := saveLoad(t, m, tc.opts)
			if !reflect.DeepEqual(got.Config, m.Config) {
				t.Fatalf("config\n got %+v\nwant %+v", got.Config, m.Config)
			}
			for name, want := range m.Tensors {
				w, _ := want.Convert(ir.F32)
				g, _ := got.Tensors[name].Convert(ir.F32)
				a, _ := w.Bytes()
				b, _ := g.Bytes()
				if !bytes.Equal(a, b) {
					t.Errorf("%s changed in the round trip", name)
				}
			}
			f := openGGUF(t, path)
			if v, _ := f.Get(KeyArchitecture); !v.Equal(Of(tc.arch)) {
				t.Errorf("architecture %s, want %s", v, tc.arch)
			}
			if tc.arch != archDeci {
				return
			}
			for key, get := range map[string]func(ir.LayerConfig) int{
				keyFFN:     func(l ir.LayerConfig) int { return l.MLP },
				keyHeads:   func(l ir.LayerConfig) int { return l.Heads },
				keyKVHeads: func(l ir.LayerConfig) int { return l.KVHeads },
			} {
				var want []int32
				for _, l := range m.Config.Layers {
					want = append(want, int32(get(l)))
				}
				if v, _ := f.Get(archKeyOf(archDeci, key)); !v.Equal(ArrayOf(want)) {
					t.Errorf("%s = %s, want %v", key, v, want)
				}
			}
			if _, ok := f.Info(tensorRopeFreqs); !ok {
				t.Errorf("no %s: llama3 scaling is lost", tensorRopeFreqs)
			}
		})
	}
}

// Only the Llama family has a deci form; the other families' llama.cpp
// architectures size every layer alike.
func TestDeciRejects(t *testing.T) {
	m := hfModel(t, "qwen2")
	path := filepath.Join(t.TempDir(), "x.gguf")
	if err := Save(m, path, SaveOptions{Deci: true}); err == nil || !strings.Contains(err.Error(), "deci") {
		t.Errorf("qwen2 as deci: %v", err)
	}
	p, err := m.KeepMLP(0, seq(0, 16, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(p, path, SaveOptions{}); err == nil || !strings.Contains(err.Error(), "layers differ") {
		t.Errorf("non-uniform qwen2: %v", err)
	}
	// A deci layer whittle cannot run (attention-free) is refused on read.
	deci := filepath.Join(t.TempDir(), "deci.gguf")
	kvs, ts, err := saveLayout(nonUniformLlama3(t), deci, SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kvs = setKV(kvs, archKeyOf(archDeci, keyKVHeads), ArrayOf([]int32{2, 0}))
	if err := Write(deci, kvs, ts); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(deci); err == nil || !strings.Contains(err.Error(), "layer 1") {
		t.Errorf("deci layer with 0 KV heads: %v", err)
	}
}

// deciTokens writes rows of pseudo-random ids (BOS first) for llama-logits.
func deciTokens(t *testing.T, rows, cols, vocab int) (string, []int32) {
	r := rand.New(rand.NewPCG(21, 22))
	ids := make([]int32, rows*cols)
	for i := range ids {
		ids[i] = int32(3 + r.IntN(vocab-3))
		if i%cols == 0 {
			ids[i] = 1
		}
	}
	path := filepath.Join(t.TempDir(), "tokens.npy")
	if err := npy.WriteInt32(path, []int{rows, cols}, ids); err != nil {
		t.Fatal(err)
	}
	return path, ids
}

// meanNLL is llama-logits' summary: the mean next-token negative log
// likelihood over positions 1..cols-1 of every row.
func meanNLL(z []float64, ids []int32, rows, cols, vocab int) float64 {
	var sum float64
	for r := range rows {
		for p := range cols - 1 {
			row := z[(r*cols+p)*vocab : (r*cols+p+1)*vocab]
			mx := math.Inf(-1)
			for _, x := range row {
				mx = max(mx, x)
			}
			var s float64
			for _, x := range row {
				s += math.Exp(x - mx)
			}
			sum += mx + math.Log(s) - row[ids[r*cols+p+1]]
		}
	}
	return sum / float64(rows*(cols-1))
}

func widen(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// A deci file of a uniform model runs in llama.cpp exactly as the llama
// file of the same weights (its README: bitwise), and a non-uniform
// student's deci file runs as the float64 reference decoder computes the
// student (llama-logits keeps an f16 KV cache, hence the NLL and loose
// element bounds, as in cmd/whittle's family checks).
func TestDeciLogitsMatchLlamaCpp(t *testing.T) {
	bin := shareddata.LlamaCpp(t, "llama-logits")
	const rows, cols, vocab = 2, 24, 512
	toks, ids := deciTokens(t, rows, cols, vocab)
	f32 := ir.F32

	uniform := hfModel(t, "llama3")
	dir := t.TempDir()
	llama, deci := filepath.Join(dir, "llama.gguf"), filepath.Join(dir, "deci.gguf")
	if err := Save(uniform, llama, SaveOptions{DType: &f32}); err != nil {
		t.Fatal(err)
	}
	if err := Save(uniform, deci, SaveOptions{DType: &f32, Deci: true}); err != nil {
		t.Fatal(err)
	}
	_, a := llamaLogits(t, bin, llama, toks)
	_, b := llamaLogits(t, bin, deci, toks)
	if len(a) != rows*cols*vocab || len(a) != len(b) {
		t.Fatalf("%d and %d logits, want %d", len(a), len(b), rows*cols*vocab)
	}
	worst := maxDiff(a, b)
	if !(worst <= 1e-4) {
		t.Errorf("uniform model: llama.cpp on deci vs llama files: max |Δlogit| %.3g", worst)
	}
	t.Logf("uniform model: llama.cpp on deci vs llama files: max |Δlogit| %.3g", worst)

	student := nonUniformLlama3(t)
	path := filepath.Join(dir, "student.gguf")
	if err := Save(student, path, SaveOptions{DType: &f32}); err != nil {
		t.Fatal(err)
	}
	_, got := llamaLogits(t, bin, path, toks)
	d, err := decoder64.Load(student)
	if err != nil {
		t.Fatal(err)
	}
	var want []float64
	for r := range rows {
		row := make([]int, cols)
		for j := range row {
			row[j] = int(ids[r*cols+j])
		}
		for _, lg := range d.Forward(row, nil, nil) {
			want = append(want, lg...)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d logits from llama.cpp, %d from the reference", len(got), len(want))
	}
	var worstNU float64
	for i := range got {
		worstNU = max(worstNU, math.Abs(float64(got[i])-want[i]))
	}
	gotNLL, wantNLL := meanNLL(widen(got), ids, rows, cols, vocab), meanNLL(want, ids, rows, cols, vocab)
	if math.Abs(gotNLL-wantNLL) > 1e-3 || !(worstNU <= 0.2) {
		t.Errorf("non-uniform student: llama.cpp mean NLL %.6f, reference %.6f, max |Δlogit| %.3g", gotNLL, wantNLL, worstNU)
	}
	t.Logf("non-uniform student %v: llama.cpp mean NLL %.6f, reference %.6f, max |Δlogit| %.3g", student.Config.Layers, gotNLL, wantNLL, worstNU)
}

func maxDiff(a, b []float32) float64 {
	var worst float64
	for i := range a {
		worst = max(worst, math.Abs(float64(a[i]-b[i])))
	}
	return worst
}
