// Command whittle-plugin-gotch is whittle's libtorch backend as a plugin.
// whittle starts it (through go-plugin) for recipes with
//
//	backend "gpu" {
//	  plugin    = "gotch"
//	  device    = "cuda:0"  # or "cpu", "auto" (the default)
//	  precision = "bf16"    # or "fp32"
//	}
//
// Run by hand it offers two subcommands:
//
//	whittle-plugin-gotch info
//	whittle-plugin-gotch bench --shape llama-1B --workload train [--peer] ...
//
// bench times the backend's workloads on random weights beside the PyTorch
// peer (shared/bench/torch_peer.py), which `whittle bench` cannot yet run
// on another backend; --markdown writes the rows docs/benchmarks.md takes.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/plugins/gotch/backend"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
	"github.com/whittle-ml/whittle/plugins/sdk"
)

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "info":
			err = info(os.Stdout)
		case "bench":
			err = bench(os.Args[2:], os.Stdout)
		case "-h", "-help", "--help", "help":
			fmt.Fprintln(os.Stderr, "usage: whittle-plugin-gotch [info | bench [flags]]; without arguments it serves whittle")
			return
		default:
			err = fmt.Errorf("unknown subcommand %q (want info or bench)", os.Args[1])
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "whittle-plugin-gotch: %v\n", err)
			os.Exit(1)
		}
		return
	}
	sdk.Serve(sdk.Plugin{Name: "gotch", Version: backend.Version, Backend: open})
}

// config is a backend block's attributes.
type config struct {
	Device    string `json:"device"`
	Precision string `json:"precision"`
	Threads   int    `json:"threads"`
	LossChunk int    `json:"loss_chunk"`
}

// parseConfig decodes a backend block's attributes, rejecting unknown ones
// (a misspelt attribute must not be silently ignored).
func parseConfig(raw json.RawMessage) (config, error) {
	var c config
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("gotch backend attributes: %w (known: device, precision, threads, loss_chunk)", err)
	}
	if dec.More() {
		return c, fmt.Errorf("gotch backend attributes: trailing data after the object")
	}
	if c.Threads < 0 || c.LossChunk < 0 {
		return c, fmt.Errorf("gotch backend attributes: threads %d and loss_chunk %d must not be negative", c.Threads, c.LossChunk)
	}
	return c, nil
}

func open(raw json.RawMessage) (sdk.Backend, error) {
	c, err := parseConfig(raw)
	if err != nil {
		return nil, err
	}
	return backend.New(backend.Options{Device: c.Device, Precision: c.Precision, Threads: c.Threads, LossChunk: c.LossChunk})
}

func info(w io.Writer) error {
	out := map[string]any{
		"libtorch":     torch.Version(),
		"cuda":         torch.CUDAAvailable(),
		"cuda_devices": torch.CUDADeviceCount(),
		"fused_adamw":  torch.HasFusedAdamW(),
		"threads":      torch.Threads(),
	}
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(out)
}

// peakTFLOPS are dense bf16 tensor-core peaks by card name (the MFU
// denominator), from NVIDIA's data sheets.
var peakTFLOPS = []struct {
	match  string
	tflops float64
}{
	{"H200", 989.4}, {"H100 PCIe", 756.5}, {"H100 NVL", 835.5}, {"H100", 989.4}, {"A100", 312}, {"L40S", 362.05}, {"L4", 121},
}

