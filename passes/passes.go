// Package passes registers whittle's built-in pass kinds.
package passes

import (
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/passes/correct"
	"github.com/whittle-ml/whittle/passes/distill"
	"github.com/whittle-ml/whittle/passes/eval"
	"github.com/whittle-ml/whittle/passes/export"
	"github.com/whittle-ml/whittle/passes/initialize"
	"github.com/whittle-ml/whittle/passes/instructtune"
	"github.com/whittle-ml/whittle/passes/prunedepth"
	"github.com/whittle-ml/whittle/passes/prunewidth"
	"github.com/whittle-ml/whittle/passes/score"
	"github.com/whittle-ml/whittle/passes/search"
	"github.com/whittle-ml/whittle/passes/upcycle"
)

// Registry returns a registry holding every built-in pass kind.
func Registry() (*pipeline.Registry, error) {
	r := pipeline.NewRegistry()
	for _, p := range []pipeline.Pass{
		correct.Pass{}, initialize.Pass{}, upcycle.Pass{}, score.Pass{}, prunewidth.Pass{}, prunedepth.Pass{},
		distill.Pass{}, instructtune.Pass{}, eval.Pass{}, export.Pass{}, search.Pass{},
	} {
		if err := r.Register(p); err != nil {
			return nil, err
		}
	}
	return r, nil
}
