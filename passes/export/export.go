// Package export is the `export` pass: write a model in a format other
// tools read, at any point of a recipe (output blocks do the same at the end).
package export

import (
	"context"
	"path/filepath"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/modelio"
)

// Config is the pass block's schema.
type Config struct {
	Model recipe.Ref `hcl:"model"`
	// Format is hf, gguf or llama2c.
	Format string `hcl:"format"`
	// Path is relative to the run directory unless absolute.
	Path string `hcl:"path"`
	// DType converts tensors (f32, f16, bf16) or, for gguf, quantizes the
	// matrices (q8_0, q4_0); empty keeps them.
	DType string `hcl:"dtype,optional"`
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{Kind: "export", Description: "write a model as Hugging Face safetensors, GGUF or llama2.c", NewConfig: func() any { return &Config{} }}
}

// Plan checks the format and dtype names.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	if _, err := pc.Model(c.Model); err != nil {
		return nil, err
	}
	f, err := modelio.ParseFormat(c.Format)
	if err != nil {
		return nil, err
	}
	if _, err := modelio.ParseStorage(f, c.DType); err != nil {
		return nil, err
	}
	return nil, nil
}

// Run writes the file.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	path := c.Path
	if !filepath.IsAbs(path) {
		path = filepath.Join(rc.RunDir, path)
	}
	if err := pipeline.Export(m, path, c.Format, c.DType); err != nil {
		return err
	}
	rc.Artifact(path)
	rc.Metric("path", path)
	return nil
}
