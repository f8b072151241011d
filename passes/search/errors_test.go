package search_test

import (
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
	"github.com/whittle-ml/whittle/passes/score"
	"github.com/whittle-ml/whittle/passes/search"
)

// TestRecipeErrors checks that bad search blocks fail at load or plan
// time with the position of the attribute at fault. The tiny model has
// hidden 8, MLP 12, 4 heads over 2 KV heads, 4 layers, tied
// embedding of 296 tokens: 4,360 parameters, 96 per MLP neuron.
func TestRecipeErrors(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, score.Pass{}, search.Pass{})
	block := func(body string) string {
		return passtest.Inputs + `
pass "score" {
  model   = model.base
  dataset = dataset.corpus
  into    = "imp"
  layers  = ["lm_loss"]
}
pass "search" {
  model   = model.base
  scores  = scores.imp
  into    = "student"
  dataset = dataset.corpus
` + body + "}\n"
	}
	space := `  space "mlp" {
    sizes = [12, 10, 8, 6]
  }
`
	tests := []struct {
		name, src, at, want string
	}{
		{"unknown constraint", block("  constraints {\n    parms = 2000\n  }\n" + space), "parms", `argument named "parms" is not expected`},
		{"no constraints block", block(space), "", `constraints`},
		{"no budget", block("  constraints {\n    tolerance = 0.1\n  }\n" + space), "constraints {", "sets no budget"},
		{"bad memory", block("  constraints {\n    memory = \"12 parsecs\"\n  }\n" + space), `"12 parsecs"`, `unknown unit "parsecs"`},
		{"negative tolerance", block("  constraints {\n    params = 2000\n    tolerance = -1\n  }\n" + space), "-1", "tolerance = -1"},
		{"empty space", block("  constraints {\n    params = 2000\n  }\n  space \"mlp\" {\n    ratios = []\n  }\n"), "[]", `space "mlp" is empty`},
		{"no space", block("  constraints {\n    params = 2000\n  }\n"), "", "search space is empty"},
		{"unknown axis", block("  constraints {\n    params = 2000\n  }\n  space \"width\" {\n    ratios = [0.5]\n  }\n"), `"width"`, `unknown axis "width"`},
		{"uniform false with heads", block("  uniform = false\n  constraints {\n    params = 4000\n  }\n  space \"heads\" {\n    sizes = [2]\n  }\n"), `"heads"`, "search kv_heads instead of heads"},
		{"normalize without uniform false", block("  normalize = \"none\"\n  constraints {\n    params = 4000\n  }\n" + space), `"none"`, "normalize applies to uniform = false"},
		{"max_prune leaves nothing", block("  constraints {\n    params = 2000\n  }\n  space \"mlp\" {\n    sizes = [6]\n    max_prune = 0.25\n  }\n"), "[6]", "max_prune = 0.25 keeps at least 9 of 12"},
		{"size too large", block("  constraints {\n    params = 2000\n  }\n  space \"mlp\" {\n    sizes = [16]\n  }\n"), "[16]", "size 16 must be between 1 and the current 12"},
		{"layers without metric", block("  constraints {\n    params = 2000\n  }\n  space \"layers\" {\n    sizes = [3]\n  }\n"), `"layers"`, `needs metric`},
		{"unknown objective", block("  objective = \"bleu\"\n  constraints {\n    params = 2000\n  }\n" + space), `"bleu"`, `unknown objective "bleu"`},
		{"unknown pick", block("  pick = \"worst\"\n  constraints {\n    params = 2000\n  }\n" + space), `"worst"`, `unknown pick "worst"`},
		{"accuracy without task", block("  objective = \"accuracy\"\n  constraints {\n    params = 2000\n  }\n" + space), `"accuracy"`, `needs task`},
		// MLP 12, 10, 8, 6: 4,360, 4,168, 3,976 (97.0% of 4,100, just
		// outside the tolerance) and 3,784 parameters.
		{"nothing meets the budget", block("  constraints {\n    params = 4100\n  }\n" + space), "",
			"no candidate of 4 meets the budget within the tolerance of 3% below it; the closest under it is hidden=8 mlp=8 heads=4/2 layers=4 (params 3976 = 97.0% of 4100); the closest over it is hidden=8 mlp=10 heads=4/2 layers=4 (params 4168"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, diags := env.Load(t, reg, tc.src)
			at := ""
			if tc.at != "" {
				at = passtest.Pos(t, tc.src, tc.at)
			}
			if diags.HasErrors() {
				if !strings.Contains(diags.Error(), tc.want) {
					t.Errorf("diagnostics %q do not mention %q", diags.Error(), tc.want)
				}
				if at != "" && passtest.DiagPos(diags) != at {
					t.Errorf("diagnostic at %s, want %s", passtest.DiagPos(diags), at)
				}
				return
			}
			_, err := pipeline.MakePlan(r, reg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), at) {
				t.Fatalf("plan error %v, want %q at %s", err, tc.want, at)
			}
		})
	}
}
