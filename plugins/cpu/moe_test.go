package cpu

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// moeFixture is a random model of one MoE family and random rows.
type moeFixture struct {
	name string
	m    *ir.Model
	ref  *decoder64.Model
	rows [][]int
	path string
}

func moeFixtures(t *testing.T, n, l int) []moeFixture {
	t.Helper()
	fams := irtest.MoEFamilies()
	names := make([]string, 0, len(fams))
	for name := range fams {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []moeFixture
	for i, name := range names {
		cfg := fams[name]
		m := irtest.RandomModel(t, cfg, rand.New(rand.NewPCG(uint64(40+i), 2)))
		ref, err := decoder64.Load(m)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(uint64(40+i), 3))
		rows := make([][]int, n)
		flat := make([]int32, 0, n*l)
		for j := range rows {
			rows[j] = make([]int, l)
			for k := range rows[j] {
				rows[j][k] = r.IntN(cfg.Vocab)
				flat = append(flat, int32(rows[j][k]))
			}
		}
		path := filepath.Join(t.TempDir(), name+".npy")
		if err := npy.WriteInt32(path, []int{n, l}, flat); err != nil {
			t.Fatal(err)
		}
		out = append(out, moeFixture{name, m, ref, rows, path})
	}
	return out
}

// TestMoEEvaluateGenerate: on every MoE family, the backend's LM loss
// equals the float64 decoder's mean NLL, and greedy generation continues
// each prompt with the float64 decoder's argmax tokens.
func TestMoEEvaluateGenerate(t *testing.T) {
	const n, l = 3, 10
	for _, f := range moeFixtures(t, n, l) {
		t.Run(f.name, func(t *testing.T) {
			var sum float64
			for _, row := range f.rows {
				logits := f.ref.Forward(row, nil, nil)
				for p := 0; p+1 < l; p++ {
					sum += nll64(logits[p], row[p+1])
				}
			}
			want := sum / float64(n*(l-1))
			b := newBackend(t)
			id := loadModel(t, b, f.m)
			for _, bs := range []int{2, 0} {
				res, err := b.Evaluate(context.Background(), backend.EvalRequest{Model: id, LM: &backend.Sequences{Path: f.path}, BatchSize: bs})
				if err != nil {
					t.Fatal(err)
				}
				if res.LM.Tokens != n*(l-1) || math.Abs(res.LM.Loss-want) > 1e-4*want {
					t.Errorf("batch %d: loss %v over %d tokens, float64 reference %v over %d", bs, res.LM.Loss, res.LM.Tokens, want, n*(l-1))
				}
			}
			const prompt, gen = 4, 6
			var prompts [][]int
			for _, row := range f.rows {
				prompts = append(prompts, row[:prompt])
			}
			res, err := b.Generate(context.Background(), backend.GenerateRequest{Model: id, Prompts: prompts, MaxTokens: gen, StopToken: -1})
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range prompts {
				seq := slices.Clone(p)
				for len(seq) < prompt+gen {
					logits := f.ref.Forward(seq, nil, nil)
					last := logits[len(logits)-1]
					seq = append(seq, argmax64(last))
				}
				if !slices.Equal(res.Tokens[i], seq[prompt:]) {
					t.Errorf("prompt %d: generated %v, float64 greedy %v", i, res.Tokens[i], seq[prompt:])
				}
			}
		})
	}
}

// TestMoETrainRouterAux: training a MoE model with router_aux_weight
// ends with a lower balancing loss than training without it, from the
// same start and data.
func TestMoETrainRouterAux(t *testing.T) {
	const n, l = 8, 12
	f := moeFixtures(t, n, l)[0] // mixtral
	run := func(w float64) float64 {
		b := newBackend(t)
		id := loadModel(t, b, f.m)
		_, err := b.Train(context.Background(), backend.TrainRequest{
			Model: id, Objective: backend.ObjectiveCE, Loss: backend.LossConfig{RouterAuxWeight: w},
			Optim: backend.OptimConfig{LR: 3e-2}, Data: backend.Sequences{Path: f.path}, Steps: 12, BatchSize: 4,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := b.Stats(context.Background(), backend.StatsRequest{Model: id, Data: backend.Sequences{Path: f.path}, Activations: true})
		if err != nil {
			t.Fatal(err)
		}
		// The balancing loss over all layers concatenated, from the
		// statistics' per-expert token counts and probability mass.
		experts := f.m.Config.Layers[0].Experts
		count, mass := make([]float64, experts), make([]float64, experts)
		for li, probs := range st.ExpertProb {
			for e, p := range probs {
				count[e] += float64(st.ExpertTokens[li][e])
				mass[e] += p
			}
		}
		var aux float64
		for e := range count {
			aux += count[e] * mass[e]
		}
		rows := float64(st.Tokens * len(f.m.Config.Layers))
		return float64(experts) * aux / (rows * rows)
	}
	plain, balanced := run(0), run(1)
	t.Logf("balancing loss after training: %.4f without, %.4f with router_aux_weight 1 (top-%d: %d when balanced)", plain, balanced, f.m.Config.ExpertsPerToken, f.m.Config.ExpertsPerToken)
	if !(balanced < plain) {
		t.Errorf("balancing loss after training %v with router_aux_weight 1, %v without", balanced, plain)
	}
}

func nll64(z []float64, target int) float64 {
	m := slices.Max(z)
	var s float64
	for _, v := range z {
		s += math.Exp(v - m)
	}
	return m + math.Log(s) - z[target]
}

func argmax64(z []float64) int {
	best := 0
	for i, v := range z {
		if v > z[best] {
			best = i
		}
	}
	return best
}
