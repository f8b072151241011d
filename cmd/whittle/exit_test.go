package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestExitCodes: 0 ok, 1 failure, 2 usage and recipe errors, 3 fmt -check
// differences, for cobra's own errors as much as whittle's.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	formatted := writeFile(t, filepath.Join(dir, "ok.hcl"), "model \"a\" {\n  path = \"x\"\n}\n")
	unformatted := writeFile(t, filepath.Join(dir, "ugly.hcl"), "model \"a\" {\npath=\"x\"\n}\n")
	missing := writeFile(t, filepath.Join(dir, "missing.hcl"), "model \"a\" {\n  path = \"nope.bin\"\n}\n")
	listVar := writeFile(t, filepath.Join(dir, "list.hcl"), "variable \"names\" {\n  type    = list(string)\n  default = []\n}\n")
	existing := writeFile(t, filepath.Join(dir, "notes.txt"), "keep me\n")
	cases := []struct {
		name string
		args []string
		want int
	}{
		{"ok", []string{"fmt", "--check", formatted}, 0},
		{"version", []string{"--version"}, 0},
		{"unknown command", []string{"frobnicate"}, 2},
		{"help", []string{"help", "run"}, 0},
		{"help on an unknown command", []string{"help", "frobnicate"}, 2},
		{"misspelt command", []string{"runn", "x.hcl"}, 2},
		{"unknown root flag", []string{"--frob"}, 2},
		{"unknown flag", []string{"validate", "--frob", formatted}, 2},
		{"bad flag value", []string{"report", dir, "--width", "wide"}, 2},
		{"bad flag range", []string{"report", dir, "--width", "-1"}, 2},
		{"missing argument", []string{"validate"}, 2},
		{"extra argument", []string{"inspect", "a", "b"}, 2},
		{"malformed --var", []string{"validate", formatted, "--var", "novalue"}, 2},
		{"invalid --var value", []string{"validate", listVar, "--var", "names=x"}, 2},
		{"recipe diagnostics", []string{"validate", missing}, 2},
		{"convert without --to", []string{"convert", "a", "b"}, 2},
		{"fmt differences", []string{"fmt", "--check", unformatted}, 3},
		{"not a run directory", []string{"report", dir}, 1},
		{"missing model", []string{"inspect", filepath.Join(dir, "nope.bin")}, 1},
	}
	if data := shareddata.Find(); data != "" {
		cases = append(cases, struct {
			name string
			args []string
			want int
		}{"convert onto a file", []string{"convert", filepath.Join(data, "models", "stories260K", "stories260K.gguf"), existing, "--to", "gguf"}, 1})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, err := whittle(t, c.args...)
			if got := exitCode(err); got != c.want {
				t.Errorf("whittle %s: exit %d (%v), want %d\n%s", strings.Join(c.args, " "), got, err, c.want, stderr)
			}
		})
	}
}

