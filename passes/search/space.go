package search

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/whittle-ml/whittle/ir"
)

// Axis names, in the order candidates list their sizes.
const (
	AxisHidden  = "hidden"
	AxisMLP     = "mlp"
	AxisHeads   = "heads"
	AxisKVHeads = "kv_heads"
	AxisLayers  = "layers"
)

var axisNames = []string{AxisHidden, AxisMLP, AxisHeads, AxisKVHeads, AxisLayers}

// DefaultRatios is the grid of an axis block that gives neither ratios
// nor sizes.
var DefaultRatios = []float64{1, 0.875, 0.75, 0.625, 0.5}

// DefaultTolerance is how far below a budget a candidate may stay.
const DefaultTolerance = 0.03

// DefaultTopK is how many candidates are scored.
const DefaultTopK = 10

// MemoryBytes is what a memory budget bounds: bf16 weights and a bf16 KV
// cache at seqLen tokens for batch sequences,
//
//	2·params + Σ_layers 2·2·kv_heads·head_dim·seq_len·batch
//
// (2 bytes per value; K and V per layer, i.e. 2·params +
// 2·layers·2·kv_heads·head_dim·seq_len·batch for uniform layers).
// Activations and sliding windows (which could shrink the cache) are not
// counted.
func MemoryBytes(c *ir.Config, seqLen, batch int) int64 {
	return memoryBytes(c, c.Params().Total, seqLen, batch)
}

// memoryBytes is MemoryBytes with the parameter count already known (each
// count builds the model's graph; a search measures many candidates).
func memoryBytes(c *ir.Config, params int64, seqLen, batch int) int64 {
	m := 2 * params
	for _, l := range c.Layers {
		m += 2 * 2 * int64(l.KVHeads) * int64(l.HeadDim) * int64(seqLen) * int64(batch)
	}
	return m
}

// ParseBytes reads a memory size: a plain number of bytes ("12e9") or a
// number with a unit, decimal (KB, MB, GB, TB) or binary (KiB, MiB, GiB,
// TiB); "B" and spaces are allowed ("12 GB", "512MiB").
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return unicode.IsLetter(r) && r != 'e' && r != 'E' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = strings.TrimSpace(t[:i]), t[i:]
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("memory %q is not a positive size (write bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s)
	}
	mult := map[string]float64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
	f, ok := mult[strings.ToUpper(unit)]
	if !ok {
		return 0, fmt.Errorf("memory %q: unknown unit %q (want KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, unit)
	}
	return int64(math.Round(v * f)), nil
}

// Sizes are one candidate's architecture: every layer alike.
type Sizes struct {
	Hidden  int `json:"hidden"`
	MLP     int `json:"mlp"`
	Heads   int `json:"heads"`
	KVHeads int `json:"kv_heads"`
	Layers  int `json:"layers"`
}

func (s Sizes) String() string {
	return fmt.Sprintf("hidden=%d mlp=%d heads=%d/%d layers=%d", s.Hidden, s.MLP, s.Heads, s.KVHeads, s.Layers)
}

// Config is the architecture of the candidate: the model's with these
// sizes in every kept layer (which layers are kept is decided from the
// scores at run time; the counts do not depend on it).
func (s Sizes) Config(base ir.Config) ir.Config {
	c := base.Clone()
	c.Hidden = s.Hidden
	c.Layers = c.Layers[:s.Layers]
	for i := range c.Layers {
		c.Layers[i].MLP = s.MLP
		c.Layers[i].Heads = s.Heads
		c.Layers[i].KVHeads = s.KVHeads
	}
	return c
}

// Budget is a resolved constraints block.
type Budget struct {
	Params, ActiveParams, Memory, FLOPs int64 // 0 = unbounded
	SeqLen, Batch                       int
	Tolerance                           float64
}

// Measures are a candidate's sizes as the constraints see them.
type Measures struct {
	Params       int64 `json:"params"`
	ActiveParams int64 `json:"active_params"`
	Memory       int64 `json:"memory_bytes"`
	FLOPs        int64 `json:"flops_per_token"`
}

// Measure computes a candidate's measures at the budget's seq_len and batch.
func (b Budget) Measure(c *ir.Config) Measures {
	// Active parameters are those one token runs through (ir's count:
	// the total less the routed experts a token is not sent to).
	p := c.Params()
	m := Measures{Params: p.Total, ActiveParams: p.Active, FLOPs: c.FLOPsPerToken(b.SeqLen)}
	m.Memory = memoryBytes(c, m.Params, b.SeqLen, b.Batch)
	return m
}

