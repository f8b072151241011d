package blas

import (
	"math"
	"testing"
)

func TestExpf(t *testing.T) {
	var worst float64
	for x := float32(-87); x < 88.7; x += 0.0137 {
		got, want := float64(Expf(x)), math.Exp(float64(x))
		worst = math.Max(worst, math.Abs(got-want)/want)
	}
	if worst > 3e-7 {
		t.Fatalf("worst relative error %g", worst)
	}
	for _, c := range []struct{ x, want float32 }{{0, 1}, {1, float32(math.E)}, {-100, 0}, {100, float32(math.Inf(1))}} {
		if got := Expf(c.x); got != c.want {
			t.Errorf("Expf(%v) = %v, want %v", c.x, got, c.want)
		}
	}
	if !math.IsNaN(float64(Expf(float32(math.NaN())))) {
		t.Error("Expf(NaN) is not NaN")
	}
}

func TestExpShifted(t *testing.T) {
	// Lengths around the vector width, values spanning the range including
	// ones that underflow to 0.
	for _, n := range []int{0, 1, 7, 8, 9, 16, 23, 100} {
		src := make([]float32, n)
		for i := range src {
			src[i] = float32(i%13)*7.5 - 60
		}
		const shift, scale = 3, 1.7
		dst := make([]float32, n)
		sum := ExpShifted(dst, src, shift, scale)
		var want float64
		for i, x := range src {
			e := math.Exp(float64((x - shift) * scale))
			if e < 1.2e-38 {
				e = 0
			}
			want += e
			if math.Abs(float64(dst[i])-e) > 3e-7*e {
				t.Fatalf("n=%d: dst[%d] = %v, want %v", n, i, dst[i], e)
			}
		}
		if math.Abs(sum-want) > 1e-6*want {
			t.Errorf("n=%d: sum %v, want %v", n, sum, want)
		}
		// In place gives the same.
		if got := ExpShifted(src, src, shift, scale); got != sum {
			t.Errorf("n=%d: in place sum %v, want %v", n, got, sum)
		}
	}
}

func TestSmaxSscal(t *testing.T) {
	for _, n := range []int{1, 5, 31, 32, 33, 64, 100, 257} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32((i*37)%101) - 50
		}
		for _, at := range []int{0, n / 2, n - 1} {
			y := append([]float32(nil), x...)
			y[at] = 1000
			if got := Smax(y); got != 1000 {
				t.Errorf("n=%d, max at %d: Smax = %v", n, at, got)
			}
		}
		y := append([]float32(nil), x...)
		Sscal(-0.5, y)
		for i := range y {
			if y[i] != -0.5*x[i] {
				t.Fatalf("n=%d: Sscal gave y[%d] = %v, want %v", n, i, y[i], -0.5*x[i])
			}
		}
	}
}
