// Package bench times the CPU engine on the workloads of the PyTorch peer
// (shared/bench/torch_peer.py): random weights of a named shape, then
// training steps, inference forwards, forwards with the Minitron
// activation statistics, or distillation steps, for a fixed wall time.
// `whittle bench` is its command line.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/blas"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
)

// Shape is a model architecture of the peer's table: uniform layers,
// head_dim = Dim/Heads, tied classifier as in the llama2.c stories models.
type Shape struct {
	Name                                  string
	Dim, Layers, Heads, KVHeads, FFN, Voc int
	Tied                                  bool
}

// Shapes are the architectures both benchmarks know, as torch_peer.py's
// SHAPES table lists them.
var Shapes = []Shape{
	{Name: "stories260K", Dim: 64, Layers: 5, Heads: 8, KVHeads: 4, FFN: 172, Voc: 512, Tied: true},
	{Name: "stories15M", Dim: 288, Layers: 6, Heads: 6, KVHeads: 6, FFN: 768, Voc: 32000, Tied: true},
	{Name: "stories110M", Dim: 768, Layers: 12, Heads: 12, KVHeads: 12, FFN: 2048, Voc: 32000, Tied: true},
}

// LookupShape finds a shape by name.
func LookupShape(name string) (Shape, error) {
	for _, s := range Shapes {
		if s.Name == name {
			return s, nil
		}
	}
	names := make([]string, len(Shapes))
	for i, s := range Shapes {
		names[i] = s.Name
	}
	return Shape{}, fmt.Errorf("bench: unknown shape %q (known: %s)", name, strings.Join(names, ", "))
}