type bound struct {
	name          string
	value, budget int64
}

func (b Budget) bounds(m Measures) []bound {
	var out []bound
	for _, x := range []bound{{"params", m.Params, b.Params}, {"active_params", m.ActiveParams, b.ActiveParams},
		{"memory", m.Memory, b.Memory}, {"flops_per_token", m.FLOPs, b.FLOPs}} {
		if x.budget > 0 {
			out = append(out, x)
		}
	}
	return out
}

// Usage is the largest fraction of a budget the candidate uses; it fits
// when no budget is exceeded (usage ≤ 1) and it uses one of them to within
// the tolerance (usage ≥ 1 − tolerance).
func (b Budget) Usage(m Measures) float64 {
	u := 0.0
	for _, x := range b.bounds(m) {
		u = max(u, float64(x.value)/float64(x.budget))
	}
	return u
}

// Fits reports whether a candidate meets the constraints.
func (b Budget) Fits(m Measures) bool {
	u := b.Usage(m)
	return u <= 1 && u >= 1-b.Tolerance
}

// AxisSpec is one resolved search axis.
type AxisSpec struct {
	Name   string
	Values []int // descending, distinct
}

// axisValues resolves an axis's sizes from ratios or explicit sizes of
// the current size cur: ratio-derived sizes are rounded down to a
// multiple of roundTo (cur itself stays), and sizes pruning more than
// maxPrune of cur are dropped. A nil result with a nil error cannot
// happen: an axis left without sizes is an error.
func axisValues(name string, cur int, ratios []float64, sizes []int, roundTo int, maxPrune float64) ([]int, error) {
	if ratios != nil && sizes != nil {
		return nil, fmt.Errorf("space %q: give ratios or sizes, not both", name)
	}
	if ratios == nil && sizes == nil {
		ratios = DefaultRatios
	}
	if roundTo < 1 {
		return nil, fmt.Errorf("space %q: round_to = %d must be at least 1", name, roundTo)
	}
	if !(maxPrune >= 0 && maxPrune <= 1) {
		return nil, fmt.Errorf("space %q: max_prune = %g must be in [0, 1]", name, maxPrune)
	}
	var vals []int
	for _, r := range ratios {
		if !(r > 0 && r <= 1) {
			return nil, fmt.Errorf("space %q: ratio %g must be in (0, 1]", name, r)
		}
		n := int(math.Round(r * float64(cur)))
		if n < cur && roundTo > 1 {
			n = max(n/roundTo*roundTo, roundTo)
		}
		vals = append(vals, min(max(n, 1), cur))
	}
	for _, n := range sizes {
		if n < 1 || n > cur {
			return nil, fmt.Errorf("space %q: size %d must be between 1 and the current %d", name, n, cur)
		}
		vals = append(vals, n)
	}
	if len(vals) == 0 {
		return nil, fmt.Errorf("space %q is empty: give at least one ratio or size", name)
	}
	// Model Optimizer's max width/depth pruning ratio: keep at least
	// (1 − max_prune)·cur (with a float margin so 0.5·32 keeps 16).
	floor := (1-maxPrune)*float64(cur) - 1e-9
	kept := vals[:0]
	for _, v := range vals {
		if float64(v) >= floor {
			kept = append(kept, v)
		}
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("space %q is empty: max_prune = %g keeps at least %d of %d, and every size (%v) is smaller", name, maxPrune, int(math.Ceil(floor)), cur, vals)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(kept)))
	return slices.Compact(kept), nil
}

// Candidate is one architecture in the space.
type Candidate struct {
	Sizes
	Measures
	// Usage is Budget.Usage: the largest fraction of a budget used.
	Usage float64 `json:"usage"`
}

