package backend

import (
	"slices"
	"testing"
)

// TestRoute: each token goes to its k most probable experts, ties to the
// lower expert index, and the assignments come grouped by expert (in
// token order within an expert) with their slots in the [N, k] weights.
func TestRoute(t *testing.T) {
	for _, c := range []struct {
		name   string
		p      []float32
		n, e   int
		k      int
		choice []int64 // each token's experts, slot order
		groups [][]int64
	}{
		{
			name: "distinct", n: 2, e: 4, k: 2,
			p:      []float32{0.1, 0.5, 0.3, 0.1, 0.4, 0.05, 0.05, 0.5},
			choice: []int64{1, 2, 3, 0},
			groups: [][]int64{{1}, {0}, {0}, {1}},
		},
		{
			name: "ties go to the lower expert", n: 3, e: 4, k: 2,
			p:      []float32{0.25, 0.25, 0.25, 0.25, 0.1, 0.3, 0.3, 0.3, 0.4, 0.2, 0.2, 0.2},
			choice: []int64{0, 1, 1, 2, 0, 1},
			groups: [][]int64{{0, 2}, {0, 1, 2}, {1}, {}},
		},
		{
			name: "top-1", n: 3, e: 3, k: 1,
			p:      []float32{0.2, 0.2, 0.6, 0.5, 0.5, 0, 0.3, 0.4, 0.3},
			choice: []int64{2, 0, 1},
			groups: [][]int64{{1}, {2}, {0}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := route(c.p, c.n, c.e, c.k)
			if !slices.Equal(r.choice, c.choice) {
				t.Errorf("choice %v, want %v", r.choice, c.choice)
			}
			for e, want := range c.groups {
				got := r.rows[r.off[e]:r.off[e+1]]
				if !slices.Equal(got, want) {
					t.Errorf("expert %d: tokens %v, want %v", e, got, want)
				}
				for i := r.off[e]; i < r.off[e+1]; i++ {
					if s := r.slots[i]; s/int64(c.k) != r.rows[i] || c.choice[s] != int64(e) {
						t.Errorf("expert %d, assignment %d: slot %d is not token %d's choice of expert %d", e, i, s, r.rows[i], e)
					}
				}
			}
		})
	}
}
