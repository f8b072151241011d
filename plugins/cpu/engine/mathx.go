package engine

import "sync"

// parallel runs f over [0, n) split into at most threads contiguous ranges.
// Callers only use it for work whose result does not depend on the split.
func parallel(threads, n int, f func(lo, hi int)) {
	if threads <= 1 || n <= 1 {
		f(0, n)
		return
	}
	w := min(threads, n)
	var wg sync.WaitGroup
	for i := 1; i < w; i++ {
		lo, hi := i*n/w, (i+1)*n/w
		wg.Go(func() { f(lo, hi) })
	}
	f(0, n/w)
	wg.Wait()
}
