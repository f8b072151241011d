package blas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// naive is the textbook triple loop in float64, the reference every
// kernel is checked against.
func naive(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) []float64 {
	out := make([]float64, len(c))
	for i := range c {
		out[i] = float64(c[i])
	}
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			v := float64(alpha) * s
			if beta != 0 {
				v += float64(beta) * float64(c[i*ldc+j])
			}
			out[i*ldc+j] = v
		}
	}
	return out
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

type gemmCase struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	pad            int // extra leading-dimension padding
}

func gemmCases() []gemmCase {
	var cs []gemmCase
	sizes := [][3]int{{1, 1, 1}, {3, 5, 7}, {4, 4, 4}, {6, 16, 9}, {13, 17, 19}, {31, 33, 300}, {97, 130, 65}, {200, 37, 513}, {7, 2100, 3}}
	ab := [][2]float32{{1, 0}, {0.5, -1.5}, {-2, 1}, {0, 2}}
	i := 0
	for _, s := range sizes {
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				x := ab[i%len(ab)]
				cs = append(cs, gemmCase{ta, tb, s[0], s[1], s[2], x[0], x[1], i % 3})
				i++
			}
		}
	}
	return cs
}

func runCase(t *testing.T, gc gemmCase, threads int, kn *kernel) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(gc.m), uint64(gc.n*1000+gc.k)))
	ar, ac := gc.m, gc.k
	if gc.transA {
		ar, ac = ac, ar
	}
	br, bc := gc.k, gc.n
	if gc.transB {
		br, bc = bc, br
	}
	lda, ldb, ldc := ac+gc.pad, bc+gc.pad, gc.n+gc.pad
	a := randSlice(r, ar*lda)
	b := randSlice(r, br*ldb)
	c := randSlice(r, gc.m*ldc)
	if gc.beta == 0 {
		// BLAS semantics: C is not read when beta is 0.
		for i := range c {
			c[i] = float32(math.NaN())
		}
	}
	want := naive(gc.transA, gc.transB, gc.m, gc.n, gc.k, gc.alpha, a, lda, b, ldb, gc.beta, c, ldc)
	if kn != nil {
		gemm(*kn, threads, gc.transA, gc.transB, gc.m, gc.n, gc.k, gc.alpha, a, lda, b, ldb, gc.beta, c, ldc)
	} else {
		SgemmThreads(threads, gc.transA, gc.transB, gc.m, gc.n, gc.k, gc.alpha, a, lda, b, ldb, gc.beta, c, ldc)
	}
	tol := 1e-5 * math.Sqrt(float64(gc.k+1)) * 4
	for i := 0; i < gc.m; i++ {
		for j := 0; j < ldc; j++ {
			got, w := float64(c[i*ldc+j]), want[i*ldc+j]
			if j >= gc.n {
				// Padding between rows must be left alone.
				if got != w && !(math.IsNaN(got) && math.IsNaN(w)) {
					t.Fatalf("padding C[%d,%d] changed to %v", i, j, got)
				}
				continue
			}
			if math.Abs(got-w) > tol*(1+math.Abs(w)) || math.IsNaN(got) {
				t.Fatalf("C[%d,%d] = %v, want %v", i, j, got, w)
			}
		}
	}
}

func TestSgemm(t *testing.T) {
	kernels := []*kernel{nil, &goKernel}
	defer func(v int) { maxInPlaceLD = v }(maxInPlaceLD)
	// Transposed A is read in place when narrow and packed when wide;
	// run both ways.
	for _, ld := range []int{maxInPlaceLD, 0} {
		maxInPlaceLD = ld
		for _, kn := range kernels {
			for _, threads := range []int{1, 2, 3} {
				for _, gc := range gemmCases() {
					name := fmt.Sprintf("ld%d/%v/t%d/%v", ld, kn != nil, threads, gc)
					t.Run(name, func(t *testing.T) { runCase(t, gc, threads, kn) })
				}
			}
		}
	}
}

// TestSgemmThreadInvariance: work is split over rows and columns only, so
// the thread count does not change a single bit of the result.
func TestSgemmThreadInvariance(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	const m, n, k = 101, 67, 700
	a, b := randSlice(r, m*k), randSlice(r, k*n)
	c0 := randSlice(r, m*n)
	for _, kn := range []kernel{activeKernel(), goKernel} {
		var first []float32
		for _, threads := range []int{1, 2, 3, 5} {
			c := append([]float32(nil), c0...)
			gemm(kn, threads, true, false, m, n, k, 0.7, a, m, b, n, 0.3, c, n)
			if first == nil {
				first = c
				continue
			}
			for i := range c {
				if math.Float32bits(c[i]) != math.Float32bits(first[i]) {
					t.Fatalf("%s, %d threads: C[%d] = %v, 1 thread gave %v", kn.name, threads, i, c[i], first[i])
				}
			}
		}
	}
}

func TestSgemmPanicsOnBadArguments(t *testing.T) {
	for _, f := range []func(){
		func() {
			Sgemm(false, false, 2, 2, 2, 1, make([]float32, 3), 2, make([]float32, 4), 2, 0, make([]float32, 4), 2)
		},
		func() {
			Sgemm(false, false, 2, 2, 2, 1, make([]float32, 4), 1, make([]float32, 4), 2, 0, make([]float32, 4), 2)
		},
		func() { Sgemm(false, false, -1, 2, 2, 1, nil, 2, nil, 2, 0, nil, 2) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("bad arguments did not panic")
				}
			}()
			f()
		}()
	}
	// Empty products are fine, and k = 0 only scales C.
	c := []float32{1, 2}
	Sgemm(false, false, 1, 2, 0, 1, nil, 1, nil, 2, 3, c, 2)
	if c[0] != 3 || c[1] != 6 {
		t.Errorf("k=0 with beta 3 gave %v", c)
	}
}
