package blas

import "math"

// Constants of Expf: the clamp range, log2(e), ln 2 split so that n·ln2Hi
// is exact, and the polynomial for e^r on |r| ≤ ln2/2.
const (
	expLo = -87.33654 // below this e^x is not a normal float32
	expHi = 88.72283
	log2e = 1.442695041
	ln2Hi = 0.693359375
	ln2Lo = -2.12194440e-4
	expP0 = 1.9875691500e-4
	expP1 = 1.3981999507e-3
	expP2 = 8.3334519073e-3
	expP3 = 4.1665795894e-2
	expP4 = 1.6666665459e-1
	expP5 = 5.0000001201e-1
)

// Expf is e^x in float32 to about 2 ulp, several times faster than
// math.Exp: e^x = 2^n·e^r with n = round(x·log2 e), |r| ≤ ln2/2 and e^r from
// a degree-7 polynomial. Results below the smallest normal float32 are 0.
func Expf(x float32) float32 {
	switch {
	case x > expHi:
		return float32(math.Inf(1))
	case x < expLo:
		return 0
	case x != x:
		return x
	}
	n := float32(math.Floor(float64(x*log2e) + 0.5))
	r := x - n*ln2Hi - n*ln2Lo
	p := ((((expP0*r+expP1)*r+expP2)*r+expP3)*r+expP4)*r + expP5
	p = p*(r*r) + r + 1
	return math.Float32frombits(math.Float32bits(p) + uint32(int32(n))<<23)
}

// ExpShifted sets dst[i] = e^((src[i]−shift)·scale), the inner loop of a
// softmax, and returns the sum of the results accumulated in float64. dst
// may be src. Vectorized with AVX2 where available; inputs whose exponent
// exceeds 88.7 saturate there instead of giving +Inf.
func ExpShifted(dst, src []float32, shift, scale float32) float64 {
	if len(dst) < len(src) {
		panic("blas: ExpShifted destination shorter than its source")
	}
	return expShifted(dst[:len(src)], src, shift, scale)
}

// Smax is the largest element of a non-empty x (NaNs are not handled).
func Smax(x []float32) float32 {
	if len(x) == 0 {
		panic("blas: Smax of an empty slice")
	}
	return smax(x)
}

// Sscal scales x by alpha in place.
func Sscal(alpha float32, x []float32) { sscal(alpha, x) }
