package blas

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkSgemm reports GFLOP/s for square products and for the shapes a
// training step of a stories15M-sized model runs (2048 tokens, dim 288,
// MLP 768, vocabulary 32000 in chunks of 256 rows).
func BenchmarkSgemm(b *testing.B) {
	shapes := []struct {
		name           string
		transA, transB bool
		m, n, k        int
	}{
		{"square256", false, false, 256, 256, 256},
		{"square1024", false, false, 1024, 1024, 1024},
		{"linear_fwd_2048x768x288", false, true, 2048, 768, 288},
		{"linear_dx_2048x288x768", false, false, 2048, 288, 768},
		{"linear_dw_768x288x2048", true, false, 768, 288, 2048},
		{"classifier_256x32000x288", false, true, 256, 32000, 288},
		{"classifier_dw_32000x288x1024", true, false, 32000, 288, 1024},
		{"classifier_dx_1024x288x32000", false, false, 1024, 288, 32000},
	}
	kernels := []struct {
		name string
		k    *kernel
	}{{"best", nil}, {"go", &goKernel}}
	for _, s := range shapes {
		for _, kn := range kernels {
			for _, threads := range []int{1, 2} {
				b.Run(fmt.Sprintf("%s/%s/t%d", s.name, kn.name, threads), func(b *testing.B) {
					r := rand.New(rand.NewPCG(1, 2))
					x := randSlice(r, s.m*s.k)
					y := randSlice(r, s.k*s.n)
					c := make([]float32, s.m*s.n)
					lda, ldb := s.k, s.n
					if s.transA {
						lda = s.m
					}
					if s.transB {
						ldb = s.k
					}
					for b.Loop() {
						if kn.k != nil {
							gemm(*kn.k, threads, s.transA, s.transB, s.m, s.n, s.k, 1, x, lda, y, ldb, 0, c, s.n)
						} else {
							SgemmThreads(threads, s.transA, s.transB, s.m, s.n, s.k, 1, x, lda, y, ldb, 0, c, s.n)
						}
					}
					flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
					b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