// Config is the shape as an IR configuration that admits seq positions,
// with the peer's RMSNorm epsilon and RoPE base.
func (s Shape) Config(seq int) ir.Config {
	return ir.Config{
		Arch: "llama", Vocab: s.Voc, Hidden: s.Dim,
		Layers:  ir.UniformLayers(s.Layers, ir.LayerConfig{Heads: s.Heads, KVHeads: s.KVHeads, HeadDim: s.Dim / s.Heads, MLP: s.FFN}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: seq, Tied: s.Tied, BOS: 1, EOS: 2,
	}
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

// Workloads the benchmark runs. Sgemm measures the matrix multiply alone
// (square products of SgemmSize) and has no model.
const (
	Train      = "train"
	Forward    = "forward"
	Importance = "importance"
	Distill    = "distill"
	Sgemm      = "sgemm"
)

// Workloads lists the accepted workload names; the first four are the
// peer's.
var Workloads = []string{Train, Forward, Importance, Distill, Sgemm}

// SgemmSize is the order of the square products the sgemm workload times.
const SgemmSize = 1024

// Options selects a benchmark run.
type Options struct {
	Shape    string
	Workload string
	Batch    int
	Seq      int
	// Seconds is the minimum timed duration; at least three steps run, after
	// two untimed warm-up steps, as in the peer.
	Seconds float64
	// Threads is the goroutine count of the engine and of GEMM, and the
	// GOMAXPROCS of the run; 0 keeps GOMAXPROCS.
	Threads int
	// Seed draws the weights and tokens.
	Seed uint64
	// Profile, when set, receives a CPU profile of the timed steps.
	Profile io.Writer
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
	// step: ir.Config.FLOPsPerToken at the mean causal context (T+1)/2 per
	// token, three times that for a training step (forward, input and weight
	// gradients), teacher forward plus student training for distill.
	FLOPsPerStep float64 `json:"flops_per_step"`
	// GFLOPS is the achieved rate, FLOPsPerStep·Steps/Seconds/1e9.
	GFLOPS float64 `json:"gflops"`
	Kernel string  `json:"kernel"`
	// PeakRSSBytes is the process's high-water resident set size.
	PeakRSSBytes int64  `json:"peak_rss_bytes"`
	GoVersion    string `json:"go"`
	// Loss is the last step's objective (train, distill), a sanity check
	// that real numbers flowed.
	Loss float64 `json:"loss,omitempty"`
}

// step runs one unit of a workload.
type step func() error

// Run builds the workload and times it.
func Run(ctx context.Context, o Options) (*Result, error) {
	if !slices.Contains(Workloads, o.Workload) {
		return nil, fmt.Errorf("bench: unknown workload %q (known: %s)", o.Workload, strings.Join(Workloads, ", "))
	}
	if o.Threads < 0 {
		return nil, fmt.Errorf("bench: negative thread count %d", o.Threads)
	}
	if o.Threads > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(o.Threads))
	}
	threads := runtime.GOMAXPROCS(0)
	res := &Result{
		Shape: o.Shape, Workload: o.Workload, Batch: o.Batch, Seq: o.Seq,
		Threads: threads, Kernel: blas.Kernel(), GoVersion: runtime.Version(),
	}
	var (
		run    step
		loss   *float64
		tokens int64
		err    error
	)
	if o.Workload == Sgemm {
		res.Shape, res.Batch, res.Seq = "", 0, 0
		run, res.FLOPsPerStep = sgemmStep(threads, o.Seed)
	} else {
		if o.Batch <= 0 || o.Seq <= 0 {
			return nil, fmt.Errorf("bench: batch %d and sequence length %d must be positive", o.Batch, o.Seq)
		}
		shape, err := LookupShape(o.Shape)
		if err != nil {
			return nil, err
		}
		tokens = int64(o.Batch) * int64(o.Seq)
		run, loss, err = build(shape, o, threads, res)
		if err != nil {
			return nil, err
		}
	}
	for range 2 {
		if err := run(); err != nil {
			return nil, err
		}
	}
	if o.Profile != nil {
		if err := pprof.StartCPUProfile(o.Profile); err != nil {
			return nil, fmt.Errorf("bench: starting the CPU profile: %w", err)
		}
	}
	t0 := time.Now()
	n := 0
	for time.Since(t0).Seconds() < o.Seconds || n < 3 {
		if err = ctx.Err(); err != nil {
			break
		}
		if err = run(); err != nil {
			break
		}
		n++
	}
	dt := time.Since(t0).Seconds()
	if o.Profile != nil {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return nil, err
	}
	res.Steps, res.Seconds = n, dt
	res.Tokens = tokens * int64(n)
	res.TokensPerS = float64(res.Tokens) / dt
	res.GFLOPS = res.FLOPsPerStep * float64(n) / dt / 1e9
	if loss != nil {
		res.Loss = *loss
	}
	// 0 where the system does not report it; the timing still stands.
	res.PeakRSSBytes, _ = PeakRSS()
	return res, nil
}

// forwardFLOPs is the matmul cost of one forward over b·t tokens with
// causal attention (a token at position i attends to i+1 keys).
func forwardFLOPs(cfg *ir.Config, b, t int) float64 {
	// FLOPsPerToken is linear in its context argument, so evaluating it at
	// contexts 0 and 1 gives the per-key slope exactly.
	base, slope := cfg.FLOPsPerToken(0), cfg.FLOPsPerToken(1)-cfg.FLOPsPerToken(0)
	return float64(b) * (float64(t)*float64(base) + float64(slope)*float64(t)*float64(t+1)/2)
}

