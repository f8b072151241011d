// Package prunewidth is the `prune-width` pass: shrink the hidden size,
// the MLP width and the attention heads of every layer to targets, keeping
// the most important units by score (Minitron's homogeneous width
// pruning), or, with uniform = false, to totals over all layers split by
// a global ranking of their units (see PruneNonUniform). In a
// mixture-of-experts model it also drops routed experts (with their
// router rows), narrows every expert (each keeping its own best neurons)
// and the shared expert.
package prunewidth

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

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
	// Criterion is "activation" (use Scores, the default when given),
	// "magnitude" (L2 norm of every weight slice the unit owns) or
	// "random" (units drawn with Seed: the baseline a criterion must beat).
	Criterion string `hcl:"criterion,optional"`
	// Seed draws the random criterion's units.
	Seed *int64 `hcl:"seed,optional"`

	Hidden       *int     `hcl:"hidden,optional"`
	HiddenRatio  *float64 `hcl:"hidden_ratio,optional"`
	MLP          *int     `hcl:"mlp,optional"`
	MLPRatio     *float64 `hcl:"mlp_ratio,optional"`
	Heads        *int     `hcl:"heads,optional"`
	HeadsRatio   *float64 `hcl:"heads_ratio,optional"`
	KVHeads      *int     `hcl:"kv_heads,optional"`
	KVHeadsRatio *float64 `hcl:"kv_heads_ratio,optional"`
	// Mixture-of-experts layers: routed experts, each expert's width and
	// the shared expert's width, the same targets in every MoE layer.
	Experts        *int     `hcl:"experts,optional"`
	ExpertsRatio   *float64 `hcl:"experts_ratio,optional"`
	ExpertMLP      *int     `hcl:"expert_mlp,optional"`
	ExpertMLPRatio *float64 `hcl:"expert_mlp_ratio,optional"`
	SharedMLP      *int     `hcl:"shared_mlp,optional"`
	SharedMLPRatio *float64 `hcl:"shared_mlp_ratio,optional"`
	// ExpertsPerToken sets num_experts_per_tok, which must not exceed the
	// experts left; unset keeps it.
	ExpertsPerToken *int `hcl:"experts_per_token,optional"`
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
		Description: "keep the top hidden channels, MLP neurons, attention heads and experts by importance",
		Produces:    recipe.SlotModel,
		NewConfig:   func() any { return &Config{} },
	}
}

