// Package correct is the `correct` pass: Minitron's teacher correction,
// a short fine-tune of a model on the distillation data with next-token
// cross-entropy so that the teacher fits that distribution. Besides full
// fine-tuning it offers the lighter variants the paper lists as open
// questions: LoRA adapters (merged into the saved model) and tuning only
// the normalization weights.
package correct

import (
	"context"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
)

// Config is the pass block's schema. Unset optional attributes take the
// defaults in the README's recipe reference.
type Config struct {
	Model   recipe.Ref `hcl:"model"`
	Dataset recipe.Ref `hcl:"dataset"`

	// Mode is full, lora or norm-only; Rank, Alpha and Targets tune LoRA.
	Mode    *string  `hcl:"mode,optional"`
	Rank    *int     `hcl:"rank,optional"`
	Alpha   *float64 `hcl:"alpha,optional"`
	Targets []string `hcl:"targets,optional"`

	// Steps or Tokens (one of them) is the budget; a token budget is
	// rounded up to whole steps of batch × grad_accum × seq_len tokens.
	Steps     *int   `hcl:"steps,optional"`
	Tokens    *int64 `hcl:"tokens,optional"`
	Batch     *int   `hcl:"batch,optional"`
	GradAccum *int   `hcl:"grad_accum,optional"`
	SeqLen    *int   `hcl:"seq_len,optional"`

	LR          *float64 `hcl:"lr,optional"`
	MinLR       *float64 `hcl:"min_lr,optional"`
	Warmup      *int     `hcl:"warmup,optional"`
	WeightDecay *float64 `hcl:"weight_decay,optional"`
	GradClip    *float64 `hcl:"grad_clip,optional"`
	Beta1       *float64 `hcl:"beta1,optional"`
	Beta2       *float64 `hcl:"beta2,optional"`
	Eps         *float64 `hcl:"eps,optional"`

	Seed            *int64 `hcl:"seed,optional"`
	Shuffle         *bool  `hcl:"shuffle,optional"`
	EvalEvery       *int   `hcl:"eval_every,optional"`
	ValSequences    *int   `hcl:"val_sequences,optional"`
	LogEvery        *int   `hcl:"log_every,optional"`
	CheckpointEvery *int   `hcl:"checkpoint_every,optional"`
}

func (c *Config) fields() passutil.TrainFields {
	return passutil.TrainFields{
		Mode: c.Mode, Rank: c.Rank, Alpha: c.Alpha, Targets: c.Targets,
		Steps: c.Steps, Tokens: c.Tokens, Batch: c.Batch, GradAccum: c.GradAccum, SeqLen: c.SeqLen,
		LR: c.LR, MinLR: c.MinLR, Warmup: c.Warmup, WeightDecay: c.WeightDecay, GradClip: c.GradClip,
		Beta1: c.Beta1, Beta2: c.Beta2, Eps: c.Eps,
		Seed: c.Seed, Shuffle: c.Shuffle, EvalEvery: c.EvalEvery, ValSequences: c.ValSequences,
		LogEvery: c.LogEvery, CheckpointEvery: c.CheckpointEvery,
	}
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "correct",
		Description: "teacher correction: fine-tune a model on a dataset with next-token loss (full, LoRA or norm-only)",
		Produces:    recipe.SlotModel,
		NewConfig:   func() any { return &Config{} },
	}
}

// Plan checks the options; the architecture is unchanged.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	cfg, err := pc.Model(c.Model)
	if err != nil {
		return nil, err
	}
	if _, err := passutil.ResolveTrain(p, cfg, c.fields()); err != nil {
		return nil, err
	}
	if err := passutil.CheckDataset(p, pc.Recipe, "dataset", c.Dataset, false); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Run fine-tunes the model.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	t, err := passutil.ResolveTrain(p, m.Config, c.fields())
	if err != nil {
		return err
	}
	if err := passutil.CheckDataset(p, rc.Recipe, "dataset", c.Dataset, false); err != nil {
		return err
	}
	return passutil.RunTrain(ctx, rc, passutil.Job{
		Pass:      p,
		Model:     c.Model,
		Dataset:   c.Dataset,
		Objective: backend.ObjectiveCE,
		Train:     t,
	})
}
