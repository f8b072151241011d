package gguf

import (
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
)

// forward64 is a plain float64 forward pass of one sequence through an IR
// model, written from the IR's documented semantics (ir.Config) and
// nothing else, for checking that a model read from GGUF is the model
// llama.cpp runs. It returns the logits, [len(toks)][vocab].
func forward64(t *testing.T, m *ir.Model, toks []int32) [][]float64 {
	t.Helper()
	c := &m.Config
	get := func(name string) []float64 {
		if name == "" {
			return nil
		}
		tt, err := m.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tt.Float32()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	matvec := func(w, x []float64, bias []float64) []float64 {
		out := make([]float64, len(w)/len(x))
		for r := range out {
			var s float64
			for j, xj := range x {
				s += w[r*len(x)+j] * xj
			}
			if bias != nil {
				s += bias[r]
			}
			out[r] = s
		}
		return out
	}
	norm := func(x, w []float64) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		r := 1 / math.Sqrt(ss/float64(len(x))+c.NormEps)
		out := make([]float64, len(x))
		for i, v := range x {
			out[i] = v * r * (c.NormOffset + w[i])
		}
		return out
	}
	softcap := func(x, limit float64) float64 {
		if limit > 0 {
			return limit * math.Tanh(x/limit)
		}
		return x
	}
	act := func(g float64) float64 {
		if c.Activation() == ir.ActGELUTanh {
			return 0.5 * g * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(g+0.044715*g*g*g)))
		}
		return g / (1 + math.Exp(-g))
	}
	embed := get(ir.NameEmbed)
	cls := embed
	if !c.Tied {
		cls = get(ir.NameClassifier)
	}
	n, d := len(toks), c.Hidden
	xs := make([][]float64, n)
	for p, tok := range toks {
		xs[p] = append([]float64(nil), embed[int(tok)*d:(int(tok)+1)*d]...)
		if c.EmbedScale {
			s := float64(float32(math.Sqrt(float64(d))))
			for i := range xs[p] {
				xs[p][i] *= s
			}
		}
	}
	for li, l := range c.Layers {
		lt := c.LayerTensors(li)
		an, q, k, v, o := get(lt.AttnNorm), get(lt.Q), get(lt.K), get(lt.V), get(lt.O)
		bq, bk, bv, qn, kn := get(lt.QBias), get(lt.KBias), get(lt.VBias), get(lt.QNorm), get(lt.KNorm)
		apn, mn, gate, up, down, mpn := get(lt.AttnPostNorm), get(lt.MLPNorm), get(lt.Gate), get(lt.Up), get(lt.Down), get(lt.MLPPostNorm)
		hd, freq, group := l.HeadDim, c.RopeInvFreq(l.HeadDim), l.GroupSize()
		rope := func(x []float64, heads, pos int, w []float64) {
			for h := 0; h < heads; h++ {
				head := x[h*hd : (h+1)*hd]
				if w != nil {
					copy(head, norm(head, w))
				}
				for i := 0; i < hd/2; i++ {
					sin, cos := math.Sincos(float64(pos) * freq[i])
					a, b := head[i], head[i+hd/2]
					head[i], head[i+hd/2] = a*cos-b*sin, a*sin+b*cos
				}
			}
		}
		qs, ks, vs := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for p := range xs {
			h := norm(xs[p], an)
			qs[p], ks[p], vs[p] = matvec(q, h, bq), matvec(k, h, bk), matvec(v, h, bv)
			rope(qs[p], l.Heads, p, qn)
			rope(ks[p], l.KVHeads, p, kn)
		}
		for p := range xs {
			att := make([]float64, l.Heads*hd)
			for h := 0; h < l.Heads; h++ {
				kvh := h / group
				scores := make([]float64, p+1)
				top := math.Inf(-1)
				for j := 0; j <= p; j++ {
					if l.Window > 0 && j <= p-l.Window {
						scores[j] = math.Inf(-1)
						continue
					}
					var s float64
					for i := 0; i < hd; i++ {
						s += qs[p][h*hd+i] * ks[j][kvh*hd+i]
					}
					scores[j] = softcap(s*c.AttnScale(hd), c.AttnSoftCap)
					top = max(top, scores[j])
				}
				var sum float64
				for j := range scores {
					scores[j] = math.Exp(scores[j] - top)
					sum += scores[j]
				}
				for j := range scores {
					for i := 0; i < hd; i++ {
						att[h*hd+i] += scores[j] / sum * vs[j][kvh*hd+i]
					}
				}
			}
			xs[p] = append(xs[p][:0:0], xs[p]...)
			ao := matvec(o, att, nil)
			if apn != nil {
				ao = norm(ao, apn)
			}
			for i := range ao {
				xs[p][i] += ao[i]
			}
			h := norm(xs[p], mn)
			g, u := matvec(gate, h, nil), matvec(up, h, nil)
			for i := range g {
				g[i] = act(g[i]) * u[i]
			}
			dn := matvec(down, g, nil)
			if mpn != nil {
				dn = norm(dn, mpn)
			}
			for i := range dn {
				xs[p][i] += dn[i]
			}
		}
	}
	fn := get(ir.NameFinalNorm)
	out := make([][]float64, n)
	for p := range xs {
		out[p] = matvec(cls, norm(xs[p], fn), nil)
		for i := range out[p] {
			out[p][i] = softcap(out[p][i], c.FinalSoftCap)
		}
	}
	return out
}

