package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
)

// TestDemoRecipe runs the shipped example end to end: plan, run, resume,
// and checks that what was planned is what was produced.
func TestDemoRecipe(t *testing.T) {
	data := sharedData(t)
	recipePath := filepath.Join("..", "..", "examples", "prune-stories260K.hcl")
	varData := "data=" + data
	mustWhittle(t, "validate", recipePath, "-var", varData)
	plan := mustWhittle(t, "plan", recipePath, "-var", varData)
	lines := strings.Split(strings.TrimSpace(plan), "\n")
	last := strings.Fields(lines[len(lines)-1])
	plannedParams := last[len(last)-1]

	out := filepath.Join(t.TempDir(), "run")
	mustWhittle(t, "run", recipePath, "-var", varData, "--out", out)
	man, err := pipeline.ReadManifest(filepath.Join(out, pipeline.ManifestName))
	if err != nil || man == nil {
		t.Fatalf("manifest: %v", err)
	}
	if len(man.Passes) != 2 || len(man.Outputs) != 2 {
		t.Fatalf("manifest has %d passes and %d outputs, want 2 and 2", len(man.Passes), len(man.Outputs))
	}
	js := mustWhittle(t, "inspect", "--json", filepath.Join(out, "out", "student-hf"))
	var in struct {
		Params struct{ Total int64 } `json:"params"`
	}
	if err := json.Unmarshal([]byte(js), &in); err != nil {
		t.Fatal(err)
	}
	if got := pipeline.FormatCount(in.Params.Total); got != plannedParams {
		t.Errorf("plan promised %s parameters, the output has %s", plannedParams, got)
	}
	// Both outputs hold the same model: greedy text agrees (GGUF is f16,
	// so compare only a short prefix, where rounding cannot diverge yet).
	hfText := mustWhittle(t, "generate", "--model", filepath.Join(out, "out", "student-hf"), "--steps", "20", "--temperature", "0")
	ggText := mustWhittle(t, "generate", "--model", filepath.Join(out, "out", "student.gguf"), "--steps", "20", "--temperature", "0")
	if hfText != ggText {
		t.Errorf("HF and GGUF outputs generate differently:\n%q\n%q", hfText, ggText)
	}

	// A second run reuses every pass.
	mustWhittle(t, "run", recipePath, "-var", varData, "--out", out)
	man, err = pipeline.ReadManifest(filepath.Join(out, pipeline.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range man.Passes {
		if !p.Resumed {
			t.Errorf("pass %s ran again on an unchanged re-run", p.Name)
		}
	}
	// report says so, and succeeds on a finished run.
	rep := mustWhittle(t, "report", out)
	for _, p := range man.Passes {
		if want := p.Name + " " + p.Kind + " reused"; !strings.Contains(strings.Join(strings.Fields(rep), " "), want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
}

func TestBadRecipesAreLocated(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, src, want string
	}{
		{"unknown-kind", "pass \"prune-widht\" {\n}\n", ":1:6: error: Unknown pass kind"},
		{"undefined-model", "model \"a\" {\n  path = \"a.bin\"\n}\npass \"prune-depth\" {\n  model = model.b\n  into = \"c\"\n  layers = [0]\n}\n", ":5:11: error: Reference to undefined model"},
		{"syntax", "model \"a\" {\n  path = \n}\n", ":2:"},
		{"missing-file", "model \"a\" {\n  path = \"nope.bin\"\n}\n", ":2:10: error: Missing file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".hcl")
			if err := os.WriteFile(path, []byte(c.src), 0o644); err != nil {
				t.Fatal(err)
			}
			_, stderr, err := whittle(t, "validate", path)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 {
				t.Fatalf("validate: err %v, want exit status 2", err)
			}
			if !strings.Contains(stderr, path+c.want) {
				t.Errorf("stderr lacks %q:\n%s", path+c.want, stderr)
			}
		})
	}
}

func TestFmtCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.hcl")
	if err := os.WriteFile(path, []byte("model \"a\" {\npath=\"x\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := whittle(t, "fmt", "--check", path)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 3 {
		t.Fatalf("fmt --check on unformatted input: %v, want exit status 3", err)
	}
	mustWhittle(t, "fmt", path)
	got, _ := os.ReadFile(path)
	if want := "model \"a\" {\n  path = \"x\"\n}\n"; string(got) != want {
		t.Errorf("formatted:\n%s\nwant:\n%s", got, want)
	}
	mustWhittle(t, "fmt", "--check", path)
}

func TestGoStyleFlags(t *testing.T) {
	root := newRootCmd()
	got := goStyleFlags(root, []string{"fmt", "-check", "x.hcl", "-var", "a=1", "-v", "--", "-check"})
	want := []string{"fmt", "--check", "x.hcl", "--var", "a=1", "-v", "--", "-check"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("goStyleFlags = %v, want %v", got, want)
	}
}
