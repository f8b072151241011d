package engine

import (
	"math"
	"sync"
)

// expf is exp for float32 to about 2 ulp: e^x = 2^n·e^r with
// n = round(x/ln 2) and |r| ≤ ln2/2, e^r from a degree-7 minimax-style
// polynomial. It is several times faster than math.Exp, which matters
// because the loss takes one exponential per vocabulary entry per token.
func expf(x float32) float32 {
	switch {
	case x > 88.72283:
		return float32(math.Inf(1))
	case x < -87.33654:
		// Below the smallest normal float32; softmax weights this small
		// do not register next to the maximum's 1.
		return 0
	case x != x:
		return x
	}
	n := float32(math.Floor(float64(x*1.442695041) + 0.5))
	// ln 2 split in two so that n·ln2hi is exact.
	r := x - n*0.693359375 + n*2.12194440e-4
	r2 := r * r
	p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	p = p*r2 + r + 1
	return math.Float32frombits(math.Float32bits(p) + uint32(int32(n))<<23)
}

func sigmoid(x float32) float32 { return 1 / (1 + expf(-x)) }

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
