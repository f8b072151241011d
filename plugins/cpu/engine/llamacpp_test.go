package engine

import (
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

// familyFixtures is where ir keeps one tiny checkpoint per family in its
// Hugging Face layout, with llama.cpp's own f32 conversion of four of them
// (gen.py there).
const familyFixtures = "../../../ir/testdata/families"

// fixtureModel loads a family fixture through the Hugging Face reader.
func fixtureModel(t *testing.T, fam string) *ir.Model {
	t.Helper()
	m, err := hf.Load(filepath.Join(familyFixtures, fam))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestFamilyFixturesMatchRef64 compares the engine's logits on every
// family fixture (Gemma 2's with its 26 layers) with the float64 decoder,
// over sequences longer than the fixtures' sliding windows.
func TestFamilyFixturesMatchRef64(t *testing.T) {
	const rows, length = 2, 24
	for _, fam := range []string{"llama3", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "mixtral", "qwen2_moe", "qwen3_moe"} {
		t.Run(fam, func(t *testing.T) {
			m := fixtureModel(t, fam)
			ref, err := decoder64.Load(m)
			if err != nil {
				t.Fatal(err)
			}
			p, err := FromIR(m)
			if err != nil {
				t.Fatal(err)
			}
			toks := randomTokens(rand.New(rand.NewPCG(8, 10)), rows*length, m.Config.Vocab)
			got := engineLogits(t, p, toks, rows, length)
			v := m.Config.Vocab
			for r := 0; r < rows; r++ {
				seq := make([]int, length)
				for i := range seq {
					seq[i] = int(toks[r*length+i])
				}
				for pos, want := range ref.Forward(seq, nil, nil) {
					row := got[(r*length+pos)*v : (r*length+pos+1)*v]
					var scale float64
					for _, w := range want {
						scale = max(scale, math.Abs(w))
					}
					for j, w := range want {
						if d := math.Abs(float64(row[j]) - w); d > 1e-4*scale+1e-6 {
							t.Fatalf("sequence %d position %d logit %d: %v, float64 reference %v", r, pos, j, row[j], w)
						}
					}
				}
			}
		})
	}
}

// engineLogits runs an inference engine over tokens [rows, length] and
// returns every row's logits.
func engineLogits(t *testing.T, p *Params, toks []int32, rows, length int) []float32 {
	t.Helper()
	e, err := New(p, Options{Threads: 2, Inference: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Forward(toks, rows, length); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, rows*length*p.Config.Vocab)
	if err := e.Logits(0, rows*length, got); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestFamilyFixturesMatchLlamaCpp runs the engine and llama.cpp (on its
// own conversion of the same checkpoint) over the same tokens, for the
// families this llama.cpp runs: Llama 3, Mistral, Qwen2 (biases),
// Gemma 2 (every Gemma option: norm offset, embedding scale, GeGLU, post
// norms, query scalar, both soft caps, alternating sliding windows shorter
// than the sequences) and Mixtral (routed experts, renormalized top-2). llama.cpp keeps its KV cache in f16, so logits agree
// to a few hundredths and the mean NLL to about 1e-4.
func TestFamilyFixturesMatchLlamaCpp(t *testing.T) {
	bin := shareddata.LlamaCpp(t, "llama-logits")
	const rows, length = 2, 48
	for _, fam := range []string{"llama3", "mistral", "qwen2", "gemma2", "mixtral"} {
		t.Run(fam, func(t *testing.T) {
			m := fixtureModel(t, fam)
			v := m.Config.Vocab
			r := rand.New(rand.NewPCG(8, 9))
			toks := make([]int32, rows*length)
			for i := range toks {
				toks[i] = int32(3 + r.IntN(v-3))
			}
			dir := t.TempDir()
			tokPath, out := filepath.Join(dir, "tokens.npy"), filepath.Join(dir, "logits.npy")
			if err := npy.WriteInt32(tokPath, []int{rows, length}, toks); err != nil {
				t.Fatal(err)
			}
			gguf := filepath.Join(familyFixtures, fam+"-llamacpp.gguf")
			if b, err := exec.Command(bin, gguf, tokPath, out, "1").CombinedOutput(); err != nil {
				t.Fatalf("llama-logits %s: %v\n%s", gguf, err, b)
			}
			a, err := npy.Read(out)
			if err != nil {
				t.Fatal(err)
			}
			want, err := a.Float32()
			if err != nil {
				t.Fatal(err)
			}

			p, err := FromIR(m)
			if err != nil {
				t.Fatal(err)
			}
			got := engineLogits(t, p, toks, rows, length)
			if len(want) != len(got) {
				t.Fatalf("llama.cpp gave %d logits, want %d", len(want), len(got))
			}
			var worst, scale float64
			for i := range got {
				worst = max(worst, math.Abs(float64(got[i]-want[i])))
				scale = max(scale, math.Abs(float64(want[i])))
			}
			nll := func(z []float32) float64 {
				var s float64
				for row := 0; row < rows; row++ {
					for p := 0; p+1 < length; p++ {
						i := row*length + p
						lz := make([]float64, v)
						for j := range lz {
							lz[j] = float64(z[i*v+j])
						}
						s -= logSoftmax64(lz, 1)[toks[i+1]]
					}
				}
				return s / float64(rows*(length-1))
			}
			gn, wn := nll(got), nll(want)
			t.Logf("max |Δlogit| %.3g (largest |logit| %.3g), mean NLL %.6f vs llama.cpp %.6f", worst, scale, gn, wn)
			if worst > 0.05 {
				t.Errorf("max |Δlogit| = %g against llama.cpp", worst)
			}
			if math.Abs(gn-wn) > 3e-4 {
				t.Errorf("mean NLL %v, llama.cpp %v", gn, wn)
			}
		})
	}
}
