package prunedepth

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/recipe"
)

func TestSelect(t *testing.T) {
	tests := []struct {
		name       string
		imp        []float64
		n          int
		contiguous bool
		want       []int
	}{
		{"individual two lowest", []float64{5, 1, 3, 1, 4}, 2, false, []int{1, 3}},
		{"individual three, sorted output", []float64{5, 1, 3, 1, 4}, 3, false, []int{1, 2, 3}},
		{"individual ties keep lower index", []float64{2, 2, 2, 2}, 2, false, []int{0, 1}},
		{"individual negative scores", []float64{-1, 0, -3, 2}, 1, false, []int{2}},
		{"individual scattered", []float64{0.1, 5, 0.2, 5, 1, 1}, 2, false, []int{0, 2}},
		// Contiguous sums of 2: 5.1 5.2 5.2 6 2 -> start 4.
		{"contiguous differs from individual", []float64{0.1, 5, 0.2, 5, 1, 1}, 2, true, []int{4, 5}},
		// Sums 6 4 4 5: the earliest of the tied minima.
		{"contiguous tie takes earliest", []float64{5, 1, 3, 1, 4}, 2, true, []int{1, 2}},
		{"contiguous three", []float64{5, 1, 3, 1, 4}, 3, true, []int{1, 2, 3}},
		{"contiguous at the end", []float64{9, 9, 9, 1, 1}, 2, true, []int{3, 4}},
		{"contiguous at the start", []float64{0, 0, 9, 9, 9}, 2, true, []int{0, 1}},
		{"contiguous single", []float64{3, 2, 1, 4}, 1, true, []int{2}},
		{"all but one", []float64{3, 2, 1, 4}, 3, true, []int{0, 1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			imp := append([]float64(nil), tc.imp...)
			got, err := Select(imp, tc.n, tc.contiguous)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Select(%v, %d, contiguous=%v) = %v, want %v", tc.imp, tc.n, tc.contiguous, got, tc.want)
			}
			if !reflect.DeepEqual(imp, tc.imp) {
				t.Errorf("Select modified its input: %v", imp)
			}
		})
	}
}

func TestSelectErrors(t *testing.T) {
	tests := []struct {
		imp []float64
		n   int
	}{
		{[]float64{1, 2, 3}, 0},
		{[]float64{1, 2, 3}, -1},
		{[]float64{1, 2, 3}, 3},
		{[]float64{1, 2, 3}, 4},
		{nil, 1},
		{[]float64{1, math.NaN(), 3}, 1},
	}
	for _, tc := range tests {
		for _, contiguous := range []bool{true, false} {
			if got, err := Select(tc.imp, tc.n, contiguous); err == nil {
				t.Errorf("Select(%v, %d, %v) = %v, want an error", tc.imp, tc.n, contiguous, got)
			}
		}
	}
}

func TestCheck(t *testing.T) {
	scores := &recipe.Ref{Kind: "scores", Name: "layers"}
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"explicit layers", Config{Layers: []int{1, 2}}, ""},
		{"remove with scores", Config{Remove: 2, Scores: scores}, ""},
		{"individual", Config{Remove: 1, Scores: scores, Selection: "individual"}, ""},
		{"contiguous", Config{Remove: 1, Scores: scores, Selection: "contiguous"}, ""},
		{"both", Config{Layers: []int{1}, Remove: 1, Scores: scores}, "not both"},
		{"neither", Config{}, "remove = N"},
		{"remove all", Config{Remove: 4, Scores: scores}, "no layers"},
		{"remove without scores", Config{Remove: 1}, "needs scores"},
		{"unknown selection", Config{Remove: 1, Scores: scores, Selection: "random"}, `"random"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.check(4)
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("check = %v, want %q", err, tc.want)
			}
		})
	}
}
