package prunewidth

import (
	"fmt"
	"math"
	"sort"

	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/ir"
)

// Ways of making one layer's scores comparable with another's before the
// global ranking of non-uniform pruning.
const (
	// NormalizeMean divides every layer's unit scores by that layer's mean
	// unit score (the default). Raw activation magnitudes are not
	// comparable across layers: scaling a layer's up projection by c and
	// its down projection by 1/c leaves the model's function unchanged but
	// multiplies that layer's neuron activations (and weight norms) by c.
	// Dividing by the layer's mean undoes such a scale, so the ranking
	// compares how unevenly each layer spreads its importance: a layer
	// whose importance sits in a few units gives up more of the rest.
	NormalizeMean = "mean"
	// NormalizeNone ranks the raw scores, as Minitron's activation
	// magnitudes come out of the score pass.
	NormalizeNone = "none"
)

// NonUniformTargets are the totals of non-uniform width pruning: MLP
// neurons and KV heads summed over all layers, distributed over the
// layers by a global ranking of their units. The hidden size stays one
// global, uniform size. A zero total keeps that axis as it is.
type NonUniformTargets struct {
	// Hidden is the hidden size kept in every layer (0 keeps it).
	Hidden int
	// MLP is the number of MLP neurons kept, summed over layers.
	MLP int
	// KVHeads is the number of KV heads kept, summed over layers. Whole
	// KV groups are kept or dropped with their query heads, so every
	// layer keeps its group size.
	KVHeads int
	// RoundTo makes every layer's MLP width a multiple of it, at least
	// one multiple (a layer narrower than RoundTo is kept whole); 0 or 1
	// is no rounding. DefaultRoundTo gives the usual choice.
	RoundTo int
	// Normalize is NormalizeMean (the default when empty) or
	// NormalizeNone.
	Normalize string
}

// DefaultRoundTo is the MLP rounding for a model whose narrowest layer
// has mlp neurons: 64, which keeps GPU matmuls on fast tile sizes for
// real models (every layer ≥ 1024 neurons), and for smaller ones the
// largest power of two not above mlp/16, so that a tiny model keeps room
// to differ between layers.
func DefaultRoundTo(mlp int) int {
	r := 64
	for r > 1 && r*16 > mlp {
		r /= 2
	}
	return r
}

// PruneNonUniform prunes width under totals rather than per-layer sizes:
// the hidden channels by one global ranking (as Prune), and the MLP
// neurons and KV groups of all layers ranked together (see
// SelectNonUniform), so that layers end with different widths.
func PruneNonUniform(m *ir.Model, s *scores.Table, t NonUniformTargets) (*ir.Model, error) {
	sel, err := SelectNonUniform(&m.Config, s, t)
	if err != nil {
		return nil, err
	}
	return m.Keep(sel)
}

// SelectNonUniform chooses what PruneNonUniform keeps, from the config
// and the scores alone (no weights are read).
//
// MLP: every layer's neurons are sorted by score and cut into chunks of
// RoundTo; a chunk's value is the mean of its neurons' (normalized)
// scores. Every layer keeps its first chunk, then chunks of all layers
// are taken best first while they fit the total. Since a layer's chunks
// come in decreasing value, this keeps the largest total normalized score
// that any widths in multiples of RoundTo can keep. The kept total is
// t.MLP rounded down to what the chunks allow (exactly t.MLP when it and
// every width are multiples of RoundTo; a layer whose width is not keeps
// a shorter last chunk).
//
// KV heads: a KV group's score is the sum of its query heads' scores
// (as in Prune); every layer keeps its best group, then the groups of all
// layers are taken best first up to t.KVHeads. Kept groups keep all their
// query heads.
func SelectNonUniform(c *ir.Config, s *scores.Table, t NonUniformTargets) (ir.Selection, error) {
	var sel ir.Selection
	if err := checkTable(*c, s); err != nil {
		return sel, err
	}
	norm, err := normalizer(t.Normalize)
	if err != nil {
		return sel, err
	}
	axes, err := t.check(c)
	if err != nil {
		return sel, err
	}
	if t.Hidden > 0 && t.Hidden < c.Hidden {
		sel.Hidden = scores.TopK(s.Hidden, t.Hidden)
	}
	if axes.mlp {
		units := make([][]float64, len(c.Layers))
		for li := range c.Layers {
			units[li] = norm(s.MLP[li])
		}
		sel.MLP = map[int][]int{}
		for li, k := range allocate(units, axes.roundTo, t.MLP) {
			if k < c.Layers[li].MLP {
				sel.MLP[li] = scores.TopK(s.MLP[li], k)
			}
		}
	}
	if axes.kv {
		groups := make([][]float64, len(c.Layers))
		for li, l := range c.Layers {
			gs := make([]float64, l.KVHeads)
			for h, v := range s.Heads[li] {
				gs[h/l.GroupSize()] += v
			}
			groups[li] = norm(gs)
		}
		sel.Heads = map[int][]int{}
		for li, k := range allocate(groups, 1, t.KVHeads) {
			if l := c.Layers[li]; k < l.KVHeads {
				sel.Heads[li] = pickHeads(s.Heads[li], l.GroupSize(), k, l.GroupSize())
			}
		}
	}
	return sel, nil
}

// nonUniformAxes says which totals change the model, and the MLP rounding.
type nonUniformAxes struct {
	mlp, kv bool
	roundTo int
}

