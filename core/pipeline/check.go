package pipeline

import (
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