func bench(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	shapes := fs.String("shape", "stories110M", "comma-separated shapes: stories260K, stories15M, stories110M, llama-1B")
	workloads := fs.String("workload", "train", "comma-separated workloads: train, forward, importance, distill")
	batch := fs.Int("batch", 0, "sequences per step (0: 8 for llama-1B, 16 otherwise)")
	seq := fs.Int("seq", 0, "tokens per sequence (0: 2048 for llama-1B, 1024 otherwise)")
	seconds := fs.Float64("seconds", 10, "minimum timed seconds per run")
	device := fs.String("device", "auto", "cpu, cuda or cuda:N")
	precision := fs.String("precision", "", "bf16 or fp32 (default: bf16 on CUDA)")
	threads := fs.Int("threads", 0, "libtorch intra-op threads")
	peer := fs.Bool("peer", false, "also run shared/bench/torch_peer.py and report the ratio")
	python := fs.String("python", "python3", "interpreter for the peer")
	script := fs.String("peer-script", "", "path of torch_peer.py (default: found walking up to shared/bench)")
	card := fs.String("card", "", "the accelerator's name for the table (default: from nvidia-smi)")
	peak := fs.Float64("peak-tflops", 0, "the accelerator's dense bf16 peak, for MFU (default: by card name)")
	markdown := fs.String("markdown", "", "write a markdown table of the runs to this file")
	asJSON := fs.Bool("json", false, "print JSON lines instead of text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *peer && *script == "" {
		p, err := findUp("shared/bench/torch_peer.py")
		if err != nil {
			return err
		}
		*script = p
	}
	if *card == "" {
		if out, err := exec.Command("nvidia-smi", "--query-gpu=name", "--format=csv,noheader").Output(); err == nil {
			*card = strings.TrimSpace(strings.Split(string(out), "\n")[0])
		}
	}
	if *peak == 0 {
		for _, p := range peakTFLOPS {
			if strings.Contains(*card, p.match) {
				*peak = p.tflops
				break
			}
		}
	}
	b, err := backend.New(backend.Options{Device: *device, Precision: *precision, Threads: *threads})
	if err != nil {
		return err
	}
	defer b.Close()
	ctx := context.Background()
	var rows []row
	for _, sh := range strings.Split(*shapes, ",") {
		for _, wl := range strings.Split(*workloads, ",") {
			o := backend.BenchOptions{Shape: strings.TrimSpace(sh), Workload: strings.TrimSpace(wl), Batch: *batch, Seq: *seq, Seconds: *seconds}
			if o.Batch == 0 {
				o.Batch = map[bool]int{true: 8, false: 16}[o.Shape == "llama-1B"]
			}
			if o.Seq == 0 {
				o.Seq = map[bool]int{true: 2048, false: 1024}[o.Shape == "llama-1B"]
			}
			r := row{opts: o}
			if r.res, err = b.Bench(ctx, o); err != nil {
				r.err = err
			}
			if *peer {
				r.peer, r.peerErr = runPeer(ctx, *python, *script, o, r.res, *threads)
			}
			rows = append(rows, r)
			r.print(w, *asJSON, *peak)
		}
	}
	if *markdown != "" {
		if err := fsutil.WriteFile(*markdown, []byte(table(rows, *card, *peak))); err != nil {
			return err
		}
	}
	for _, r := range rows {
		if r.err != nil {
			return fmt.Errorf("%s %s: %w", r.opts.Shape, r.opts.Workload, r.err)
		}
	}
	return nil
}

type peerResult struct {
	Params     int64   `json:"params"`
	Tokens     int64   `json:"tokens"`
	Seconds    float64 `json:"seconds"`
	TokensPerS float64 `json:"tokens_per_s"`
	Device     string  `json:"device"`
	Torch      string  `json:"torch"`
}

type row struct {
	opts    backend.BenchOptions
	res     *backend.BenchResult
	err     error
	peer    *peerResult
	peerErr error
}