// Enumerate lists every candidate of the space (the product of the axes,
// minus head/KV-head combinations that cannot be split evenly) with its
// measures. Axes missing from axes keep the model's size; without a heads
// axis each candidate keeps the model's query heads per KV head.
func Enumerate(base ir.Config, axes map[string][]int, b Budget) ([]Candidate, error) {
	if !base.Uniform() {
		return nil, fmt.Errorf("search needs every layer the same width (homogeneous pruning); this model's layers differ")
	}
	l := base.Layers[0]
	get := func(name string, cur int) []int {
		if v, ok := axes[name]; ok {
			return v
		}
		return []int{cur}
	}
	heads, searchHeads := axes[AxisHeads]
	var out []Candidate
	for _, h := range get(AxisHidden, base.Hidden) {
		for _, mlp := range get(AxisMLP, l.MLP) {
			for _, kv := range get(AxisKVHeads, l.KVHeads) {
				hs := heads
				if !searchHeads {
					hs = []int{kv * l.GroupSize()}
				}
				for _, nh := range hs {
					if nh%kv != 0 || nh/kv > l.GroupSize() {
						continue
					}
					width := Sizes{Hidden: h, MLP: mlp, Heads: nh, KVHeads: kv}
					measure := b.layerMeasure(base, width)
					for _, nl := range get(AxisLayers, len(base.Layers)) {
						s := width
						s.Layers = nl
						m := measure(nl)
						out = append(out, Candidate{Sizes: s, Measures: m, Usage: b.Usage(m)})
					}
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the space has no candidate whose heads split evenly over its KV heads (at most %d query heads per KV head)", l.GroupSize())
	}
	return out, nil
}

// layerMeasure returns the measures of the width sizes at any layer
// count. Every layer being alike, each measure is affine in the count, so
// two small graphs (one and two layers) give all of them: measuring every
// candidate's full graph costs milliseconds each at 32 layers.
func (b Budget) layerMeasure(base ir.Config, width Sizes) func(layers int) Measures {
	at := func(n int) Measures {
		s := width
		s.Layers = n
		c := s.Config(base)
		return b.Measure(&c)
	}
	if len(base.Layers) < 2 {
		return at
	}
	m1, m2 := at(1), at(2)
	return func(n int) Measures {
		k := int64(n - 1)
		return Measures{Params: m1.Params + k*(m2.Params-m1.Params), ActiveParams: m1.ActiveParams + k*(m2.ActiveParams-m1.ActiveParams),
			Memory: m1.Memory + k*(m2.Memory-m1.Memory), FLOPs: m1.FLOPs + k*(m2.FLOPs-m1.FLOPs)}
	}
}

// Select keeps the candidates that meet the budget, closest to it first
// (ties: more parameters, then larger sizes in axis order, so the order
// is total). When none fits, the error names the closest candidates
// under and over the budget.
func Select(all []Candidate, b Budget, base Sizes) ([]Candidate, error) {
	var fit []Candidate
	for _, c := range all {
		if c.Sizes != base && b.Fits(c.Measures) {
			fit = append(fit, c)
		}
	}
	sort.SliceStable(fit, func(i, j int) bool { return less(fit[i], fit[j]) })
	if len(fit) > 0 {
		return fit, nil
	}
	var under, over *Candidate
	for i := range all {
		c := &all[i]
		if c.Usage <= 1 && (under == nil || less(*c, *under)) {
			under = c
		}
		if c.Usage > 1 && (over == nil || c.Usage < over.Usage) {
			over = c
		}
	}
	msg := fmt.Sprintf("no candidate of %d meets the budget within the tolerance of %g%% below it", len(all), 100*b.Tolerance)
	if under != nil {
		msg += fmt.Sprintf("; the closest under it is %s (%s)", under.Sizes, b.describe(*under))
	}
	if over != nil {
		msg += fmt.Sprintf("; the closest over it is %s (%s)", over.Sizes, b.describe(*over))
	}
	return nil, fmt.Errorf("%s: widen the space, raise the tolerance or change the budget", msg)
}

func (b Budget) describe(c Candidate) string {
	var parts []string
	for _, x := range b.bounds(c.Measures) {
		parts = append(parts, fmt.Sprintf("%s %d = %.1f%% of %d", x.name, x.value, 100*float64(x.value)/float64(x.budget), x.budget))
	}
	return strings.Join(parts, ", ")
}

func less(a, b Candidate) bool {
	if a.Usage != b.Usage {
		return a.Usage > b.Usage
	}
	if a.Params != b.Params {
		return a.Params > b.Params
	}
	ka := []int{a.Hidden, a.MLP, a.Heads, a.KVHeads, a.Layers}
	kb := []int{b.Hidden, b.MLP, b.Heads, b.KVHeads, b.Layers}
	return slices.Compare(ka, kb) > 0
}
