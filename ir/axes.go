package ir

import (
	"fmt"
	"sort"
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
func (c *Config) Couplings(axis AxisKind, layer int) ([]Coupling, error) {
	if axis != AxisHidden && (layer < 0 || layer >= len(c.Layers)) {
		return nil, fmt.Errorf("layer %d out of range [0,%d)", layer, len(c.Layers))
	}
	switch axis {
	case AxisHidden:
		layer = -1 // the graph's hidden axis runs through every layer
	case AxisHeads, AxisKVHeads, AxisMLP:
	default:
		return nil, fmt.Errorf("unknown axis %q", axis)
	}
	g, err := c.Graph()
	if err != nil {
		return nil, err
	}
	a, err := g.Axis(string(axis), layer)
	if err != nil {
		return nil, err
	}
	cs := make([]Coupling, len(a.Cuts))
	for i, cut := range a.Cuts {
		cs[i] = Coupling{Tensor: cut.Tensor, Dim: cut.Dim, Block: cut.Block}
	}
	return cs, nil
}

// keepAlong slices every coupled tensor to the kept units.
func (m *Model) keepAlong(couplings []Coupling, units []int, into map[string]*Tensor) error {
	for _, c := range couplings {
		t, err := m.Tensor(c.Tensor)
		if err != nil {
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

// KeepHidden keeps the given embedding channels in every tensor that the
// hidden axis runs through. Indices are sorted into increasing order.
func (m *Model) KeepHidden(channels []int) (*Model, error) {
	channels = sortedCopy(channels)
	if err := checkUnits("hidden", channels, m.Config.Hidden); err != nil {
		return nil, err
	}
	cs, _ := m.Config.Couplings(AxisHidden, 0)
	ts := m.copyTensors()
	if err := m.keepAlong(cs, channels, ts); err != nil {
		return nil, err
	}
	cfg := m.Config.Clone()
	cfg.Hidden = len(channels)
	return m.validated(cfg, ts)
}

// KeepMLP keeps the given intermediate neurons of one layer.
func (m *Model) KeepMLP(layer int, neurons []int) (*Model, error) {
	cs, err := m.Config.Couplings(AxisMLP, layer)
	if err != nil {
		return nil, err
	}
	neurons = sortedCopy(neurons)
	if err := checkUnits(fmt.Sprintf("layer %d mlp", layer), neurons, m.Config.Layers[layer].MLP); err != nil {
		return nil, err
	}
	ts := m.copyTensors()
	if err := m.keepAlong(cs, neurons, ts); err != nil {
		return nil, err
	}
	cfg := m.Config.Clone()
	cfg.Layers[layer].MLP = len(neurons)
	return m.validated(cfg, ts)
}

// KeepHeads keeps the given query heads of one layer. The KV groups that
// own a kept head are kept with their K and V heads; every kept group must
// keep the same number of query heads, because grouped-query attention
// assigns heads to groups by position.
func (m *Model) KeepHeads(layer int, heads []int) (*Model, error) {
	if layer < 0 || layer >= len(m.Config.Layers) {
		return nil, fmt.Errorf("layer %d out of range [0,%d)", layer, len(m.Config.Layers))
	}
	// Heads map to groups by division, so the sizes must be sane first.
	if err := m.Config.Check(); err != nil {
		return nil, err
	}
	l := m.Config.Layers[layer]
	heads = sortedCopy(heads)
	what := fmt.Sprintf("layer %d heads", layer)
	if err := checkUnits(what, heads, l.Heads); err != nil {
		return nil, err
	}
	perGroup := map[int]int{}
	var groups []int
	for _, h := range heads {
		g := h / l.GroupSize()
		if perGroup[g] == 0 {
			groups = append(groups, g)
		}
		perGroup[g]++
	}
	for _, g := range groups {
		if perGroup[g] != perGroup[groups[0]] {
			return nil, fmt.Errorf("%s: KV group %d keeps %d query heads but group %d keeps %d; every kept group must keep the same number", what, g, perGroup[g], groups[0], perGroup[groups[0]])
		}
	}
	ts := m.copyTensors()
	qcs, _ := m.Config.Couplings(AxisHeads, layer)
	kvcs, _ := m.Config.Couplings(AxisKVHeads, layer)
	if err := m.keepAlong(qcs, heads, ts); err != nil {
		return nil, err
	}
	if err := m.keepAlong(kvcs, groups, ts); err != nil {
		return nil, err
	}
	cfg := m.Config.Clone()
	cfg.Layers[layer].Heads = len(heads)
	cfg.Layers[layer].KVHeads = len(groups)
	return m.validated(cfg, ts)
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
		for _, r := range LayerRoles {
			t, err := m.Tensor(LayerName(i, r))
			if err != nil {
				return nil, err
			}
			ts[LayerName(ni, r)] = t
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
