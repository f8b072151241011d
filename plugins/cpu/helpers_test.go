package cpu

import (
	"context"
	"fmt"
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
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
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

// loadModel puts an in-memory model into the backend as Load does with
// a directory (for architectures the Hugging Face reader does not cover).
func loadModel(t testing.TB, b *Backend, m *ir.Model) backend.ModelID {
	t.Helper()
	p, err := engine.FromIR(m)
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	id := backend.ModelID(fmt.Sprintf("m%d", b.next))
	b.models[id] = &model{id: id, params: p}
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

func closeRel(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}
