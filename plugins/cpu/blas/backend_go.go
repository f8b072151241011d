//go:build !(openblas && cgo)

package blas

func backendSuffix() string { return "" }

// backendSgemm hands a product to an external library; without one it
// declines and the Go implementation runs.
func backendSgemm(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
	return false
}
