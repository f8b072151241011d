package pipeline

import (
	"fmt"

	"github.com/whittle-ml/whittle/core/recipe"
)

// CheckError is a recipe that failed Check: the recipe or one of its input
// files is at fault, and nothing ran.
type CheckError struct{ Err error }

func (e *CheckError) Error() string { return e.Err.Error() }
func (e *CheckError) Unwrap() error { return e.Err }

// Check is the one static check of a loaded recipe that `validate`, `plan`
// and `run` all make before any work: every input file exists, every model
// header opens, and every pass plans (option ranges, references, the shapes
// each pass leaves, tokenizers shared where a pass needs them). Run calls it
// before its first pass, so no recipe trains a pass and then fails on a
// later one for a reason known in advance. Failures are *CheckError.
func Check(r *recipe.Recipe, reg *Registry) (*Plan, error) {
	if diags := recipe.CheckFiles(r); diags.HasErrors() {
		return nil, &CheckError{Err: &recipe.DiagnosticsError{Diags: diags}}
	}
	plan, err := MakePlan(r, reg)
	if err != nil {
		return nil, &CheckError{Err: err}
	}
	return plan, nil
}

// CheckRunnable is what a run needs beyond Check's plan: weights for every
// declared model (a config.json alone can be planned, not run). validate
// and run both make it, so validate accepts exactly what run will start.
func CheckRunnable(r *recipe.Recipe, plan *Plan) error {
	for i, m := range r.Models {
		// MakePlan puts one stage per declared model first, in order.
		if i < len(plan.Stages) && plan.Stages[i].ConfigOnly {
			return &CheckError{Err: fmt.Errorf("%s: model %q: %s is a configuration without weights: it can be inspected and planned, not run", At(m.DeclRange), m.Name, m.Path)}
		}
	}
	return nil
}