// TestFamiliesReadAsLlamaCppRuns: the IR model read from llama.cpp's
// conversion of each fixture computes llama.cpp's logits on that file
// (forward64 against llama-logits), so the family options Load derives
// from the architecture (Gemma 2's windows on even layers, its query
// scaling, caps, norm offset, embedding scale and GeGLU; Qwen2's biases)
// are the computation llama.cpp does. llama.cpp keeps its KV cache in
// f16 and computes GELU from an f16 table, hence the tolerance: 0.05
// (measured: 0.003 to 0.01 for llama3, mistral, qwen2, 0.032 for the
// 26-layer gemma2), while a wrong option (a window one longer or
// shorter, on the odd layers or absent, another query scaling, no
// attention cap) moves Gemma 2's logits by 0.3 or more.
func TestFamiliesReadAsLlamaCppRuns(t *testing.T) {
	bin := shareddata.LlamaCpp(t, "llama-logits")
	const length, vocab = 12, 512
	r := rand.New(rand.NewPCG(9, 10))
	toks := make([]int32, length)
	for i := range toks {
		toks[i] = int32(3 + r.IntN(vocab-3))
	}
	dir := t.TempDir()
	tokPath := filepath.Join(dir, "tokens.npy")
	if err := npy.WriteInt32(tokPath, []int{1, length}, toks); err != nil {
		t.Fatal(err)
	}
	for _, fam := range llamaCppFamilies {
		t.Run(fam, func(t *testing.T) {
			path := filepath.Join(familiesDir, fam+"-llamacpp.gguf")
			out := filepath.Join(dir, fam+".npy")
			if b, err := exec.Command(bin, path, tokPath, out, "1").CombinedOutput(); err != nil {
				t.Fatalf("llama-logits %s: %v\n%s", path, err, b)
			}
			a, err := npy.Read(out)
			if err != nil {
				t.Fatal(err)
			}
			want, err := a.Float32()
			if err != nil {
				t.Fatal(err)
			}
			m, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got := forward64(t, m, toks)
			var worst float64
			for p := range got {
				for i, g := range got[p] {
					worst = max(worst, math.Abs(g-float64(want[p*vocab+i])))
				}
			}
			if worst > 0.05 {
				t.Errorf("max |Δlogit| = %g between the IR model read from llama.cpp's file and llama.cpp", worst)
			}
		})
	}
}
