package reference

import (
	"math"
	"sort"
)

// Sampler picks the next token the way llama2.c's run.c does (greedy at
// temperature 0, else temperature softmax with optional nucleus cut and
// its xorshift generator), so the same seed gives the same text there and
// here.
//
// Where run.c's arithmetic breaks down the sampler takes the limit
// instead, so that any input gives a token of the vocabulary: a NaN logit
// is never drawn (unless every logit is NaN: then token 0), an infinite
// top logit or a temperature so small that the scaled logits leave
// float32's range decodes greedily, and a nucleus that would be empty
// holds the most probable token.
type Sampler struct {
	// Temperature ≤ 0 (or NaN) is greedy decoding.
	Temperature float64
	// TopP outside (0, 1) samples from the whole distribution.
	TopP  float64
	state uint64
	probs []float32
	idx   []int
}

// NewSampler seeds a sampler; seed 0 is replaced by 1 (xorshift needs a
// non-zero state).
func NewSampler(temperature, topP float64, seed uint64) *Sampler {
	if seed == 0 {
		seed = 1
	}
	return &Sampler{Temperature: temperature, TopP: topP, state: seed}
}

func (s *Sampler) randomU32() uint32 {
	s.state ^= s.state >> 12
	s.state ^= s.state << 25
	s.state ^= s.state >> 27
	return uint32((s.state * 0x2545F4914F6CDD1D) >> 32)
}

func (s *Sampler) randomF32() float32 { return float32(s.randomU32()>>8) / 16777216.0 }

// Sample returns the next token id for logits, which must not be empty.
// Only sampling (temperature > 0) advances the random state, as in run.c.
func (s *Sampler) Sample(logits []float32) int {
	if !(s.Temperature > 0) {
		return argmax(logits)
	}
	return s.sample(logits, s.randomF32())
}

// sample draws with coin, uniform in [0, 1).
func (s *Sampler) sample(logits []float32, coin float32) int {
	best := argmax(logits)
	top := logits[best]
	t := float32(s.Temperature)
	// run.c divides the logits by the temperature and subtracts the
	// largest; that is only defined while the largest is finite.
	if !(t > 0) || top != top || math.IsInf(float64(top), 0) || math.IsInf(float64(top/t), 0) {
		return best
	}
	if cap(s.probs) < len(logits) {
		s.probs = make([]float32, len(logits))
	}
	p := s.probs[:len(logits)]
	m := top / t
	var sum float32 // ≥ 1: the top logit contributes exp(0)
	for i, v := range logits {
		e := v/t - m
		if e != e { // a NaN logit, or −Inf/+Inf at an infinite temperature
			p[i] = 0
			continue
		}
		p[i] = float32(math.Exp(float64(e)))
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	if !(s.TopP > 0 && s.TopP < 1) {
		return sampleAll(p, coin)
	}
	return s.sampleTopP(p, float32(s.TopP), coin, best)
}

// argmax is the first largest logit, NaNs ignored (0 if all are NaN).
func argmax(v []float32) int {
	best := -1
	for i, x := range v {
		if x == x && (best < 0 || x > v[best]) {
			best = i
		}
	}
	return max(best, 0)
}

// sampleAll draws from the whole distribution p (run.c's sample_mult).
func sampleAll(p []float32, coin float32) int {
	var cdf float32
	last := 0
	for i, v := range p {
		cdf += v
		if coin < cdf {
			return i
		}
		if v > 0 {
			last = i
		}
	}
	// Rounding left the cdf below coin: run.c returns the last token
	// whatever its probability; the last one that can be drawn is closer.
	return last
}

// sampleTopP draws from the smallest set of most probable tokens whose
// probabilities exceed topP (run.c's sample_topp). Tokens below
// (1−topP)/(n−1) cannot be in that set and are dropped before sorting;
// when that drops every token (topP < 1/n and a flat distribution) the set
// is the most probable token, best.
func (s *Sampler) sampleTopP(p []float32, topP, coin float32, best int) int {
	if len(p) == 1 {
		return 0
	}
	cutoff := (1 - topP) / float32(len(p)-1)
	idx := s.idx[:0]
	for i, v := range p {
		if v >= cutoff {
			idx = append(idx, i)
		}
	}
	s.idx = idx
	if len(idx) == 0 {
		return best
	}
	sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] > p[idx[b]] })
	var cum float32
	last := len(idx) - 1
	for i, id := range idx {
		cum += p[id]
		if cum > topP {
			last = i
			break
		}
	}
	r := coin * cum
	var cdf float32
	for _, id := range idx[:last+1] {
		cdf += p[id]
		if r < cdf {
			return id
		}
	}
	// Rounding again: the last token of the set that can be drawn.
	for last > 0 && p[idx[last]] == 0 {
		last--
	}
	return idx[last]
}
