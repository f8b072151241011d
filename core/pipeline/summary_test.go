package pipeline

import (
	"bytes"
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	m := &Manifest{
		Passes: []PassRecord{
			{Name: "eval-teacher", Metrics: map[string]any{"model": "model.teacher", "params": float64(260032),
				"dataset.shake.loss": 5.0298, "dataset.shake.ppl": 152.9, "task.wino.acc": 0.4988, "task.wino.items": 1267.0}},
			{Name: "correct", Metrics: map[string]any{"val_loss": 2.4}},
			{Name: "eval-student", Metrics: map[string]any{"model": "model.student", "params": int64(163344), "dataset.shake.loss": 2.5}},
		},
		Outputs: []FileRecord{{Name: "student", Path: "/runs/x/out/student"}},
	}
	var b bytes.Buffer
	if err := m.Summary(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := [][]string{
		{"EVALUATION", "MODEL", "PARAMS", "SHAKE.LOSS", "SHAKE.PPL", "WINO.ACC"},
		{"eval-teacher", "model.teacher", "260,032", "5.03", "152.9", "49.9%"},
		{"eval-student", "model.student", "163,344", "2.5", "-", "-"},
		{},
		{"output", "student", "/runs/x/out/student"},
	}
	if len(lines) != len(want) {
		t.Fatalf("summary has %d lines, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d = %q, want %q", i, got, w)
		}
	}
}
