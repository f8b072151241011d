package main

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
)

// TestMeanSD checks against values worked out by hand.
func TestMeanSD(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		name     string
		xs       []float64
		mean, sd float64
		text     string
	}{
		// mean 2; squared deviations 1+0+1 = 2 over n−1 = 2: sd 1.
		{"three seeds", []float64{1, 2, 3}, 2, 1, "2.000 ± 1.000"},
		// mean 5; deviations ±1: (1+1)/1 = 2, sd √2.
		{"two seeds", []float64{4, 6}, 5, math.Sqrt2, "5.000 ± 1.414"},
		// mean 2.5; 2·0.25+2·2.25 = 5 over 3: sd √(5/3).
		{"four seeds", []float64{1, 2, 3, 4}, 2.5, math.Sqrt(5.0 / 3), "2.500 ± 1.291"},
		{"equal", []float64{0.25, 0.25, 0.25}, 0.25, 0, "0.250 ± 0.000"},
		{"one seed: no spread", []float64{7}, 7, nan, "7.000"},
		{"a missing value", []float64{1, nan, 3}, nan, nan, "n/a"},
		{"none", nil, nan, nan, "n/a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := meanSD(c.xs)
			if !same(s.mean, c.mean) || !same(s.sd, c.sd) || s.n != len(c.xs) {
				t.Errorf("meanSD(%v) = %+v, want mean %g, sd %g", c.xs, s, c.mean, c.sd)
			}
			if got := s.render(f3, f3); got != c.text {
				t.Errorf("format = %q, want %q", got, c.text)
			}
		})
	}
}

func f3(v float64) string { return fmt.Sprintf("%.3f", v) }

func same(a, b float64) bool {
	return (math.IsNaN(a) && math.IsNaN(b)) || math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b))
}

func TestSeeded(t *testing.T) {
	s := seeded{runs: []*experiment{{}, {}, {}}}
	i := 0.0
	got := s.of(func(*experiment) float64 { i++; return i })
	if got.mean != 2 || got.sd != 1 || got.n != 3 {
		t.Errorf("of: %+v, want mean 2, sd 1 over 3 seeds", got)
	}
	// Runs that have not happened give n/a, not zero.
	if got := s.num("eval", "loss"); !math.IsNaN(got.mean) || lossCell(got) != "n/a" {
		t.Errorf("num of missing runs: %+v", got)
	}
}

// fakeRun is an experiment read back from a manifest whose passes carry the
// given metrics (JSON-shaped: numbers are float64, lists []any).
func fakeRun(metrics map[string]map[string]any) *experiment {
	m := &pipeline.Manifest{}
	for name, ms := range metrics {
		m.Passes = append(m.Passes, pipeline.PassRecord{Name: name, Status: pipeline.StatusDone, Metrics: ms})
	}
	return &experiment{man: m, passes: len(m.Passes)}
}

func history(pts ...float64) []any {
	var out []any
	for i := 0; i+1 < len(pts); i += 2 {
		out = append(out, map[string]any{"tokens": pts[i], "val_loss": pts[i+1]})
	}
	return out
}

func TestSeededCurve(t *testing.T) {
	x := seeded{seeds: []int{1, 2, 3}, runs: []*experiment{
		fakeRun(map[string]map[string]any{"kd": {"val_history": history(100, 3, 200, 2, 300, 1)}}),
		fakeRun(map[string]map[string]any{"kd": {"val_history": history(100, 4, 200, 2, 300, 1)}}),
		// The third seed evaluated at other token counts from its second
		// point on, and stopped early.
		fakeRun(map[string]map[string]any{"kd": {"val_history": history(100, 5, 250, 2)}}),
	}}
	got := x.curve("kd")
	want := []struct {
		tokens float64
		cell   string
	}{{100, "4.0000 ± 1.0000"}, {200, "n/a"}, {300, "n/a"}}
	if len(got) != len(want) {
		t.Fatalf("curve has %d points, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].tokens != w.tokens || lossCell(got[i].loss) != w.cell {
			t.Errorf("point %d: %v tokens %q, want %v tokens %q", i, got[i].tokens, lossCell(got[i].loss), w.tokens, w.cell)
		}
	}
	// The mean curve reaches 4 at its first point and never 3.5 after.
	if r := tokensToReach(means(got), 4); r != 100 {
		t.Errorf("tokensToReach(mean curve, 4) = %v, want 100", r)
	}
}

func TestSeededFloatsAndChoices(t *testing.T) {
	x := seeded{seeds: []int{1, 2, 3}, runs: []*experiment{
		fakeRun(map[string]map[string]any{"score": {"imp": []any{1.0, 4.0}}, "prune": {"dropped_layers": []any{2.0, 3.0}}}),
		fakeRun(map[string]map[string]any{"score": {"imp": []any{2.0, 4.0}}, "prune": {"dropped_layers": []any{2.0, 4.0}}}),
		fakeRun(map[string]map[string]any{"score": {"imp": []any{3.0}}, "prune": {"dropped_layers": []any{2.0, 3.0}}}),
	}}
	var cells []string
	for _, s := range x.floats("score", "imp") {
		cells = append(cells, lossCell(s))
	}
	// Element 0: 1, 2, 3 → 2 ± 1; element 1 is missing in seed 3.
	if got, want := strings.Join(cells, "; "), "2.0000 ± 1.0000; n/a"; got != want {
		t.Errorf("floats = %q, want %q", got, want)
	}
	if got, want := x.choices("prune", "dropped_layers"), "{2, 3} (seeds 1, 3), {2, 4} (seed 2)"; got != want {
		t.Errorf("choices = %q, want %q", got, want)
	}
	same := seeded{seeds: []int{1, 2}, runs: x.runs[:1:1]}
	same.runs = append(same.runs, x.runs[2])
	if got := same.choices("prune", "dropped_layers"); got != "{2, 3}" {
		t.Errorf("choices all alike = %q, want {2, 3}", got)
	}
}

func TestCells(t *testing.T) {
	for _, c := range []struct {
		name string
		cell func(stat) string
		xs   []float64
		want string
	}{
		{"loss", lossCell, []float64{2.5, 2.6, 2.7}, "2.6000 ± 0.1000"},
		{"ppl", pplCell, []float64{12, 14}, "13.00 ± 1.41"},
		{"percent", pctCell, []float64{0.6, 0.62, 0.64}, "62.0% ± 2.0%"},
		{"change", changeCell, []float64{-0.5, -0.52}, "-51.0% ± 1.4%"},
		{"points", pointsCell, []float64{0.1, 0.12, 0.14}, "+12.0 pt ± 2.0 pt"},
		{"count all alike", countCell, []float64{819200, 819200, 819200}, "819,200"},
		{"count apart", countCell, []float64{1000, 2000, 3000}, "2,000 ± 1,000"},
		{"one seed", lossCell, []float64{2.5}, "2.5000"},
		{"missing", countCell, []float64{1, math.NaN()}, "n/a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.cell(meanSD(c.xs)); got != c.want {
				t.Errorf("%v → %q, want %q", c.xs, got, c.want)
			}
		})
	}
}
