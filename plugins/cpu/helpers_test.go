package cpu

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/modelio"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

var tmpRoot string

func TestMain(m *testing.M) {
	var err error
	if tmpRoot, err = os.MkdirTemp("", "whittle-cpu-test-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

// sharedData finds shared/data/rel above the package directory, or skips.
func sharedData(t testing.TB, rel string) string {
	t.Helper()
	return shareddata.Path(t, rel)
}

// storiesFixture is stories260K saved as a Hugging Face directory, its IR,
// reference model, and token streams of TinyStories paragraphs.
type storiesFixture struct {
	dir        string
	m          *ir.Model
	ref        *reference.Model
	paragraphs [][]int // BOS + encoded text
}

var (
	storiesOnce sync.Once
	stories     *storiesFixture
	storiesErr  error
)

func loadStories(t testing.TB) *storiesFixture {
	t.Helper()
	bin := sharedData(t, "models/stories260K/stories260K.bin")
	text := sharedData(t, "corpora/tinystories_val.txt")
	storiesOnce.Do(func() {
		src, err := modelio.Load(bin, modelio.LoadOptions{})
		if err != nil {
			storiesErr = err
			return
		}
		defer src.Close()
		dir := filepath.Join(tmpRoot, "stories260K")
		if storiesErr = hf.Save(src, dir, hf.SaveOptions{}); storiesErr != nil {
			return
		}
		f := &storiesFixture{dir: dir}
		if f.m, storiesErr = hf.Load(dir); storiesErr != nil {
			return
		}
		if f.ref, storiesErr = reference.Load(f.m); storiesErr != nil {
			return
		}
		raw, err := os.ReadFile(text)
		if err != nil {
			storiesErr = err
			return
		}
		for _, p := range strings.Split(string(raw), "\n\n") {
			if p = strings.TrimSpace(p); p != "" {
				f.paragraphs = append(f.paragraphs, f.m.Tokenizer.Encode(p, true, false))
			}
			if len(f.paragraphs) == 64 {
				break
			}
		}
		stories = f
	})
	if storiesErr != nil {
		t.Fatal(storiesErr)
	}
	return stories
}

// sequences cuts the concatenated paragraphs into n rows of l tokens and
// writes them as an .npy file.
func (f *storiesFixture) sequences(t testing.TB, n, l int) (string, [][]int) {
	t.Helper()
	var stream []int
	for _, p := range f.paragraphs {
		stream = append(stream, p...)
	}
	if len(stream) < n*l {
		t.Fatalf("only %d tokens for %d×%d", len(stream), n, l)
	}
	rows := make([][]int, n)
	flat := make([]int32, n*l)
	for i := range rows {
		rows[i] = stream[i*l : (i+1)*l]
		for j, id := range rows[i] {
			flat[i*l+j] = int32(id)
		}
	}
	path := filepath.Join(t.TempDir(), "tokens.npy")
	if err := npy.WriteInt32(path, []int{n, l}, flat); err != nil {
		t.Fatal(err)
	}
	return path, rows
}

func newBackend(t testing.TB) *Backend {
	t.Helper()
	b, err := New(Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func load(t testing.TB, b *Backend, dir string) backend.ModelID {
	t.Helper()
	id, err := b.Load(context.Background(), backend.LoadRequest{Dir: dir, Trainable: true})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// refNLL is −log p(target) under the reference's logits, in float64.
func refNLL(logits []float32, target int) float64 {
	m := math.Inf(-1)
	for _, v := range logits {
		m = math.Max(m, float64(v))
	}
	var s float64
	for _, v := range logits {
		s += math.Exp(float64(v) - m)
	}
	return m + math.Log(s) - float64(logits[target])
}

// refScores runs one sequence through the reference and returns, per
// position p < len−1, −log p(tokens[p+1]) and the argmax.
func refScores(t testing.TB, rm *reference.Model, tokens []int) ([]float64, []int) {
	t.Helper()
	s := rm.NewSession(len(tokens))
	nll := make([]float64, len(tokens)-1)
	arg := make([]int, len(tokens)-1)
	for p := 0; p+1 < len(tokens); p++ {
		logits, err := s.Forward(tokens[p])
		if err != nil {
			t.Fatal(err)
		}
		nll[p] = refNLL(logits, tokens[p+1])
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		arg[p] = best
	}
	return nll, arg
}

// acts64 are one sequence's activations from the float64 forward, per
// layer and position.
type acts64 struct {
	in, ln1, ao, ln2, act, out [][][]float64
}

// forward64 is a plain float64 decoder forward of one sequence that keeps
// the activations the statistics read.
func forward64(t testing.TB, m *ir.Model, tokens []int) acts64 {
	t.Helper()
	w := func(name string) []float64 {
		tn, err := m.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	c := &m.Config
	d, n := c.Hidden, len(tokens)
	emb := w(ir.NameEmbed)
	xs := make([][]float64, n)
	for p, id := range tokens {
		xs[p] = append([]float64(nil), emb[id*d:(id+1)*d]...)
	}
	matvec := func(w, x []float64, out int) []float64 {
		y := make([]float64, out)
		for i := range y {
			for j, v := range x {
				y[i] += w[i*len(x)+j] * v
			}
		}
		return y
	}
	norm := func(x, g []float64) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		inv := 1 / math.Sqrt(ss/float64(len(x))+c.NormEps)
		y := make([]float64, len(x))
		for i := range x {
			y[i] = g[i] * x[i] * inv
		}
		return y
	}
	var a acts64
	for l, lc := range c.Layers {
		lw := func(role string) []float64 { return w(ir.LayerName(l, role)) }
		wq, wk, wv, wo := lw(ir.RoleQ), lw(ir.RoleK), lw(ir.RoleV), lw(ir.RoleO)
		g1, g2, wg, wu, wd := lw(ir.RoleAttnNorm), lw(ir.RoleMLPNorm), lw(ir.RoleGate), lw(ir.RoleUp), lw(ir.RoleDown)
		hd := lc.HeadDim
		inv := c.RopeInvFreq(hd)
		rope := func(v []float64, pos int) {
			for h := 0; h < len(v)/hd; h++ {
				for i := 0; i < hd/2; i++ {
					x0, x1 := v[h*hd+i], v[h*hd+i+hd/2]
					cs, sn := math.Cos(float64(pos)*inv[i]), math.Sin(float64(pos)*inv[i])
					v[h*hd+i], v[h*hd+i+hd/2] = x0*cs-x1*sn, x0*sn+x1*cs
				}
			}
		}
		in, ln1, ao, ln2, act, out := make([][]float64, n), make([][]float64, n), make([][]float64, n), make([][]float64, n), make([][]float64, n), make([][]float64, n)
		qs, ks, vs := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for p := range xs {
			in[p] = append([]float64(nil), xs[p]...)
			ln1[p] = norm(xs[p], g1)
			qs[p], ks[p], vs[p] = matvec(wq, ln1[p], lc.Heads*hd), matvec(wk, ln1[p], lc.KVHeads*hd), matvec(wv, ln1[p], lc.KVHeads*hd)
			rope(qs[p], p)
			rope(ks[p], p)
		}
		for p := range xs {
			ao[p] = make([]float64, lc.Heads*hd)
			for h := 0; h < lc.Heads; h++ {
				g := h / (lc.Heads / lc.KVHeads)
				sc := make([]float64, p+1)
				mx := math.Inf(-1)
				for j := range sc {
					for i := 0; i < hd; i++ {
						sc[j] += qs[p][h*hd+i] * ks[j][g*hd+i]
					}
					sc[j] /= math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := range sc {
					for i := 0; i < hd; i++ {
						ao[p][h*hd+i] += sc[j] / sum * vs[j][g*hd+i]
					}
				}
			}
			o := matvec(wo, ao[p], d)
			for i := range o {
				xs[p][i] += o[i]
			}
			ln2[p] = norm(xs[p], g2)
			gt, up := matvec(wg, ln2[p], lc.MLP), matvec(wu, ln2[p], lc.MLP)
			act[p] = make([]float64, lc.MLP)
			for i := range gt {
				act[p][i] = gt[i] / (1 + math.Exp(-gt[i])) * up[i]
			}
			o = matvec(wd, act[p], d)
			for i := range o {
				xs[p][i] += o[i]
			}
			out[p] = append([]float64(nil), xs[p]...)
		}
		a.in, a.ln1, a.ao, a.ln2, a.act, a.out = append(a.in, in), append(a.ln1, ln1), append(a.ao, ao), append(a.ln2, ln2), append(a.act, act), append(a.out, out)
	}
	return a
}

func closeRel(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}
