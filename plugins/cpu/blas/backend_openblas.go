//go:build openblas && cgo

package blas

import (
	"math"

	"github.com/whittle-ml/whittle/plugins/cpu/blas/internal/openblas"
)

func backendSuffix() string { return ", openblas for multi-threaded calls" }

// backendSgemm sends multi-threaded products to OpenBLAS. Single-threaded
// calls come from goroutines already running in parallel (attention heads)
// and stay in Go: nesting them in OpenBLAS's own pool would oversubscribe
// the cores.
func backendSgemm(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
	for _, v := range []int{m, n, k, lda, ldb, ldc} {
		if v > math.MaxInt32 {
			return false
		}
	}
	openblas.Sgemm(threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	return true
}
