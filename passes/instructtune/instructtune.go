// Package instructtune is the `instruction-tune` pass: supervised
// fine-tuning on prompt/response pairs with the loss on response tokens
// only (the prompt is masked), each pair placed by a prompt template, rows
// packed or padded.
package instructtune

import (
	"context"
	"strings"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data"
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

	// Template places each pair into text, with "{prompt}" and
	// "{response}" once each; the default uses them as they are.
	Template *string `hcl:"template,optional"`
	// Packing concatenates examples into full rows; without it each
	// example gets its own row, cut or padded.
	Packing *bool `hcl:"packing,optional"`

	passutil.TrainOptions
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "instruction-tune",
		Description: "supervised fine-tuning on prompt/response pairs, loss on response tokens only",
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
	if _, err := passutil.CheckTrain(p, pc.Recipe, cfg, c.TrainOptions, c.Dataset, true); err != nil {
		return nil, err
	}
	if err := c.checkTemplate(p); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// checkTemplate applies data.Template's rule: "{prompt}" then
// "{response}", once each.
func (c *Config) checkTemplate(p *recipe.Pass) error {
	if c.Template == nil {
		return nil
	}
	tm := *c.Template
	pi, ri := strings.Index(tm, "{prompt}"), strings.Index(tm, "{response}")
	switch {
	case strings.Count(tm, "{prompt}") != 1 || strings.Count(tm, "{response}") != 1:
		return passutil.Errorf(p, "template", "template %q must hold \"{prompt}\" and \"{response}\" once each", tm)
	case pi > ri:
		return passutil.Errorf(p, "template", "template %q puts {response} before {prompt}", tm)
	}
	return nil
}

// Run fine-tunes the model.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	t, err := passutil.CheckTrain(p, rc.Recipe, m.Config, c.TrainOptions, c.Dataset, true)
	if err != nil {
		return err
	}
	if err := c.checkTemplate(p); err != nil {
		return err
	}
	opts := data.Options{}
	if c.Template != nil {
		opts.Template = data.Template(*c.Template)
	}
	if c.Packing != nil {
		opts.Packing = *c.Packing
	}
	return passutil.RunTrain(ctx, rc, passutil.Job{
		Pass:      p,
		Model:     c.Model,
		Dataset:   c.Dataset,
		Data:      opts,
		Objective: backend.ObjectiveCE,
		Train:     t,
	})
}
