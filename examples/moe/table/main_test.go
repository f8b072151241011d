package main

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/passes"
)

// The sample standard deviation against its definition worked by hand:
// values 1, 2, 4 have mean 7/3 and squared deviations 16/9, 1/9, 25/9,
// whose sum 42/9 over n-1 = 2 is 7/3.
func TestMeanSD(t *testing.T) {
	for _, tc := range []struct {
		v        []float64
		mean, sd float64
	}{
		{[]float64{1, 2, 4}, 7.0 / 3, math.Sqrt(7.0 / 3)},
		{[]float64{1.5}, 1.5, 0},
		{[]float64{2, 2, 2, 2}, 2, 0},
	} {
		m, sd := meanSD(tc.v)
		if math.Abs(m-tc.mean) > 1e-12 || math.Abs(sd-tc.sd) > 1e-12 {
			t.Errorf("meanSD(%v) = %g, %g; want %g, %g", tc.v, m, sd, tc.mean, tc.sd)
		}
	}
}

// The recipe plans with the shared data: 4 experts upcycled from the
// dense model, 2 left after each pruning, top-2 kept.
func TestRecipePlans(t *testing.T) {
	data := shareddata.Dir(t)
	reg, err := passes.Registry()
	if err != nil {
		t.Fatal(err)
	}
	r, diags := recipe.Load(filepath.Join("..", "moe.hcl"), map[string]string{"data": data}, reg.Language())
	if r != nil {
		diags = append(diags, recipe.CheckFiles(r)...)
	}
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	plan, err := pipeline.MakePlan(r, reg)
	if err != nil {
		t.Fatal(err)
	}
	experts := map[string]int{"upcycle": 4, "train-moe": 4, "prune-scored": 2, "prune-total": 2, "prune-prob": 2, "prune-random": 2,
		"distill-scored": 2, "distill-total": 2, "distill-prob": 2, "distill-random": 2}
	for _, st := range plan.Stages {
		want, ok := experts[st.Name]
		if !ok {
			continue
		}
		if st.Config == nil || st.Config.Layers[0].Experts != want || st.Config.ExpertsPerToken != 2 {
			t.Errorf("stage %s: config %+v, want %d experts, top 2", st.Name, st.Config, want)
		}
		delete(experts, st.Name)
	}
	if len(experts) > 0 {
		t.Errorf("stages missing from the plan: %v", experts)
	}
	// Every stage that reports a loss in the table is an eval pass.
	names := map[string]bool{}
	for _, st := range plan.Stages {
		names[st.Name] = true
	}
	for _, s := range stages {
		if !names[s.pass] {
			t.Errorf("the table reads pass %s, which the recipe lacks", s.pass)
		}
	}
}
