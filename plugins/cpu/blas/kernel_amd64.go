//go:build amd64 && !purego

package blas

import "unsafe"

// avx2Kernel is a 6×16 tile held in twelve YMM accumulators, the shape that
// fills the sixteen AVX registers (two for B, one broadcast of A, twelve
// sums) and keeps both FMA pipes busy.
var avx2Kernel = kernel{name: "avx2-fma", mr: 6, nr: 16, fn: kernelAVX2}

var hasAVX2FMA = detectAVX2FMA()

func activeKernel() kernel {
	if hasAVX2FMA {
		return avx2Kernel
	}
	return goKernel
}

func detectAVX2FMA() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if ecx1&(fma|osxsave|avx) != fma|osxsave|avx {
		return false
	}
	// The OS must save the YMM state on context switches (XCR0 bits 1, 2).
	if xcr0, _ := xgetbv(); xcr0&6 != 6 {
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<5) != 0
}

func kernelAVX2(k int, a, b, c []float32, ldc int, alpha, beta float32) {
	// The assembly trusts these extents; they are what gemm guarantees.
	_ = a[6*k-1]
	_ = b[16*k-1]
	_ = c[5*ldc+15]
	sgemm6x16(k, unsafe.SliceData(a), unsafe.SliceData(b), unsafe.SliceData(c), ldc, alpha, beta)
}

//go:noescape
func sgemm6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)

func cpuid(eax, ecx uint32) (a, b, c, d uint32)

func xgetbv() (eax, edx uint32)
