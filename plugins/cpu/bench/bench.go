// Package bench times the CPU engine on the workloads of the PyTorch peer
// (shared/bench/torch_peer.py, see core/bench): random weights of a named
// shape, then training steps, inference forwards, forwards with the
// Minitron activation statistics, or distillation steps, for a fixed wall
// time. `whittle bench` is its command line.
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
	"time"

	corebench "github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/plugins/cpu/blas"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
)

// Shape, Result and the peer's workloads are core/bench's: every backend
// measures the same thing.
type (
	Shape  = corebench.Shape
	Result = corebench.Result
)

// The workloads: the peer's four, and Sgemm, which measures the matrix
// multiply alone (square products of SgemmSize) and has no model.
const (
	Train      = corebench.Train
	Forward    = corebench.Forward
	Importance = corebench.Importance
	Distill    = corebench.Distill
	Sgemm      = "sgemm"
)

// Workloads lists the accepted workload names; the first four are the
// peer's.
var Workloads = append(slices.Clip(corebench.Workloads), Sgemm)

// SgemmSize is the order of the square products the sgemm workload times.
const SgemmSize = 1024

// Options selects a benchmark run. Request.Threads is the goroutine count
// of the engine and of GEMM, and the GOMAXPROCS of the run; 0 keeps
// GOMAXPROCS.
type Options struct {
	corebench.Request
	// Profile, when set, receives a CPU profile of the timed steps.
	Profile io.Writer
}

// step runs one unit of a workload.
type step func() error

// Run builds the workload and times it.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Workload != Sgemm {
		if err := o.Check(); err != nil {
			return nil, err
		}
	} else if o.Threads < 0 {
		return nil, fmt.Errorf("bench: negative thread count %d", o.Threads)
	}
	if o.Threads > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(o.Threads))
	}
	threads := runtime.GOMAXPROCS(0)
	res := &Result{
		Shape: o.Shape, Workload: o.Workload, Batch: o.Batch, Seq: o.Seq, Device: "cpu",
		Threads: threads, Kernel: blas.Kernel(), GoVersion: runtime.Version(),
	}
	var (
		run  step
		loss *float64
		err  error
	)
	if o.Workload == Sgemm {
		res.Shape, res.Batch, res.Seq = "", 0, 0
		run, res.FLOPsPerStep = sgemmStep(threads, o.Seed)
	} else {
		shape, err := corebench.LookupShape(o.Shape)
		if err != nil {
			return nil, err
		}
		if res.FLOPsPerStep, err = corebench.StepFLOPs(shape, o.Workload, o.Batch, o.Seq); err != nil {
			return nil, err
		}
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
	res.Finish(n, dt)
	if loss != nil {
		res.Loss = *loss
	}
	// 0 where the system does not report it; the timing still stands.
	res.PeakRSSBytes, _ = corebench.PeakRSS()
	return res, nil
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
