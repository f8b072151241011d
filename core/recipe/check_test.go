package recipe

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"
)

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"m.bin", "corpus.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := `model "m" {
  path      = "m.bin"
  tokenizer = "tok.bin"
}

dataset "d" {
  path = "corpus.txt"
}

task "t" {
  path = "${"tasks"}/t.jsonl"
}
`
	path := filepath.Join(dir, "r.hcl")
	r, diags := Parse(path, []byte(src), nil, testRegistry(t))
	if len(diags) > 0 {
		t.Fatalf("Parse: %s", diagLines(diags))
	}
	got := diagLines(CheckFiles(r))
	want := path + `:3:15: error: Missing file; Tokenizer of model "m": stat ` + filepath.Join(dir, "tok.bin") + `: no such file or directory.
` + path + `:11:10: error: Missing file; Task "t": stat ` + filepath.Join(dir, "tasks/t.jsonl") + `: no such file or directory.
`
	if got != want {
		t.Errorf("CheckFiles:\n got %s\nwant %s", got, want)
	}

	os.WriteFile(filepath.Join(dir, "tok.bin"), nil, 0o644)
	os.MkdirAll(filepath.Join(dir, "tasks"), 0o755)
	os.WriteFile(filepath.Join(dir, "tasks", "t.jsonl"), nil, 0o644)
	if d := CheckFiles(r); len(d) > 0 {
		t.Errorf("all files present, got:\n%s", diagLines(d))
	}
}

// TestSharedModel checks a recipe over the real stories260K files; it needs
// /work/shared/data (found by walking up from the package).
func TestSharedModel(t *testing.T) {
	data := shareddata.Dir(t)
	src := `model "teacher" {
  path      = "` + filepath.Join(data, "models/stories260K/stories260K.bin") + `"
  tokenizer = pathjoin("` + data + `", "models/stories260K/tok512.bin")
  format    = "llama2c"
}
`
	r, diags := Parse(filepath.Join(t.TempDir(), "r.hcl"), []byte(src), nil, nil)
	diags = append(diags, CheckFiles(r)...)
	if len(diags) > 0 {
		t.Fatal(diagLines(diags))
	}
}

func TestLoadMissingFile(t *testing.T) {
	r, diags := Load(filepath.Join(t.TempDir(), "none.hcl"), nil, nil)
	if r != nil || len(diags) != 1 || !strings.Contains(diags[0].Detail, "no such file") {
		t.Errorf("Load(missing) = %v, %s", r, diagLines(diags))
	}
}

func TestWriteDiagnostics(t *testing.T) {
	r, diags := Load("testdata/errors/slots.hcl", nil, testRegistry(t))
	var b strings.Builder
	if err := WriteDiagnostics(&b, diags[:1], r.Files); err != nil {
		t.Fatal(err)
	}
	want := "testdata/errors/slots.hcl:10:11: error: Slot not available yet; model.student is produced later, by pass \"prune-2\" at testdata/errors/slots.hcl:22; a block can only use what earlier passes produce.\n" +
		"   10 |   model = model.student\n" +
		"      |           ^^^^^^^^^^^^^\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	if err := (&DiagnosticsError{Diags: diags}).Error(); strings.Count(err, "\n") != len(diags)-1 {
		t.Errorf("DiagnosticsError has %d lines for %d diagnostics", strings.Count(err, "\n")+1, len(diags))
	}
	_ = io.Discard
}
