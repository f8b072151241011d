// Package bench is the backend-neutral half of `whittle bench`: the model
// shapes and workloads of the PyTorch peer (shared/bench/torch_peer.py),
// the request a backend benchmarks and the result it reports, the FLOP
// count behind TFLOP/s and MFU, running the peer, and the comparison
// table. Each backend times its own engine (plugins/cpu/bench for the CPU
// engine, the gotch plugin for libtorch); this package keeps them
// measuring the same thing.
package bench

import (
	"fmt"
	"slices"
	"strings"

	"github.com/whittle-ml/whittle/ir"
)

// Shape is a model architecture of the peer's table: uniform layers,
// head_dim = Dim/Heads.
type Shape struct {
	Name                                  string
	Dim, Layers, Heads, KVHeads, FFN, Voc int
	Tied                                  bool
	// Experts, when positive, makes every layer's MLP a mixture of that
	// many routed experts of FFN neurons each, TopK per token
	// (renormalized, as Mixtral): FLOPs count the active experts only.
	Experts, TopK int
}

// Shapes are the architectures both benchmarks know, as torch_peer.py's
// SHAPES table lists them.
var Shapes = []Shape{
	{Name: "stories260K", Dim: 64, Layers: 5, Heads: 8, KVHeads: 4, FFN: 172, Voc: 512, Tied: true},
	{Name: "stories15M", Dim: 288, Layers: 6, Heads: 6, KVHeads: 6, FFN: 768, Voc: 32000, Tied: true},
	{Name: "stories110M", Dim: 768, Layers: 12, Heads: 12, KVHeads: 12, FFN: 2048, Voc: 32000, Tied: true},
	{Name: "llama-1B", Dim: 2048, Layers: 16, Heads: 32, KVHeads: 8, FFN: 8192, Voc: 32000, Tied: false},
	// stories15M's width with 8 experts, top-2 (whittle's own; the
	// PyTorch peer has no MoE shape).
	{Name: "moe-15M", Dim: 288, Layers: 6, Heads: 6, KVHeads: 6, FFN: 768, Voc: 32000, Tied: true, Experts: 8, TopK: 2},
}

// ShapeNames lists the known shapes' names.
func ShapeNames() []string {
	names := make([]string, len(Shapes))
	for i, s := range Shapes {
		names[i] = s.Name
	}
	return names
}

// LookupShape finds a shape by name.
func LookupShape(name string) (Shape, error) {
	for _, s := range Shapes {
		if s.Name == name {
			return s, nil
		}
	}
	return Shape{}, fmt.Errorf("bench: unknown shape %q (known: %s)", name, strings.Join(ShapeNames(), ", "))
}

// Config is the shape as an IR configuration that admits seq positions,
// with the peer's RMSNorm epsilon and RoPE base.
func (s Shape) Config(seq int) ir.Config {
	layer := ir.LayerConfig{Heads: s.Heads, KVHeads: s.KVHeads, HeadDim: s.Dim / s.Heads, MLP: s.FFN}
	arch := "llama"
	if s.Experts > 0 {
		layer.MLP, layer.Experts, layer.ExpertMLP = 0, s.Experts, s.FFN
		arch = "mixtral"
	}
	c := ir.Config{
		Arch: arch, Vocab: s.Voc, Hidden: s.Dim,
		Layers:  ir.UniformLayers(s.Layers, layer),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: seq, Tied: s.Tied, BOS: 1, EOS: 2,
	}
	if s.Experts > 0 {
		c.ExpertsPerToken, c.NormTopK = s.TopK, true
	}
	return c
}

// Student is the distillation workload's student: 3/4 of the hidden width
// (rounded down to a multiple of the head count, head_dim following) and
// 3/4 of the MLP width, as the peer builds it.
func (s Shape) Student() Shape {
	st := s
	st.Name = s.Name + "-student"
	st.Dim = s.Dim * 3 / 4 / s.Heads * s.Heads
	st.FFN = s.FFN * 3 / 4
	return st
}

// The peer's workloads.
const (
	// Train is next-token cross-entropy, backward and an AdamW step.
	Train = "train"
	// Forward is an inference forward with the logits of every position.
	Forward = "forward"
	// Importance is a forward accumulating the Minitron activation
	// statistics.
	Importance = "importance"
	// Distill trains a student with 3/4 of the widths against a frozen
	// teacher of the shape, forward KL over the full vocabulary.
	Distill = "distill"
)

// Workloads lists the peer's workloads, the ones every benchmarking
// backend runs.
var Workloads = []string{Train, Forward, Importance, Distill}

// Request selects one benchmark run. It is plain data with JSON tags: it
// crosses the plugin boundary as is.
type Request struct {
	Shape    string `json:"shape"`
	Workload string `json:"workload"`
	Batch    int    `json:"batch"`
	Seq      int    `json:"seq"`
	// Seconds is the minimum timed duration; at least three steps run, after
	// two untimed warm-up steps, as in the peer.
	Seconds float64 `json:"seconds"`
	// Threads is the engine's thread count; 0 lets the backend choose.
	Threads int `json:"threads,omitempty"`
	// Seed draws the weights and tokens.
	Seed uint64 `json:"seed,omitempty"`
}

