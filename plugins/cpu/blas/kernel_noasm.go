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

func smax(x []float32) float32 {
	// Four running maxima break the compare-and-select dependency chain.
	m0, m1, m2, m3 := x[0], x[0], x[0], x[0]
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v := x[i : i+4 : i+4]
		if v[0] > m0 {
			m0 = v[0]
		}
		if v[1] > m1 {
			m1 = v[1]
		}
		if v[2] > m2 {
			m2 = v[2]
		}
		if v[3] > m3 {
			m3 = v[3]
		}
	}
	for _, v := range x[i:] {
		if v > m0 {
			m0 = v
		}
	}
	return max(m0, m1, m2, m3)
}

func sscal(alpha float32, x []float32) {
	for i := range x {
		x[i] *= alpha
	}
}