func build(shape Shape, o Options, threads int, res *Result) (step, *float64, error) {
	cfg := shape.Config(o.Seq)
	p, err := engine.NewParams(cfg)
	if err != nil {
		return nil, nil, err
	}
	p.InitRandom(o.Seed)
	res.Params = cfg.Params().Total
	r := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	n := o.Batch * o.Seq
	tokens := randomIDs(r, n, cfg.Vocab)
	fwd := forwardFLOPs(&cfg, o.Batch, o.Seq)
	var loss float64

	switch o.Workload {
	case Train:
		e, err := engine.New(p, engine.Options{Threads: threads})
		if err != nil {
			return nil, nil, err
		}
		tr, err := engine.NewTrainer(e, nil, peerAdamW())
		if err != nil {
			return nil, nil, err
		}
		// Targets independent of the inputs, as the peer draws them.
		batch := []engine.Batch{{Tokens: tokens, B: o.Batch, T: o.Seq, Targets: engine.Targets{IDs: randomIDs(r, n, cfg.Vocab)}}}
		res.FLOPsPerStep = 3 * fwd
		return func() error {
			st, err := tr.Step(batch)
			loss = st.Loss
			return err
		}, &loss, nil

	case Forward, Importance:
		opts := engine.Options{Threads: threads, Inference: true}
		var stats *Stats
		if o.Workload == Importance {
			stats = NewStats(&cfg)
			opts.OnLayer = func(l int, a *engine.Activations) error {
				stats.Add(l, a, o.Batch, o.Seq, threads)
				return nil
			}
		}
		e, err := engine.New(p, opts)
		if err != nil {
			return nil, nil, err
		}
		// The peer's forward produces the logits of every position; so does
		// this one, a chunk of rows at a time as every consumer of the
		// engine's logits would.
		chunk := min(n, max(1, (8<<20)/cfg.Vocab))
		buf := make([]float32, chunk*cfg.Vocab)
		res.FLOPsPerStep = fwd
		return func() error {
			if err := e.Forward(tokens, o.Batch, o.Seq); err != nil {
				return err
			}
			for r0 := 0; r0 < n; r0 += chunk {
				r1 := min(n, r0+chunk)
				if err := e.Logits(r0, r1, buf[:(r1-r0)*cfg.Vocab]); err != nil {
					return err
				}
			}
			return nil
		}, nil, nil

	case Distill:
		teacher, err := engine.New(p, engine.Options{Threads: threads, Inference: true})
		if err != nil {
			return nil, nil, err
		}
		scfg := shape.Student().Config(o.Seq)
		sp, err := engine.NewParams(scfg)
		if err != nil {
			return nil, nil, err
		}
		sp.InitRandom(o.Seed + 1)
		res.Params = scfg.Params().Total
		student, err := engine.New(sp, engine.Options{Threads: threads})
		if err != nil {
			return nil, nil, err
		}
		tc := peerAdamW()
		tc.Objective = engine.Objective{KLWeight: 1}
		tr, err := engine.NewTrainer(student, teacher, tc)
		if err != nil {
			return nil, nil, err
		}
		batch := []engine.Batch{{Tokens: tokens, B: o.Batch, T: o.Seq}}
		res.FLOPsPerStep = fwd + 3*forwardFLOPs(&scfg, o.Batch, o.Seq)
		return func() error {
			st, err := tr.Step(batch)
			loss = st.Loss
			return err
		}, &loss, nil
	}
	return nil, nil, errors.New("bench: unreachable workload")
}

// peerAdamW is torch.optim.AdamW's defaults at the peer's learning rate,
// without gradient clipping (the peer does not clip).
func peerAdamW() engine.TrainConfig {
	c := engine.DefaultTrainConfig()
	c.Schedule = engine.Schedule{Peak: 1e-4, Min: 1e-4}
	c.Beta1, c.Beta2, c.Eps, c.WeightDecay = 0.9, 0.999, 1e-8, 0.01
	c.ClipNorm = 0
	return c
}

func randomIDs(r *rand.Rand, n, vocab int) []int32 {
	s := make([]int32, n)
	for i := range s {
		s[i] = int32(r.IntN(vocab))
	}
	return s
}

// sgemmStep multiplies two random SgemmSize² matrices.
func sgemmStep(threads int, seed uint64) (step, float64) {
	const n = SgemmSize
	r := rand.New(rand.NewPCG(seed, 1))
	a, b, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
	for i := range a {
		a[i], b[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	return func() error {
		blas.SgemmThreads(threads, false, false, n, n, n, 1, a, n, b, n, 0, c, n)
		return nil
	}, 2 * float64(n) * n * n
}
