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

// TestInspectGraphFamilies: the graphs of the families' options, from
// config.json alone (Gemma 2 cut to two layers), against golden files
// reviewed by hand: Qwen2's biases cut with their heads, Qwen3's per-head
// q/k norms cut by no axis, Gemma 2's post norms on the hidden axis.
func TestInspectGraphFamilies(t *testing.T) {
	for _, fam := range []string{"qwen2", "qwen3", "gemma2"} {
		golden := filepath.Join("testdata", "graphs", fam+".graph.txt")
		got := mustWhittle(t, "inspect", "--graph", filepath.Join("testdata", "graphs", fam))
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
			t.Errorf("%s: inspect --graph differs from %s:\n%s", fam, golden, got)
		}
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

// llama8B is Llama-3.1-8B's published config.json, without weights.
var llama8B = filepath.Join("testdata", "llama-3.1-8b", "config.json")

// TestInspectConfigOnly: a config.json alone gives the exact parameter
// count Meta publishes for Llama-3.1-8B, as text, JSON and graph.
func TestInspectConfigOnly(t *testing.T) {
	for _, path := range []string{llama8B, filepath.Dir(llama8B)} {
		out := mustWhittle(t, "inspect", path)
		if !strings.Contains(out, "8,030,261,248") || !strings.Contains(out, "none: configuration only") {
			t.Errorf("inspect %s:\n%s", path, out)
		}
	}
	if js := mustWhittle(t, "inspect", "--json", llama8B); !strings.Contains(js, `"total": 8030261248`) {
		t.Errorf("inspect --json:\n%s", js)
	}
	g := mustWhittle(t, "inspect", "--graph", llama8B)
	for _, want := range []string{
		"graph llama: 8030261248 parameters in 291 tensors\n",
		"{theta=500000 scaling=llama3 factor=8 low_freq_factor=1 high_freq_factor=4 original_max_pos=8192}",
		"\n  layers.31.kv_heads=8\n",
	} {
		if !strings.Contains(g, want) {
			t.Errorf("inspect --graph lacks %q", want)
		}
	}
}

// TestPlanConfigOnly plans the paper's width-pruned 8B → 4B student from
// the teacher's config.json alone, and run refuses it before any work.
// NVIDIA's Llama-3.1-Minitron-4B-Width has hidden 3072 and MLP 9216 (32
// heads over 8 KV heads kept): 4,512,746,496 parameters by its config.
func TestPlanConfigOnly(t *testing.T) {
	abs, err := filepath.Abs(llama8B)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	recipe := writeFile(t, filepath.Join(dir, "r.hcl"), `model "teacher" {
  path = "`+filepath.ToSlash(abs)+`"
}

pass "prune-width" {
  model     = model.teacher
  into      = "student"
  criterion = "magnitude"
  hidden    = 3072
  mlp       = 9216
}
`)
	plan := mustWhittle(t, "plan", recipe)
	if !strings.Contains(plan, "model (config only)") || !strings.Contains(plan, "8,030,261,248") || !strings.Contains(plan, "4,512,746,496") {
		t.Errorf("plan:\n%s", plan)
	}
	out := filepath.Join(dir, "run")
	// validate accepts what run starts, and refuses what it refuses.
	for _, args := range [][]string{{"validate", recipe}, {"run", recipe, "--out", out}} {
		_, _, err = whittle(t, args...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), "configuration without weights") {
			t.Errorf("%s of a config-only model: exit %d, %v", args[0], exitCode(err), err)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("run created %s before refusing (%v)", out, err)
	}
}
