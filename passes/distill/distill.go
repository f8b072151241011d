// Package distill is the `distill` pass: Minitron's knowledge
// distillation, training a (pruned) student to match a teacher's output
// distribution with forward KL on the logits, per token
// Σ_v p_T(v)(log p_T(v) − log p_S(v)) with p = softmax(z/T), optionally
// over the teacher's top-k logits only, scaled by T², or mixed with
// next-token cross-entropy on the data.
package distill

import (
	"context"
	"errors"
	"math"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
)

// Config is the pass block's schema. Unset optional attributes take the
// defaults in the README's recipe reference.
type Config struct {
	Student recipe.Ref `hcl:"student" ref:"model"`
	Teacher recipe.Ref `hcl:"teacher" ref:"model"`
	Dataset recipe.Ref `hcl:"dataset"`

	// Temperature divides both models' logits (default 1); ScaleT2
	// multiplies the KL term by T²; TopK > 0 keeps the teacher's top-k
	// logits, renormalized; CEWeight w trains on (1−w)·KL + w·CE.
	Temperature *float64 `hcl:"temperature,optional"`
	ScaleT2     *bool    `hcl:"scale_t2,optional"`
	TopK        *int     `hcl:"top_k,optional"`
	CEWeight    *float64 `hcl:"ce_weight,optional"`

	passutil.TrainOptions
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "distill",
		Description: "knowledge distillation: train a student on forward KL to a teacher's logits, optionally mixed with cross-entropy",
		Produces:    recipe.SlotModel,
		NewConfig:   func() any { return &Config{} },
	}
}

// loss resolves and checks the distillation loss options.
func (c *Config) loss(p *recipe.Pass, student, teacher ir.Config) (backend.LossConfig, error) {
	if student.Vocab != teacher.Vocab {
		return backend.LossConfig{}, passutil.Errorf(p, "teacher", "the teacher's vocabulary has %d tokens, the student's %d; distillation needs the same tokenizer", teacher.Vocab, student.Vocab)
	}
	l := backend.LossConfig{Temperature: 1}
	if c.Temperature != nil {
		l.Temperature = *c.Temperature
		if !(l.Temperature > 0) || math.IsInf(l.Temperature, 0) {
			return l, passutil.Errorf(p, "temperature", "temperature = %g must be a positive number", l.Temperature)
		}
	}
	if c.ScaleT2 != nil {
		l.ScaleT2 = *c.ScaleT2
	}
	if c.TopK != nil {
		l.TopK = *c.TopK
		if l.TopK < 0 || l.TopK > teacher.Vocab {
			return l, passutil.Errorf(p, "top_k", "top_k = %d must be between 0 (every logit) and the vocabulary size %d", l.TopK, teacher.Vocab)
		}
	}
	if c.CEWeight != nil {
		l.CEWeight = *c.CEWeight
		if !(l.CEWeight >= 0 && l.CEWeight <= 1) {
			return l, passutil.Errorf(p, "ce_weight", "ce_weight = %g must be in [0, 1]", l.CEWeight)
		}
	}
	return l, nil
}

// sameTokenizer requires the student and teacher to encode text alike:
// distillation compares their distributions token by token, so equal
// vocabulary sizes are not enough. Tokenizers are compared by fingerprint
// (pieces, scores, merges, special ids), which ignores how a format spells
// them.
func sameTokenizer(pc *pipeline.PlanContext, p *recipe.Pass, student, teacher recipe.Ref) error {
	st, err := pc.Tokenizer(student)
	if err != nil {
		return err
	}
	tt, err := pc.Tokenizer(teacher)
	if err != nil {
		return err
	}
	if st.Fingerprint() == tt.Fingerprint() {
		return nil
	}
	why := passutil.SameVocabulary(tt, st)
	if why == nil {
		why = errors.New("their pieces decode alike but their scores, merges or normalization differ")
	}
	return passutil.Errorf(p, "teacher", "%s and %s must share a tokenizer: %v", teacher, student, why)
}

// Plan checks the options; the student's architecture is unchanged.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	cfg, err := pc.Model(c.Student)
	if err != nil {
		return nil, err
	}
	tcfg, err := pc.Model(c.Teacher)
	if err != nil {
		return nil, err
	}
	if _, err := c.loss(p, cfg, tcfg); err != nil {
		return nil, err
	}
	if err := sameTokenizer(pc, p, c.Student, c.Teacher); err != nil {
		return nil, err
	}
	if _, err := passutil.CheckTrain(p, pc.Recipe, cfg, c.TrainOptions, c.Dataset, false); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Run distills.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	s, err := rc.Model(c.Student)
	if err != nil {
		return err
	}
	tm, err := rc.Model(c.Teacher)
	if err != nil {
		return err
	}
	loss, err := c.loss(p, s.Config, tm.Config)
	if err != nil {
		return err
	}
	t, err := passutil.CheckTrain(p, rc.Recipe, s.Config, c.TrainOptions, c.Dataset, false)
	if err != nil {
		return err
	}
	return passutil.RunTrain(ctx, rc, passutil.Job{
		Pass:      p,
		Model:     c.Student,
		Teacher:   &c.Teacher,
		Dataset:   c.Dataset,
		Objective: backend.ObjectiveKL,
		Loss:      loss,
		Train:     t,
	})
}
