//go:build openblas && cgo

// Package openblas binds OpenBLAS's cblas_sgemm. It lives apart from package
// blas because a cgo package cannot also hold Go assembly.
package openblas

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
*/
import "C"

import "sync"

// OpenBLAS keeps one global thread count, so calls are serialized and set
// it to what each caller asked for.
var (
	mu      sync.Mutex
	current int
)

// Sgemm is cblas_sgemm in row-major order with the given thread count. The
// caller has checked the arguments and that they fit in 32 bits.
func Sgemm(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans), C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans)
	if transA {
		ta = C.CblasTrans
	}
	if transB {
		tb = C.CblasTrans
	}
	mu.Lock()
	defer mu.Unlock()
	if current != threads {
		C.openblas_set_num_threads(C.int(threads))
		current = threads
	}
	C.cblas_sgemm(C.CblasRowMajor, ta, tb, C.blasint(m), C.blasint(n), C.blasint(k),
		C.float(alpha), (*C.float)(&a[0]), C.blasint(lda), (*C.float)(&b[0]), C.blasint(ldb),
		C.float(beta), (*C.float)(&c[0]), C.blasint(ldc))
}
