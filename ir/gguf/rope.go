package gguf

// llama.cpp stores Q and K rows in the interleaved RoPE order (pairs of
// adjacent dimensions rotate together); the IR uses Hugging Face's half
// order. Rows are permuted on the way in and back on the way out.

import (
	"encoding/binary"
	"math"
	"slices"
	"strconv"

	"github.com/whittle-ml/whittle/ir"
)

// permuted reorders the rows of a Q or K matrix lazily, when its bytes
// are first read; the model is validated before that can happen, so the
// permutation fits the shape.
func permuted(t *ir.Tensor, heads, headDim int, perm func(heads, headDim int) []int) *ir.Tensor {
	return ir.LazyTensor(t.DType, t.Shape, func() ([]byte, error) {
		p, err := t.PermuteRows(perm(heads, headDim))
		if err != nil {
			return nil, err
		}
		return p.Bytes()
	})
}

// tensorRopeFreqs is the GGUF tensor that carries llama3 RoPE scaling:
// one float32 divisor per rotated pair of a head, which llama.cpp applies
// to the unscaled frequency base^(-2i/d). llama.cpp's converter writes no
// metadata for this scaling, only the tensor.
const tensorRopeFreqs = "rope_freqs.weight"

// converterOrigCtx is the original context length llama.cpp's converter
// assumes: it reads a top-level original_max_position_embeddings, which
// Llama 3.x configs do not have (theirs sits in rope_scaling), so it
// always computes with 8192, the value every Llama 3.x release uses.
const converterOrigCtx = 8192

// llama3FreqFactors computes the rope_freqs tensor of a llama3 scaling as
// convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors does: in
// float32 torch arithmetic (a python scalar meeting a float32 tensor is
// rounded to float32; x / t is t.reciprocal() * x), so that the result
// matches the converter's bit for bit. Every product and quotient is
// rounded by an explicit conversion so that no platform fuses them. The
// original context is the scaling's own (the converter's 8192 for Llama
// 3.x), which is what Hugging Face's and whittle's forward use.
func llama3FreqFactors(theta float64, headDim int, s *ir.RopeScaling) []float32 {
	orig := float64(s.OriginalMaxPos)
	lowWavelen := float32(orig / s.LowFreqFactor)
	highWavelen := float32(orig / s.HighFreqFactor)
	factor := float32(s.Factor)
	out := make([]float32, headDim/2)
	for i := range out {
		exp := float32(float32(2*i) / float32(headDim))
		freq := float32(1 / float32(math.Pow(float64(float32(theta)), float64(exp))))
		wavelen := float32(float32(1/freq) * float32(2*math.Pi))
		switch {
		case wavelen < highWavelen:
			out[i] = 1
		case wavelen > lowWavelen:
			out[i] = factor
		default:
			x := float32(float32(1/wavelen) * float32(orig))
			smooth := float32(float32(x-float32(s.LowFreqFactor)) / float32(s.HighFreqFactor-s.LowFreqFactor))
			d := float32(float32(float32(1-smooth)/factor) + smooth)
			out[i] = float32(1 / d)
		}
	}
	return out
}

