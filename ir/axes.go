package ir

import (
	"fmt"
	"iter"
	"maps"
	"slices"
	"sort"

	"github.com/whittle-ml/whittle/ir/graph"
)

// AxisKind names a prunable axis of the architecture.
type AxisKind string

const (
	// AxisHidden is the embedding (residual stream) width, shared by all layers.
	AxisHidden AxisKind = "hidden"
	// AxisHeads is the query heads of one layer.
	AxisHeads AxisKind = "heads"
	// AxisKVHeads is the key/value heads (query-head groups) of one layer.
	AxisKVHeads AxisKind = "kv_heads"
	// AxisMLP is the intermediate width of one layer's MLP.
	AxisMLP AxisKind = "mlp"
	// AxisExperts is the routed experts of one mixture-of-experts layer.
	AxisExperts AxisKind = "experts"
	// AxisExpertMLP is each routed expert's width in one layer; every
	// expert keeps its own neurons, the same number in all.
	AxisExpertMLP AxisKind = "expert_mlp"
	// AxisSharedMLP is the shared expert's width in one layer.
	AxisSharedMLP AxisKind = "shared_mlp"
)

// Coupling says that one unit of an axis owns Block consecutive entries of
// dimension Dim of tensor Tensor.
type Coupling struct {
	Tensor string
	Dim    int
	Block  int
}

// Couplings lists every tensor dimension that an axis runs through; layer
// is ignored for AxisHidden. Keeping a set of units along an axis must cut
// all of them together or the model no longer type-checks. They are
// derived from the model's graph (Config.Graph) by propagating dimension
// identities, in the graph's parameter order.
//
// Couplings builds the whole graph on every call; code that asks about
// many axes or layers should build it once with Config.Axes.
func (c *Config) Couplings(axis AxisKind, layer int) ([]Coupling, error) {
	if err := checkAxis(axis, layer, len(c.Layers)); err != nil {
		return nil, err
	}
	a, err := c.Axes()
	if err != nil {
		return nil, err
	}
	return a.Couplings(axis, layer)
}

// Axes answers Couplings for every axis and layer of one config from one
// built graph.
type Axes struct {
	g      *graph.Graph
	layers int
}

// Axes builds the config's graph once, for many Couplings questions.
func (c *Config) Axes() (*Axes, error) {
	g, err := c.Graph()
	if err != nil {
		return nil, err
	}
	return &Axes{g: g, layers: len(c.Layers)}, nil
}

// Couplings is Config.Couplings from the built graph.
func (a *Axes) Couplings(axis AxisKind, layer int) ([]Coupling, error) {
	if err := checkAxis(axis, layer, a.layers); err != nil {
		return nil, err
	}
	if axis == AxisHidden {
		layer = -1 // the graph's hidden axis runs through every layer
	}
	ga, err := a.g.Axis(string(axis), layer)
	if err != nil {
		return nil, err
	}
	cs := make([]Coupling, len(ga.Cuts))
	for i, cut := range ga.Cuts {
		cs[i] = Coupling{Tensor: cut.Tensor, Dim: cut.Dim, Block: cut.Block}
	}
	return cs, nil
}

// checkAxis rejects an unknown axis or a layer out of range (the hidden
// axis ignores its layer).
func checkAxis(axis AxisKind, layer, layers int) error {
	if axis != AxisHidden && (layer < 0 || layer >= layers) {
		return fmt.Errorf("layer %d out of range [0,%d)", layer, layers)
	}
	switch axis {
	case AxisHidden, AxisHeads, AxisKVHeads, AxisMLP, AxisExperts, AxisExpertMLP, AxisSharedMLP:
		return nil
	}
	return fmt.Errorf("unknown axis %q", axis)
}

// keepAlong slices every coupled tensor, as it stands in into, to the kept
// units, so that a tensor two axes run through is cut along both.
func (m *Model) keepAlong(couplings []Coupling, units []int, into map[string]*Tensor) error {
	for _, c := range couplings {
		t, ok := into[c.Tensor]
		if !ok {
			_, err := m.Tensor(c.Tensor)
			return err
		}
		idx := make([]int, 0, len(units)*c.Block)
		for _, u := range units {
			for j := 0; j < c.Block; j++ {
				idx = append(idx, u*c.Block+j)
			}
		}
		nt, err := t.KeepIndices(c.Dim, idx)
		if err != nil {
			return fmt.Errorf("slicing %s: %w", c.Tensor, err)
		}
		into[c.Tensor] = nt
	}
	return nil
}

