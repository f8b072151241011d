package main

import (
	"math"
	"testing"
)

// TestCompare checks the spread rule and the wording on values whose
// means and sample standard deviations are worked out by hand.
func TestCompare(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		name string
		a, b []float64
		q    quantity
		want int
		text string
	}{
		// Means 2 and 5, sds 1 and 1: a gap of 3 > 2.
		{"a lower loss wins", []float64{1, 2, 3}, []float64{4, 5, 6}, nats, 1,
			"A beats B by 3.0000 nats (spread ±2.0000)"},
		{"b lower loss wins", []float64{4, 5, 6}, []float64{1, 2, 3}, nats, -1,
			"B beats A by 3.0000 nats (spread ±2.0000)"},
		// Higher is better for throughput: the larger one wins.
		{"faster", []float64{4, 5, 6}, []float64{1, 2, 3}, speedup, 1,
			"A is faster than B by 3.00× (spread ±2.00)"},
		// Accuracies print in percentage points: means 0.6 and 0.5, sds 0.01.
		{"accuracy points", []float64{0.59, 0.6, 0.61}, []float64{0.49, 0.5, 0.51}, accuracy, 1,
			"A beats B by 10.0 points (spread ±2.0)"},
		// Means 2 and 3.5, sds 1 and 0.5: a gap of 1.5 equals the
		// spread, and only a larger gap counts.
		{"at the spread", []float64{1, 2, 3}, []float64{3, 3.5, 4}, nats, 0,
			"A and B are within the seed-to-seed spread (1.5000 nats apart, spread ±1.5000)"},
		// Means 2 and 2.5, sds 1 and 0.5.
		{"overlapping", []float64{1, 2, 3}, []float64{2, 2.5, 3}, nats, 0,
			"A and B are within the seed-to-seed spread (0.5000 nats apart, spread ±1.5000)"},
		// Identical seeds: sd 0, any gap is resolved.
		{"no spread at all", []float64{2, 2, 2}, []float64{2.001, 2.001, 2.001}, nats, 1,
			"A beats B by 0.0010 nats (spread ±0.0000)"},
		{"one seed", []float64{1}, []float64{9}, nats, 0,
			"A and B are 8.0000 nats apart, unresolved with a single seed"},
		{"one seed against three", []float64{1}, []float64{7, 8, 9}, nats, 0,
			"A and B are 7.0000 nats apart, unresolved with a single seed"},
		{"missing", []float64{1, 2, nan}, []float64{9, 9, 9}, nats, 0,
			"A and B cannot be compared (a number is missing)"},
		{"no seeds", nil, []float64{9, 9, 9}, nats, 0,
			"A and B cannot be compared (a number is missing)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := meanSD(c.a), meanSD(c.b)
			if got := judge(a, b, c.q); got != c.want {
				t.Errorf("judge(%+v, %+v) = %d, want %d", a, b, got, c.want)
			}
			if got := compare("A", a, "B", b, c.q); got != c.text {
				t.Errorf("compare = %q\nwant       %q", got, c.text)
			}
			// Swapping the two mirrors the verdict.
			if got := judge(b, a, c.q); got != -c.want {
				t.Errorf("judge swapped = %d, want %d", got, -c.want)
			}
			if resolved(a, b) != (c.want != 0) {
				t.Errorf("resolved = %v with judge %d", resolved(a, b), c.want)
			}
		})
	}
}

func TestPaperAgrees(t *testing.T) {
	for j, want := range map[int]string{1: "as the paper found", -1: "contrary to the paper", 0: "so the paper's claim is not resolved here"} {
		if got := paperAgrees(j); got != want {
			t.Errorf("paperAgrees(%d) = %q, want %q", j, got, want)
		}
	}
}