// targets are the sizes every layer ends with: dense layers' MLP width,
// MoE layers' experts, expert width and shared-expert width, and the
// experts each token is routed to (0 where the model has no such layer).
type targets struct {
	hidden, mlp, heads, kvHeads             int
	experts, expertMLP, sharedMLP, perToken int
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

// shapes returns the model's attention sizes and its first dense and
// first MoE layer (the zero value where it has none), and an error unless
// all layers share the attention sizes, all dense layers the MLP width and
// all MoE layers their expert sizes: homogeneous pruning gives every layer
// of a kind one target.
func shapes(cfg ir.Config) (attn, dense, moe ir.LayerConfig, err error) {
	var haveDense, haveMoE bool
	attn = cfg.Layers[0]
	for _, l := range cfg.Layers {
		if l.Heads != attn.Heads || l.KVHeads != attn.KVHeads || l.HeadDim != attn.HeadDim {
			return attn, dense, moe, fmt.Errorf("prune-width needs every layer the same width (homogeneous pruning); this model's layers differ")
		}
		switch {
		case l.MoE() && !haveMoE:
			moe, haveMoE = l, true
		case !l.MoE() && !haveDense:
			dense, haveDense = l, true
		case l.MoE() && (l.Experts != moe.Experts || l.ExpertMLP != moe.ExpertMLP || l.SharedMLP != moe.SharedMLP),
			!l.MoE() && l.MLP != dense.MLP:
			return attn, dense, moe, fmt.Errorf("prune-width needs every layer the same width (homogeneous pruning); this model's layers differ")
		}
	}
	return attn, dense, moe, nil
}

func (c *Config) targets(cfg ir.Config) (targets, error) {
	if c.Normalize != "" {
		return targets{}, fmt.Errorf("normalize applies to non-uniform pruning only (set uniform = false)")
	}
	l, dense, moe, err := shapes(cfg)
	if err != nil {
		return targets{}, err
	}
	var t targets
	if t.hidden, err = resolve("hidden", c.Hidden, c.HiddenRatio, cfg.Hidden, c.RoundTo); err != nil {
		return t, err
	}
	for _, a := range []struct {
		what  string
		abs   *int
		ratio *float64
		cur   int
		dst   *int
		round int
	}{
		{"mlp", c.MLP, c.MLPRatio, dense.MLP, &t.mlp, c.RoundTo},
		{"experts", c.Experts, c.ExpertsRatio, moe.Experts, &t.experts, 0},
		{"expert_mlp", c.ExpertMLP, c.ExpertMLPRatio, moe.ExpertMLP, &t.expertMLP, c.RoundTo},
		{"shared_mlp", c.SharedMLP, c.SharedMLPRatio, moe.SharedMLP, &t.sharedMLP, c.RoundTo},
	} {
		if a.cur == 0 {
			if a.abs != nil || a.ratio != nil {
				return t, fmt.Errorf("%s is set but the model has no layer with that axis (%s)", a.what, map[string]string{
					"mlp": "a dense MLP", "experts": "routed experts", "expert_mlp": "routed experts", "shared_mlp": "a shared expert"}[a.what])
			}
			continue
		}
		if *a.dst, err = resolve(a.what, a.abs, a.ratio, a.cur, a.round); err != nil {
			return t, err
		}
	}
	if moe.MoE() {
		t.perToken = cfg.ExpertsPerToken
		if c.ExpertsPerToken != nil {
			if t.perToken = *c.ExpertsPerToken; t.perToken < 1 || t.perToken > t.experts {
				return t, fmt.Errorf("experts_per_token = %d must be between 1 and the %d experts left", t.perToken, t.experts)
			}
		} else if t.experts < t.perToken {
			return t, fmt.Errorf("experts = %d leaves fewer experts than num_experts_per_tok = %d routes each token to; keep at least %d experts or lower it with experts_per_token = %d", t.experts, t.perToken, t.perToken, t.experts)
		}
	} else if c.ExpertsPerToken != nil {
		return t, fmt.Errorf("experts_per_token is set but the model has no routed experts")
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

// apply sets the targets on a copy of cfg.
func (t targets) apply(cfg ir.Config) ir.Config {
	out := cfg.Clone()
	out.Hidden = t.hidden
	for i, l := range out.Layers {
		out.Layers[i].Heads, out.Layers[i].KVHeads = t.heads, t.kvHeads
		if l.MoE() {
			out.Layers[i].Experts, out.Layers[i].ExpertMLP, out.Layers[i].SharedMLP = t.experts, t.expertMLP, t.sharedMLP
		} else {
			out.Layers[i].MLP = t.mlp
		}
	}
	if t.perToken > 0 {
		out.ExpertsPerToken = t.perToken
	}
	return out
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
	out := t.apply(cfg)
	return &out, nil
}

func (c *Config) checkCriterion() error {
	switch c.Criterion {
	case "", "activation":
		if c.Scores == nil {
			return fmt.Errorf(`criterion "activation" needs scores = scores.<name> from a score pass (or set criterion = "magnitude")`)
		}
	case "magnitude", "random":
	default:
		return fmt.Errorf("unknown criterion %q (want activation, magnitude or random)", c.Criterion)
	}
	if c.Seed != nil && c.Criterion != "random" {
		return fmt.Errorf(`seed only draws the units of criterion = "random"`)
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
		prune = func(s *scores.Table) (*ir.Model, error) { return PruneTo(m, s, t.apply(m.Config)) }
	} else {
		t, err := c.nonUniformTargets(m.Config)
		if err != nil {
			return err
		}
		prune = func(s *scores.Table) (*ir.Model, error) { return PruneNonUniform(m, s, t) }
	}
	var s *scores.Table
	switch c.Criterion {
	case "magnitude":
		if s, err = Magnitude(m); err != nil {
			return err
		}
	case "random":
		var seed int64
		if c.Seed != nil {
			seed = *c.Seed
		}
		s = Random(m.Config, uint64(seed))
	default:
		if s, err = rc.Scores(*c.Scores); err != nil {
			return err
		}
	}
	out, err := prune(s)
	if err != nil {
		return err
	}
	before, after := m.Config.Params(), out.Config.Params()
	rc.Metric("params_before", before.Total)
	rc.Metric("params_after", after.Total)
	if before.Active != before.Total {
		rc.Metric("active_params_before", before.Active)
		rc.Metric("active_params_after", after.Active)
	}
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
// score of their query heads, each keeping its best heads. MoE layers
// keep their experts.
func Prune(m *ir.Model, s *scores.Table, hidden, mlp, heads, kvHeads int) (*ir.Model, error) {
	if hidden < 1 || mlp < 1 || heads < 1 || kvHeads < 1 || heads%kvHeads != 0 {
		return nil, fmt.Errorf("prune targets hidden %d, mlp %d, heads %d over %d KV heads: sizes must be positive and heads a multiple of KV heads", hidden, mlp, heads, kvHeads)
	}
	to := m.Config.Clone()
	to.Hidden = hidden
	for i, l := range to.Layers {
		to.Layers[i].Heads, to.Layers[i].KVHeads = heads, kvHeads
		if !l.MoE() {
			to.Layers[i].MLP = mlp
		}
	}
	return PruneTo(m, s, to)
}

// PruneTo prunes m to the sizes of to (m's config with smaller widths, as
// the pass plans it), keeping the top units by score: hidden channels
// (one global ranking), MLP neurons, KV groups ranked by the summed score
// of their query heads, each keeping its best heads; in MoE layers the top
// experts (with their router rows), each expert's own top neurons and the
// shared expert's top neurons. num_experts_per_tok becomes to's.
func PruneTo(m *ir.Model, s *scores.Table, to ir.Config) (*ir.Model, error) {
	if err := m.Config.Check(); err != nil {
		return nil, err
	}
	if err := checkTable(m.Config, s); err != nil {
		return nil, err
	}
	if len(to.Layers) != len(m.Config.Layers) {
		return nil, fmt.Errorf("prune target has %d layers, the model %d", len(to.Layers), len(m.Config.Layers))
	}
	// Lowering top-k first lets Keep check the experts left against the
	// new value.
	if to.ExpertsPerToken != m.Config.ExpertsPerToken {
		lowered := *m
		lowered.Config = m.Config.Clone()
		lowered.Config.ExpertsPerToken = to.ExpertsPerToken
		m = &lowered
	}
	// One selection for every layer: ir builds one graph and validates
	// once, instead of once per layer and axis.
	sel := ir.Selection{MLP: map[int][]int{}, Heads: map[int][]int{}, Experts: map[int][]int{}, ExpertMLP: map[int][][]int{}, SharedMLP: map[int][]int{}}
	for li, l := range m.Config.Layers {
		tl := to.Layers[li]
		heads, kvHeads := tl.Heads, tl.KVHeads
		// Targets come from targets() in the pass, but PruneTo is
		// exported: bad sizes must be errors here, not a division by
		// zero or a silent cap.
		if heads < 1 || kvHeads < 1 || heads%kvHeads != 0 || kvHeads > l.KVHeads || heads/kvHeads > l.GroupSize() {
			return nil, fmt.Errorf("layer %d has %d KV groups of %d query heads; cannot keep %d heads over %d groups", li, l.KVHeads, l.GroupSize(), heads, kvHeads)
		}
		if heads < l.Heads || kvHeads < l.KVHeads {
			sel.Heads[li] = pickHeads(s.Heads[li], l.GroupSize(), kvHeads, heads/kvHeads)
		}
		if tl.MoE() != l.MoE() {
			return nil, fmt.Errorf("layer %d: pruning cannot turn a dense MLP into a mixture of experts or back", li)
		}
		for _, a := range []struct {
			what     string
			cur, tgt int
		}{{"mlp", l.MLP, tl.MLP}, {"experts", l.Experts, tl.Experts}, {"expert_mlp", l.ExpertMLP, tl.ExpertMLP}, {"shared_mlp", l.SharedMLP, tl.SharedMLP}} {
			if a.tgt > a.cur || a.tgt < 0 || a.cur > 0 && a.tgt == 0 {
				return nil, fmt.Errorf("layer %d: cannot prune %s from %d to %d", li, a.what, a.cur, a.tgt)
			}
		}
		if tl.MLP < l.MLP {
			sel.MLP[li] = scores.TopK(s.MLP[li], tl.MLP)
		}
		if tl.Experts < l.Experts {
			sel.Experts[li] = scores.TopK(s.Experts[li], tl.Experts)
		}
		if tl.ExpertMLP < l.ExpertMLP {
			per := make([][]int, l.Experts)
			for e := range per {
				per[e] = scores.TopK(s.ExpertMLP[li][e], tl.ExpertMLP)
			}
			sel.ExpertMLP[li] = per
		}
		if tl.SharedMLP < l.SharedMLP {
			sel.SharedMLP[li] = scores.TopK(s.SharedMLP[li], tl.SharedMLP)
		}
	}
	if to.Hidden < 1 || to.Hidden > m.Config.Hidden {
		return nil, fmt.Errorf("cannot prune hidden from %d to %d", m.Config.Hidden, to.Hidden)
	}
	if to.Hidden < m.Config.Hidden {
		sel.Hidden = scores.TopK(s.Hidden, to.Hidden)
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
	moe := false
	for i, l := range c.Layers {
		if len(s.MLP[i]) != l.MLP || len(s.Heads[i]) != l.Heads {
			return fmt.Errorf("layer %d: scores have %d neurons and %d heads, the model %d and %d", i, len(s.MLP[i]), len(s.Heads[i]), l.MLP, l.Heads)
		}
		moe = moe || l.MoE()
	}
	if !moe {
		return nil
	}
	if len(s.Experts) != len(c.Layers) || len(s.ExpertMLP) != len(c.Layers) || len(s.SharedMLP) != len(c.Layers) {
		return fmt.Errorf("scores cover %d/%d/%d layers (experts/expert_mlp/shared_mlp), the mixture-of-experts model has %d; score it with a backend that reports expert statistics",
			len(s.Experts), len(s.ExpertMLP), len(s.SharedMLP), len(c.Layers))
	}
	for i, l := range c.Layers {
		if len(s.Experts[i]) != l.Experts || len(s.ExpertMLP[i]) != l.Experts || len(s.SharedMLP[i]) != l.SharedMLP {
			return fmt.Errorf("layer %d: scores have %d experts (%d neuron lists) and %d shared-expert neurons, the model %d and %d", i, len(s.Experts[i]), len(s.ExpertMLP[i]), len(s.SharedMLP[i]), l.Experts, l.SharedMLP)
		}
		for e, v := range s.ExpertMLP[i] {
			if len(v) != l.ExpertMLP {
				return fmt.Errorf("layer %d expert %d: scores have %d neurons, the model %d", i, e, len(v), l.ExpertMLP)
			}
		}
	}
	return nil
}

// Random scores every unit of every axis with an independent uniform draw
// from seed: pruning by it keeps units at random, the baseline an
// importance criterion has to beat.
func Random(c ir.Config, seed uint64) *scores.Table {
	rng := rand.New(rand.NewPCG(seed, 0x72616e646f6d)) // "random"
	draw := func(n int) []float64 {
		if n == 0 {
			return nil
		}
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.Float64()
		}
		return v
	}
	t := &scores.Table{Method: fmt.Sprintf("random(seed=%d)", seed), Hidden: draw(c.Hidden)}
	moe := false
	for _, l := range c.Layers {
		moe = moe || l.MoE()
	}
	for _, l := range c.Layers {
		t.Heads = append(t.Heads, draw(l.Heads))
		t.MLP = append(t.MLP, draw(l.MLP))
		if !moe {
			continue
		}
		t.Experts = append(t.Experts, draw(l.Experts))
		var per [][]float64
		for range l.Experts {
			per = append(per, draw(l.ExpertMLP))
		}
		t.ExpertMLP = append(t.ExpertMLP, per)
		t.SharedMLP = append(t.SharedMLP, draw(l.SharedMLP))
	}
	return t
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
	moe := false
	for _, l := range c.Layers {
		moe = moe || l.MoE()
	}
	for li, l := range c.Layers {
		heads, err := axisNorms(m, axes, ir.AxisHeads, li, l.Heads)
		if err != nil {
			return nil, err
		}
		t.Heads = append(t.Heads, heads)
		var mlp, experts, shared []float64
		var expertMLP [][]float64
		switch {
		case !l.MoE():
			mlp, err = axisNorms(m, axes, ir.AxisMLP, li, l.MLP)
		default:
			if experts, err = axisNorms(m, axes, ir.AxisExperts, li, l.Experts); err != nil {
				return nil, err
			}
			if expertMLP, err = withinNorms(m, axes, ir.AxisExpertMLP, li, l.Experts, l.ExpertMLP); err != nil {
				return nil, err
			}
			if l.SharedMLP > 0 {
				shared, err = axisNorms(m, axes, ir.AxisSharedMLP, li, l.SharedMLP)
			}
		}
		if err != nil {
			return nil, err
		}
		t.MLP = append(t.MLP, mlp)
		if moe {
			t.Experts = append(t.Experts, experts)
			t.ExpertMLP = append(t.ExpertMLP, expertMLP)
			t.SharedMLP = append(t.SharedMLP, shared)
		}
	}
	return t, nil
}

// withinNorms is axisNorms for an axis that runs within each slice of
// dimension 0 (each expert's neurons): one norm per unit of each slice,
// so that every expert ranks its own neurons.
func withinNorms(m *ir.Model, axes *ir.Axes, axis ir.AxisKind, layer, slices, units int) ([][]float64, error) {
	cs, err := axes.Couplings(axis, layer)
	if err != nil {
		return nil, err
	}
	sq := make([][]float64, slices)
	for g := range sq {
		sq[g] = make([]float64, units)
	}
	for _, c := range cs {
		t, err := m.Tensor(c.Tensor)
		if err != nil {
			return nil, err
		}
		if slices > 1 && (c.Dim == 0 || t.Shape[0] != slices) {
			return nil, fmt.Errorf("%s: axis %s of layer %d runs through dimension %d of a tensor of shape %v, not within %d slices", c.Tensor, axis, layer, c.Dim, t.Shape, slices)
		}
		v, err := t.Float32()
		if err != nil {
			return nil, err
		}
		// Index of the coupled dimension for element i of a row-major
		// tensor; slice i/per of dimension 0.
		inner := 1
		for _, s := range t.Shape[c.Dim+1:] {
			inner *= s
		}
		per := len(v) / slices
		n := t.Shape[c.Dim]
		for i, x := range v {
			u := (i / inner) % n / c.Block
			sq[i/per][u] += float64(x) * float64(x)
		}
	}
	for _, row := range sq {
		for i := range row {
			row[i] = math.Sqrt(row[i])
		}
	}
	return sq, nil
}

// axisNorms is the L2 norm of every unit's entries in all the tensors
// its axis runs through: withinNorms with the whole tensor as one slice.
func axisNorms(m *ir.Model, axes *ir.Axes, axis ir.AxisKind, layer, units int) ([]float64, error) {
	sq, err := withinNorms(m, axes, axis, layer, 1, units)
	if err != nil {
		return nil, err
	}
	return sq[0], nil
}
