package main

import (
	"math"
	"testing"
)

// The sample standard deviation against its definition worked by hand:
// values 1, 2, 4 have mean 7/3 and squared deviations 16/9, 1/9, 25/9,
// whose sum 42/9 over n-1 = 2 is 7/3.
func TestMeanSD(t *testing.T) {
	for _, tc := range []struct {
		v        []float64
		mean, sd float64
	}{
		{[]float64{1, 2, 4}, 7.0 / 3, math.Sqrt(7.0 / 3)},
		{[]float64{1.5}, 1.5, 0},
		{[]float64{2, 2, 2, 2}, 2, 0},
	} {
		m, sd := meanSD(tc.v)
		if math.Abs(m-tc.mean) > 1e-12 || math.Abs(sd-tc.sd) > 1e-12 {
			t.Errorf("meanSD(%v) = %g, %g; want %g, %g", tc.v, m, sd, tc.mean, tc.sd)
		}
	}
}
