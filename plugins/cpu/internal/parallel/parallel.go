// Package parallel splits loops of the CPU backend over goroutines.
package parallel

import "sync"

// For runs f over [0, n) split into at most threads contiguous ranges,
// the first on the calling goroutine. Callers use it only for work whose
// result does not depend on the split.
func For(threads, n int, f func(lo, hi int)) {
	w := min(threads, n)
	if w <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < w; i++ {
		lo, hi := i*n/w, (i+1)*n/w
		wg.Go(func() { f(lo, hi) })
	}
	f(0, n/w)
	wg.Wait()
}
