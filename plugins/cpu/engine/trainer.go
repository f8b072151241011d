package engine

import (
	"fmt"
	"math"
)

// Teacher is a model whose logits a student is distilled towards: an
// inference Engine, or a source of precomputed logits that ignores Forward.
type Teacher interface {
	LogitSource
	Forward(tokens []int32, b, t int) error
}

// Batch is one micro-batch: B sequences of T tokens and what each row is
// scored against.
type Batch struct {
	Tokens  []int32
	B, T    int
	Targets Targets
}

// TrainConfig configures a Trainer.
type TrainConfig struct {
	Objective Objective
	Schedule  Schedule
	// AdamW hyperparameters (see DefaultTrainConfig).
	Beta1, Beta2, Eps, WeightDecay float64
	// ClipNorm, when positive, scales the gradients down so that their
	// global L2 norm is at most ClipNorm (as PyTorch's clip_grad_norm_).
	ClipNorm float64
}

// DefaultTrainConfig is plain next-token training with the AdamW settings
// of Llama and llm.c (betas 0.9 and 0.95, epsilon 1e-8, weight decay 0.1),
// gradients clipped at norm 1, and a constant learning rate of 1e-4 until a
// schedule is set.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{
		Schedule: Schedule{Peak: 1e-4, Min: 1e-4},
		Beta1:    0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1,
		ClipNorm: 1,
	}
}

// StepStats reports one optimizer step.
type StepStats struct {
	// Step is the 0-based index of the step taken and LR its learning rate.
	Step int
	LR   float64
	// Loss, CE and KL average the micro-batches' LossResult fields.
	Loss, CE, KL float64
	// GradNorm is the global gradient norm before clipping.
	GradNorm float64
	// Rows is the number of scored rows over all micro-batches.
	Rows int
}

// Trainer runs optimizer steps over gradient-accumulated micro-batches.
type Trainer struct {
	Student *Engine
	Teacher Teacher // nil unless the objective has KL weight
	Config  TrainConfig
	Opt     *AdamW
	step    int
}

// NewTrainer pairs a training engine with an optional teacher.
func NewTrainer(student *Engine, teacher Teacher, cfg TrainConfig) (*Trainer, error) {
	if student.G == nil {
		return nil, fmt.Errorf("engine: the student engine was built for inference")
	}
	if cfg.Objective.KLWeight > 0 && teacher == nil {
		return nil, fmt.Errorf("engine: the objective has KL weight %g but there is no teacher", cfg.Objective.KLWeight)
	}
	if teacher != nil && teacher.Vocab() != student.Vocab() {
		return nil, fmt.Errorf("engine: teacher vocabulary %d differs from the student's %d", teacher.Vocab(), student.Vocab())
	}
	opt, err := NewAdamW(cfg.Beta1, cfg.Beta2, cfg.Eps, cfg.WeightDecay)
	if err != nil {
		return nil, err
	}
	return &Trainer{Student: student, Teacher: teacher, Config: cfg, Opt: opt}, nil
}

// StepIndex is the number of optimizer steps taken so far, which picks the
// next step's learning rate.
func (t *Trainer) StepIndex() int { return t.step }

// SetStepIndex resumes the schedule at step n (with Opt restored too).
func (t *Trainer) SetStepIndex(n int) { t.step = n }

// Step accumulates the gradients of the mean loss over the micro-batches,
// clips them and takes one AdamW step at the scheduled learning rate.
func (t *Trainer) Step(micro []Batch) (StepStats, error) {
	if len(micro) == 0 {
		return StepStats{}, fmt.Errorf("engine: optimizer step with no micro-batches")
	}
	st := StepStats{Step: t.step, LR: t.Config.Schedule.At(t.step)}
	e := t.Student
	e.ZeroGrad()
	scale := float32(1 / float64(len(micro)))
	for i, mb := range micro {
		if err := e.Forward(mb.Tokens, mb.B, mb.T); err != nil {
			return st, fmt.Errorf("micro-batch %d: %w", i, err)
		}
		var teacher LogitSource
		if t.Teacher != nil {
			if err := t.Teacher.Forward(mb.Tokens, mb.B, mb.T); err != nil {
				return st, fmt.Errorf("micro-batch %d: teacher: %w", i, err)
			}
			teacher = t.Teacher
		}
		res, err := e.LossGrad(mb.Targets, t.Config.Objective, teacher, scale)
		if err != nil {
			return st, fmt.Errorf("micro-batch %d: %w", i, err)
		}
		if err := e.Backward(); err != nil {
			return st, fmt.Errorf("micro-batch %d: %w", i, err)
		}
		st.Loss += res.Loss / float64(len(micro))
		st.CE += res.CE / float64(len(micro))
		st.KL += res.KL / float64(len(micro))
		st.Rows += res.Rows
	}
	st.GradNorm = e.GradNorm()
	if math.IsNaN(st.GradNorm) || math.IsInf(st.GradNorm, 0) {
		return st, fmt.Errorf("engine: step %d: gradient norm is %g", t.step, st.GradNorm)
	}
	clip := 1.0
	if c := t.Config.ClipNorm; c > 0 && st.GradNorm > c {
		clip = c / (st.GradNorm + 1e-6)
	}
	if err := t.Opt.Step(e, st.LR, clip); err != nil {
		return st, err
	}
	t.step++
	return st, nil
}
