package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/curves"
	"github.com/whittle-ml/whittle/core/pipeline"
)

// TestReportPlot: report summarizes a run directory and, with --plot,
// draws its training passes' curves.
func TestReportPlot(t *testing.T) {
	run := t.TempDir()
	man := pipeline.Manifest{Passes: []pipeline.PassRecord{{Index: 0, Name: "kd", Kind: "distill", Status: pipeline.StatusDone,
		Metrics: map[string]any{"val_loss": 2.5}}}}
	b, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(run, pipeline.ManifestName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := pipeline.PassDir(run, 0, "kd")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, curves.HistoryFile), []byte("step,loss,tokens,val_loss\n1,3,64,\n2,2.8,128,2.9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(t.TempDir(), "curves.png")
	out := mustWhittle(t, "report", run, "--plot", png)
	if !strings.Contains(out, "1 training passes") {
		t.Errorf("output:\n%s", out)
	}
	if st, err := os.Stat(png); err != nil || st.Size() == 0 {
		t.Errorf("plot not written: %v", err)
	}
	if _, _, err := whittle(t, "report", run, "--plot", png, "--width", "0"); err == nil {
		t.Error("a zero width was accepted")
	}
}
