// Package prunewidth is the `prune-width` pass: shrink the hidden size,
// the MLP width and the attention heads of every layer to targets, keeping
// the most important units by score (Minitron's homogeneous width
// pruning), or, with uniform = false, to totals over all layers split by
// a global ranking of their units (see PruneNonUniform).
package prunewidth

import (
	"context"
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/ir"
)

// Config is the pass block's schema. Each axis takes an absolute size or a
// ratio of the current size (not both); unset axes are kept.
type Config struct {
	Model recipe.Ref `hcl:"model"`
	// Scores come from a score pass. Without them, Criterion must be
	// "magnitude".
	Scores *recipe.Ref `hcl:"scores,optional"`
	// Criterion is "activation" (use Scores, the default when given) or
	// "magnitude" (L2 norm of every weight slice the unit owns).
	Criterion string `hcl:"criterion,optional"`

	Hidden       *int     `hcl:"hidden,optional"`
	HiddenRatio  *float64 `hcl:"hidden_ratio,optional"`
	MLP          *int     `hcl:"mlp,optional"`
	MLPRatio     *float64 `hcl:"mlp_ratio,optional"`
	Heads        *int     `hcl:"heads,optional"`
	HeadsRatio   *float64 `hcl:"heads_ratio,optional"`
	KVHeads      *int     `hcl:"kv_heads,optional"`
	KVHeadsRatio *float64 `hcl:"kv_heads_ratio,optional"`
	// RoundTo rounds ratio-derived sizes down to a multiple (at least one
	// multiple), e.g. 8 or 64 for fast kernels. Non-uniform pruning makes
	// every layer's MLP width a multiple of it (default DefaultRoundTo).
	RoundTo int `hcl:"round_to,optional"`

	// Uniform, true by default, gives every layer the same sizes. false
	// prunes non-uniformly: mlp and kv_heads are totals over all layers
	// (mlp_ratio and kv_heads_ratio ratios of the current totals), split
	// over the layers by ranking all layers' neurons and KV groups
	// together; heads follow the kept KV groups (heads and heads_ratio
	// are refused) and hidden stays one global size.
	Uniform *bool `hcl:"uniform,optional"`
	// Normalize is how non-uniform pruning makes scores comparable
	// across layers: "mean" (default) or "none" (see NormalizeMean).
	Normalize string `hcl:"normalize,optional"`
}

// uniform reports whether the pass prunes every layer alike.
func (c *Config) uniform() bool { return c.Uniform == nil || *c.Uniform }

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "prune-width",
		Description: "keep the top hidden channels, MLP neurons and attention heads by importance",
		Produces:    recipe.SlotModel,
		NewConfig:   func() any { return &Config{} },
	}
}

// targets are the sizes every layer ends with.
type targets struct {
	hidden, mlp, heads, kvHeads int
}

func resolve(what string, abs *int, ratio *float64, cur, roundTo int) (int, error) {
	switch {
	case abs != nil && ratio != nil:
		return 0, fmt.Errorf("%s and %s_ratio both set; give one", what, what)
	case abs != nil:
		if *abs < 1 || *abs > cur {
			return 0, fmt.Errorf("%s = %d must be between 1 and the current %d", what, *abs, cur)
		}
		return *abs, nil
	case ratio != nil:
		if !(*ratio > 0 && *ratio <= 1) { // also rejects NaN
			return 0, fmt.Errorf("%s_ratio = %g must be in (0, 1]", what, *ratio)
		}
		n := int(math.Round(*ratio * float64(cur)))
		if roundTo > 1 {
			n = max(n/roundTo*roundTo, roundTo)
		}
		return min(max(n, 1), cur), nil
	}
	return cur, nil
}

func (c *Config) targets(cfg ir.Config) (targets, error) {
	if c.Normalize != "" {
		return targets{}, fmt.Errorf("normalize applies to non-uniform pruning only (set uniform = false)")
	}
	if !cfg.Uniform() {
		return targets{}, fmt.Errorf("prune-width needs every layer the same width (homogeneous pruning); this model's layers differ")
	}
	l := cfg.Layers[0]
	var t targets
	var err error
	if t.hidden, err = resolve("hidden", c.Hidden, c.HiddenRatio, cfg.Hidden, c.RoundTo); err != nil {
		return t, err
	}
	if t.mlp, err = resolve("mlp", c.MLP, c.MLPRatio, l.MLP, c.RoundTo); err != nil {
		return t, err
	}
	if t.kvHeads, err = resolve("kv_heads", c.KVHeads, c.KVHeadsRatio, l.KVHeads, 0); err != nil {
		return t, err
	}
	// Heads default to the kept groups at their current group size.
	if c.Heads == nil && c.HeadsRatio == nil {
		t.heads = t.kvHeads * l.GroupSize()
	} else if t.heads, err = resolve("heads", c.Heads, c.HeadsRatio, l.Heads, 0); err != nil {
		return t, err
	}
	if t.heads%t.kvHeads != 0 || t.heads/t.kvHeads > l.GroupSize() {
		return t, fmt.Errorf("heads = %d cannot be split evenly over %d KV groups of at most %d query heads each", t.heads, t.kvHeads, l.GroupSize())
	}
	return t, nil
}

