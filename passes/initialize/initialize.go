// Package initialize is the `init` pass: a model of the same architecture
// as its input with freshly drawn random weights, the baseline that
// pruning plus distillation is measured against ("the same student trained
// from scratch"). Matrices (embedding, projections, classifier) are drawn
// from N(0, std²); RMSNorm weights are 1, as at the start of pretraining.
package initialize

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
)

// DefaultStd is the standard deviation of the weights when std is unset
// (GPT-2's and Llama's reference initialization).
const DefaultStd = 0.02

// Config is the pass block's schema.
type Config struct {
	// Model gives the architecture (and tokenizer); its weights are not
	// read.
	Model recipe.Ref `hcl:"model"`
	// Seed selects the random weights (default 0).
	Seed *int64 `hcl:"seed,optional"`
	// Std is the standard deviation of the matrices' entries.
	Std *float64 `hcl:"std,optional"`
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "init",
		Description: "random initialization: the input's architecture with normal random matrices and unit norms",
		Produces:    recipe.SlotModel,
		NewConfig:   func() any { return &Config{} },
	}
}

func (c *Config) resolve(p *recipe.Pass) (seed int64, std float64, err error) {
	std = DefaultStd
	if c.Std != nil {
		std = *c.Std
		if !(std > 0) || math.IsInf(std, 0) {
			return 0, 0, passutil.Errorf(p, "std", "std = %g must be a positive number", std)
		}
	}
	if c.Seed != nil {
		seed = *c.Seed
	}
	return seed, std, nil
}

// Plan checks the options; the architecture is unchanged.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	cfg, err := pc.Model(c.Model)
	if err != nil {
		return nil, err
	}
	if _, _, err := c.resolve(p); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Run draws the weights.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	seed, std, err := c.resolve(p)
	if err != nil {
		return err
	}
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	out, err := Random(m, uint64(seed), std)
	if err != nil {
		return err
	}
	rc.Metric("params", out.Config.Params().Total)
	rc.Metric("std", std)
	rc.Metric("seed", seed)
	rc.SetModel(out)
	return nil
}

// Random returns a model with m's architecture, tokenizer and tensor
// dtypes whose 1-D tensors (the RMSNorm weights: a Llama decoder has no
// biases) are 1 and whose other tensors are drawn from N(0, std²). Each
// tensor has its own random stream, keyed by seed and the tensor's name,
// so the values do not depend on the order tensors are visited in and a
// tensor keeps its values when another changes shape.
func Random(m *ir.Model, seed uint64, std float64) (*ir.Model, error) {
	if !(std > 0) || math.IsInf(std, 0) {
		return nil, fmt.Errorf("init: std = %g must be a positive number", std)
	}
	out := &ir.Model{Config: m.Config.Clone(), Tensors: map[string]*ir.Tensor{}, Tokenizer: m.Tokenizer,
		Source: fmt.Sprintf("random init (seed %d, std %g) of %s", seed, std, m.Source)}
	for _, name := range m.TensorNames() {
		src, err := m.Tensor(name)
		if err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
		v := make([]float32, src.NumElements())
		if len(src.Shape) == 1 {
			for i := range v {
				v[i] = 1
			}
		} else {
			h := fnv.New64a()
			h.Write([]byte(name))
			rng := rand.New(rand.NewPCG(seed, h.Sum64()))
			for i := range v {
				v[i] = float32(rng.NormFloat64() * std)
			}
		}
		out.Tensors[name] = ir.FromFloat32(src.DType, append([]int(nil), src.Shape...), v)
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("init: the random model of %s: %w", m.Source, err)
	}
	return out, nil
}
