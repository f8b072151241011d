package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir/modelio"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

// storyTokens encodes the first rows stories of the TinyStories validation
// text with the model's tokenizer (BOS first) and keeps cols tokens of each.
func storyTokens(t *testing.T, data, model string, rows, cols int) []int32 {
	t.Helper()
	m, err := modelio.Load(model, modelio.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	text, err := os.ReadFile(filepath.Join(data, "corpora", "tinystories_val.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []int32
	for _, story := range strings.Split(string(text), "\n\n") {
		enc := m.Tokenizer.Encode(strings.TrimSpace(story), true, false)
		if len(enc) < cols {
			continue
		}
		for _, id := range enc[:cols] {
			ids = append(ids, int32(id))
		}
		if len(ids) == rows*cols {
			return ids
		}
	}
	t.Fatalf("fewer than %d stories of %d tokens", rows, cols)
	return nil
}

var lossRE = regexp.MustCompile(`rows (\d+) L (\d+) vocab (\d+) targets (\d+) loss (\S+) ppl`)

// summary parses the "rows … loss … ppl …" line both tools print.
func summary(t *testing.T, out string) (fields []string, loss float64) {
	t.Helper()
	m := lossRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary line in %q", out)
	}
	loss, err := strconv.ParseFloat(m[5], 64)
	if err != nil {
		t.Fatal(err)
	}
	return m[1:5], loss
}

func readFloats(t *testing.T, path string) ([]int, []float32) {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return a.Shape, v
}

// TestLogitsMatchesReferences compares `whittle logits` (the batched CPU
// engine) with two independent forward passes on the same GGUF and the same
// TinyStories tokens: package reference (one token at a time, llama2.c
// run.c's loop, all float32) element by element to 1e-4, and llama.cpp's
// llama-logits. That llama-logits build keeps llama.cpp's default f16 KV
// cache, which rounds K, V, Q·K's query and the attention probabilities to
// f16, so its logits sit ~1e-3–1e-1 from any float32 forward (0.06 at
// worst on these rows, 1e-3 already at position 0, where attention is just
// V); it is held to its mean NLL, and to a bound on the logits that a
// real defect (RoPE order, a missing norm) exceeds by orders of magnitude.
func TestLogitsMatchesReferences(t *testing.T) {
	data := sharedData(t)
	bin := shareddata.LlamaCpp(t, "llama-logits")
	dir := t.TempDir()
	model := filepath.Join(data, "models", "stories260K", "stories260K.gguf")
	const rows, cols, vocab = 4, 64, 512
	ids := storyTokens(t, data, model, rows, cols)
	toks := filepath.Join(dir, "tokens.npy")
	if err := npy.WriteInt32(toks, []int{rows, cols}, ids); err != nil {
		t.Fatal(err)
	}
	got := filepath.Join(dir, "got.npy")
	gotFields, gotLoss := summary(t, mustWhittle(t, "logits", model, toks, got, "--threads", "2"))
	gotShape, gotZ := readFloats(t, got)
	if want := []int{rows, cols, vocab}; !slices.Equal(gotShape, want) {
		t.Fatalf("shape %v, want %v", gotShape, want)
	}
	if math.IsNaN(gotLoss) || gotLoss <= 0 {
		t.Fatalf("mean NLL %v is not a positive number", gotLoss)
	}

	t.Run("reference", func(t *testing.T) {
		refZ, refLoss := referenceLogits(t, model, ids, rows, cols)
		worst, at := maxAbsDiff(gotZ, refZ)
		if !(worst <= 1e-4) {
			t.Errorf("max |Δ| %.3g at row %d, position %d, token %d (whittle %g, reference %g)",
				worst, at/(cols*vocab), at/vocab%cols, at%vocab, gotZ[at], refZ[at])
		}
		if math.Abs(gotLoss-refLoss) > 1e-5 {
			t.Errorf("mean NLL: whittle %.6f, reference %.6f", gotLoss, refLoss)
		}
		t.Logf("max |Δ| %.3g; mean NLL %.6f (reference %.6f)", worst, gotLoss, refLoss)
	})

	t.Run("llama.cpp", func(t *testing.T) {
		ref := filepath.Join(dir, "llamacpp.npy")
		out, err := exec.CommandContext(t.Context(), bin, model, toks, ref, "1").CombinedOutput()
		if err != nil {
			t.Fatalf("llama-logits: %v\n%s", err, out)
		}
		refFields, refLoss := summary(t, string(out))
		if !slices.Equal(gotFields, refFields) {
			t.Errorf("whittle counts %v, llama.cpp %v", gotFields, refFields)
		}
		if math.Abs(gotLoss-refLoss) > 1e-4 {
			t.Errorf("mean NLL: whittle %.6f, llama.cpp %.6f", gotLoss, refLoss)
		}
		refShape, refZ := readFloats(t, ref)
		if !slices.Equal(refShape, gotShape) {
			t.Fatalf("llama.cpp shape %v, whittle %v", refShape, gotShape)
		}
		worst, at := maxAbsDiff(gotZ, refZ)
		var ss float64
		for i := range refZ {
			d := float64(gotZ[i] - refZ[i])
			ss += d * d
		}
		rms := math.Sqrt(ss / float64(len(refZ)))
		if !(worst <= 0.2) || !(rms <= 1e-2) {
			t.Errorf("max |Δ| %.3g at row %d, position %d, token %d (whittle %g, llama.cpp %g), rms %.3g",
				worst, at/(cols*vocab), at/vocab%cols, at%vocab, gotZ[at], refZ[at], rms)
		}
		t.Logf("max |Δ| %.3g, rms %.3g; mean NLL %.6f (llama.cpp %.6f)", worst, rms, gotLoss, refLoss)
	})

	// The same tokens as int64, and the same weights in llama2.c format,
	// give the same bytes.
	toks64 := filepath.Join(dir, "tokens64.npy")
	raw := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		raw = binary.LittleEndian.AppendUint64(raw, uint64(int64(id)))
	}
	if err := npy.Write(toks64, npy.Header{Descr: "<i8", Shape: []int{rows, cols}}, raw); err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(dir, "again.npy")
	bin2c := filepath.Join(data, "models", "stories260K", "stories260K.bin")
	mustWhittle(t, "logits", bin2c, toks64, again, "--threads", "1")
	a, _ := os.ReadFile(got)
	b, _ := os.ReadFile(again)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("int64 tokens through the llama2.c file give other logits than int32 through the GGUF")
	}
	// OUT exists now: refused without --force, replaced with it.
	if _, _, err := whittle(t, "logits", model, toks, again); err == nil || !strings.Contains(err.Error(), "pass --force") {
		t.Errorf("existing OUT without --force: %v", err)
	}
	mustWhittle(t, "logits", model, toks, again, "--force")
	if b, _ = os.ReadFile(again); !bytes.Equal(a, b) {
		t.Errorf("--force run wrote other logits")
	}
}

