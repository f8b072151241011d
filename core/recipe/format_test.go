package recipe

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFormatGolden(t *testing.T) {
	ins, _ := filepath.Glob("testdata/format/*.in.hcl")
	if len(ins) == 0 {
		t.Fatal("no format test inputs")
	}
	for _, in := range ins {
		src, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Format(src)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		golden := strings.TrimSuffix(in, ".in.hcl") + ".golden.hcl"
		if *update {
			os.WriteFile(golden, got, 0o644)
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s:\n got:\n%s\nwant:\n%s", in, got, want)
		}
	}
}

// TestFormatIdempotent formats every recipe in testdata twice.
func TestFormatIdempotent(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.hcl")
	more, _ := filepath.Glob("testdata/*/*.hcl")
	files = append(files, more...)
	for _, f := range files {
		if strings.HasSuffix(f, "syntax.hcl") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		once, err := FormatFile(f, src)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		twice, err := FormatFile(f, once)
		if err != nil || string(once) != string(twice) {
			t.Errorf("%s: formatting is not idempotent (err %v):\n%s\n---\n%s", f, err, once, twice)
		}
	}
	// The hand-formatted recipes are already canonical.
	for _, f := range []string{"testdata/valid.hcl", "testdata/format/messy.golden.hcl"} {
		src, _ := os.ReadFile(f)
		if got, err := FormatFile(f, src); err != nil || string(got) != string(src) {
			t.Errorf("%s is not canonical (err %v):\n%s", f, err, got)
		}
	}
}

func TestFormatSyntaxError(t *testing.T) {
	src, err := os.ReadFile("testdata/errors/syntax.hcl")
	if err != nil {
		t.Fatal(err)
	}
	_, err = FormatFile("syntax.hcl", src)
	var de *DiagnosticsError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want a *DiagnosticsError", err)
	}
	if want := "syntax.hcl:3:12: error: Invalid expression"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %q, want prefix %q", err, want)
	}
	if _, err := Format([]byte("a = {")); err == nil || !strings.HasPrefix(err.Error(), "<input>:1:") {
		t.Errorf("Format(unclosed brace) err = %v, want a <input>:1: position", err)
	}
}
