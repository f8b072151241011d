package backend

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/plugins/cpu"
)

// TestRoute: each token goes to its k most probable experts, ties to the
// lower expert index, and the assignments come grouped by expert (in
// token order within an expert) with their slots in the [N, k] weights.
func TestRoute(t *testing.T) {
	for _, c := range []struct {
		name   string
		p      []float32
		n, e   int
		k      int
		choice []int64 // each token's experts, slot order
		groups [][]int64
	}{
		{
			name: "distinct", n: 2, e: 4, k: 2,
			p:      []float32{0.1, 0.5, 0.3, 0.1, 0.4, 0.05, 0.05, 0.5},
			choice: []int64{1, 2, 3, 0},
			groups: [][]int64{{1}, {0}, {0}, {1}},
		},
		{
			name: "ties go to the lower expert", n: 3, e: 4, k: 2,
			p:      []float32{0.25, 0.25, 0.25, 0.25, 0.1, 0.3, 0.3, 0.3, 0.4, 0.2, 0.2, 0.2},
			choice: []int64{0, 1, 1, 2, 0, 1},
			groups: [][]int64{{0, 2}, {0, 1, 2}, {1}, {}},
		},
		{
			name: "top-1", n: 3, e: 3, k: 1,
			p:      []float32{0.2, 0.2, 0.6, 0.5, 0.5, 0, 0.3, 0.4, 0.3},
			choice: []int64{2, 0, 1},
			groups: [][]int64{{1}, {2}, {0}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := route(c.p, c.n, c.e, c.k)
			if !slices.Equal(r.choice, c.choice) {
				t.Errorf("choice %v, want %v", r.choice, c.choice)
			}
			for e, want := range c.groups {
				got := r.rows[r.off[e]:r.off[e+1]]
				if !slices.Equal(got, want) {
					t.Errorf("expert %d: tokens %v, want %v", e, got, want)
				}
				for i := r.off[e]; i < r.off[e+1]; i++ {
					if s := r.slots[i]; s/int64(c.k) != r.rows[i] || c.choice[s] != int64(e) {
						t.Errorf("expert %d, assignment %d: slot %d is not token %d's choice of expert %d", e, i, s, r.rows[i], e)
					}
				}
			}
		})
	}
}

// TestMoETrainMatchesCPU: training each mixture-of-experts fixture (full
// fine-tuning and LoRA, which adapts attention only in MoE layers, with
// and without the routers' load-balancing loss) gives the CPU backend's
// loss at every step, and the balancing loss changes the run.
func TestMoETrainMatchesCPU(t *testing.T) {
	ctx := context.Background()
	g := newFamilyBackend(t, "fp32")
	c, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for fi, fam := range []string{"mixtral", "qwen2_moe", "qwen3_moe"} {
		t.Run(fam, func(t *testing.T) {
			dir := filepath.Join(familiesDir, fam)
			rng := rand.New(rand.NewPCG(12, uint64(fi)))
			seqs := make([][]int, 4)
			for i := range seqs {
				for range famSeqLen {
					seqs[i] = append(seqs[i], rng.IntN(32))
				}
			}
			data := api.Sequences{Path: tokenFile(t, seqs)}
			losses := func(b api.Backend, aux float64, lora bool) []float64 {
				t.Helper()
				id, err := b.Load(ctx, api.LoadRequest{Dir: dir, Trainable: true})
				if err != nil {
					t.Fatal(err)
				}
				defer b.Release(ctx, id)
				req := api.TrainRequest{Model: id, Objective: api.ObjectiveCE, Data: data, Steps: 3, BatchSize: 2, Seed: 1,
					Loss: api.LossConfig{RouterAuxWeight: aux}, Optim: api.OptimConfig{LR: 3e-2}}
				if lora {
					req.Mode = "lora"
					req.LoRA = &api.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj", "gate_proj", "down_proj"}}
				}
				res, err := b.Train(ctx, req, nil)
				if err != nil {
					t.Fatal(err)
				}
				var out []float64
				for _, ev := range res.History {
					out = append(out, ev.Loss)
				}
				return out
			}
			for _, lora := range []bool{false, true} {
				var plain []float64
				for _, aux := range []float64{0, 0.5} {
					got, want := losses(g, aux, lora), losses(c, aux, lora)
					if len(got) != 3 || len(want) != 3 {
						t.Fatalf("lora %v, aux %g: %d and %d steps, want 3", lora, aux, len(got), len(want))
					}
					for i := range want {
						if !closeTo(got[i], want[i], tol(g, 1e-4)) {
							t.Errorf("lora %v, aux %g, step %d: loss %.7g, CPU backend %.7g", lora, aux, i+1, got[i], want[i])
						}
					}
					if aux == 0 {
						plain = got
					} else if got[0] <= plain[0] {
						t.Errorf("lora %v: first-step loss %.7g with the balancing loss, %.7g without", lora, got[0], plain[0])
					}
				}
			}
		})
	}
}

// TestMoEBench: the mixture-of-experts bench shape (moe-15M) runs through
// the grouped expert path (forward only: a training step of its 41M
// parameters takes seconds on a CPU, and training is checked against
// the CPU backend above).
func TestMoEBench(t *testing.T) {
	b := newFamilyBackend(t, "fp32")
	for _, w := range []string{bench.Forward} {
		res, err := b.Bench(context.Background(), bench.Request{Shape: "moe-15M", Workload: w, Batch: 1, Seq: 16, Seed: 1})
		if err != nil {
			t.Fatalf("%s: %v", w, err)
		}
		if res.Steps < 3 || !(res.GFLOPS > 0) {
			t.Errorf("%s: %d steps at %g GFLOP/s", w, res.Steps, res.GFLOPS)
		}
		t.Logf("%s: %.2f GFLOP/s on the active FLOPs (%.3g per step)", w, res.GFLOPS, res.FLOPsPerStep)
	}
}
