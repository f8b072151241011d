package main

import (
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir/gguf"
)

// TestNonUniformStudentInLlamaCpp is issue 13's check of non-uniform
// width pruning end to end: examples/families/prune-nonuniform.hcl prunes
// a Llama model under totals (uniform = false), the plan counts the
// student's parameters before any weight is read, the GGUF export is
// llama.cpp's deci architecture with per-layer sizes, and llama.cpp's
// forward on it agrees with `whittle logits` (NLL and a loose element
// bound: llama-logits keeps an f16 KV cache, see TestFamiliesLogits).
// The models: the random llama3 fixture (llama3 RoPE scaling, untied) and
// the trained stories260K (tied; MLP 172, not a multiple of round_to 8).
func TestNonUniformStudentInLlamaCpp(t *testing.T) {
	const rows, cols, vocab = 2, 24, 512
	dir := t.TempDir()
	toks := filepath.Join(dir, "tokens.npy")
	if err := npy.WriteInt32(toks, []int{rows, cols}, familyTokens(rows, cols, vocab)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		model func(t *testing.T) string
		// Totals: mlp_ratio 0.5 of all neurons (kept in chunks of 8, so
		// up to 7 fewer when widths are not multiples of 8) and
		// kv_heads_ratio 0.75 of all KV heads, which no even split gives.
		layers, mlp, kv int
	}{
		{"llama3", func(t *testing.T) string { return filepath.Join(familiesDir, "llama3") }, 2, 48, 3},
		{"stories260K", func(t *testing.T) string { return shareddata.Path(t, "models/stories260K/stories260K.gguf") }, 5, 430, 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recipe := "../../examples/families/prune-nonuniform.hcl"
			model := "model=" + tc.model(t)
			plan := mustWhittle(t, "plan", recipe, "--var", model)
			runDir := filepath.Join(dir, "run-"+tc.name)
			mustWhittle(t, "run", recipe, "--out", runDir, "--var", model)
			student := filepath.Join(runDir, "out", "student.gguf")

			f, err := gguf.Open(student)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if v, _ := f.Get(gguf.KeyArchitecture); !v.Equal(gguf.Of("deci")) {
				t.Errorf("architecture %s, want deci", v)
			}
			sum := func(key string) (s int64, differ bool) {
				v, _ := f.Get(key)
				xs, ok := v.Ints()
				if !ok || len(xs) != tc.layers {
					t.Fatalf("%s = %s, want one value per layer", key, v)
				}
				for _, x := range xs {
					s += x
					differ = differ || x != xs[0]
				}
				return s, differ
			}
			if s, _ := sum("deci.feed_forward_length"); s > int64(tc.mlp) || s < int64(tc.mlp-7) {
				t.Errorf("MLP widths sum to %d, want %d (down to %d)", s, tc.mlp, tc.mlp-7)
			}
			if s, differ := sum("deci.attention.head_count_kv"); s != int64(tc.kv) || !differ {
				t.Errorf("KV heads sum to %d (layers differ: %v), want %d split unevenly", s, differ, tc.kv)
			}

			m, err := gguf.Load(student)
			if err != nil {
				t.Fatal(err)
			}
			params := m.Config.Params().Total
			m.Close()
			// The plan spreads the totals evenly; where every layer could
			// take whole chunks it counts the student's parameters exactly.
			if want := " " + pipeline.FormatCount(params) + "\n"; tc.name == "llama3" && !strings.Contains(plan, want) {
				t.Errorf("plan does not show the student's %s parameters:\n%s", want, plan)
			}

			wz := filepath.Join(dir, tc.name+"-whittle.npy")
			_, wLoss := summary(t, mustWhittle(t, "logits", student, toks, wz, "--threads", "2"))
			bin := shareddata.LlamaCpp(t, "llama-logits")
			lz := filepath.Join(dir, tc.name+"-llamacpp.npy")
			b, err := exec.CommandContext(t.Context(), bin, student, toks, lz, "1").CombinedOutput()
			if err != nil {
				t.Fatalf("llama-logits %s: %v\n%s", student, err, b)
			}
			_, lLoss := summary(t, string(b))
			_, a := readFloats(t, wz)
			_, c := readFloats(t, lz)
			worst, _ := maxAbsDiff(a, c)
			if math.Abs(wLoss-lLoss) > 1e-3 || !(worst <= 0.2) {
				t.Errorf("non-uniform student: whittle mean NLL %.6f, llama.cpp %.6f, max |Δ| %.3g", wLoss, lLoss, worst)
			}
			t.Logf("non-uniform student: whittle mean NLL %.6f, llama.cpp %.6f, max |Δ| %.3g", wLoss, lLoss, worst)
		})
	}
}
