package engine

import (
	"math/rand/v2"
	"testing"

	corebench "github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/blas"
)

var benchShapes = []struct {
	name string
	cfg  ir.Config
	b, t int
}{
	{"stories260K_b32_t256", ir.Config{
		Arch: "llama", Vocab: 512, Hidden: 64, Layers: ir.UniformLayers(5, ir.LayerConfig{Heads: 8, KVHeads: 4, HeadDim: 8, MLP: 172}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 512, Tied: true, BOS: 1, EOS: 2,
	}, 32, 256},
	{"stories15M_b8_t256", ir.Config{
		Arch: "llama", Vocab: 32000, Hidden: 288, Layers: ir.UniformLayers(6, ir.LayerConfig{Heads: 6, KVHeads: 6, HeadDim: 48, MLP: 768}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 256, Tied: true, BOS: 1, EOS: 2,
	}, 8, 256},
}

// BenchmarkTrainStep times one optimizer step (forward, cross-entropy,
// backward, AdamW) of randomly initialized models of stories260K's and
// stories15M's shapes, in tokens per second.
func BenchmarkTrainStep(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(s.name, func(b *testing.B) {
			p, err := NewParams(s.cfg)
			if err != nil {
				b.Fatal(err)
			}
			p.InitRandom(1)
			e, err := New(p, Options{})
			if err != nil {
				b.Fatal(err)
			}
			tr, err := NewTrainer(e, nil, DefaultTrainConfig())
			if err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			toks := randomTokens(r, s.b*s.t, s.cfg.Vocab)
			ids := append(append([]int32(nil), toks[1:]...), -1)
			batch := []Batch{{Tokens: toks, B: s.b, T: s.t, Targets: Targets{IDs: ids}}}
			b.Logf("kernel %s, %d threads", blas.Kernel(), e.Threads())
			cpu0 := cpuSeconds()
			for b.Loop() {
				if _, err := tr.Step(batch); err != nil {
					b.Fatal(err)
				}
			}
			tokens := float64(s.b * s.t * b.N)
			b.ReportMetric(tokens/b.Elapsed().Seconds(), "tokens/s")
			// Other processes share the machine: tokens per CPU-second of
			// this process, times the thread count, is what an idle
			// machine would give if the work spread perfectly.
			if cpu := cpuSeconds() - cpu0; cpu > 0 {
				b.ReportMetric(tokens/cpu, "tokens/cpu-s")
			}
		})
	}
}

// BenchmarkAttentionRecompute times a training step of stories15M's shape
// at a long context with the attention probabilities kept for the
// backward pass and recomputed in it (what a budget too small for them
// chooses), reporting tokens/s and the activation memory each needs.
func BenchmarkAttentionRecompute(b *testing.B) {
	cfg := benchShapes[1].cfg
	cfg.MaxSeq = 1024
	for _, c := range []struct {
		name   string
		bsz, t int
		budget int64
	}{{"t1024/keep", 2, 1024, 1 << 40}, {"t1024/recompute", 2, 1024, -1}, {"t256/keep", 8, 256, 1 << 40}, {"t256/recompute", 8, 256, -1}} {
		bsz, t := c.bsz, c.t
		b.Run(c.name, func(b *testing.B) {
			p, err := NewParams(cfg)
			if err != nil {
				b.Fatal(err)
			}
			p.InitRandom(1)
			e, err := New(p, Options{AttentionBudget: c.budget})
			if err != nil {
				b.Fatal(err)
			}
			tr, err := NewTrainer(e, nil, DefaultTrainConfig())
			if err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			toks := randomTokens(r, bsz*t, cfg.Vocab)
			ids := append(append([]int32(nil), toks[1:]...), -1)
			batch := []Batch{{Tokens: toks, B: bsz, T: t, Targets: Targets{IDs: ids}}}
			for b.Loop() {
				if _, err := tr.Step(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(bsz*t*b.N)/b.Elapsed().Seconds(), "tokens/s")
			var probs int
			for _, a := range e.acts {
				probs += len(a.att)
			}
			for _, s := range e.scratch.probs {
				probs += len(s)
			}
			b.ReportMetric(float64(probs*4)/(1<<20), "prob-MiB")
		})
	}
}

// BenchmarkMoE times stories15M's shape and its mixture-of-experts
// counterpart moe-15M (8 experts, top-2) on the train and forward
// workloads of `whittle bench`, reporting the achieved matrix-multiply
// rate on active FLOPs per wall second and per CPU second of this process
// (the machine is shared; CPU time is the steadier measure).
func BenchmarkMoE(b *testing.B) {
	const bsz, t = 8, 256
	for _, name := range []string{"stories15M", "moe-15M"} {
		shape, err := corebench.LookupShape(name)
		if err != nil {
			b.Fatal(err)
		}
		cfg := shape.Config(t)
		for _, workload := range []string{corebench.Train, corebench.Forward} {
			b.Run(name+"/"+workload, func(b *testing.B) {
				flops, err := corebench.StepFLOPs(shape, workload, bsz, t)
				if err != nil {
					b.Fatal(err)
				}
				p, err := NewParams(cfg)
				if err != nil {
					b.Fatal(err)
				}
				p.InitRandom(1)
				e, err := New(p, Options{Inference: workload == corebench.Forward})
				if err != nil {
					b.Fatal(err)
				}
				r := rand.New(rand.NewPCG(1, 2))
				toks := randomTokens(r, bsz*t, cfg.Vocab)
				ids := randomTokens(r, bsz*t, cfg.Vocab)
				var run func() error
				if workload == corebench.Train {
					tr, err := NewTrainer(e, nil, DefaultTrainConfig())
					if err != nil {
						b.Fatal(err)
					}
					batch := []Batch{{Tokens: toks, B: bsz, T: t, Targets: Targets{IDs: ids}}}
					run = func() error { _, err := tr.Step(batch); return err }
				} else {
					buf := make([]float32, 262*cfg.Vocab)
					run = func() error {
						if err := e.Forward(toks, bsz, t); err != nil {
							return err
						}
						for r0 := 0; r0 < bsz*t; r0 += 262 {
							r1 := min(bsz*t, r0+262)
							if err := e.Logits(r0, r1, buf[:(r1-r0)*cfg.Vocab]); err != nil {
								return err
							}
						}
						return nil
					}
				}
				if err := run(); err != nil { // warm-up
					b.Fatal(err)
				}
				cpu0 := cpuSeconds()
				for b.Loop() {
					if err := run(); err != nil {
						b.Fatal(err)
					}
				}
				total := flops * float64(b.N)
				b.ReportMetric(total/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				// Per CPU second times the thread count: the rate had the
				// threads had their cores to themselves.
				if cpu := cpuSeconds() - cpu0; cpu > 0 {
					b.ReportMetric(total/cpu/1e9*float64(e.Threads()), "cpu-GFLOP/s")
				}
			})
		}
	}
}
