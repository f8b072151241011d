package gguf

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
)

var llamaLossRE = regexp.MustCompile(`targets (\d+) loss ([0-9.eE+-]+)`)

// llamaLogits runs the shared llama-logits (bin) on model over the (rows,
// L) int32 token file toks and returns its mean next-token NLL and its
// logits, (rows, L, vocab) flattened.
func llamaLogits(t *testing.T, bin, model, toks string) (float64, []float32) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "logits.npy")
	b, err := exec.CommandContext(t.Context(), bin, model, toks, out, "1").CombinedOutput()
	if err != nil {
		t.Fatalf("llama-logits %s: %v\n%s", model, err, b)
	}
	m := llamaLossRE.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no loss in llama-logits output:\n%s", b)
	}
	loss, err := strconv.ParseFloat(string(m[2]), 64)
	if err != nil {
		t.Fatal(err)
	}
	a, err := npy.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return loss, v
}
