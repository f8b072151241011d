package ir_test

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

func TestRopeToHalfHandCases(t *testing.T) {
	tests := []struct {
		heads, headDim int
		want           []int
	}{
		{1, 2, []int{0, 1}},
		{1, 4, []int{0, 2, 1, 3}},
		{1, 6, []int{0, 2, 4, 1, 3, 5}},
		{2, 4, []int{0, 2, 1, 3, 4, 6, 5, 7}},
		{1, 8, []int{0, 2, 4, 6, 1, 3, 5, 7}},
	}
	for _, tc := range tests {
		if got := ir.RopeToHalf(tc.heads, tc.headDim); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("RopeToHalf(%d, %d) = %v, want %v", tc.heads, tc.headDim, got, tc.want)
		}
	}
}

func TestRopePermutationsAreInverse(t *testing.T) {
	for _, c := range []struct{ heads, hd int }{{1, 2}, {3, 4}, {4, 8}, {8, 64}, {5, 6}} {
		fwd := ir.RopeToHalf(c.heads, c.hd)
		inv := ir.RopeToInterleaved(c.heads, c.hd)
		if len(fwd) != c.heads*c.hd || len(inv) != len(fwd) {
			t.Fatalf("(%d,%d): lengths %d, %d", c.heads, c.hd, len(fwd), len(inv))
		}
		seen := make([]bool, len(fwd))
		for r := range fwd {
			if seen[fwd[r]] {
				t.Fatalf("(%d,%d): RopeToHalf is not a permutation: %v", c.heads, c.hd, fwd)
			}
			seen[fwd[r]] = true
			// Applying one then the other, in either order, is the identity.
			if fwd[inv[r]] != r || inv[fwd[r]] != r {
				t.Fatalf("(%d,%d): not inverse at %d", c.heads, c.hd, r)
			}
			// Rows never leave their head.
			if fwd[r]/c.hd != r/c.hd {
				t.Fatalf("(%d,%d): row %d moves to another head", c.heads, c.hd, r)
			}
		}
	}
}

// rotateInterleaved applies RoPE to each head the Meta/llama2.c way: pair
// (2i, 2i+1) rotates by pos·freq[i].
func rotateInterleaved(v []float64, hd, pos int, freq []float64) {
	for h := 0; h < len(v)/hd; h++ {
		x := v[h*hd:]
		for i := 0; i < hd/2; i++ {
			s, c := math.Sincos(float64(pos) * freq[i])
			a, b := x[2*i], x[2*i+1]
			x[2*i], x[2*i+1] = a*c-b*s, a*s+b*c
		}
	}
}

// rotateHalf applies RoPE the Hugging Face way: pair (i, i+hd/2).
func rotateHalf(v []float64, hd, pos int, freq []float64) {
	for h := 0; h < len(v)/hd; h++ {
		x := v[h*hd:]
		for i := 0; i < hd/2; i++ {
			s, c := math.Sincos(float64(pos) * freq[i])
			a, b := x[i], x[i+hd/2]
			x[i], x[i+hd/2] = a*c-b*s, a*s+b*c
		}
	}
}

func matvec64(w []float64, rows, cols int, x []float64) []float64 {
	out := make([]float64, rows)
	for r := range out {
		for c := 0; c < cols; c++ {
			out[r] += w[r*cols+c] * x[c]
		}
	}
	return out
}

// Interleaved RoPE on q = W·x equals half-order RoPE on q' = W'·x where W'
// has W's rows permuted by RopeToHalf: the permutation is exactly the
// change of layout that loaders of llama2.c and GGUF files apply. The
// attention scores q·k, which are all the model sees, agree too.
func TestRopePermutationMatchesRotation(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	cfg := ir.Config{RopeTheta: 10000}
	for _, c := range []struct{ heads, hd, in int }{{1, 2, 3}, {2, 4, 5}, {3, 8, 4}} {
		freq := cfg.RopeInvFreq(c.hd)
		rows := c.heads * c.hd
		wq := make([]float64, rows*c.in)
		wk := make([]float64, rows*c.in)
		for i := range wq {
			wq[i], wk[i] = r.NormFloat64(), r.NormFloat64()
		}
		perm := ir.RopeToHalf(c.heads, c.hd)
		permute := func(w []float64) []float64 {
			out := make([]float64, len(w))
			for row, src := range perm {
				copy(out[row*c.in:(row+1)*c.in], w[src*c.in:(src+1)*c.in])
			}
			return out
		}
		wqHalf, wkHalf := permute(wq), permute(wk)
		x := make([]float64, c.in)
		for i := range x {
			x[i] = r.NormFloat64()
		}
		for _, pos := range []int{0, 1, 5, 17} {
			qi, ki := matvec64(wq, rows, c.in, x), matvec64(wk, rows, c.in, x)
			qh, kh := matvec64(wqHalf, rows, c.in, x), matvec64(wkHalf, rows, c.in, x)
			rotateInterleaved(qi, c.hd, pos, freq)
			rotateInterleaved(ki, c.hd, pos+3, freq)
			rotateHalf(qh, c.hd, pos, freq)
			rotateHalf(kh, c.hd, pos+3, freq)
			for row, src := range perm {
				if math.Abs(qh[row]-qi[src]) > 1e-12 {
					t.Fatalf("heads %d hd %d pos %d: rotated row %d = %g, interleaved row %d = %g", c.heads, c.hd, pos, row, qh[row], src, qi[src])
				}
			}
			for h := 0; h < c.heads; h++ {
				var di, dh float64
				for j := h * c.hd; j < (h+1)*c.hd; j++ {
					di += qi[j] * ki[j]
					dh += qh[j] * kh[j]
				}
				if math.Abs(di-dh) > 1e-12 {
					t.Errorf("heads %d hd %d pos %d head %d: score %g interleaved, %g half", c.heads, c.hd, pos, h, di, dh)
				}
			}
		}
	}
}