// TestOneChecker: validate, plan and run reject the same recipes with the
// same error, before any work (run creates no run directory).
func TestOneChecker(t *testing.T) {
	stories := filepath.Join(sharedData(t), "models", "stories260K")
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.bin")
	b, err := os.ReadFile(filepath.Join(stories, "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, corrupt, string(b[:len(b)/2]))
	// A tokenizer of the same size with one piece changed.
	tok, err := tokenizer.LoadLlama2c(filepath.Join(stories, "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	tok.Pieces[len(tok.Pieces)-1] = "qq"
	otherTok := filepath.Join(dir, "other.bin")
	if err := tokenizer.WriteLlama2c(tok, otherTok); err != nil {
		t.Fatal(err)
	}
	corpus := writeFile(t, filepath.Join(dir, "corpus.txt"), strings.Repeat("Once upon a time there was a cat.\n", 50))
	head := fmt.Sprintf("model \"base\" {\n  path      = %q\n  tokenizer = %q\n}\n", filepath.Join(stories, "stories260K.bin"), filepath.Join(stories, "tok512.bin"))
	cases := []struct {
		name, src, want string
	}{
		{"corrupt model", fmt.Sprintf("model \"m\" {\n  path = %q\n}\n", corrupt), `model "m"`},
		{"value out of range", head + "pass \"prune-width\" {\n  model     = model.base\n  into      = \"s\"\n  criterion = \"magnitude\"\n  mlp       = 100000\n}\n", "mlp = 100000 must be between 1 and the current"},
		{"every layer removed", head + "pass \"prune-depth\" {\n  model  = model.base\n  into   = \"s\"\n  layers = [0, 1, 2, 3, 4]\n}\n", "lists all 5 layers"},
		{"tokenizers differ", head + fmt.Sprintf("model \"other\" {\n  path      = %q\n  tokenizer = %q\n}\ndataset \"d\" {\n  path = %q\n}\n", filepath.Join(stories, "stories260K.bin"), otherTok, corpus) +
			"pass \"prune-depth\" {\n  model  = model.base\n  into   = \"s\"\n  layers = [1]\n}\n" +
			"pass \"distill\" {\n  student = model.s\n  teacher = model.other\n  dataset = dataset.d\n  into    = \"s\"\n  steps   = 1\n}\n", "must share a tokenizer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "r.hcl"), c.src)
			out := filepath.Join(t.TempDir(), "run")
			var first string
			for _, args := range [][]string{{"validate", path}, {"plan", path}, {"run", path, "--out", out}} {
				_, stderr, err := whittle(t, args...)
				if exitCode(err) != 2 || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), path+":") {
					t.Fatalf("whittle %s: exit %d, %v; want exit 2 and %q at a position in %s\n%s", args[0], exitCode(err), err, c.want, path, stderr)
				}
				if first == "" {
					first = err.Error()
				} else if err.Error() != first {
					t.Errorf("whittle %s says %q, validate said %q", args[0], err, first)
				}
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("run created %s before failing its check (%v)", out, err)
			}
		})
	}
}

// TestReportStatuses: report lists every planned pass's outcome and exits
// 1 unless the run finished.
func TestReportStatuses(t *testing.T) {
	cases := []struct {
		name  string
		man   pipeline.Manifest
		lines []string // each must appear, in order, spaces collapsed
		fails string   // "" when report must succeed
	}{
		{"failed", pipeline.Manifest{Status: pipeline.StatusFailed, Planned: []string{"a", "b", "c"}, Passes: []pipeline.PassRecord{
			{Name: "a", Kind: "prune-width", Status: pipeline.StatusDone, Resumed: true},
			{Name: "b", Kind: "distill", Status: pipeline.StatusFailed, Error: "backend exploded", Seconds: 2},
		}}, []string{"a prune-width reused -", "b distill failed: backend exploded 2.0", "c - not run -"}, `failed at pass "b": backend exploded`},
		{"killed", pipeline.Manifest{Status: pipeline.StatusRunning, Planned: []string{"a", "b"}, Passes: []pipeline.PassRecord{
			{Name: "a", Kind: "score", Status: pipeline.StatusDone, Seconds: 1},
		}}, []string{"a score done 1.0", "b - not run -"}, "did not finish"},
		{"done", pipeline.Manifest{Status: pipeline.StatusDone, Planned: []string{"a"}, Passes: []pipeline.PassRecord{
			{Name: "a", Kind: "score", Status: pipeline.StatusDone, Seconds: 1},
		}}, []string{"a score done 1.0"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run := t.TempDir()
			b, err := json.Marshal(c.man)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(run, pipeline.ManifestName), string(b))
			out, _, err := whittle(t, "report", run)
			if c.fails == "" && err != nil || c.fails != "" && (exitCode(err) != 1 || !strings.Contains(err.Error(), c.fails)) {
				t.Errorf("report: exit %d (%v), want failure %q", exitCode(err), err, c.fails)
			}
			var norm []string
			for _, l := range strings.Split(out, "\n") {
				norm = append(norm, strings.Join(strings.Fields(l), " "))
			}
			rest := strings.Join(norm, "\n")
			for _, l := range c.lines {
				i := strings.Index(rest, l)
				if i < 0 {
					t.Fatalf("report output lacks %q (in order):\n%s", l, out)
				}
				rest = rest[i+len(l):]
			}
		})
	}
}

// TestConvertRefusesExisting: convert replaces nothing without --force,
// and with it replaces the file by a model that loads.
func TestConvertRefusesExisting(t *testing.T) {
	in := filepath.Join(sharedData(t), "models", "stories260K", "stories260K.gguf")
	dir := t.TempDir()
	target := writeFile(t, filepath.Join(dir, "notes.gguf"), "not a model\n")
	sub := filepath.Join(dir, "photos")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{target, sub} {
		_, _, err := whittle(t, "convert", in, out, "--to", "gguf")
		if err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "--force") {
			t.Errorf("convert onto %s: %v, want a refusal naming --force", out, err)
		}
	}
	if b, _ := os.ReadFile(target); string(b) != "not a model\n" {
		t.Errorf("the refused convert changed %s", target)
	}
	mustWhittle(t, "convert", in, target, "--to", "gguf", "--force")
	if out := mustWhittle(t, "inspect", target); !strings.Contains(out, "260032") {
		t.Errorf("the forced output is not the model:\n%s", out)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("convert left temp files: %v", entries)
	}
}

// TestExitCodeInterrupted: a command stopped by Ctrl-C (its context
// cancelled, the error wrapped on the way up) exits 130, as a shell
// reports a command killed by SIGINT.
func TestExitCodeInterrupted(t *testing.T) {
	err := fmt.Errorf("pass \"distill\": %w", context.Canceled)
	if got := exitCode(err); got != 130 {
		t.Fatalf("exitCode(%v) = %d, want 130", err, got)
	}
}