func (r row) print(w io.Writer, asJSON bool, peak float64) {
	if asJSON {
		json.NewEncoder(w).Encode(map[string]any{"whittle": r.res, "peer": r.peer, "error": errString(r.err), "peer_error": errString(r.peerErr)})
		return
	}
	if r.err != nil {
		fmt.Fprintf(w, "%-12s %-10s error: %v\n", r.opts.Shape, r.opts.Workload, r.err)
		return
	}
	fmt.Fprintf(w, "%-12s %-10s whittle %10.0f tokens/s  %7.1f TFLOP/s", r.opts.Shape, r.opts.Workload, r.res.TokensPerS, r.res.TFLOPS)
	if peak > 0 {
		fmt.Fprintf(w, " (MFU %.1f%%)", 100*r.res.TFLOPS/peak)
	}
	if r.peer != nil {
		fmt.Fprintf(w, "  peer %10.0f tokens/s  ratio %.2fx", r.peer.TokensPerS, r.res.TokensPerS/r.peer.TokensPerS)
	} else if r.peerErr != nil {
		fmt.Fprintf(w, "  peer error: %v", r.peerErr)
	}
	fmt.Fprintln(w)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func table(rows []row, card string, peak float64) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "| shape | workload | batch×seq | whittle gotch tokens/s | TFLOP/s | MFU | PyTorch eager tokens/s | peer MFU | ratio |\n")
	fmt.Fprintf(&sb, "|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r.err != nil || r.res == nil {
			fmt.Fprintf(&sb, "| %s | %s | %d×%d | error: %s | | | | | |\n", r.opts.Shape, r.opts.Workload, r.opts.Batch, r.opts.Seq, oneLine(r.err))
			continue
		}
		mfu, pmfu, peerTPS, ratio := "–", "–", "–", "–"
		if peak > 0 {
			mfu = fmt.Sprintf("%.1f%%", 100*r.res.TFLOPS/peak)
		}
		if r.peer != nil && r.peer.TokensPerS > 0 {
			peerTPS = fmt.Sprintf("%.0f", r.peer.TokensPerS)
			ratio = fmt.Sprintf("%.2f×", r.res.TokensPerS/r.peer.TokensPerS)
			if peak > 0 {
				// The same FLOP count per token as whittle's row.
				perTok := r.res.FLOPsPerStep / float64(r.opts.Batch*r.opts.Seq)
				pmfu = fmt.Sprintf("%.1f%%", 100*perTok*r.peer.TokensPerS/1e12/peak)
			}
		} else if r.peerErr != nil {
			peerTPS = "error: " + oneLine(r.peerErr)
		}
		fmt.Fprintf(&sb, "| %s | %s | %d×%d | %.0f | %.1f | %s | %s | %s | %s |\n", r.opts.Shape, r.opts.Workload, r.opts.Batch, r.opts.Seq,
			r.res.TokensPerS, r.res.TFLOPS, mfu, peerTPS, pmfu, ratio)
	}
	if len(rows) > 0 && rows[0].res != nil {
		res := rows[0].res
		mfuNote := "no peak known, so no MFU"
		if peak > 0 {
			mfuNote = fmt.Sprintf("MFU against %.1f dense bf16 TFLOP/s", peak)
		}
		fmt.Fprintf(&sb, "\nCard: %s (%s); whittle gotch backend on libtorch %s, device %s, matrix products in %s.\n",
			orDash(card), mfuNote, res.Torch, res.Device, res.Compute)
	}
	for _, r := range rows {
		if r.peer != nil {
			how := "float32"
			if r.peer.Device == "cuda" {
				how = "bf16 autocast, fused AdamW"
			}
			fmt.Fprintf(&sb, "Peer: shared/bench/torch_peer.py on torch %s (%s), %s.\n", r.peer.Torch, r.peer.Device, how)
			break
		}
	}
	return sb.String()
}

func oneLine(err error) string {
	if err == nil {
		return ""
	}
	s := strings.ReplaceAll(err.Error(), "\n", " ")
	return strings.ReplaceAll(s, "|", "/")
}

func orDash(s string) string {
	if s == "" {
		return "unknown card"
	}
	return s
}

// runPeer runs torch_peer.py on the same workload on the GPU (or the CPU
// when whittle ran there).
func runPeer(ctx context.Context, python, script string, o backend.BenchOptions, res *backend.BenchResult, threads int) (*peerResult, error) {
	dev := "cuda"
	if res != nil && res.Device == "cpu" {
		dev = "cpu"
	}
	args := []string{script, "--shape", o.Shape, "--workload", o.Workload, "--batch", strconv.Itoa(o.Batch), "--seq", strconv.Itoa(o.Seq),
		"--seconds", strconv.FormatFloat(o.Seconds, 'g', -1, 64), "--device", dev, "--threads", strconv.Itoa(threads)}
	cmd := exec.CommandContext(ctx, python, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return nil, fmt.Errorf("%s %s: %w: %s", python, script, err, msg)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(strings.TrimSpace(lines[i]), "{") {
			var pr peerResult
			if err := json.Unmarshal([]byte(lines[i]), &pr); err != nil {
				return nil, fmt.Errorf("peer output: %w", err)
			}
			return &pr, nil
		}
	}
	return nil, errors.New("peer printed no JSON result")
}

// findUp looks for rel in the working directory and its parents.
func findUp(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s not found above the working directory (use --peer-script)", rel)
		}
		dir = parent
	}
}