func TestRopeInvFreq(t *testing.T) {
	// theta 1e6 and head_dim 6 give base frequencies 10^(-2i): 1, 1e-2,
	// 1e-4, with wavelengths 2π, 200π ≈ 628.3 and 20000π ≈ 62832.
	llama3 := &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 1000}
	tests := []struct {
		name    string
		theta   float64
		scaling *ir.RopeScaling
		headDim int
		want    []float64
	}{
		{"llama2 default", 10000, nil, 4, []float64{1, 0.01}},
		{"llama2 head_dim 8", 10000, nil, 8, []float64{1, 0.1, 0.01, 0.001}},
		{"theta 1e6", 1e6, nil, 6, []float64{1, 1e-2, 1e-4}},
		{"zero factor is no scaling", 1e6, &ir.RopeScaling{Type: "linear"}, 6, []float64{1, 1e-2, 1e-4}},
		{"default type", 1e6, &ir.RopeScaling{Type: "default", Factor: 4}, 6, []float64{1, 1e-2, 1e-4}},
		{"linear x4", 1e6, &ir.RopeScaling{Type: "linear", Factor: 4}, 6, []float64{0.25, 2.5e-3, 2.5e-5}},
		// Wavelengths against original_max_pos/high = 250 and
		// original_max_pos/low = 1000: 2π is high frequency (kept), 62832
		// is low (divided by 8), 628.3 is in between, smoothed with
		// s = (1000/628.3 - 1)/(4 - 1) = (10/(2π) - 1)/3 = 0.19718314,
		// (1-s)·0.01/8 + s·0.01 = 0.01·(0.125 + 0.875·s) = 0.0029753525.
		{"llama3", 1e6, llama3, 6, []float64{1, 0.002975352507, 1.25e-5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ir.Config{RopeTheta: tc.theta, RopeScaling: tc.scaling}
			got := c.RopeInvFreq(tc.headDim)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d frequencies, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if math.Abs(got[i]-tc.want[i]) > 1e-9*math.Abs(tc.want[i]) {
					t.Errorf("freq[%d] = %.12g, want %.12g", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// Llama 3.1's published scaling (theta 500000, factor 8, low 1, high 4,
// original 8192) over head_dim 128: frequencies with wavelength under 2048
// are untouched, over 8192 divided by 8, and in between they interpolate,
// so the scaled frequency never increases and stays within [f/8, f].
func TestRopeInvFreqLlama31Bands(t *testing.T) {
	base := ir.Config{RopeTheta: 500000}
	c := base
	c.RopeScaling = &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 8192}
	if err := (&ir.Config{Vocab: 1, Hidden: 1, Layers: []ir.LayerConfig{{Heads: 1, KVHeads: 1, HeadDim: 2, MLP: 1}}, NormEps: 1, RopeTheta: 500000, RopeScaling: c.RopeScaling}).Check(); err != nil {
		t.Fatalf("Llama 3.1 scaling rejected: %v", err)
	}
	f0, f := base.RopeInvFreq(128), c.RopeInvFreq(128)
	var kept, divided, mid int
	for i := range f {
		wl := 2 * math.Pi / f0[i]
		switch {
		case wl < 2048:
			kept++
			if f[i] != f0[i] {
				t.Errorf("pair %d (wavelength %.0f) changed: %g -> %g", i, wl, f0[i], f[i])
			}
		case wl > 8192:
			divided++
			if math.Abs(f[i]-f0[i]/8) > 1e-15 {
				t.Errorf("pair %d (wavelength %.0f): %g, want %g", i, wl, f[i], f0[i]/8)
			}
		default:
			mid++
			if f[i] >= f0[i] || f[i] <= f0[i]/8 {
				t.Errorf("pair %d (wavelength %.0f): %g outside (%g, %g)", i, wl, f[i], f0[i]/8, f0[i])
			}
		}
		if i > 0 && f[i] >= f[i-1] {
			t.Errorf("scaled frequencies not decreasing at pair %d", i)
		}
	}
	// 2π·500000^(i/64) < 2048 ⇔ i < 64·ln(2048/2π)/ln(500000) = 28.2, and
	// 8192 at i = 34.98: 29 kept, 6 interpolated, 29 divided.
	if kept != 29 || mid != 6 || divided != 29 {
		t.Errorf("bands kept/interpolated/divided = %d/%d/%d, want 29/6/29", kept, mid, divided)
	}
}
