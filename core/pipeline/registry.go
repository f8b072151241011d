// Package pipeline plans and runs a recipe's passes in order, keeping
// every artifact, hash and timing in a run directory so that a run can be
// audited, reproduced and resumed.
package pipeline

import (
	"context"
	"fmt"
	"sort"

	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
)

// Pass is one kind of pass: its recipe schema, its static effect on the
// architecture, and its execution.
type Pass interface {
	Spec() recipe.KindSpec
	// Plan returns the architecture the pass produces (nil when it
	// produces no model) from its inputs' architectures alone.
	Plan(pc *PlanContext, p *recipe.Pass) (*ir.Config, error)
	// Run executes the pass; a model-producing pass calls rc.SetModel, a
	// scores-producing one rc.SetScores.
	Run(ctx context.Context, rc *RunContext, p *recipe.Pass) error
}

// Registry holds the pass kinds a run may use. Built-in passes and plugins
// register here; there is no package-level registry.
type Registry struct {
	passes map[string]Pass
	lang   *recipe.Registry
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{passes: map[string]Pass{}, lang: recipe.NewRegistry()}
}

// Register adds a pass kind.
func (r *Registry) Register(p Pass) error {
	spec := p.Spec()
	if _, dup := r.passes[spec.Kind]; dup {
		return fmt.Errorf("pass kind %q registered twice", spec.Kind)
	}
	if err := r.lang.Register(spec); err != nil {
		return err
	}
	r.passes[spec.Kind] = p
	return nil
}

// Language is the recipe registry that decodes this registry's pass blocks.
func (r *Registry) Language() *recipe.Registry { return r.lang }

// Lookup finds a pass kind.
func (r *Registry) Lookup(kind string) (Pass, bool) {
	p, ok := r.passes[kind]
	return p, ok
}

// Kinds lists the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	out := make([]string, 0, len(r.passes))
	for k := range r.passes {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
