// Command results runs the experiment recipes beside it (or resumes them)
// once per seed into runs/experiments/<name>/seed-<n> and writes
// docs/results.md: one table per Minitron finding giving each number as
// the mean ± sample standard deviation over the seeds, with the token
// budgets, machine and wall time, and a reading of each table derived
// from the measured numbers that only calls a difference when it exceeds
// the seed-to-seed spread.
//
// Run it from the repository root:
//
//	go run ./examples/stories260k/experiments/results
//
// The CPU backend runs with a fixed thread count (-threads, default 2) so
// that throughput numbers compare between runs; its results are bitwise
// repeatable for a given seed, machine and build. A run directory that
// already holds a finished experiment is only re-read.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/passes"
	"github.com/whittle-ml/whittle/plugins/cpu"
)

// MachineFile records, in a run directory, where and how its passes ran.
const MachineFile = "machine.json"

// Machine describes the computer that ran an experiment.
type Machine struct {
	CPU     string    `json:"cpu"`
	Cores   int       `json:"cores"`
	Threads int       `json:"threads"`
	OS      string    `json:"os"`
	Go      string    `json:"go"`
	Date    time.Time `json:"date"`
	// LoadBefore and LoadAfter are the 1-minute load averages around the
	// run: above Cores, other work competed for the CPU and timings
	// (not results) suffer.
	LoadBefore float64 `json:"load_before"`
	LoadAfter  float64 `json:"load_after"`
}

func main() {
	var (
		recipes = flag.String("recipes", "examples/stories260k/experiments", "directory of experiment recipes (*.hcl)")
		runs    = flag.String("runs", "runs/experiments", "directory of run directories, one per recipe")
		out     = flag.String("out", "docs/results.md", "report to write")
		threads = flag.Int("threads", 2, "CPU backend threads")
		only    = flag.String("only", "", "comma-separated experiment names to run (the report covers all)")
		dataDir = flag.String("data", "", "directory of the shared models, corpora and tasks (var.data; default: the recipes' own)")
		seedArg = flag.String("seeds", "1,2,3", "comma-separated seeds; every recipe runs once per seed (at least 3 for a spread)")
		report  = flag.Bool("report", false, "write the report from existing run directories without running")
	)
	flag.Parse()
	seeds, err := parseSeeds(*seedArg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "results: -seeds:", err)
		os.Exit(2)
	}
	if err := run(*recipes, *runs, *out, *threads, *only, *dataDir, seeds, *report); err != nil {
		fmt.Fprintln(os.Stderr, "results:", err)
		os.Exit(1)
	}
}

// parseSeeds reads -seeds: distinct non-negative integers.
func parseSeeds(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a non-negative integer", f)
		}
		if seen[n] {
			return nil, fmt.Errorf("seed %d given twice", n)
		}
		seen[n] = true
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no seeds")
	}
	return out, nil
}

// seedDir is where one seed of an experiment runs.
func seedDir(runsDir, name string, seed int) string {
	return filepath.Join(runsDir, name, "seed-"+strconv.Itoa(seed))
}

func run(recipeDir, runsDir, out string, threads int, only, dataDir string, seeds []int, reportOnly bool) error {
	if threads < 1 {
		return fmt.Errorf("-threads %d: want at least 1", threads)
	}
	paths, err := filepath.Glob(filepath.Join(recipeDir, "*.hcl"))
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return fmt.Errorf("no recipes (*.hcl) in %s", recipeDir)
	}
	want := map[string]bool{}
	for _, n := range strings.Split(only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			want[n] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if !reportOnly {
		for _, p := range paths {
			name := strings.TrimSuffix(filepath.Base(p), ".hcl")
			if len(want) > 0 && !want[name] {
				continue
			}
			for _, seed := range seeds {
				if err := runExperiment(ctx, p, seedDir(runsDir, name, seed), runVars(seed, dataDir), threads); err != nil {
					return fmt.Errorf("%s seed %d: %w", name, seed, err)
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := writeReport(&buf, recipeDir, runsDir, paths, seeds); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := fsutil.WriteFile(out, buf.Bytes()); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", out)
	return nil
}

// provider opens the in-process CPU backend with a fixed thread count;
// the experiment recipes declare no other backend.
type provider struct{ threads int }

func (p provider) Open(ctx context.Context, b *recipe.Backend) (backend.Backend, error) {
	if b != nil {
		return nil, fmt.Errorf("backend %q: the experiments run on the built-in CPU backend only", b.Name)
	}
	return cpu.New(cpu.Options{Threads: p.threads})
}

// runExperiment runs (or resumes) one recipe with vars and, when any pass
// actually ran, records the machine beside the manifest.
func runExperiment(ctx context.Context, path, dir string, vars map[string]string, threads int) error {
	reg, err := passes.Registry()
	if err != nil {
		return err
	}
	r, diags := recipe.Load(path, vars, reg.Language())
	if r != nil {
		diags = append(diags, recipe.CheckFiles(r)...)
	}
	if diags.HasErrors() {
		var files map[string]*hcl.File
		if r != nil {
			files = r.Files
		}
		_ = recipe.WriteDiagnostics(os.Stderr, diags, files)
		return errors.New("the recipe has errors")
	}
	fmt.Fprintf(os.Stderr, "== %s → %s\n", path, dir)
	m := Machine{CPU: cpuModel(), Cores: runtime.NumCPU(), Threads: threads, OS: runtime.GOOS + "/" + runtime.GOARCH,
		Go: runtime.Version(), Date: time.Now().UTC().Truncate(time.Second), LoadBefore: loadAverage()}
	ran := false
	ev := pipeline.Events{
		PassStart: func(i, n int, p *recipe.Pass) {
			fmt.Fprintf(os.Stderr, "[%d/%d] %s (%s)\n", i+1, n, p.Name, p.Kind)
		},
		PassEnd: func(i int, p *recipe.Pass, rec pipeline.PassRecord) {
			ran = ran || !rec.Resumed
			fmt.Fprintf(os.Stderr, "[%d] %s: %s\n", i+1, p.Name, rec.Outcome())
		},
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if _, err := pipeline.Run(ctx, r, reg, pipeline.Options{Dir: dir, Log: log, Backends: provider{threads}}, ev); err != nil {
		return err
	}
	if !ran {
		return nil
	}
	m.LoadAfter = loadAverage()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(dir, MachineFile), append(b, '\n'))
}

// runVars sets the recipe variable every experiment draws its seeds from
// and, when given, the data directory.
func runVars(seed int, dataDir string) map[string]string {
	v := map[string]string{"seed": strconv.Itoa(seed)}
	if dataDir != "" {
		v["data"] = dataDir
	}
	return v
}

// cpuModel is the processor's name as Linux reports it, or the
// architecture elsewhere.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

// loadAverage is the 1-minute load average (Linux), or -1.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var l float64
	if _, err := fmt.Sscan(string(b), &l); err != nil {
		return -1
	}
	return l
}