// keepWithin slices every coupled tensor, stacked along dimension 0, to
// per[g]'s units within slice g.
func (m *Model) keepWithin(couplings []Coupling, per [][]int, into map[string]*Tensor) error {
	for _, c := range couplings {
		t, ok := into[c.Tensor]
		if !ok {
			_, err := m.Tensor(c.Tensor)
			return err
		}
		nt, err := t.KeepIndicesWithin(c.Dim, per)
		if err != nil {
			return fmt.Errorf("slicing %s: %w", c.Tensor, err)
		}
		into[c.Tensor] = nt
	}
	return nil
}

// expertNeurons sorts and checks one layer's per-expert neuron lists,
// filling the nil lists of dropped experts with the first neurons.
func expertNeurons(layer int, l LayerConfig, lists [][]int) ([][]int, error) {
	if len(lists) != l.Experts {
		return nil, fmt.Errorf("layer %d expert_mlp: %d neuron lists for %d experts", layer, len(lists), l.Experts)
	}
	k := -1
	for _, n := range lists {
		if n != nil {
			k = len(n)
			break
		}
	}
	if k < 0 {
		return nil, fmt.Errorf("layer %d expert_mlp: no expert keeps any neurons", layer)
	}
	per := make([][]int, len(lists))
	for e, n := range lists {
		if n == nil {
			n = make([]int, k)
			for i := range n {
				n[i] = i
			}
		}
		per[e] = sortedCopy(n)
		if len(per[e]) != k {
			return nil, fmt.Errorf("layer %d expert_mlp: expert %d keeps %d neurons, others %d; every expert keeps the same number", layer, e, len(per[e]), k)
		}
		if err := checkUnits(fmt.Sprintf("layer %d expert %d", layer, e), per[e], l.ExpertMLP); err != nil {
			return nil, err
		}
	}
	return per, nil
}

func (m *Model) copyTensors() map[string]*Tensor {
	out := make(map[string]*Tensor, len(m.Tensors))
	for k, v := range m.Tensors {
		out[k] = v
	}
	return out
}

// checkUnits requires strictly increasing, in-range, non-empty indices:
// kept units stay in their original order so the result is deterministic.
func checkUnits(what string, units []int, n int) error {
	if len(units) == 0 {
		return fmt.Errorf("%s: keeping no units would leave an empty axis", what)
	}
	for i, u := range units {
		if u < 0 || u >= n {
			return fmt.Errorf("%s: index %d out of range [0,%d)", what, u, n)
		}
		if i > 0 && u <= units[i-1] {
			return fmt.Errorf("%s: indices must be strictly increasing (%d after %d)", what, u, units[i-1])
		}
	}
	return nil
}

// Selection names the units to keep along several axes at once. Indices
// are sorted into increasing order; an axis not given is kept whole.
type Selection struct {
	// Hidden is the embedding channels to keep in every tensor the hidden
	// axis runs through; nil keeps them all.
	Hidden []int
	// MLP maps a layer to the intermediate neurons it keeps.
	MLP map[int][]int
	// Heads maps a layer to the query heads it keeps. The KV groups that
	// own a kept head are kept with their K and V heads; every kept group
	// must keep the same number of query heads, because grouped-query
	// attention assigns heads to groups by position.
	Heads map[int][]int
	// Experts maps a mixture-of-experts layer to the routed experts it
	// keeps; their router rows are kept with them.
	Experts map[int][]int
	// ExpertMLP maps a mixture-of-experts layer to each expert's kept
	// neurons, one list per expert of the layer as it stands (before
	// Experts drops any), all of one length; a nil list (an expert that
	// Experts drops) keeps the first neurons.
	ExpertMLP map[int][][]int
	// SharedMLP maps a layer to its shared expert's kept neurons.
	SharedMLP map[int][]int
}

