package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// moeConfigs are published mixture-of-experts configs (ir/hf's
// testdata) with their total and active parameters, counted by hand
// there.
var moeConfigs = []struct {
	file, total, active, arch string
}{
	{"mixtral-8x7b-v0.1.json", "46,702,792,704", "12,879,925,248", "experts=8x14336 top-2"},
	{"qwen1.5-moe-a2.7b.json", "14,315,784,192", "2,689,173,504", "experts=60x1408 top-4 shared=5632"},
	{"qwen3-30b-a3b.json", "30,532,122,624", "3,353,032,704", "experts=128x768 top-8"},
}

// moeConfigDir copies a published config into a directory of its own,
// as config.json.
func moeConfigDir(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "ir", "hf", "testdata", "configs", file))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), strings.TrimSuffix(file, ".json"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "config.json"), string(raw))
	return dir
}

// TestInspectPlanMoE: inspect shows a mixture of experts' active
// parameters beside the total (a dense model has no such line), and
// plan's PARAMS column does too, with the experts in the architecture.
func TestInspectPlanMoE(t *testing.T) {
	for _, c := range moeConfigs {
		t.Run(c.file, func(t *testing.T) {
			dir := moeConfigDir(t, c.file)
			out := mustWhittle(t, "inspect", dir)
			for _, want := range []string{"(" + c.total + ", 100.0%)", "\nactive ", "(" + c.active + ", ", c.arch} {
				if !strings.Contains(out, want) {
					t.Errorf("inspect lacks %q:\n%s", want, out)
				}
			}
			if js := mustWhittle(t, "inspect", "--json", dir); !strings.Contains(js, `"active": `+strings.ReplaceAll(c.active, ",", "")) {
				t.Errorf("inspect --json:\n%s", js)
			}
			recipe := writeFile(t, filepath.Join(t.TempDir(), "r.hcl"), "model \"m\" {\n  path = \""+filepath.ToSlash(filepath.Join(dir, "config.json"))+"\"\n}\n")
			plan := mustWhittle(t, "plan", recipe)
			if want := c.total + " (active " + c.active + ")"; !strings.Contains(plan, want) || !strings.Contains(plan, c.arch) {
				t.Errorf("plan lacks %q or %q:\n%s", want, c.arch, plan)
			}
		})
	}
	if out := mustWhittle(t, "inspect", llama8B); strings.Contains(out, "active") {
		t.Errorf("a dense model's inspect has an active line:\n%s", out)
	}
}