// nonUniformTargets resolves the totals of uniform = false. Ratios are of
// the current totals and keep at least the minimum (one round_to of
// neurons and one KV group per layer); absolute totals below it are
// errors from SelectNonUniform.
func (c *Config) nonUniformTargets(cfg ir.Config) (NonUniformTargets, error) {
	var t NonUniformTargets
	if c.Heads != nil || c.HeadsRatio != nil {
		return t, fmt.Errorf("heads and heads_ratio do not apply with uniform = false: each layer keeps the query heads of its kept KV groups (set kv_heads or kv_heads_ratio)")
	}
	var err error
	if t.Hidden, err = resolve("hidden", c.Hidden, c.HiddenRatio, cfg.Hidden, c.RoundTo); err != nil {
		return t, err
	}
	minWidth, curMLP, curKV := math.MaxInt, 0, 0
	for _, l := range cfg.Layers {
		minWidth = min(minWidth, l.MLP)
		curMLP += l.MLP
		curKV += l.KVHeads
	}
	t.RoundTo = c.RoundTo
	if t.RoundTo == 0 {
		t.RoundTo = DefaultRoundTo(minWidth)
	}
	minMLP := 0
	for _, l := range cfg.Layers {
		minMLP += min(t.RoundTo, l.MLP)
	}
	if t.MLP, err = resolve("mlp", c.MLP, c.MLPRatio, curMLP, 0); err != nil {
		return t, err
	}
	if c.MLPRatio != nil {
		t.MLP = max(t.MLP, minMLP)
	}
	if t.KVHeads, err = resolve("kv_heads", c.KVHeads, c.KVHeadsRatio, curKV, 0); err != nil {
		return t, err
	}
	if c.KVHeadsRatio != nil {
		t.KVHeads = max(t.KVHeads, len(cfg.Layers))
	}
	t.Normalize = c.Normalize
	return t, nil
}

// Plan computes the pruned architecture.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	cfg, err := pc.Model(c.Model)
	if err != nil {
		return nil, err
	}
	if err := c.checkCriterion(); err != nil {
		return nil, err
	}
	if c.Scores != nil && !pc.HasScores(*c.Scores) {
		return nil, fmt.Errorf("scores.%s is not produced by an earlier pass", c.Scores.Name)
	}
	if !c.uniform() {
		t, err := c.nonUniformTargets(cfg)
		if err != nil {
			return nil, err
		}
		out, err := PlanNonUniform(cfg, t)
		if err != nil {
			return nil, err
		}
		return &out, nil
	}
	t, err := c.targets(cfg)
	if err != nil {
		return nil, err
	}
	cfg.Hidden = t.hidden
	for i := range cfg.Layers {
		cfg.Layers[i].MLP = t.mlp
		cfg.Layers[i].Heads = t.heads
		cfg.Layers[i].KVHeads = t.kvHeads
	}
	return &cfg, nil
}

func (c *Config) checkCriterion() error {
	switch c.Criterion {
	case "", "activation":
		if c.Scores == nil {
			return fmt.Errorf(`criterion "activation" needs scores = scores.<name> from a score pass (or set criterion = "magnitude")`)
		}
	case "magnitude":
	default:
		return fmt.Errorf("unknown criterion %q (want activation or magnitude)", c.Criterion)
	}
	return nil
}

// Run prunes.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	if err := c.checkCriterion(); err != nil {
		return err
	}
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	var prune func(*scores.Table) (*ir.Model, error)
	if c.uniform() {
		t, err := c.targets(m.Config)
		if err != nil {
			return err
		}
		prune = func(s *scores.Table) (*ir.Model, error) {
			return Prune(m, s, t.hidden, t.mlp, t.heads, t.kvHeads)
		}
	} else {
		t, err := c.nonUniformTargets(m.Config)
		if err != nil {
			return err
		}
		prune = func(s *scores.Table) (*ir.Model, error) { return PruneNonUniform(m, s, t) }
	}
	var s *scores.Table
	if c.Criterion == "magnitude" {
		if s, err = Magnitude(m); err != nil {
			return err
		}
	} else if s, err = rc.Scores(*c.Scores); err != nil {
		return err
	}
	out, err := prune(s)
	if err != nil {
		return err
	}
	rc.Metric("params_before", m.Config.Params().Total)
	rc.Metric("params_after", out.Config.Params().Total)
	if !c.uniform() {
		mlp, kv := make([]int, len(out.Config.Layers)), make([]int, len(out.Config.Layers))
		for i, l := range out.Config.Layers {
			mlp[i], kv[i] = l.MLP, l.KVHeads
		}
		rc.Metric("mlp_per_layer", mlp)
		rc.Metric("kv_heads_per_layer", kv)
	}
	rc.SetModel(out)
	return nil
}

