package parallel

import (
	"sync"
	"testing"
)

// TestFor checks that the ranges cover [0, n) exactly once, in at most
// threads pieces, for thread counts below, at and above n.
func TestFor(t *testing.T) {
	for _, c := range []struct{ threads, n int }{
		{1, 10}, {4, 10}, {3, 3}, {8, 3}, {0, 5}, {-1, 5}, {4, 0}, {4, 1}, {7, 1000},
	} {
		var mu sync.Mutex
		seen := make([]int, c.n)
		calls := 0
		For(c.threads, c.n, func(lo, hi int) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			for i := lo; i < hi; i++ {
				seen[i]++
			}
		})
		for i, k := range seen {
			if k != 1 {
				t.Errorf("threads %d, n %d: index %d covered %d times", c.threads, c.n, i, k)
			}
		}
		if calls > max(1, c.threads) {
			t.Errorf("threads %d, n %d: %d ranges", c.threads, c.n, calls)
		}
	}
}
