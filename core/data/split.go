package data

import (
	"math"
	"math/rand/v2"
)

// streamDocs is the PCG stream (the second seed word) for document splits;
// fixed so a split depends on the recipe's seed alone.
const streamDocs = 0x77686974746c6531 // "whittle1"

// streamFewShot is the PCG stream for choosing few-shot examples.
const streamFewShot = 0x77686974746c6532 // "whittle2"

// permutation returns a seeded uniform permutation of [0, n). It uses only
// PCG's output (whose algorithm math/rand/v2 fixes) and its own
// Fisher–Yates and bounded draw, not rand.Shuffle, whose algorithm Go does
// not promise to keep: splits must stay byte-identical across Go versions
// and machines.
func permutation(n int, r *rand.PCG) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := int(below(r, uint64(i+1)))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// below draws uniformly from [0, n), n > 0, by rejection: values below
// 2⁶⁴ mod n would bias the remainder.
func below(r *rand.PCG, n uint64) uint64 {
	threshold := -n % n
	for {
		if v := r.Uint64(); v >= threshold {
			return v % n
		}
	}
}

// validationCount is ⌈fraction·n⌉, never all n (training needs at least one
// item). The small tolerance keeps 0.1·30 (3.0000000000000004 in floating
// point) at 3.
func validationCount(n int, fraction float64) int {
	if n <= 0 || fraction <= 0 {
		return 0
	}
	k := int(math.Ceil(fraction*float64(n) - 1e-9))
	return min(max(k, 0), n-1)
}

// splitValidation marks which of n items are validation: the first
// ⌈fraction·n⌉ of a permutation seeded by seed.
func splitValidation(n int, fraction float64, seed int64) []bool {
	val := make([]bool, n)
	k := validationCount(n, fraction)
	if k == 0 {
		return val
	}
	p := permutation(n, rand.NewPCG(uint64(seed), streamDocs))
	for _, i := range p[:k] {
		val[i] = true
	}
	return val
}
