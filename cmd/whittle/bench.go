package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/zclconf/go-cty/cty"

	"github.com/whittle-ml/whittle/core/backend"
	corebench "github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/plugins/cpu/bench"
)

// benchFlags are bench's settings beyond one run's request.
type benchFlags struct {
	shapes, workloads string
	backend           string
	sets              []string
	asJSON, peer      bool
	python, script    string
	profile           string
	markdown          string
	card              string
	peak              float64
}

// peakTFLOPS is MFU's denominator: --peak-tflops, else the card's.
func (f *benchFlags) peakTFLOPS() float64 {
	if f.peak > 0 {
		return f.peak
	}
	return corebench.PeakTFLOPS(f.card)
}

func newBenchCmd() *cobra.Command {
	var (
		q corebench.Request
		f benchFlags
	)
	cmd := &cobra.Command{
		Use:   "bench --shape S --workload W [--backend NAME] [--batch B] [--seq T] [--seconds N] [--json] [--peer]",
		Short: "Time a backend on random weights, optionally against the PyTorch peer",
		Long: `bench builds a model of a named shape with random weights and times a
workload for at least --seconds (after two warm-up steps):

  train       next-token cross-entropy, backward and an AdamW step
  forward     inference forward with the logits of every position
  importance  forward accumulating the Minitron activation statistics
  distill     a teacher of the shape and a student with 3/4 of its hidden
              and MLP widths, forward KL over the full vocabulary
  sgemm       square 1024 matrix products alone (built-in backend only)

--shape and --workload take comma-separated lists; every pair runs.

--backend names a backend plugin as a recipe's plugin attribute does (a
name such as gotch, or a path); --set key=value passes it the attributes
a backend block would (e.g. --set device=cuda --set precision=bf16).
Without --backend the built-in CPU engine runs in this process.

--peer then runs shared/bench/torch_peer.py with the same arguments under
Debian's python3 (on CUDA when the backend ran there) and reports both and
the ratio of tokens/s. On a GPU, MFU is reported against the card's dense
bf16 peak (--card, --peak-tflops override what nvidia-smi says);
--markdown writes the table docs/benchmarks.md holds.

Peak memory is a process's high-water mark: a plugin backend gets a fresh
process for each run, the built-in one shares this process between runs,
so compare its memory with one run per invocation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), cmd.OutOrStdout(), q, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.shapes, "shape", "stories15M", "model shapes, comma-separated: "+strings.Join(corebench.ShapeNames(), ", "))
	fl.StringVar(&f.workloads, "workload", bench.Train, "workloads, comma-separated: "+strings.Join(bench.Workloads, ", "))
	fl.IntVar(&q.Batch, "batch", 8, "sequences per step")
	fl.IntVar(&q.Seq, "seq", 256, "tokens per sequence")
	fl.Float64Var(&q.Seconds, "seconds", 10, "minimum timed duration of each run (at least 3 steps run)")
	fl.IntVar(&q.Threads, "threads", 0, "threads (0: the backend's default, GOMAXPROCS = "+fmt.Sprint(runtime.GOMAXPROCS(0))+" for the built-in one)")
	fl.Uint64Var(&q.Seed, "seed", 1, "seed of the random weights and tokens")
	fl.StringVar(&f.backend, "backend", "", "backend plugin to time (name or path; default: the built-in CPU engine)")
	fl.StringArrayVar(&f.sets, "set", nil, "backend attribute key=value for --backend (repeatable)")
	fl.BoolVar(&f.asJSON, "json", false, "print one JSON object per run")
	fl.BoolVar(&f.peer, "peer", false, "also run the PyTorch peer on the same workload and print the ratio")
	fl.StringVar(&f.python, "python", corebench.DefaultPython, "Python interpreter with torch, for --peer")
	fl.StringVar(&f.script, "peer-script", "", "path of torch_peer.py (default: "+corebench.PeerScript+" found above the working directory)")
	fl.StringVar(&f.profile, "profile", "", "write a CPU profile (pprof) of the timed steps to this file (built-in backend, one run)")
	fl.StringVar(&f.markdown, "markdown", "", "write the runs as a markdown table to this file")
	fl.StringVar(&f.card, "card", "", "the accelerator's name for MFU and the table (default: from nvidia-smi)")
	fl.Float64Var(&f.peak, "peak-tflops", 0, "peak TFLOP/s for MFU (default: the card's dense bf16 peak)")
	return cmd
}

// benchRunner times one request on whichever backend was chosen.
type benchRunner func(ctx context.Context, q corebench.Request) (*corebench.Result, error)

func runBench(ctx context.Context, w io.Writer, q corebench.Request, f benchFlags) error {
	shapes, workloads := splitList(f.shapes), splitList(f.workloads)
	builtin := f.backend == "" || f.backend == "cpu"
	for _, wl := range workloads {
		if !slices.Contains(bench.Workloads, wl) {
			return usageErr("bench: --workload must be one of %s, got %q", strings.Join(bench.Workloads, ", "), wl)
		}
		if wl == bench.Sgemm && (f.peer || !builtin) {
			return usageErr("bench: sgemm runs on the built-in backend alone, without --peer")
		}
	}
	if !(len(workloads) == 1 && workloads[0] == bench.Sgemm) {
		for _, s := range shapes {
			if _, err := corebench.LookupShape(s); err != nil {
				return usageErr("bench: --shape must be one of %s, got %q", strings.Join(corebench.ShapeNames(), ", "), s)
			}
		}
		if q.Batch <= 0 || q.Seq <= 0 {
			return usageErr("bench: --batch and --seq must be positive, got %d and %d", q.Batch, q.Seq)
		}
	}
	if q.Threads < 0 || !(q.Seconds >= 0) || f.peak < 0 {
		return usageErr("bench: --threads, --seconds and --peak-tflops must not be negative")
	}
	if len(f.sets) > 0 && builtin {
		return usageErr("bench: --set configures a --backend plugin; the built-in backend takes no settings")
	}
	if f.profile != "" && (!builtin || len(shapes)*len(workloads) != 1) {
		return usageErr("bench: --profile needs the built-in backend and a single run")
	}
	if f.peer && f.script == "" {
		var err error
		if f.script, err = corebench.FindPeerScript(".", ""); err != nil {
			return err
		}
	}

	name := "cpu"
	var run benchRunner
	if builtin {
		var prof *fsutil.AtomicFile
		if f.profile != "" {
			var err error
			if prof, err = fsutil.Create(f.profile); err != nil {
				return fmt.Errorf("bench: creating profile: %w", err)
			}
			defer prof.Abort()
		}
		run = func(ctx context.Context, q corebench.Request) (*corebench.Result, error) {
			o := bench.Options{Request: q}
			if prof != nil {
				o.Profile = prof
			}
			res, err := bench.Run(ctx, o)
			if err == nil && prof != nil {
				if err := prof.Commit(); err != nil {
					return nil, fmt.Errorf("bench: writing profile %s: %w", f.profile, err)
				}
			}
			return res, err
		}
	} else {
		// A fresh plugin process per run, as the peer gets: peak memory
		// (RSS, the accelerator's) then belongs to that run alone.
		name = f.backend
		run = func(ctx context.Context, q corebench.Request) (*corebench.Result, error) {
			bm, closeFn, err := openBenchBackend(ctx, f.backend, f.sets)
			if err != nil {
				return nil, &openError{err}
			}
			defer closeFn()
			return bm.Bench(ctx, q)
		}
	}

	var rows []corebench.Row
	for _, s := range shapes {
		for _, wl := range workloads {
			r := q
			r.Shape, r.Workload = s, wl
			row := corebench.Row{Request: r}
			row.Result, row.Err = run(ctx, r)
			var oe *openError
			if errors.As(row.Err, &oe) {
				return oe.err // no backend, no run will do better
			}
			if row.Err == nil && f.peer {
				pq := r
				pq.Threads = row.Result.Threads
				if corebench.PeerDevice(row.Result.Device) == "cuda" {
					pq.Threads = q.Threads // the host thread count means nothing to a GPU run
				}
				row.Peer, row.PeerErr = corebench.RunPeer(ctx, f.python, f.script, pq, corebench.PeerDevice(row.Result.Device))
			}
			if row.Err == nil && f.card == "" && corebench.PeerDevice(row.Result.Device) == "cuda" {
				f.card = corebench.DetectCard(ctx)
			}
			if err := printBenchRow(w, f.asJSON, len(shapes)*len(workloads) > 1, row, f.peakTFLOPS()); err != nil {
				return err
			}
			rows = append(rows, row)
		}
	}
	if f.markdown != "" {
		table := corebench.Markdown(rows, corebench.TableInfo{Backend: name, Card: f.card, PeakTFLOPS: f.peakTFLOPS()})
		if err := fsutil.WriteFile(f.markdown, []byte(table)); err != nil {
			return fmt.Errorf("bench: writing %s: %w", f.markdown, err)
		}
	}
	var errs []error
	for _, r := range rows {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", r.Request.Shape, r.Request.Workload, r.Err))
		}
		if r.PeerErr != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", r.Request.Shape, r.Request.Workload, r.PeerErr))
		}
	}
	return errors.Join(errs...)
}

// openError is a backend plugin that could not be started.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

// openBenchBackend starts a backend plugin as a recipe's backend block
// with these attributes would.
func openBenchBackend(ctx context.Context, plugin string, sets []string) (backend.Benchmarker, func(), error) {
	cfg := map[string]cty.Value{}
	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, nil, usageErr("bench: --set wants key=value, got %q", kv)
		}
		cfg[k] = attrValue(v)
	}
	be, err := pluginHost().OpenBackend(ctx, &recipe.Backend{Name: plugin, Plugin: plugin, Config: cfg})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	closeFn := func() { be.Close() }
	info, err := be.Info(ctx)
	if err != nil {
		closeFn()
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	bm, ok := be.(backend.Benchmarker)
	if !ok || !info.Has(backend.CapBench) {
		closeFn()
		return nil, nil, fmt.Errorf("bench: backend %s %s (%s) does not offer benchmarks (capabilities: %s)",
			info.Name, info.Version, plugin, strings.Join(info.Capabilities, ", "))
	}
	return bm, closeFn, nil
}

// attrValue reads a --set value as a recipe would write it: a number or a
// bool when it parses as one, else a string.
func attrValue(s string) cty.Value {
	if s == "true" || s == "false" {
		return cty.BoolVal(s == "true")
	}
	if n, err := cty.ParseNumberVal(s); err == nil {
		return n
	}
	return cty.StringVal(s)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func printBenchRow(w io.Writer, asJSON, many bool, r corebench.Row, peak float64) error {
	if asJSON {
		if r.Err != nil {
			return writeJSON(w, map[string]string{"shape": r.Request.Shape, "workload": r.Request.Workload, "error": r.Err.Error()})
		}
		if r.Peer == nil && r.PeerErr == nil {
			return writeJSON(w, r.Result)
		}
		if r.PeerErr != nil {
			return writeJSON(w, map[string]any{"whittle": r.Result, "peer_error": r.PeerErr.Error()})
		}
		return writeJSON(w, corebench.Compare(r.Result, r.Peer))
	}
	if many {
		fmt.Fprintf(w, "== %s %s (%d×%d)\n", r.Request.Shape, r.Request.Workload, r.Request.Batch, r.Request.Seq)
	}
	if r.Err != nil {
		fmt.Fprintf(w, "whittle  error: %v\n", r.Err)
		return nil
	}
	writeBenchText(w, "whittle", r.Result, peak)
	if r.PeerErr != nil {
		fmt.Fprintf(w, "peer     error: %v\n", r.PeerErr)
	}
	if r.Peer == nil {
		return nil
	}
	pr := r.Peer
	fmt.Fprintf(w, "%-8s %10.1f tokens/s  peak RSS %s  (%s params, torch %s, %s)\n",
		"peer", pr.TokensPerS, mib(pr.PeakRSSBytes), pipeline.FormatCount(pr.Params), pr.Torch, pr.Device)
	c := corebench.Compare(r.Result, pr)
	fmt.Fprintf(w, "ratio    %.2fx tokens/s", c.Ratio)
	if c.RSSRatio > 0 {
		fmt.Fprintf(w, ", %.2fx peak RSS", c.RSSRatio)
	}
	fmt.Fprintln(w)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

func writeBenchText(w io.Writer, name string, r *corebench.Result, peak float64) {
	if r.Workload == bench.Sgemm {
		fmt.Fprintf(w, "%-8s sgemm %d³: %.1f GFLOP/s  (%d products in %.1f s, %d threads, kernel %s)\n",
			name, bench.SgemmSize, r.GFLOPS, r.Steps, r.Seconds, r.Threads, r.Kernel)
		return
	}
	mem := "peak RSS " + mib(r.PeakRSSBytes)
	if r.PeakDeviceMemBytes > 0 {
		mem = "peak device memory " + mib(r.PeakDeviceMemBytes)
	}
	rate := fmt.Sprintf("%.1f GFLOP/s", r.GFLOPS)
	if r.GFLOPS >= 1e4 {
		rate = fmt.Sprintf("%.1f TFLOP/s", r.GFLOPS/1e3)
	}
	if mfu := r.MFU(peak); mfu > 0 {
		rate += fmt.Sprintf(", MFU %.1f%%", 100*mfu)
	}
	fmt.Fprintf(w, "%-8s %10.1f tokens/s  %s  (%s params, %d steps in %.1f s, %d threads, %s, %s on %s)\n",
		name, r.TokensPerS, mem, pipeline.FormatCount(r.Params), r.Steps, r.Seconds, r.Threads, rate, r.Kernel, orDash(r.Device))
	if len(r.PerRank) > 1 {
		for _, m := range r.PerRank {
			peak := "peak RSS " + mib(m.PeakRSSBytes)
			if m.PeakDeviceMemBytes > 0 {
				peak = "peak device memory " + mib(m.PeakDeviceMemBytes)
			}
			fmt.Fprintf(w, "%-8s   rank %d: %s; parameters %s, gradients %s, optimizer state %s\n",
				"", m.Rank, peak, mib(m.ParamBytes), mib(m.GradBytes), mib(m.OptimStateBytes))
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