// Prune keeps, in every layer, the top units by score: hidden channels
// (one global ranking), MLP neurons, and KV groups ranked by the summed
// score of their query heads, each keeping its best heads.
func Prune(m *ir.Model, s *scores.Table, hidden, mlp, heads, kvHeads int) (*ir.Model, error) {
	if err := m.Config.Check(); err != nil {
		return nil, err
	}
	if err := checkTable(m.Config, s); err != nil {
		return nil, err
	}
	// Targets come from targets() in the pass, but Prune is exported: bad
	// sizes must be errors here, not a division by zero or a silent cap.
	if hidden < 1 || mlp < 1 || heads < 1 || kvHeads < 1 || heads%kvHeads != 0 {
		return nil, fmt.Errorf("prune targets hidden %d, mlp %d, heads %d over %d KV heads: sizes must be positive and heads a multiple of KV heads", hidden, mlp, heads, kvHeads)
	}
	// One selection for every layer: ir builds one graph and validates
	// once, instead of once per layer and axis.
	sel := ir.Selection{MLP: map[int][]int{}, Heads: map[int][]int{}}
	for li, l := range m.Config.Layers {
		if kvHeads > l.KVHeads || heads/kvHeads > l.GroupSize() {
			return nil, fmt.Errorf("layer %d has %d KV groups of %d query heads; cannot keep %d groups of %d", li, l.KVHeads, l.GroupSize(), kvHeads, heads/kvHeads)
		}
		if mlp < l.MLP {
			sel.MLP[li] = scores.TopK(s.MLP[li], mlp)
		}
		if heads < l.Heads || kvHeads < l.KVHeads {
			sel.Heads[li] = pickHeads(s.Heads[li], l.GroupSize(), kvHeads, heads/kvHeads)
		}
	}
	if hidden < m.Config.Hidden {
		sel.Hidden = scores.TopK(s.Hidden, hidden)
	}
	return m.Keep(sel)
}

// pickHeads ranks KV groups by their heads' summed scores, keeps the top
// groups, and within each keeps its top perGroup heads.
func pickHeads(headScores []float64, groupSize, groups, perGroup int) []int {
	nGroups := len(headScores) / groupSize
	gs := make([]float64, nGroups)
	for h, v := range headScores {
		gs[h/groupSize] += v
	}
	var keep []int
	for _, g := range scores.TopK(gs, groups) {
		within := scores.TopK(headScores[g*groupSize:(g+1)*groupSize], perGroup)
		for _, h := range within {
			keep = append(keep, g*groupSize+h)
		}
	}
	return keep
}

func checkTable(c ir.Config, s *scores.Table) error {
	if len(s.Hidden) != c.Hidden {
		return fmt.Errorf("scores have %d hidden channels, the model %d", len(s.Hidden), c.Hidden)
	}
	if len(s.MLP) != len(c.Layers) || len(s.Heads) != len(c.Layers) {
		return fmt.Errorf("scores cover %d/%d layers (mlp/heads), the model has %d", len(s.MLP), len(s.Heads), len(c.Layers))
	}
	for i, l := range c.Layers {
		if len(s.MLP[i]) != l.MLP || len(s.Heads[i]) != l.Heads {
			return fmt.Errorf("layer %d: scores have %d neurons and %d heads, the model %d and %d", i, len(s.MLP[i]), len(s.Heads[i]), l.MLP, l.Heads)
		}
	}
	return nil
}

// Magnitude scores every unit by the L2 norm of all the weights it owns
// (every coupled slice of every tensor its axis runs through), the group
// magnitude criterion of torch-pruning and LLM-Pruner's baselines.
func Magnitude(m *ir.Model) (*scores.Table, error) {
	c := &m.Config
	axes, err := c.Axes()
	if err != nil {
		return nil, err
	}
	t := &scores.Table{Method: "magnitude"}
	if t.Hidden, err = axisNorms(m, axes, ir.AxisHidden, 0, c.Hidden); err != nil {
		return nil, err
	}
	for li, l := range c.Layers {
		mlp, err := axisNorms(m, axes, ir.AxisMLP, li, l.MLP)
		if err != nil {
			return nil, err
		}
		heads, err := axisNorms(m, axes, ir.AxisHeads, li, l.Heads)
		if err != nil {
			return nil, err
		}
		t.MLP = append(t.MLP, mlp)
		t.Heads = append(t.Heads, heads)
	}
	return t, nil
}

func axisNorms(m *ir.Model, axes *ir.Axes, axis ir.AxisKind, layer, units int) ([]float64, error) {
	cs, err := axes.Couplings(axis, layer)
	if err != nil {
		return nil, err
	}
	sq := make([]float64, units)
	for _, c := range cs {
		t, err := m.Tensor(c.Tensor)
		if err != nil {
			return nil, err
		}
		v, err := t.Float32()
		if err != nil {
			return nil, err
		}
		// Index of the coupled dimension for element i of a row-major tensor.
		inner := 1
		for _, s := range t.Shape[c.Dim+1:] {
			inner *= s
		}
		n := t.Shape[c.Dim]
		for i, x := range v {
			u := (i / inner) % n / c.Block
			sq[u] += float64(x) * float64(x)
		}
	}
	for i := range sq {
		sq[i] = math.Sqrt(sq[i])
	}
	return sq, nil
}
