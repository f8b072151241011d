package passes_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/passes"
)

// TestMoEUpcycleScorePrune upcycles the real stories260K into a 4-expert
// mixture on the CPU backend, trains it a few steps with the balancing
// loss, scores it and prunes 4 → 2 experts by score and at random. The
// upcycled model computes the dense one (same loss as the teacher's
// evaluation), the score table has an entry per expert and expert neuron,
// and the pruned models keep half the experts and fewer active
// parameters.
func TestMoEUpcycleScorePrune(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on the CPU")
	}
	dir := t.TempDir()
	src := inputs + `
pass "eval" {
  name      = "eval-teacher"
  model     = model.teacher
  datasets  = [dataset.shakespeare]
  sequences = 16
  seq_len   = 64
}
pass "upcycle" {
  model   = model.teacher
  into    = "moe"
  experts = 4
  top_k   = 2
  noise   = 0.05
  seed    = 1
}
pass "eval" {
  name      = "eval-upcycled"
  model     = model.moe
  datasets  = [dataset.shakespeare]
  sequences = 16
  seq_len   = 64
}
pass "correct" {
  model             = model.moe
  dataset           = dataset.shakespeare
  into              = "moe"
  steps             = 10
  batch             = 4
  seq_len           = 64
  lr                = 0.003
  router_aux_weight = 0.01
}
pass "score" {
  model   = model.moe
  dataset = dataset.shakespeare
  into    = "imp"
  samples = 16
  seq_len = 64
}
pass "prune-width" {
  name    = "prune-scored"
  model   = model.moe
  scores  = scores.imp
  into    = "scored"
  experts = 2
}
pass "prune-width" {
  name      = "prune-random"
  model     = model.moe
  criterion = "random"
  seed      = 3
  into      = "random"
  experts_ratio = 0.5
  expert_mlp    = 128
}
pass "eval" {
  name      = "eval-scored"
  model     = model.scored
  datasets  = [dataset.shakespeare]
  sequences = 16
  seq_len   = 64
}
`
	man, err := runRecipe(t, context.Background(), dir, src, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	teacher := num(t, passRecord(t, man, "eval-teacher"), "dataset.shakespeare.loss")
	upcycled := num(t, passRecord(t, man, "eval-upcycled"), "dataset.shakespeare.loss")
	if math.Abs(teacher-upcycled) > 1e-4 {
		t.Errorf("upcycled loss %.6f, dense teacher's %.6f: copies of the MLP with renormalized weights must compute the dense model", upcycled, teacher)
	}
	tab, err := scores.Load(filepath.Join(dir, "run", "passes", "04-score", "scores.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Experts) != 5 || len(tab.Experts[0]) != 4 || len(tab.ExpertMLP[0]) != 4 || len(tab.ExpertMLP[0][3]) != 172 || tab.MLP[0] != nil {
		t.Fatalf("score table: experts %v, expert neurons %d lists, dense mlp %v", tab.Experts, len(tab.ExpertMLP[0]), tab.MLP[0])
	}
	if !strings.Contains(tab.Method, "experts=mean_output") {
		t.Errorf("method %q does not name the expert importance", tab.Method)
	}
	for _, name := range []string{"prune-scored", "prune-random"} {
		p := passRecord(t, man, name)
		// Top-2 of 2 experts: the active count loses the dropped router
		// rows (and, for prune-random, the narrowed experts' neurons).
		if before, after := num(t, p, "active_params_before"), num(t, p, "active_params_after"); !(after < before) {
			t.Errorf("%s: active parameters %v → %v", name, before, after)
		}
		if before, after := num(t, p, "params_before"), num(t, p, "params_after"); !(after < before) {
			t.Errorf("%s: parameters %v → %v", name, before, after)
		}
	}
	if loss := num(t, passRecord(t, man, "eval-scored"), "dataset.shakespeare.loss"); !(loss > 0 && loss < 10) {
		t.Errorf("pruned model's loss %g", loss)
	}
}

// Pruning below num_experts_per_tok fails when the recipe is planned, and
// the error names both numbers and the way out.
func TestMoEPruneBelowTopK(t *testing.T) {
	dir := t.TempDir()
	src := inputs + `
pass "upcycle" {
  model = model.teacher
  into  = "moe"
}
pass "prune-width" {
  model     = model.moe
  criterion = "magnitude"
  into      = "small"
  experts   = 1
}
`
	reg, err := passes.Registry()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "recipe.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r, diags := recipe.Load(path, map[string]string{"data": sharedData(t)}, reg.Language())
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	_, err = pipeline.MakePlan(r, reg)
	if err == nil || !strings.Contains(err.Error(), "experts = 1 leaves fewer experts than num_experts_per_tok = 2") || !strings.Contains(err.Error(), "experts_per_token = 1") {
		t.Errorf("plan error %v, want one naming experts = 1, num_experts_per_tok = 2 and experts_per_token", err)
	}
}
