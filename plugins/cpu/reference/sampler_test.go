package reference

import (
	"encoding/binary"
	"math"
	"sort"
	"testing"
)

// nucleus64 is the distribution the sampler draws from, computed in
// float64 independently: softmax of logits/temperature, cut to the most
// probable tokens whose probabilities first exceed topP (when topP is in
// (0, 1)) and renormalized.
func nucleus64(logits []float32, temperature, topP float64) []float64 {
	p := make([]float64, len(logits))
	m := math.Inf(-1)
	for _, v := range logits {
		m = math.Max(m, float64(v)/temperature)
	}
	var sum float64
	for i, v := range logits {
		p[i] = math.Exp(float64(v)/temperature - m)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	if !(topP > 0 && topP < 1) {
		return p
	}
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] > p[idx[b]] })
	q := make([]float64, len(p))
	var cum float64
	for _, i := range idx {
		q[i] = p[i]
		if cum += p[i]; cum > topP {
			break
		}
	}
	for i := range q {
		q[i] /= cum
	}
	return q
}

// TestSampleDistribution sweeps the coin evenly over [0, 1): each token
// must then be drawn for the share of coins its probability gives it.
func TestSampleDistribution(t *testing.T) {
	for _, c := range []struct {
		name        string
		logits      []float32
		temperature float64
		topP        float64
	}{
		{"whole", []float32{1, 2, 0.5, -1, 3}, 1, 1},
		{"hot", []float32{1, 2, 0.5, -1, 3}, 2.5, 0},
		{"cold", []float32{1, 2, 0.5, -1, 3}, 0.3, 1},
		{"nucleus", []float32{1, 2, 0.5, -1, 3}, 1, 0.7},
		{"narrow nucleus", []float32{0, 4, 1, 0.5}, 0.8, 0.5},
		{"-Inf logits", []float32{float32(math.Inf(-1)), 1, 2, float32(math.Inf(-1))}, 1, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			const n = 1 << 14
			s := NewSampler(c.temperature, c.topP, 1)
			counts := make([]int, len(c.logits))
			for k := range n {
				counts[s.sample(c.logits, (float32(k)+0.5)/n)]++
			}
			want := nucleus64(c.logits, c.temperature, c.topP)
			for i, w := range want {
				if got := float64(counts[i]) / n; math.Abs(got-w) > 2.0/n+1e-5 {
					t.Errorf("token %d drawn %.5f of the time, want %.5f", i, got, w)
				}
			}
		})
	}
}

func TestSampleLimits(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	flat := make([]float32, 100)
	flat[37] = 1e-3
	for _, c := range []struct {
		name        string
		logits      []float32
		temperature float64
		topP        float64
		want        int
	}{
		{"temperature NaN", []float32{1, 3, 2}, math.NaN(), 0.9, 1},
		{"temperature 1e-300", []float32{1, 3, 2}, 1e-300, 0.9, 1},
		{"temperature 1e-300 whole", []float32{1, 3, 2}, 1e-300, 1, 1},
		{"temperature 1e-40", []float32{1, 3, 2}, 1e-40, 0.9, 1},
		{"negative temperature", []float32{1, 3, 2}, -1, 0.9, 1},
		{"top-p NaN", []float32{-200, 30, -200}, 1, math.NaN(), 1},
		{"+Inf logit", []float32{1, inf, 2, inf}, 1, 0.9, 1},
		{"NaN logits", []float32{nan, -40, 40, nan}, 1, 0.9, 2},
		{"all NaN", []float32{nan, nan, nan}, 1, 0.9, 0},
		{"all -Inf", []float32{-inf, -inf}, 1, 0.9, 0},
		{"huge logits", []float32{3e38, -3e38, 3.4e38}, 0.5, 0.9, 2},
		{"one token", []float32{0.5}, 1, 0.5, 0},
		{"top-p below 1/n, flat", flat, 1, 0.001, 37},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewSampler(c.temperature, c.topP, 7)
			for _, coin := range []float32{0, 0.5, 0.9999999} {
				if got := s.sample(c.logits, coin); got != c.want {
					t.Errorf("coin %g: token %d, want %d", coin, got, c.want)
				}
			}
			if got := s.Sample(c.logits); got != c.want {
				t.Errorf("Sample: token %d, want %d", got, c.want)
			}
		})
	}
}

// FuzzSample feeds arbitrary logits (NaN, ±Inf, huge and denormal values
// included), temperatures, top-p values and coins: the token drawn must be
// in the vocabulary, never one with a NaN logit unless all are, and the
// largest logit when the temperature vanishes in float32.
func FuzzSample(f *testing.F) {
	le := func(vs ...float32) []byte {
		b := make([]byte, 0, 4*len(vs))
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	f.Add(le(1, 2, 3), 1e-300, 0.9, float32(0.5))
	f.Add(le(1, 2, 3), math.NaN(), 0.9, float32(0.5))
	f.Add(le(1, 2, 3), 0.8, math.NaN(), float32(0.99))
	f.Add(le(float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))), 1.0, 0.5, float32(0))
	f.Add(le(3e38, -3e38, 1e-45), 1e-30, 0.1, float32(0.3))
	f.Add(le(0, 0, 0, 0, 0, 0), 1.0, 1e-9, float32(0.7))
	f.Fuzz(func(t *testing.T, raw []byte, temperature, topP float64, coin float32) {
		if len(raw) < 4 {
			return
		}
		logits := make([]float32, len(raw)/4)
		for i := range logits {
			logits[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		// The sampler's coins are uniform in [0, 1).
		c := math.Abs(float64(coin))
		c -= math.Floor(c)
		if !(c >= 0 && float32(c) < 1) {
			c = 0
		}
		s := NewSampler(temperature, topP, 1)
		got := s.sample(logits, float32(c))
		if got < 0 || got >= len(logits) {
			t.Fatalf("token %d of %d", got, len(logits))
		}
		top, anyNum := float32(math.Inf(-1)), false
		for _, v := range logits {
			if v == v {
				top, anyNum = max(top, v), true
			}
		}
		v := logits[got]
		if anyNum && v != v {
			t.Fatalf("drew token %d, whose logit is NaN", got)
		}
		if float32(temperature) == 0 && anyNum && v != top {
			t.Fatalf("temperature %g drew logit %g, not the largest %g", temperature, v, top)
		}
		if math.IsInf(float64(top), 1) && v != top {
			t.Fatalf("drew logit %g beside a +Inf one", v)
		}
		if got := s.Sample(logits); got < 0 || got >= len(logits) {
			t.Fatalf("Sample: token %d of %d", got, len(logits))
		}
	})
}