// llama3FromFreqFactors recovers the llama3 scaling whose rope_freqs
// tensor is ff. The tensor determines the forward pass only through the
// factor and the two wavelength thresholds orig/low and orig/high, so the
// original context is taken from metadata when present, else the
// converter's 8192, and the low/high factors are first Llama 3.x's 1 and
// 4, then those fitted to the smoothed pairs (or, without any, put
// between the unscaled and the scaled ones). A candidate is accepted
// only when it reproduces every factor to within two float32 ulps, which
// absorbs the last-bit differences of torch's vectorised pow; accepted
// parameters then give whittle's forward the file's frequencies. ok is
// false when no candidate does (factors written by some other rule).
func llama3FromFreqFactors(theta float64, headDim, orig int, ff []float32) (s *ir.RopeScaling, ok bool) {
	if orig <= 0 {
		orig = converterOrigCtx
	}
	factor := slices.Max(ff)
	if !(factor > 1) || math.IsInf(float64(factor), 0) {
		return nil, false
	}
	// The shortest decimal that rounds to the float32, as metadata is read.
	f64, _ := strconv.ParseFloat(strconv.FormatFloat(float64(factor), 'g', -1, 32), 64)
	cands := [][2]float64{{1, 4}}
	if lo, hi, fitted := fitSmooth(theta, headDim, orig, f64, ff); fitted {
		cands = append(cands, [2]float64{roundSig(lo), roundSig(hi)}, [2]float64{lo, hi})
	} else if lo, hi, split := splitThresholds(theta, headDim, orig, ff); split {
		cands = append(cands, [2]float64{roundSig(lo), roundSig(hi)}, [2]float64{lo, hi})
	}
	for _, c := range cands {
		s := &ir.RopeScaling{Type: "llama3", Factor: f64, LowFreqFactor: c[0], HighFreqFactor: c[1], OriginalMaxPos: orig}
		if !(c[0] > 0) || !(c[1] > c[0]) {
			continue
		}
		if got := llama3FreqFactors(theta, headDim, s); closeULPs(got, ff, 2) {
			return s, true
		}
	}
	return nil, false
}

// splitThresholds handles divisors with no smoothed pair, all 1 then all
// factor (as a short original context gives): any thresholds between the
// last unscaled pair's wavelength and the first scaled pair's reproduce
// them, so both are put there, a third and two thirds of the way in log
// space, away from either edge.
func splitThresholds(theta float64, headDim, orig int, ff []float32) (lo, hi float64, ok bool) {
	factor := slices.Max(ff)
	first := slices.Index(ff, factor)
	for i, v := range ff {
		if (i < first && v != 1) || (i >= first && v != factor) {
			return 0, 0, false
		}
	}
	wavelen := func(i int) float64 { return 2 * math.Pi * math.Pow(theta, float64(2*i)/float64(headDim)) }
	wb := wavelen(first)
	wa := wb / 4 // every pair is scaled: any threshold below the first
	if first > 0 {
		wa = wavelen(first - 1)
	}
	highWl, lowWl := math.Pow(wa, 2.0/3)*math.Pow(wb, 1.0/3), math.Pow(wa, 1.0/3)*math.Pow(wb, 2.0/3)
	return float64(orig) / lowWl, float64(orig) / highWl, wa < wb
}

// fitSmooth solves the low and high frequency factors from the first and
// last smoothed pairs: there 1/ff = (1-s)/factor + s with s linear in
// orig/wavelength, s = (orig/wavelen - low) / (high - low).
func fitSmooth(theta float64, headDim, orig int, factor float64, ff []float32) (lo, hi float64, ok bool) {
	var xs, ss []float64
	for i, v := range ff {
		if v == 1 || float64(v) == factor {
			continue
		}
		wavelen := 2 * math.Pi * math.Pow(theta, float64(2*i)/float64(headDim))
		xs = append(xs, float64(orig)/wavelen)
		ss = append(ss, (1/float64(v)-1/factor)/(1-1/factor))
	}
	if len(xs) < 2 {
		return 0, 0, false
	}
	a, b := 0, len(xs)-1
	if ss[a] == ss[b] {
		return 0, 0, false
	}
	span := (xs[b] - xs[a]) / (ss[b] - ss[a])
	lo = xs[a] - ss[a]*span
	return lo, lo + span, !math.IsNaN(lo) && !math.IsInf(span, 0)
}

// roundSig rounds to four significant digits, where configs' factors
// live (1, 4, 0.5, 32).
func roundSig(x float64) float64 {
	r, err := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 4, 64), 64)
	if err != nil {
		return x
	}
	return r
}

// closeULPs reports whether a and b agree element-wise to within n units
// in the last place (same-signed finite values).
func closeULPs(a, b []float32, n uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := math.Float32bits(a[i]), math.Float32bits(b[i])
		if (x^y)>>31 != 0 || math.IsNaN(float64(a[i])) || math.IsNaN(float64(b[i])) {
			return false
		}
		if max(x, y)-min(x, y) > n {
			return false
		}
	}
	return true
}

// float32Bytes is v in ggml's little-endian F32 layout.
func float32Bytes(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}
