//go:build amd64 && !purego

package blas

import "unsafe"

//go:generate gen/generate.sh

// avx2Kernel is a 6×16 tile held in twelve YMM accumulators, the shape that
// fills the sixteen AVX registers (two for B, one broadcast of A, twelve
// sums) and keeps both FMA pipes busy.
var avx2Kernel = kernel{name: "avx2-fma", mr: 6, nr: 16, fn: kernelAVX2, direct: kernelAVX2Direct}

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

func kernelAVX2(k int, a []float32, astep int, b, c []float32, ldc int, alpha, beta float32) {
	// The assembly trusts these extents; they are what gemm guarantees.
	_ = a[(k-1)*astep+5]
	_ = b[16*k-1]
	_ = c[5*ldc+15]
	sgemm6x16(k, unsafe.SliceData(a), astep, unsafe.SliceData(b), unsafe.SliceData(c), ldc, alpha, beta)
}

func kernelAVX2Direct(k int, a []float32, lda int, b, c []float32, ldc int, alpha, beta float32) {
	_ = a[5*lda+k-1]
	_ = b[16*k-1]
	_ = c[5*ldc+15]
	sgemm6x16Direct(k, unsafe.SliceData(a), lda, unsafe.SliceData(b), unsafe.SliceData(c), ldc, alpha, beta)
}

// expConsts are expf's constants in the order expShiftedAVX2 reads them.
var expConsts = [12]float32{expLo, expHi, log2e, ln2Hi, ln2Lo, expP0, expP1, expP2, expP3, expP4, expP5, 1}

func expShifted(dst, src []float32, shift, scale float32) float64 {
	n := len(src) &^ 7
	var sum float64
	if hasAVX2FMA && n > 0 {
		_ = dst[n-1]
		sum = expShiftedAVX2(unsafe.SliceData(dst), unsafe.SliceData(src), n, shift, scale, &expConsts[0])
	} else {
		n = 0
	}
	for i := n; i < len(src); i++ {
		v := Expf((src[i] - shift) * scale)
		dst[i] = v
		sum += float64(v)
	}
	return sum
}

func smax(x []float32) float32 {
	n := len(x) &^ 31
	m := x[0]
	if hasAVX2FMA && n > 0 {
		m = maxAVX2(unsafe.SliceData(x), n)
	} else {
		n = 0
	}
	for _, v := range x[n:] {
		if v > m {
			m = v
		}
	}
	return m
}

func sscal(alpha float32, x []float32) {
	n := len(x) &^ 7
	if hasAVX2FMA && n > 0 {
		scaleAVX2(alpha, unsafe.SliceData(x), n)
	} else {
		n = 0
	}
	for i := n; i < len(x); i++ {
		x[i] *= alpha
	}
}

//go:noescape
func maxAVX2(x *float32, n int) float32

//go:noescape
func scaleAVX2(alpha float32, x *float32, n int)

//go:noescape
func sgemm6x16Direct(k int, a *float32, lda int, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func expShiftedAVX2(dst, src *float32, n int, shift, scale float32, c *float32) float64

//go:noescape
func sgemm6x16(k int, a *float32, astep int, b, c *float32, ldc int, alpha, beta float32)

func cpuid(eax, ecx uint32) (a, b, c, d uint32)

func xgetbv() (eax, edx uint32)
