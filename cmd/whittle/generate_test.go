package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenerateSamplingFlags checks that bad sampling settings are usage
// errors (exit 2) naming the value, before any model is read, and that a
// vanishing temperature decodes as greedily as temperature 0 (llama2.c's
// own greedy output).
func TestGenerateSamplingFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--temperature", "NaN"}, "temperature NaN"},
		{[]string{"--temperature", "-1"}, "temperature -1"},
		{[]string{"--temperature", "+Inf"}, "temperature +Inf"},
		{[]string{"--top-p", "NaN"}, "top_p NaN"},
		{[]string{"--top-p", "0"}, "top_p 0 "},
		{[]string{"--top-p", "1.5"}, "top_p 1.5"},
		{[]string{"--steps", "-1"}, "--steps -1"},
	} {
		args := append([]string{"generate", "--model", "no-such-model.bin"}, c.args...)
		_, _, err := whittle(t, args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("whittle %s: %v, want a usage error naming %q", strings.Join(c.args, " "), err, c.want)
		}
	}

	dir := filepath.Join(sharedData(t), "models", "stories260K")
	want, err := os.ReadFile(filepath.Join(dir, "expected_greedy_200.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, topP := range []string{"0.9", "1"} {
		got := mustWhittle(t, "generate", "--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"),
			"--steps", "200", "--temperature", "1e-300", "--top-p", topP, "--seed", "3")
		if got != string(want) {
			t.Errorf("--temperature 1e-300 --top-p %s differs from greedy decoding\n got: %q\nwant: %q", topP, got, want)
		}
	}
}
