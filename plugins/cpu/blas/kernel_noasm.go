//go:build !amd64 || purego

package blas

func activeKernel() kernel { return goKernel }

func expShifted(dst, src []float32, shift, scale float32) float64 {
	var sum float64
	for i, x := range src {
		v := Expf((x - shift) * scale)
		dst[i] = v
		sum += float64(v)
	}
	return sum
}
