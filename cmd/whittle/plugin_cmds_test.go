package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/plugin"
	"github.com/whittle-ml/whittle/core/recipe"
)

// TestMain lets the test binary stand in for the whittle binary when the
// plugin host re-executes it as `<exe> plugin-serve backend` (what
// plugin = "self" runs).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "plugin-serve" {
		root := newRootCmd()
		root.SetArgs(os.Args[1:])
		if err := root.Execute(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// The plugin description cache goes to a directory of the test's own.
	cache, err := os.MkdirTemp("", "whittle-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CACHE_HOME", cache)
	code := m.Run()
	closePluginHost()
	os.RemoveAll(cache)
	os.Exit(code)
}

const selfRecipe = `
variable "data" {
  type = string
}
model "teacher" {
  path      = "${var.data}/models/stories260K/stories260K.bin"
  tokenizer = "${var.data}/models/stories260K/tok512.bin"
}
dataset "stories" {
  path                = "${var.data}/corpora/tinystories_val.txt"
  validation_fraction = 0.05
}
backend "cpu" {
  plugin = "self"
}
pass "score" {
  model   = model.teacher
  dataset = dataset.stories
  into    = "imp"
  samples = 16
  seq_len = 64
  layers  = ["block_influence"]
  %[1]s
}
pass "prune-width" {
  model     = model.teacher
  scores    = scores.imp
  into      = "student"
  mlp_ratio = 0.5
}
pass "distill" {
  student       = model.student
  teacher       = model.teacher
  dataset       = dataset.stories
  into          = "student"
  steps         = 6
  batch         = 4
  seq_len       = 64
  lr            = 0.003
  val_sequences = 8
  eval_every    = 3
  %[1]s
}
pass "eval" {
  model      = model.student
  datasets   = [dataset.stories]
  sequences  = 8
  seq_len    = 64
  prompts    = ["Once upon a time"]
  max_tokens = 8
  %[1]s
}
output "student" {
  model  = model.student
  format = "hf"
  path   = "out/student"
}
`

// TestSelfBackendMatchesInProcess runs one recipe on the built-in CPU
// backend in process and again with every computing pass on
// plugin = "self" (this binary re-executed): every artifact must be
// identical.
func TestSelfBackendMatchesInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on the CPU")
	}
	data := sharedData(t)
	work := t.TempDir()
	ctx := context.Background()
	run := func(name, backendAttr string) (*pipeline.Manifest, string, time.Duration) {
		path := filepath.Join(work, name+".hcl")
		if err := os.WriteFile(path, []byte(fmt.Sprintf(selfRecipe, backendAttr)), 0o644); err != nil {
			t.Fatal(err)
		}
		reg, err := registryWithPlugins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, diags := recipe.Load(path, map[string]string{"data": data}, reg.Language())
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		dir := filepath.Join(work, name)
		start := time.Now()
		man, err := pipeline.Run(ctx, r, reg, pipeline.Options{Dir: dir, Backends: backendProvider()}, pipeline.Events{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return man, dir, time.Since(start)
	}
	inMan, inDir, inTime := run("inprocess", "")
	plMan, plDir, plTime := run("plugin", "backend = backend.cpu")

	// Logged, not asserted: on runs this short the difference is noise
	// around the plugin's start-up (tens of milliseconds).
	t.Logf("wall time: in-process %v, plugin %v (%+.1f%%)", inTime.Round(time.Millisecond), plTime.Round(time.Millisecond),
		100*(plTime.Seconds()-inTime.Seconds())/inTime.Seconds())

	if len(inMan.Passes) != len(plMan.Passes) {
		t.Fatalf("%d vs %d passes", len(inMan.Passes), len(plMan.Passes))
	}
	for i, a := range inMan.Passes {
		b := plMan.Passes[i]
		// Artifacts (scores, models, metrics files) hash the same,
		// except for timings.
		ah, bh := artifactHashes(a), artifactHashes(b)
		for p, h := range ah {
			if strings.HasSuffix(p, "metrics.json") {
				continue
			}
			if bh[p] != h {
				t.Errorf("pass %s: artifact %s differs in-process vs plugin", a.Name, p)
			}
		}
		am, bm := dropTimings(a.Metrics), dropTimings(b.Metrics)
		if !reflect.DeepEqual(am, bm) {
			t.Errorf("pass %s: metrics differ:\n in-process %v\n plugin     %v", a.Name, am, bm)
		}
	}
	for i, o := range inMan.Outputs {
		if o.SHA256 != plMan.Outputs[i].SHA256 {
			t.Errorf("output %s differs in-process vs plugin", o.Name)
		}
	}
	_, _ = inDir, plDir
}

func artifactHashes(p pipeline.PassRecord) map[string]string {
	out := map[string]string{}
	for _, a := range p.Artifacts {
		// Paths are relative to each run directory, so they line up.
		out[a.Path] = a.SHA256
	}
	return out
}

// dropTimings removes the metrics that measure speed rather than results.
func dropTimings(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if strings.Contains(k, "per_s") || strings.Contains(k, "seconds") || strings.Contains(k, "time") {
			continue
		}
		out[k] = v
	}
	return out
}

func TestPluginsCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(plugin.PathEnv, dir)
	t.Setenv("PATH", dir)
	t.Setenv("HOME", dir)
	// A file with the prefix that is not executable is not a plugin.
	if err := os.WriteFile(filepath.Join(dir, plugin.Prefix+"readme"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A plugin that cannot start is listed with its error.
	if err := os.WriteFile(filepath.Join(dir, plugin.Prefix+"broken"), []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The built-in backend, served by this binary (see TestMain).
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, plugin.Prefix+"cpu"), []byte("#!/bin/sh\nexec "+exe+" plugin-serve backend\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := whittle(t, "plugins")
	if err == nil || !strings.Contains(err.Error(), "1 plugin(s) could not be started") {
		t.Errorf("err = %v", err)
	}
	cpuRow := regexp.MustCompile(`(?m)^cpu +\S+ +1 +- +yes +` + regexp.QuoteMeta(filepath.Join(dir, plugin.Prefix+"cpu")) + `$`)
	if !strings.Contains(out, "broken") || !strings.Contains(out, "(failed to start)") || strings.Contains(out, "readme") || !cpuRow.MatchString(out) {
		t.Errorf("output:\n%s", out)
	}
	if !strings.Contains(stderr, "broken: starting plugin \"broken\"") {
		t.Errorf("stderr:\n%s", stderr)
	}
}
