package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/passes"
)

// TestRecipesPlan checks every experiment recipe statically (syntax,
// references, architectures) and the sizes the findings depend on.
func TestRecipesPlan(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "*.hcl"))
	if err != nil || len(paths) != len(sections) {
		t.Fatalf("%d recipes (%v), want one per finding (%d)", len(paths), err, len(sections))
	}
	if _, err := os.Stat(filepath.Join("..", "..", "..", "..", "..", "shared", "data", "models", "stories260K", "stories260K.bin")); err != nil {
		t.Skip("shared/data not found beside the repository")
	}
	reg, err := passes.Registry()
	if err != nil {
		t.Fatal(err)
	}
	plans := map[string]*pipeline.Plan{}
	for _, p := range paths {
		r, diags := recipe.Load(p, nil, reg.Language())
		if r != nil {
			diags = append(diags, recipe.CheckFiles(r)...)
		}
		if diags.HasErrors() {
			t.Fatalf("%s: %s", p, diags.Error())
		}
		plan, err := pipeline.MakePlan(r, reg)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		plans[filepath.Base(p)] = plan
	}
	for _, s := range sections {
		if plans[s.recipe+".hcl"] == nil {
			t.Errorf("finding %q has no recipe %s.hcl", s.title, s.recipe)
		}
	}
	stage := func(recipe, name string) pipeline.Stage {
		for _, st := range plans[recipe].Stages {
			if st.Name == name {
				return st
			}
		}
		t.Fatalf("%s has no stage %s", recipe, name)
		return pipeline.Stage{}
	}
	// Finding 3 compares width and depth pruning at equal size.
	w, d := stage("03-width-vs-depth.hcl", "prune-width").Params.Total, stage("03-width-vs-depth.hcl", "prune-depth").Params.Total
	if math.Abs(float64(w)/float64(d)-1) > 0.01 {
		t.Errorf("width-pruned %d vs depth-pruned %d parameters: more than 1%% apart", w, d)
	}
	// Finding 6: each budget is the hand-picked student's size, and every
	// student of a budget meets it.
	for _, b := range searchBudgets {
		hand := stage("06-search.hcl", "hand-"+b.key).Params.Total
		for _, arm := range searchArms {
			if arm.key == "hand" {
				continue
			}
			st := stage("06-search.hcl", arm.key+"-"+b.key)
			if p := st.Params.Total; p > hand || float64(p) < 0.97*float64(hand) {
				t.Errorf("06-search %s: %d parameters, outside 3%% below the hand-picked %d", st.Name, p, hand)
			}
			if !strings.Contains(st.Detail, "within 3% below the budget (params ≤ "+pipeline.FormatCount(hand)+")") {
				t.Errorf("06-search %s: the budget is not the hand-picked student's %d parameters:\n%s", st.Name, hand, st.Detail)
			}
		}
	}
	// Finding 1's random student has the pruned student's architecture.
	if a, b := stage("01-prune-vs-scratch.hcl", "prune-width"), stage("01-prune-vs-scratch.hcl", "init"); a.Params != b.Params || pipeline.Describe(a.Config) != pipeline.Describe(b.Config) {
		t.Errorf("random student %s differs from the pruned %s", pipeline.Describe(b.Config), pipeline.Describe(a.Config))
	}
}
