package conformance

import (
	"math"
	"slices"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
)

// checkReference runs the same requests on the backend and the reference
// and compares everything they return.
func (s *suite) checkReference(t *testing.T, f *fixture) {
	t.Run("Evaluate", func(t *testing.T) {
		req := backend.EvalRequest{LM: &f.masked, Choices: f.choices, LastWord: f.lastWord, SkipLayers: skipLists(len(f.m.Config.Layers)), BatchSize: 3}
		req.Model = s.load(t, s.b, f, false)
		got, err := s.b.Evaluate(s.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		req.Model = s.load(t, s.ref, f, false)
		want, err := s.ref.Evaluate(s.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		s.expectLoss(t, "LM loss", got.LM.Loss, want.LM.Loss)
		if got.LM.Tokens != want.LM.Tokens {
			t.Errorf("LM tokens %d, reference %d", got.LM.Tokens, want.LM.Tokens)
		}
		s.expectLoss(t, "last-word loss", got.LastWord.Loss, want.LastWord.Loss)
		if s.tol.ExactTokens && got.LastWord.Accuracy != want.LastWord.Accuracy {
			t.Errorf("last-word accuracy %g, reference %g", got.LastWord.Accuracy, want.LastWord.Accuracy)
		}
		if s.tol.ExactTokens && !slices.Equal(got.Choices.Predictions, want.Choices.Predictions) {
			t.Errorf("choice predictions %v, reference %v", got.Choices.Predictions, want.Choices.Predictions)
		}
		for i := range want.Skipped {
			s.expectLoss(t, "LM loss without layers "+fmtLayers(want.Skipped[i].Layers), got.Skipped[i].LM.Loss, want.Skipped[i].LM.Loss)
		}
	})
	t.Run("Stats", func(t *testing.T) {
		req := backend.StatsRequest{Data: f.data, BatchSize: 4, Activations: true, BlockInfluence: true}
		req.Model = s.load(t, s.b, f, false)
		got, err := s.b.Stats(s.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		req.Model = s.load(t, s.ref, f, false)
		want, err := s.ref.Stats(s.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		expectStats(t, got, want, s.tol.Stats)
	})
	t.Run("Sample", func(t *testing.T) {
		if !s.tol.ExactTokens {
			t.Skip("sampled tokens are compared only for float32 backends")
		}
		prompts := [][]int{f.seqs[0][:3], f.seqs[1][:1]}
		req := backend.GenerateRequest{Prompts: prompts, MaxTokens: 10, Temperature: 0.9, TopP: 0.9, Seed: 42, StopToken: -1}
		req.Model = s.load(t, s.b, f, false)
		got, err := s.b.Generate(s.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		req.Model = s.load(t, s.ref, f, false)
		want, err := s.ref.Generate(s.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for i := range prompts {
			if !slices.Equal(got.Tokens[i], want.Tokens[i]) {
				t.Errorf("prompt %d: sampled %v, reference %v", i, got.Tokens[i], want.Tokens[i])
			}
		}
	})
	train := func(t *testing.T, req backend.TrainRequest, teacher *fixture) {
		res, after, _ := s.trainOnce(t, s.b, f, teacher, req)
		wres, wafter, _ := s.trainOnce(t, s.ref, f, teacher, req)
		if len(res.History) != len(wres.History) {
			t.Fatalf("%d steps, reference %d", len(res.History), len(wres.History))
		}
		for i, w := range wres.History {
			g := res.History[i]
			// Later steps compound rounding differences: allow them to grow.
			tol := s.tol.Loss * float64(1+i)
			if !closeRel(g.Loss, w.Loss, tol, 1e-3) {
				t.Errorf("step %d loss %.9g, reference %.9g", i+1, g.Loss, w.Loss)
			}
			if !closeRel(g.GradNorm, w.GradNorm, 10*tol, 1e-3) {
				t.Errorf("step %d gradient norm %.9g, reference %.9g", i+1, g.GradNorm, w.GradNorm)
			}
			if g.LR != w.LR || g.Tokens != w.Tokens {
				t.Errorf("step %d learning rate %g / tokens %d, reference %g / %d", i+1, g.LR, g.Tokens, w.LR, w.Tokens)
			}
			if (g.ValLoss == nil) != (w.ValLoss == nil) || g.ValLoss != nil && !closeRel(*g.ValLoss, *w.ValLoss, tol, 1e-3) {
				t.Errorf("step %d validation loss %v, reference %v", i+1, ptr(g.ValLoss), ptr(w.ValLoss))
			}
		}
		for _, name := range f.m.TensorNames() {
			expectVec(t, "trained "+name, weightsOf(t, after, name), weightsOf(t, wafter, name), s.tol.Weights*float64(len(res.History)))
		}
	}
	o := backend.OptimConfig{LR: 3e-3, MinLR: 3e-4, WarmupSteps: 2, WeightDecay: 0.1, GradClip: 1}
	t.Run("TrainCE", func(t *testing.T) {
		train(t, backend.TrainRequest{Objective: backend.ObjectiveCE, Mode: backend.ModeFull, Data: f.masked, Validation: &f.val, EvalEvery: 2,
			Steps: 5, BatchSize: 2, GradAccum: 2, Optim: o}, nil)
	})
	if f == s.tiny {
		t.Run("TrainKL", func(t *testing.T) {
			train(t, backend.TrainRequest{Objective: backend.ObjectiveKL, Loss: backend.LossConfig{Temperature: 2, ScaleT2: true, TopK: 8, CEWeight: 0.2},
				Mode: backend.ModeFull, Data: f.data, Validation: &f.val, Steps: 4, BatchSize: 3, Optim: o}, s.teacher)
		})
		t.Run("TrainNormOnly", func(t *testing.T) {
			train(t, backend.TrainRequest{Objective: backend.ObjectiveCE, Mode: backend.ModeNormOnly, Data: f.data, Steps: 3, BatchSize: 2, Optim: o}, nil)
		})
		t.Run("TrainLoRA", func(t *testing.T) {
			if s.opts.NoLoRA {
				t.Skip("the backend has no LoRA")
			}
			train(t, backend.TrainRequest{Objective: backend.ObjectiveKL, Loss: backend.LossConfig{Temperature: 1.5, CEWeight: 0.5}, Mode: backend.ModeLoRA,
				LoRA: &backend.LoRAConfig{Rank: 3, Alpha: 6, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}},
				Data: f.masked, Validation: &f.val, EvalEvery: 2, Steps: 4, BatchSize: 2, GradAccum: 2, Seed: 17, Optim: o}, s.teacher)
		})
	}
}

func ptr(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}
