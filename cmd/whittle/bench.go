package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/plugins/cpu/bench"
)

func newBenchCmd() *cobra.Command {
	var (
		o          bench.Options
		asJSON     bool
		peer       bool
		python     string
		peerScript string
		profile    string
	)
	shapes := make([]string, len(bench.Shapes))
	for i, s := range bench.Shapes {
		shapes[i] = s.Name
	}
	cmd := &cobra.Command{
		Use:   "bench --shape S --workload W [--batch B] [--seq T] [--seconds N] [--threads N] [--json] [--peer]",
		Short: "Time the CPU engine on random weights, optionally against the PyTorch peer",
		Long: `bench builds a model of a named shape with random weights and times a
workload on the CPU engine for at least --seconds (after two warm-up steps):

  train       next-token cross-entropy, backward and an AdamW step
  forward     inference forward with the logits of every position
  importance  forward accumulating the Minitron activation statistics
  distill     a teacher of the shape and a student with 3/4 of its hidden
              and MLP widths, forward KL over the full vocabulary
  sgemm       square 1024 matrix products alone (GEMM peak; no model)

--peer then runs shared/bench/torch_peer.py with the same arguments under
Debian's python3 and reports both and the ratio of tokens/s.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(bench.Workloads, o.Workload) {
				return usageErr("bench: --workload must be one of %s, got %q", strings.Join(bench.Workloads, ", "), o.Workload)
			}
			if o.Workload != bench.Sgemm {
				if _, err := bench.LookupShape(o.Shape); err != nil {
					return usageErr("bench: --shape must be one of %s, got %q", strings.Join(shapes, ", "), o.Shape)
				}
				if o.Batch <= 0 || o.Seq <= 0 {
					return usageErr("bench: --batch and --seq must be positive, got %d and %d", o.Batch, o.Seq)
				}
			}
			if o.Threads < 0 || !(o.Seconds >= 0) {
				return usageErr("bench: --threads and --seconds must not be negative")
			}
			if peer && o.Workload == bench.Sgemm {
				return usageErr("bench: the peer has no sgemm workload")
			}
			if peer && peerScript == "" {
				var err error
				if peerScript, err = bench.FindPeerScript("."); err != nil {
					return err
				}
			}
			var prof *fsutil.AtomicFile
			if profile != "" {
				var err error
				if prof, err = fsutil.Create(profile); err != nil {
					return fmt.Errorf("bench: creating profile: %w", err)
				}
				defer prof.Abort()
				o.Profile = prof
			}
			res, err := bench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if prof != nil {
				if err := prof.Commit(); err != nil {
					return fmt.Errorf("bench: writing profile %s: %w", profile, err)
				}
			}
			w := cmd.OutOrStdout()
			if !peer {
				if asJSON {
					return writeJSON(w, res)
				}
				writeBenchText(w, "whittle", res)
				return nil
			}
			// The peer gets the thread count whittle actually used.
			po := o
			po.Threads = res.Threads
			pr, err := bench.RunPeer(cmd.Context(), python, peerScript, po)
			if err != nil {
				return err
			}
			c := bench.Compare(res, pr)
			if asJSON {
				return writeJSON(w, c)
			}
			writeBenchText(w, "whittle", res)
			fmt.Fprintf(w, "%-8s %10.1f tokens/s  peak RSS %s  (%s params, torch %s)\n",
				"peer", pr.TokensPerS, mib(pr.PeakRSSBytes), pipeline.FormatCount(pr.Params), pr.Torch)
			fmt.Fprintf(w, "ratio    %.2fx tokens/s", c.Ratio)
			if c.RSSRatio > 0 {
				fmt.Fprintf(w, ", %.2fx peak RSS", c.RSSRatio)
			}
			fmt.Fprintln(w)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Shape, "shape", "stories15M", "model shape: "+strings.Join(shapes, ", "))
	f.StringVar(&o.Workload, "workload", bench.Train, "workload: "+strings.Join(bench.Workloads, ", "))
	f.IntVar(&o.Batch, "batch", 8, "sequences per step")
	f.IntVar(&o.Seq, "seq", 256, "tokens per sequence")
	f.Float64Var(&o.Seconds, "seconds", 10, "minimum timed duration (at least 3 steps run)")
	f.IntVar(&o.Threads, "threads", 0, "threads (0 = GOMAXPROCS, "+fmt.Sprint(runtime.GOMAXPROCS(0))+" here)")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of the random weights and tokens")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	f.BoolVar(&peer, "peer", false, "also run the PyTorch peer on the same workload and print the ratio")
	f.StringVar(&python, "python", bench.DefaultPython, "Python interpreter with torch, for --peer")
	f.StringVar(&peerScript, "peer-script", "", "path of torch_peer.py (default: "+bench.PeerScript+" found above the working directory)")
	f.StringVar(&profile, "profile", "", "write a CPU profile (pprof) of the timed steps to this file")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

func writeBenchText(w io.Writer, name string, r *bench.Result) {
	if r.Workload == bench.Sgemm {
		fmt.Fprintf(w, "%-8s sgemm %d³: %.1f GFLOP/s  (%d products in %.1f s, %d threads, kernel %s)\n",
			name, bench.SgemmSize, r.GFLOPS, r.Steps, r.Seconds, r.Threads, r.Kernel)
		return
	}
	fmt.Fprintf(w, "%-8s %10.1f tokens/s  peak RSS %s  (%s params, %d steps in %.1f s, %d threads, %.1f GFLOP/s, kernel %s)\n",
		name, r.TokensPerS, mib(r.PeakRSSBytes), pipeline.FormatCount(r.Params), r.Steps, r.Seconds, r.Threads, r.GFLOPS, r.Kernel)
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
