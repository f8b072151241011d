// Command table prints the results table of examples/moe/README.md from
// the run directories of examples/moe/moe.hcl, one per seed: the
// validation loss of every stage, mean ± sample standard deviation over
// the seeds, then one row per seed. A seed whose run has not finished is
// left out and named on stderr.
//
//	go run ./examples/moe/table runs/moe/seed1 runs/moe/seed2 ...
package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/whittle-ml/whittle/core/pipeline"
)

// stages are the eval passes of the recipe, in table order.
var stages = []struct{ pass, label string }{
	{"eval-upcycled", "upcycled (= dense)"},
	{"eval-moe", "4 experts, trained"},
	{"eval-scored-pruned", "pruned: mean_output"},
	{"eval-total-pruned", "pruned: total_output"},
	{"eval-prob-pruned", "pruned: prob_mass"},
	{"eval-random-pruned", "pruned: random"},
	{"eval-scored-distilled", "distilled: mean_output"},
	{"eval-total-distilled", "distilled: total_output"},
	{"eval-prob-distilled", "distilled: prob_mass"},
	{"eval-random-distilled", "distilled: random"},
}

const metric = "dataset.tinystories.loss"

// run is one seed's losses by eval pass.
type run struct {
	name string
	loss map[string]float64
}

func load(dir string) (run, error) {
	m, err := pipeline.ReadManifest(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return run{}, err
	}
	r := run{name: filepath.Base(dir), loss: map[string]float64{}}
	for _, p := range m.Passes {
		if v, ok := p.Metrics[metric].(float64); ok && p.Status == "done" {
			r.loss[p.Name] = v
		}
	}
	for _, s := range stages {
		if _, ok := r.loss[s.pass]; !ok {
			return r, fmt.Errorf("%s: pass %s has no %s (not finished?)", dir, s.pass, metric)
		}
	}
	return r, nil
}

// meanSD is the mean and the sample standard deviation (0 for one value).
func meanSD(v []float64) (mean, sd float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	if len(v) < 2 {
		return mean, 0
	}
	for _, x := range v {
		sd += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(sd / float64(len(v)-1))
}

func write(w io.Writer, runs []run) {
	fmt.Fprintf(w, "Validation loss (nats/token) on TinyStories, mean ± sd over %d seeds:\n\n", len(runs))
	fmt.Fprintln(w, "| stage | loss |")
	fmt.Fprintln(w, "|---|---|")
	for _, s := range stages {
		var v []float64
		for _, r := range runs {
			v = append(v, r.loss[s.pass])
		}
		m, sd := meanSD(v)
		fmt.Fprintf(w, "| %s | %.4f ± %.4f |\n", s.label, m, sd)
	}
	fmt.Fprintln(w, "\nPer seed:")
	fmt.Fprintln(w)
	head := []string{"run"}
	for _, s := range stages {
		head = append(head, s.label)
	}
	fmt.Fprintln(w, "| "+strings.Join(head, " | ")+" |")
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(head)))
	for _, r := range runs {
		row := []string{r.name}
		for _, s := range stages {
			row = append(row, fmt.Sprintf("%.4f", r.loss[s.pass]))
		}
		fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: table RUN_DIR...")
		os.Exit(2)
	}
	var runs []run
	for _, dir := range os.Args[1:] {
		r, err := load(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "table: skipping", err)
			continue
		}
		runs = append(runs, r)
	}
	if len(runs) == 0 {
		fmt.Fprintln(os.Stderr, "table: no finished run")
		os.Exit(1)
	}
	write(os.Stdout, runs)
}
