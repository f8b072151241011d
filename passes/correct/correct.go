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

	passutil.TrainOptions
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
	if _, err := pc.Tokenizer(c.Model); err != nil {
		return nil, err
	}
	if _, err := passutil.CheckTrain(p, pc.Recipe, cfg, c.TrainOptions, c.Dataset, false); err != nil {
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
	t, err := passutil.CheckTrain(p, rc.Recipe, m.Config, c.TrainOptions, c.Dataset, false)
	if err != nil {
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