// Keep applies a whole selection with one graph and one validation, which
// is what a pass pruning every layer wants: the single-axis Keep methods
// would rebuild and revalidate the model once per layer.
func (m *Model) Keep(s Selection) (*Model, error) {
	c := &m.Config
	for _, l := range slices.Sorted(maps.Keys(s.MLP)) {
		if l < 0 || l >= len(c.Layers) {
			return nil, fmt.Errorf("layer %d out of range [0,%d)", l, len(c.Layers))
		}
	}
	for _, layers := range []iter.Seq[int]{maps.Keys(s.Heads), maps.Keys(s.Experts), maps.Keys(s.ExpertMLP), maps.Keys(s.SharedMLP)} {
		for _, l := range slices.Sorted(layers) {
			if l < 0 || l >= len(c.Layers) {
				return nil, fmt.Errorf("layer %d out of range [0,%d)", l, len(c.Layers))
			}
		}
	}
	// Heads map to groups by division, so the sizes must be sane first.
	if err := c.Check(); err != nil {
		return nil, err
	}
	cfg := c.Clone()
	type cut struct {
		axis  AxisKind
		layer int
		units []int
		// within, when set, holds one unit list per slice of dimension 0
		// (each expert's own neurons) instead of units.
		within [][]int
	}
	var cuts []cut
	if s.Hidden != nil {
		ch := sortedCopy(s.Hidden)
		if err := checkUnits("hidden", ch, c.Hidden); err != nil {
			return nil, err
		}
		cuts = append(cuts, cut{axis: AxisHidden, layer: -1, units: ch})
		cfg.Hidden = len(ch)
	}
	for _, l := range slices.Sorted(maps.Keys(s.MLP)) {
		neurons := sortedCopy(s.MLP[l])
		if err := checkUnits(fmt.Sprintf("layer %d mlp", l), neurons, c.Layers[l].MLP); err != nil {
			return nil, err
		}
		cuts = append(cuts, cut{axis: AxisMLP, layer: l, units: neurons})
		cfg.Layers[l].MLP = len(neurons)
	}
	for _, l := range slices.Sorted(maps.Keys(s.Heads)) {
		heads, groups, err := headGroups(l, c.Layers[l], s.Heads[l])
		if err != nil {
			return nil, err
		}
		cuts = append(cuts, cut{axis: AxisHeads, layer: l, units: heads}, cut{axis: AxisKVHeads, layer: l, units: groups})
		cfg.Layers[l].Heads = len(heads)
		cfg.Layers[l].KVHeads = len(groups)
	}
	// Each expert's neurons are cut while the experts still have their
	// original numbering; then the experts.
	for _, l := range slices.Sorted(maps.Keys(s.ExpertMLP)) {
		lc := c.Layers[l]
		per, err := expertNeurons(l, lc, s.ExpertMLP[l])
		if err != nil {
			return nil, err
		}
		cuts = append(cuts, cut{axis: AxisExpertMLP, layer: l, within: per})
		cfg.Layers[l].ExpertMLP = len(per[0])
	}
	for _, l := range slices.Sorted(maps.Keys(s.Experts)) {
		experts := sortedCopy(s.Experts[l])
		if err := checkUnits(fmt.Sprintf("layer %d experts", l), experts, c.Layers[l].Experts); err != nil {
			return nil, err
		}
		if len(experts) < c.ExpertsPerToken {
			return nil, fmt.Errorf("layer %d experts: keeping %d experts leaves fewer than num_experts_per_tok = %d; lower it first", l, len(experts), c.ExpertsPerToken)
		}
		cuts = append(cuts, cut{axis: AxisExperts, layer: l, units: experts})
		cfg.Layers[l].Experts = len(experts)
	}
	for _, l := range slices.Sorted(maps.Keys(s.SharedMLP)) {
		neurons := sortedCopy(s.SharedMLP[l])
		if err := checkUnits(fmt.Sprintf("layer %d shared_mlp", l), neurons, c.Layers[l].SharedMLP); err != nil {
			return nil, err
		}
		cuts = append(cuts, cut{axis: AxisSharedMLP, layer: l, units: neurons})
		cfg.Layers[l].SharedMLP = len(neurons)
	}
	axes, err := c.Axes()
	if err != nil {
		return nil, err
	}
	ts := m.copyTensors()
	for _, k := range cuts {
		cs, err := axes.Couplings(k.axis, k.layer)
		if err != nil {
			return nil, err
		}
		if k.within != nil {
			err = m.keepWithin(cs, k.within, ts)
		} else {
			err = m.keepAlong(cs, k.units, ts)
		}
		if err != nil {
			return nil, err
		}
	}
	return m.validated(cfg, ts)
}