// referenceLogits runs package reference over each row and returns its
// logits, row-major (rows, cols, vocab), and the mean next-token NLL.
func referenceLogits(t *testing.T, model string, ids []int32, rows, cols int) ([]float32, float64) {
	t.Helper()
	m, err := modelio.Load(model, modelio.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rm, err := reference.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	var z []float32
	var nll float64
	n := 0
	for r := range rows {
		row := make([]int, cols)
		s := rm.NewSession(cols)
		for j := range cols {
			row[j] = int(ids[r*cols+j])
			lg, err := s.Forward(row[j])
			if err != nil {
				t.Fatal(err)
			}
			z = append(z, lg...)
		}
		sum, k, err := rm.NLL(row)
		if err != nil {
			t.Fatal(err)
		}
		nll += sum
		n += k
	}
	return z, nll / float64(n)
}

func maxAbsDiff(a, b []float32) (worst float64, at int) {
	for i := range a {
		if d := math.Abs(float64(a[i] - b[i])); d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	return worst, at
}

// TestLogitsBadInput checks that malformed token files fail with an error
// naming the file and the problem, and leave no output behind.
func TestLogitsBadInput(t *testing.T) {
	data := sharedData(t)
	model := filepath.Join(data, "models", "stories260K", "stories260K.gguf")
	dir := t.TempDir()
	write := func(name string, h npy.Header, raw []byte) string {
		p := filepath.Join(dir, name)
		if err := npy.Write(p, h, raw); err != nil {
			t.Fatal(err)
		}
		return p
	}
	i32 := func(ids ...int32) []byte {
		var b []byte
		for _, id := range ids {
			b = binary.LittleEndian.AppendUint32(b, uint32(id))
		}
		return b
	}
	m, err := modelio.Load(model, modelio.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctxLen := m.Config.MaxSeq
	m.Close()
	long := make([]int32, ctxLen+1)
	cut := mustMarshal(t, npy.Header{Descr: "<i4", Shape: []int{2, 2}}, i32(1, 2, 3, 4))
	cases := []struct {
		name, file string
		want       []string
	}{
		{"float dtype", write("f.npy", npy.Header{Descr: "<f4", Shape: []int{1, 2}}, i32(1, 2)),
			[]string{"f.npy", "dtype <f4", "want int32"}},
		{"int16 dtype", write("s.npy", npy.Header{Descr: "<i2", Shape: []int{1, 2}}, []byte{1, 0, 2, 0}),
			[]string{"s.npy", "dtype <i2"}},
		{"1-D", write("v.npy", npy.Header{Descr: "<i4", Shape: []int{3}}, i32(1, 2, 3)),
			[]string{"v.npy", "shape [3]", "2-D"}},
		{"3-D", write("c.npy", npy.Header{Descr: "<i4", Shape: []int{1, 1, 2}}, i32(1, 2)),
			[]string{"c.npy", "2-D"}},
		{"empty", write("e.npy", npy.Header{Descr: "<i4", Shape: []int{0, 4}}, nil),
			[]string{"e.npy", "empty"}},
		{"id past vocab", write("big.npy", npy.Header{Descr: "<i4", Shape: []int{2, 3}}, i32(1, 2, 3, 4, 512, 6)),
			[]string{"big.npy", "row 1, column 1", "token 512", "vocabulary of 512"}},
		{"negative id", write("neg.npy", npy.Header{Descr: "<i4", Shape: []int{2, 2}}, i32(1, -1, 3, 4)),
			[]string{"neg.npy", "row 0, column 1", "token -1"}},
		{"int64 id past int32", write("huge.npy", npy.Header{Descr: "<i8", Shape: []int{1, 1}}, binary.LittleEndian.AppendUint64(nil, 1<<40)),
			[]string{"huge.npy", "row 0, column 0", "token 1099511627776"}},
		{"rows too long", write("long.npy", npy.Header{Descr: "<i4", Shape: []int{1, ctxLen + 1}}, i32(long...)),
			[]string{"long.npy", fmt.Sprintf("%d tokens", ctxLen+1), fmt.Sprintf("context of %d", ctxLen)}},
		{"truncated data", writeFile(t, filepath.Join(dir, "cut.npy"), string(cut[:len(cut)-3])),
			[]string{"cut.npy", "data bytes"}},
		{"not npy", writeFile(t, filepath.Join(dir, "text.npy"), "hello"),
			[]string{"text.npy", "npy"}},
		{"missing file", filepath.Join(dir, "absent.npy"),
			[]string{"absent.npy", "no such file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, "out-"+strings.ReplaceAll(c.name, " ", "_")+".npy")
			_, _, err := whittle(t, "logits", model, c.file, out)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if exitCode(err) != 1 {
				t.Errorf("exit code %d, want 1", exitCode(err))
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output %s exists after a failure (%v)", out, err)
			}
		})
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(left) > 0 {
		t.Errorf("temp files left behind: %v", left)
	}
	if _, _, err := whittle(t, "logits", model, "only-two.npy"); exitCode(err) != 2 {
		t.Errorf("two arguments: exit %d (%v), want 2", exitCode(err), err)
	}
}

func mustMarshal(t *testing.T, h npy.Header, raw []byte) []byte {
	t.Helper()
	b, err := npy.Marshal(h, raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParseTokens checks that no token file panics the validation, and
// that whatever it accepts is a 2-D in-range token matrix that reads back
// the same once written as int32.
func FuzzParseTokens(f *testing.F) {
	for _, seed := range []struct {
		h   npy.Header
		raw []byte
	}{
		{npy.Header{Descr: "<i4", Shape: []int{1, 2}}, []byte{1, 0, 0, 0, 7, 0, 0, 0}},
		{npy.Header{Descr: "<i8", Shape: []int{2, 1}}, make([]byte, 16)},
		{npy.Header{Descr: ">i4", Shape: []int{1, 1}}, []byte{0, 0, 1, 0}},
		{npy.Header{Descr: "<f4", Shape: []int{1, 1}}, make([]byte, 4)},
		{npy.Header{Descr: "<i4", Shape: []int{3}}, make([]byte, 12)},
	} {
		b, err := npy.Marshal(seed.h, seed.raw)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	const vocab, maxSeq = 300, 8
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := parseTokens("fuzz.npy", data, vocab, maxSeq)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.npy") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if tr.rows < 1 || tr.cols < 1 || tr.cols > maxSeq || len(tr.ids) != tr.rows*tr.cols {
			t.Fatalf("accepted shape (%d, %d) with %d ids", tr.rows, tr.cols, len(tr.ids))
		}
		var raw []byte
		for _, id := range tr.ids {
			if id < 0 || id >= vocab {
				t.Fatalf("accepted token %d", id)
			}
			raw = binary.LittleEndian.AppendUint32(raw, uint32(id))
		}
		b, err := npy.Marshal(npy.Header{Descr: "<i4", Shape: []int{tr.rows, tr.cols}}, raw)
		if err != nil {
			t.Fatal(err)
		}
		back, err := parseTokens("fuzz.npy", b, vocab, maxSeq)
		if err != nil || back.rows != tr.rows || back.cols != tr.cols || !slices.Equal(back.ids, tr.ids) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