// check validates t against c: the config itself, and totals between the
// least every layer keeps (one round_to of neurons, one KV group) and the
// current totals.
func (t NonUniformTargets) check(c *ir.Config) (nonUniformAxes, error) {
	var a nonUniformAxes
	if err := c.Check(); err != nil {
		return a, err
	}
	if t.Hidden < 0 || t.Hidden > c.Hidden {
		return a, fmt.Errorf("hidden = %d must be between 1 and the current %d", t.Hidden, c.Hidden)
	}
	if t.RoundTo < 0 {
		return a, fmt.Errorf("round_to = %d must not be negative", t.RoundTo)
	}
	a.roundTo = max(t.RoundTo, 1)
	curMLP, curKV, minMLP := 0, 0, 0
	for i, l := range c.Layers {
		if l.MoE() {
			return a, fmt.Errorf("layer %d is a mixture of experts: non-uniform width pruning ranks dense MLP neurons only", i)
		}
		curMLP += l.MLP
		curKV += l.KVHeads
		minMLP += min(a.roundTo, l.MLP)
	}
	n := len(c.Layers)
	a.mlp = t.MLP != 0 && t.MLP != curMLP
	if a.mlp && (t.MLP < minMLP || t.MLP > curMLP) {
		return a, fmt.Errorf("mlp total = %d must be between %d (every one of %d layers keeps at least round_to %d neurons) and the current %d", t.MLP, minMLP, n, a.roundTo, curMLP)
	}
	a.kv = t.KVHeads != 0 && t.KVHeads != curKV
	if a.kv && (t.KVHeads < n || t.KVHeads > curKV) {
		return a, fmt.Errorf("kv_heads total = %d must be between %d (one KV group per layer) and the current %d", t.KVHeads, n, curKV)
	}
	return a, nil
}

// PlanNonUniform is the architecture PruneNonUniform produces as far as
// it is known before the scores are: the totals spread over the layers as
// evenly as RoundTo allows (the real split follows the scores). When the
// model's layers are alike, every unit costs the same parameters in every
// layer, so the planned parameter count is the pruned model's exactly.
func PlanNonUniform(c ir.Config, t NonUniformTargets) (ir.Config, error) {
	out := c.Clone()
	if _, err := normalizer(t.Normalize); err != nil {
		return out, err
	}
	axes, err := t.check(&c)
	if err != nil {
		return out, err
	}
	if t.Hidden > 0 {
		out.Hidden = t.Hidden
	}
	// Equal scores in every unit make allocate spread the totals evenly,
	// under the same chunk rules as the real selection.
	if axes.mlp {
		units := make([][]float64, len(c.Layers))
		for li, l := range c.Layers {
			units[li] = flat(l.MLP)
		}
		for li, k := range allocate(units, axes.roundTo, t.MLP) {
			out.Layers[li].MLP = k
		}
	}
	if axes.kv {
		groups := make([][]float64, len(c.Layers))
		for li, l := range c.Layers {
			groups[li] = flat(l.KVHeads)
		}
		for li, k := range allocate(groups, 1, t.KVHeads) {
			g := c.Layers[li].GroupSize()
			out.Layers[li].KVHeads, out.Layers[li].Heads = k, k*g
		}
	}
	return out, nil
}

func flat(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

// normalizer returns the per-layer score transform named by mode.
func normalizer(mode string) (func([]float64) []float64, error) {
	switch mode {
	case "", NormalizeMean:
		return func(v []float64) []float64 {
			sum := 0.0
			for _, x := range v {
				sum += x
			}
			mean := sum / float64(len(v))
			out := append([]float64(nil), v...)
			// A layer whose scores are all zero (or not finite) has no
			// scale to remove; it ranks by its raw scores.
			if !(mean > 0) || math.IsInf(mean, 0) {
				return out
			}
			for i := range out {
				out[i] /= mean
			}
			return out
		}, nil
	case NormalizeNone:
		return func(v []float64) []float64 { return v }, nil
	}
	return nil, fmt.Errorf("unknown normalize %q (want %s or %s)", mode, NormalizeMean, NormalizeNone)
}

// allocate decides how many units each layer keeps: units[l] holds layer
// l's unit scores, kept in chunks of r (the best r, the next r, ...; the
// last may be shorter), at least one chunk per layer, and as many of the
// best remaining chunks of all layers as fit total. A chunk is worth the
// mean of its units' scores, which for whole chunks ranks as their sum
// and never ranks a layer's later chunk above an earlier one. Ties go to
// the earlier chunk, then the lower layer, so that equal scores spread
// the total evenly and the result is deterministic.
func allocate(units [][]float64, r, total int) []int {
	type chunk struct {
		layer, index, size int
		value              float64
	}
	keep := make([]int, len(units))
	var rest []chunk
	for l, u := range units {
		sorted := append([]float64(nil), u...)
		sort.Sort(sort.Reverse(sort.Float64Slice(sorted)))
		for from := 0; from < len(sorted); from += r {
			to := min(from+r, len(sorted))
			c := chunk{layer: l, index: from / r, size: to - from}
			for _, x := range sorted[from:to] {
				c.value += x
			}
			c.value /= float64(c.size)
			if from == 0 {
				keep[l] = c.size
				total -= c.size
				continue
			}
			rest = append(rest, c)
		}
	}
	sort.Slice(rest, func(a, b int) bool {
		x, y := rest[a], rest[b]
		if x.value != y.value {
			return x.value > y.value
		}
		if x.index != y.index {
			return x.index < y.index
		}
		return x.layer < y.layer
	})
	closed := make([]bool, len(units))
	for _, c := range rest {
		if closed[c.layer] {
			continue
		}
		if c.size > total {
			// Taking a later chunk of this layer would skip this one.
			closed[c.layer] = true
			continue
		}
		keep[c.layer] += c.size
		total -= c.size
	}
	return keep
}