// Check validates a request for one of the peer's workloads.
func (r Request) Check() error {
	if !slices.Contains(Workloads, r.Workload) {
		return fmt.Errorf("bench: unknown workload %q (known: %s)", r.Workload, strings.Join(Workloads, ", "))
	}
	if _, err := LookupShape(r.Shape); err != nil {
		return err
	}
	if r.Batch <= 0 || r.Seq <= 0 {
		return fmt.Errorf("bench: batch %d and sequence length %d must be positive", r.Batch, r.Seq)
	}
	if !(r.Seconds >= 0) || r.Threads < 0 {
		return fmt.Errorf("bench: seconds %g and threads %d must not be negative", r.Seconds, r.Threads)
	}
	return nil
}

// Result is what one run measured. The JSON field names match the peer's
// where they overlap.
type Result struct {
	Shape    string `json:"shape"`
	Workload string `json:"workload"`
	Batch    int    `json:"batch"`
	Seq      int    `json:"seq"`
	// Params counts the weights being trained (the student for distill),
	// a tied classifier once.
	Params     int64   `json:"params"`
	Steps      int     `json:"steps"`
	Tokens     int64   `json:"tokens"`
	Seconds    float64 `json:"seconds"`
	TokensPerS float64 `json:"tokens_per_s"`
	Threads    int     `json:"threads"`
	// FLOPsPerStep counts matrix multiply FLOPs (2 per multiply-add) of one
	// step as StepFLOPs does.
	FLOPsPerStep float64 `json:"flops_per_step"`
	// GFLOPS is the achieved rate, FLOPsPerStep·Steps/Seconds/1e9.
	GFLOPS float64 `json:"gflops"`
	// Device is where it ran: "cpu", "cuda:0".
	Device string `json:"device,omitempty"`
	// Kernel says what computed: the CPU engine's GEMM kernel, or the
	// libtorch version and the matrix products' dtype.
	Kernel string `json:"kernel"`
	// PeakRSSBytes is the process's high-water resident set size.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	// PeakDeviceMemBytes is the accelerator memory high-water mark.
	PeakDeviceMemBytes int64  `json:"peak_device_mem_bytes,omitempty"`
	GoVersion          string `json:"go,omitempty"`
	// Loss is the last step's objective (train, distill), a sanity check
	// that real numbers flowed.
	Loss float64 `json:"loss,omitempty"`
	// PerRank is each rank's memory when the backend runs several
	// processes (the torch plugin's ranks): what ZeRO-1 and FSDP2 shard
	// shows in OptimStateBytes, GradBytes and ParamBytes.
	PerRank []RankMemory `json:"per_rank,omitempty"`
}

// RankMemory is one rank's memory during a benchmark.
type RankMemory struct {
	Rank               int   `json:"rank"`
	PeakRSSBytes       int64 `json:"peak_rss_bytes"`
	PeakDeviceMemBytes int64 `json:"peak_device_mem_bytes,omitempty"`
	// ParamBytes, GradBytes and OptimStateBytes are what the rank holds
	// of the trained model's parameters, their gradients and the
	// optimizer's state (its shard, when they are sharded).
	ParamBytes      int64 `json:"param_bytes"`
	GradBytes       int64 `json:"grad_bytes"`
	OptimStateBytes int64 `json:"optim_state_bytes"`
}

// Finish fills the totals and rates of steps timed over seconds.
func (r *Result) Finish(steps int, seconds float64) {
	r.Steps, r.Seconds = steps, seconds
	r.Tokens = int64(r.Batch) * int64(r.Seq) * int64(steps)
	if seconds > 0 {
		r.TokensPerS = float64(r.Tokens) / seconds
		r.GFLOPS = r.FLOPsPerStep * float64(steps) / seconds / 1e9
	}
}

// MFU is the achieved fraction of a peak of peakTFLOPS, 0 when the peak
// is unknown.
func (r *Result) MFU(peakTFLOPS float64) float64 {
	if !(peakTFLOPS > 0) {
		return 0
	}
	return r.GFLOPS / 1e3 / peakTFLOPS
}

// ForwardFLOPs is the matmul cost of one forward over b·t tokens with
// causal attention (a token at position i attends to i+1 keys).
func ForwardFLOPs(cfg *ir.Config, b, t int) float64 {
	// FLOPsPerToken is linear in its context argument, so evaluating it at
	// contexts 0 and 1 gives the per-key slope exactly.
	base, slope := cfg.FLOPsPerToken(0), cfg.FLOPsPerToken(1)-cfg.FLOPsPerToken(0)
	return float64(b) * (float64(t)*float64(base) + float64(slope)*float64(t)*float64(t+1)/2)
}

// StepFLOPs counts one step of a workload: a forward for forward and
// importance, three forwards' worth for a training step (forward, input
// and weight gradients), the teacher's forward plus the student's
// training step for distill.
func StepFLOPs(s Shape, workload string, batch, seq int) (float64, error) {
	cfg := s.Config(seq)
	fwd := ForwardFLOPs(&cfg, batch, seq)
	switch workload {
	case Forward, Importance:
		return fwd, nil
	case Train:
		return 3 * fwd, nil
	case Distill:
		st := s.Student().Config(seq)
		return fwd + 3*ForwardFLOPs(&st, batch, seq), nil
	}
	return 0, fmt.Errorf("bench: unknown workload %q", workload)
}