// headGroups sorts and checks one layer's kept query heads and returns
// them with the KV groups that own them.
func headGroups(layer int, l LayerConfig, heads []int) (sorted, groups []int, err error) {
	heads = sortedCopy(heads)
	what := fmt.Sprintf("layer %d heads", layer)
	if err := checkUnits(what, heads, l.Heads); err != nil {
		return nil, nil, err
	}
	perGroup := map[int]int{}
	for _, h := range heads {
		g := h / l.GroupSize()
		if perGroup[g] == 0 {
			groups = append(groups, g)
		}
		perGroup[g]++
	}
	for _, g := range groups {
		if perGroup[g] != perGroup[groups[0]] {
			return nil, nil, fmt.Errorf("%s: KV group %d keeps %d query heads but group %d keeps %d; every kept group must keep the same number", what, g, perGroup[g], groups[0], perGroup[groups[0]])
		}
	}
	return heads, groups, nil
}

// KeepHidden keeps the given embedding channels in every tensor that the
// hidden axis runs through. Indices are sorted into increasing order.
func (m *Model) KeepHidden(channels []int) (*Model, error) {
	if channels == nil {
		channels = []int{} // nil would mean "keep all" to Keep
	}
	return m.Keep(Selection{Hidden: channels})
}

// KeepMLP keeps the given intermediate neurons of one layer.
func (m *Model) KeepMLP(layer int, neurons []int) (*Model, error) {
	return m.Keep(Selection{MLP: map[int][]int{layer: neurons}})
}

// KeepHeads keeps the given query heads of one layer (see Selection.Heads).
func (m *Model) KeepHeads(layer int, heads []int) (*Model, error) {
	return m.Keep(Selection{Heads: map[int][]int{layer: heads}})
}

// DropLayers removes whole decoder layers; the rest are renumbered in order.
func (m *Model) DropLayers(layers []int) (*Model, error) {
	drop := map[int]bool{}
	for _, l := range layers {
		if l < 0 || l >= len(m.Config.Layers) {
			return nil, fmt.Errorf("drop layers: layer %d out of range [0,%d)", l, len(m.Config.Layers))
		}
		if drop[l] {
			return nil, fmt.Errorf("drop layers: layer %d listed twice", l)
		}
		drop[l] = true
	}
	if len(drop) == len(m.Config.Layers) {
		return nil, fmt.Errorf("drop layers: dropping all %d layers leaves no model", len(drop))
	}
	cfg := m.Config.Clone()
	cfg.Layers = cfg.Layers[:0]
	ts := map[string]*Tensor{}
	for _, n := range []string{NameEmbed, NameFinalNorm, NameClassifier} {
		if t, ok := m.Tensors[n]; ok {
			ts[n] = t
		}
	}
	for i, l := range m.Config.Layers {
		if drop[i] {
			continue
		}
		ni := len(cfg.Layers)
		cfg.Layers = append(cfg.Layers, l)
		from, to := m.Config.LayerTensors(i).All(), cfg.LayerTensors(ni).All()
		for k, name := range from {
			t, err := m.Tensor(name)
			if err != nil {
				return nil, err
			}
			ts[to[k]] = t
		}
	}
	return m.validated(cfg, ts)
}

func (m *Model) validated(cfg Config, ts map[string]*Tensor) (*Model, error) {
	out := m.derive(cfg, ts)
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("transformation produced an invalid model: %w", err)
	}
	return out, nil
}

func sortedCopy(v []int) []int {
	out := append([]int(nil), v...)
	sort.Ints(out)
	return out
}
