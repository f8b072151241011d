package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"
)

// sharedData finds ../shared/data above the repository, or skips.
func sharedData(t testing.TB) string {
	t.Helper()
	return shareddata.Dir(t)
}

// whittle runs the CLI in-process and returns stdout, stderr and the error.
func whittle(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(goStyleFlags(cmd, args))
	err := cmd.Execute()
	return out.String(), errb.String(), err
}

func mustWhittle(t testing.TB, args ...string) string {
	t.Helper()
	out, stderr, err := whittle(t, args...)
	if err != nil {
		t.Fatalf("whittle %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// TestGenerateGolden checks greedy generation against llama2.c's own output
// for every format, directly and after round trips through convert.
func TestGenerateGolden(t *testing.T) {
	data := sharedData(t)
	dir := filepath.Join(data, "models", "stories260K")
	want, err := os.ReadFile(filepath.Join(dir, "expected_greedy_200.txt"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "stories260K.bin")
	tok := filepath.Join(dir, "tok512.bin")
	gg := filepath.Join(dir, "stories260K.gguf")
	tmp := t.TempDir()
	hfFromBin := filepath.Join(tmp, "hf-from-bin")
	hfFromGGUF := filepath.Join(tmp, "hf-from-gguf")
	binBack := filepath.Join(tmp, "back", "model.bin")
	ggufBack := filepath.Join(tmp, "back.gguf")
	mustWhittle(t, "convert", bin, hfFromBin, "--to", "hf", "--tokenizer", tok)
	mustWhittle(t, "convert", gg, hfFromGGUF, "--to", "hf")
	mustWhittle(t, "convert", hfFromBin, binBack, "--to", "llama2c")
	mustWhittle(t, "convert", hfFromGGUF, ggufBack, "--to", "gguf")

	cases := []struct {
		name string
		args []string
	}{
		{"bin", []string{"--model", bin, "--tokenizer", tok}},
		{"gguf", []string{"--model", gg}},
		{"hf-from-bin", []string{"--model", hfFromBin}},
		{"hf-from-gguf", []string{"--model", hfFromGGUF}},
		{"bin-roundtrip", []string{"--model", binBack}},
		{"gguf-roundtrip", []string{"--model", ggufBack}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"generate"}, c.args...)
			args = append(args, "--steps", "200", "--temperature", "0")
			got := mustWhittle(t, args...)
			if got != string(want) {
				t.Errorf("generated text differs\n got: %q\nwant: %q", got, want)
			}
		})
	}
}

func TestInspectCounts(t *testing.T) {
	data := sharedData(t)
	out := mustWhittle(t, "inspect", filepath.Join(data, "models", "stories260K", "stories260K.bin"))
	if !strings.Contains(out, "260032") {
		t.Errorf("inspect does not report 260032 parameters:\n%s", out)
	}
	js := mustWhittle(t, "inspect", "--json", filepath.Join(data, "models", "stories260K", "stories260K.gguf"))
	if !strings.Contains(js, `"total": 260032`) {
		t.Errorf("inspect --json lacks the total:\n%s", js)
	}
}
