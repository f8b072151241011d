package conformance

import (
	"math"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/bench"
)

// checkBench: a backend that offers CapBench runs every peer workload on
// the smallest shape, counting parameters, tokens and FLOPs as
// core/bench defines them (so tables of different backends compare), and
// a training step on random targets starts near ln(vocab).
func (s *suite) checkBench(t *testing.T) {
	info, err := s.b.Info(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	bm, ok := s.b.(backend.Benchmarker)
	if !info.Has(backend.CapBench) {
		t.Skip("the backend does not offer " + backend.CapBench)
	}
	if !ok {
		t.Fatalf("Info lists %q but the backend is no backend.Benchmarker", backend.CapBench)
	}
	shape, err := bench.LookupShape("stories260K")
	if err != nil {
		t.Fatal(err)
	}
	const batch, seq = 2, 16
	for _, w := range bench.Workloads {
		t.Run(w, func(t *testing.T) {
			r, err := bm.Bench(s.ctx, bench.Request{Shape: shape.Name, Workload: w, Batch: batch, Seq: seq, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			trained := shape
			if w == bench.Distill {
				trained = shape.Student()
			}
			cfg := trained.Config(seq)
			flops, err := bench.StepFLOPs(shape, w, batch, seq)
			if err != nil {
				t.Fatal(err)
			}
			if r.Shape != shape.Name || r.Workload != w || r.Batch != batch || r.Seq != seq {
				t.Errorf("result describes %s %s %d×%d", r.Shape, r.Workload, r.Batch, r.Seq)
			}
			if r.Params != cfg.Params().Total {
				t.Errorf("params %d, want %d", r.Params, cfg.Params().Total)
			}
			if r.FLOPsPerStep != flops {
				t.Errorf("FLOPs per step %g, want %g (bench.StepFLOPs)", r.FLOPsPerStep, flops)
			}
			if r.Steps < 3 || r.Tokens != int64(r.Steps*batch*seq) || !(r.Seconds > 0) ||
				math.Abs(r.TokensPerS*r.Seconds-float64(r.Tokens)) > 1e-6*float64(r.Tokens) || !(r.GFLOPS > 0) {
				t.Errorf("timing %d steps, %d tokens, %g s, %g tokens/s, %g GFLOP/s", r.Steps, r.Tokens, r.Seconds, r.TokensPerS, r.GFLOPS)
			}
			if r.Device == "" || r.Kernel == "" {
				t.Errorf("result names no device or kernel: %+v", r)
			}
			if w == bench.Train && math.Abs(r.Loss-math.Log(float64(shape.Voc))) > 0.5 {
				t.Errorf("train loss %g on random weights, want about ln %d = %.2f", r.Loss, shape.Voc, math.Log(float64(shape.Voc)))
			}
			if w == bench.Distill && !(r.Loss > 0) {
				t.Errorf("distill loss %g", r.Loss)
			}
		})
	}
	if _, err := bm.Bench(s.ctx, bench.Request{Shape: "gpt2", Workload: bench.Train, Batch: 1, Seq: 1}); err == nil {
		t.Error("an unknown shape was accepted")
	}
}
