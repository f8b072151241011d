package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// TestInspectGraphGolden compares `inspect --graph` on stories260K with a
// golden file reviewed by hand; `go test -run InspectGraph -update`
// rewrites it after a deliberate change. Every format of the model prints
// the same graph.
func TestInspectGraphGolden(t *testing.T) {
	dir := filepath.Join(sharedData(t), "models", "stories260K")
	golden := filepath.Join("testdata", "stories260K.graph.txt")
	got := mustWhittle(t, "inspect", "--graph", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"))
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("inspect --graph differs from %s:\n%s", golden, got)
	}
	if gg := mustWhittle(t, "inspect", "--graph", filepath.Join(dir, "stories260K.gguf")); gg != got {
		t.Errorf("the GGUF file prints another graph:\n%s", gg)
	}
}

func TestInspectGraphFlags(t *testing.T) {
	dir := filepath.Join(sharedData(t), "models", "stories260K")
	for _, extra := range []string{"--json", "--tensors"} {
		_, _, err := whittle(t, "inspect", "--graph", extra, filepath.Join(dir, "stories260K.bin"))
		if err == nil || !strings.Contains(err.Error(), "--graph prints the graph alone") {
			t.Errorf("inspect --graph %s: error %v", extra, err)
		}
	}
}
