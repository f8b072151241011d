package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
)

// TestDisplayLines feeds the plain display synthetic training updates on
// a fake clock: 128 tokens per step, one step every 2 s.
func TestDisplayLines(t *testing.T) {
	var out bytes.Buffer
	clock := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	d := &display{out: &out, now: func() time.Time { return clock }}
	p := &recipe.Pass{Name: "kd", Kind: "distill"}
	ev := d.events()
	ev.PassStart(0, 2, p)
	ev.Update(p, pipeline.Update{Total: 100, Unit: pipeline.UnitStep, Msg: "validation loss before: 5.0000", Log: true})
	for s := 1; s <= 100; s++ {
		clock = clock.Add(2 * time.Second)
		ev.Update(p, pipeline.Update{Done: s, Total: 100, Unit: pipeline.UnitStep, Tokens: int64(128 * s), Msg: "loss 3", Log: s%50 == 0 || s == 1})
	}
	ev.PassEnd(0, p, pipeline.PassRecord{Status: pipeline.StatusDone, Seconds: 201})
	q := &recipe.Pass{Name: "sc", Kind: "score"}
	ev.PassStart(1, 2, q)
	ev.Update(q, pipeline.Update{Done: 0, Total: 2, Msg: "statistics", Log: true})
	ev.Update(q, pipeline.Update{Done: 2, Total: 2, Msg: "2/2 done", Log: true})
	ev.PassEnd(1, q, pipeline.PassRecord{Status: pipeline.StatusDone, Resumed: true, Seconds: 30})

	// At step 50, 49 steps took 98 s: 0.5 steps/s and 64 tok/s, and the
	// 50 steps left take 100 s.
	want := []string{
		"[1/2] kd (distill)",
		"      kd: step 0/100 validation loss before: 5.0000",
		"      kd: step 1/100 loss 3",
		"      kd: step 50/100 loss 3 (64 tok/s, ETA 1m40s)",
		"      kd: step 100/100 loss 3 (64 tok/s)",
		"[1] kd: done in 3m21s",
		"[2/2] sc (score)",
		"      sc: 0/2 statistics",
		"      sc: 2/2 done",
		"[2] sc: reused",
	}
	if got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("display wrote\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRunProgressPlain runs a small training recipe with stderr not a
// terminal: a line every log_every steps with tokens/s and ETA, and on the
// second run, "reused".
func TestRunProgressPlain(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on the CPU")
	}
	data := sharedData(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "r.hcl")
	src := `
variable "data" {
  type = string
}
model "base" {
  path      = "${var.data}/models/stories260K/stories260K.bin"
  tokenizer = "${var.data}/models/stories260K/tok512.bin"
}
dataset "shakespeare" {
  path                = "${var.data}/corpora/tinyshakespeare.txt"
  validation_fraction = 0.05
}
pass "correct" {
  model         = model.base
  dataset       = dataset.shakespeare
  into          = "fixed"
  steps         = 8
  batch         = 2
  seq_len       = 16
  val_sequences = 4
  log_every     = 3
}
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "run")
	_, stderr, err := whittle(t, "run", path, "-var", "data="+data, "--out", out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr)
	}
	line := regexp.MustCompile(`^      correct: step (\d+)/8 loss \S+ lr \S+( val_loss \S+)? \(\S+ tok/s(, ETA \S+)?\)$`)
	var steps []string
	for _, l := range strings.Split(stderr, "\n") {
		if !strings.Contains(l, "correct: step") || strings.Contains(l, "step 0/8") {
			continue
		}
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("progress line %q lacks loss, tokens/s or ETA", l)
			continue
		}
		if (m[3] == "") != (m[1] == "8") {
			t.Errorf("line %q: an ETA belongs on every step line but the last", l)
		}
		steps = append(steps, m[1])
	}
	// log_every = 3, and the last step.
	if !slices.Equal(steps, []string{"3", "6", "8"}) {
		t.Errorf("progress lines at steps %v, want 3 6 8:\n%s", steps, stderr)
	}
	if !strings.Contains(stderr, "[1] correct: done in ") {
		t.Errorf("no end line:\n%s", stderr)
	}

	_, stderr, err = whittle(t, "run", path, "-var", "data="+data, "--out", out)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "[1] correct: reused\n") || strings.Contains(stderr, "done in") || strings.Contains(stderr, "step ") {
		t.Errorf("second run, nothing to do, says:\n%s", stderr)
	}
}
