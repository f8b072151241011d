// Package search is the `search` pass: prune to a budget. It lists every
// architecture of a search space over the derived axes (hidden size, MLP
// width, query and KV heads, layers) that meets upper bounds on
// parameters, active parameters, memory (bf16 weights + KV cache) or
// FLOPs per token within a tolerance below them, prunes the top_k closest
// to the budget from importance scores (width by Minitron's rule, depth
// by a layer metric), scores each by validation LM loss or task accuracy,
// optionally after a short distillation from the unpruned model (the
// Minitron paper's lightweight retraining), and produces the best; or,
// with pick = "random", one of the top_k drawn from the seed, a baseline
// for what the scoring buys.
// Scores are cached by content in the run directory, so an interrupted
// search resumes where it stopped.
package search

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
	"github.com/whittle-ml/whittle/passes/prunewidth"
)

// Objectives.
const (
	ObjectiveLMLoss   = "lm_loss"
	ObjectiveAccuracy = "accuracy"
)

// Picks: how the candidate the pass produces is chosen among the top_k.
const (
	// PickBest scores every one of the top_k and keeps the best.
	PickBest = "best"
	// PickRandom keeps one of the top_k drawn uniformly from the seed and
	// scores only it: the baseline that shows what scoring buys.
	PickRandom = "random"
)

// Config is the pass block's schema.
type Config struct {
	Model recipe.Ref `hcl:"model"`
	// Scores rank hidden channels, neurons and heads (width) and, through
	// Metric, layers (depth).
	Scores recipe.Ref `hcl:"scores"`

	Constraints Constraints `hcl:"constraints,block"`
	// Space holds one block per searched axis; unlisted axes keep their
	// size (query heads: the model's heads per KV group).
	Space []SpaceAxis `hcl:"space,block"`
	// TopK is how many candidates (closest to the budget first) are
	// pruned and scored (default 10).
	TopK *int `hcl:"top_k,optional"`
	// Pick is "best" (default) or "random" (see PickRandom).
	Pick string `hcl:"pick,optional"`

	// Metric and Selection choose the layers a candidate drops, as in
	// prune-depth ("contiguous" or "individual").
	Metric    string `hcl:"metric,optional"`
	Selection string `hcl:"selection,optional"`

	// Uniform false prunes each candidate non-uniformly: its MLP and KV
	// head sizes become totals over its layers (size × layers), spent by
	// ranking units across layers (prunewidth.PruneNonUniform, with
	// Normalize); the measures are the same, being linear in those
	// totals.
	Uniform   *bool  `hcl:"uniform,optional"`
	Normalize string `hcl:"normalize,optional"`

	// Objective is "lm_loss" (on Dataset's validation split, lower is
	// better) or "accuracy" (on Task, higher is better).
	Objective string      `hcl:"objective,optional"`
	Dataset   *recipe.Ref `hcl:"dataset,optional"`
	Task      *recipe.Ref `hcl:"task,optional"`
	// Sequences limits the validation sequences (0 = all); SeqLen and
	// Batch shape evaluation and retraining.
	Sequences *int   `hcl:"sequences,optional"`
	SeqLen    *int   `hcl:"seq_len,optional"`
	Batch     *int   `hcl:"batch,optional"`
	Seed      *int64 `hcl:"seed,optional"`

	// RetrainTokens > 0 distills every candidate from the model (forward
	// KL, temperature 1) for that many tokens of Dataset's training split
	// before scoring it, at learning rate RetrainLR.
	RetrainTokens *int64   `hcl:"retrain_tokens,optional"`
	RetrainLR     *float64 `hcl:"retrain_lr,optional"`
}

// Constraints is the constraints block: upper bounds.
type Constraints struct {
	Params       *float64 `hcl:"params,optional"`
	ActiveParams *float64 `hcl:"active_params,optional"`
	// Memory is bytes, or a size with a unit ("12GB", "16GiB").
	Memory        *string  `hcl:"memory,optional"`
	FLOPsPerToken *float64 `hcl:"flops_per_token,optional"`
	// SeqLen and Batch size the KV cache (memory) and the attention
	// context of flops_per_token; seq_len defaults to the model's context.
	SeqLen    *int     `hcl:"seq_len,optional"`
	Batch     *int     `hcl:"batch,optional"`
	Tolerance *float64 `hcl:"tolerance,optional"`
}

// SpaceAxis is a `space "<axis>"` block.
type SpaceAxis struct {
	Axis     string    `hcl:"axis,label"`
	Ratios   []float64 `hcl:"ratios,optional"`
	Sizes    []int     `hcl:"sizes,optional"`
	RoundTo  *int      `hcl:"round_to,optional"`
	MaxPrune *float64  `hcl:"max_prune,optional"`
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "search",
		Description: "prune to a budget: list the architectures meeting parameter, memory or FLOP bounds, prune and score the closest, keep the best",
		Produces:    recipe.SlotModel,
		NewConfig:   func() any { return &Config{} },
	}
}

// settings is a resolved configuration.
type settings struct {
	budget    Budget
	axes      map[string][]int
	topK      int
	pick      string
	objective string
	passutil.EvalSizes
	retrain *passutil.Train
	// nonUniform: candidates are pruned by prunewidth.PruneNonUniform.
	nonUniform bool
}

// blockAttrPos is the position of attribute attr in the nested block of
// type typ (with label, when not "") of pass p, or of the block's label
// when attr is "", or "".
func blockAttrPos(p *recipe.Pass, typ, label, attr string) string {
	body, ok := p.Body.(*hclsyntax.Body)
	if !ok {
		return ""
	}
	for _, b := range body.Blocks {
		if b.Type != typ || (label != "" && (len(b.Labels) == 0 || b.Labels[0] != label)) {
			continue
		}
		if attr == "" && len(b.LabelRanges) > 0 {
			return pipeline.At(b.LabelRanges[0])
		}
		if a, ok := b.Body.Attributes[attr]; ok {
			return pipeline.At(a.Expr.Range())
		}
		return pipeline.At(b.DefRange())
	}
	return ""
}

func blockErrorf(p *recipe.Pass, typ, label, attr, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if at := blockAttrPos(p, typ, label, attr); at != "" {
		return fmt.Errorf("%s: %s", at, msg)
	}
	return fmt.Errorf("%s", msg)
}

func (c *Config) resolve(p *recipe.Pass, r *recipe.Recipe, cfg ir.Config) (settings, error) {
	s := settings{topK: DefaultTopK, pick: PickBest, objective: ObjectiveLMLoss}
	if len(cfg.Layers) == 0 {
		return s, fmt.Errorf("the model has no layers")
	}
	var err error
	if s.budget, err = c.Constraints.resolve(p, cfg); err != nil {
		return s, err
	}
	if s.axes, err = c.resolveSpace(p, cfg); err != nil {
		return s, err
	}
	if c.TopK != nil {
		if s.topK = *c.TopK; s.topK < 1 {
			return s, passutil.Errorf(p, "top_k", "top_k = %d must be at least 1", s.topK)
		}
	}
	switch c.Pick {
	case "", PickBest:
	case PickRandom:
		s.pick = PickRandom
	default:
		return s, passutil.Errorf(p, "pick", "unknown pick %q (want best or random)", c.Pick)
	}
	if _, ok := s.axes[AxisLayers]; ok || c.Metric != "" {
		if c.Metric == "" {
			return s, blockErrorf(p, "space", AxisLayers, "", `searching layers needs metric = "<name>": the layer metric of %s to rank layers by`, c.Scores)
		}
		switch c.Selection {
		case "", "contiguous", "individual":
		default:
			return s, passutil.Errorf(p, "selection", "unknown selection %q (want contiguous or individual)", c.Selection)
		}
	}
	if c.Uniform != nil && !*c.Uniform {
		s.nonUniform = true
		if _, ok := s.axes[AxisHeads]; ok {
			return s, blockErrorf(p, "space", AxisHeads, "", "uniform = false keeps whole KV groups with all their query heads; search kv_heads instead of heads")
		}
		switch c.Normalize {
		case "", prunewidth.NormalizeMean, prunewidth.NormalizeNone:
		default:
			return s, passutil.Errorf(p, "normalize", "unknown normalize %q (want %s or %s)", c.Normalize, prunewidth.NormalizeMean, prunewidth.NormalizeNone)
		}
	} else if c.Normalize != "" {
		return s, passutil.Errorf(p, "normalize", "normalize applies to uniform = false")
	}
	if c.Objective != "" {
		s.objective = c.Objective
	}
	switch s.objective {
	case ObjectiveLMLoss:
		if c.Dataset == nil {
			return s, passutil.Errorf(p, "objective", `objective "lm_loss" needs dataset = dataset.<name> (scored on its validation split)`)
		}
		if c.Task != nil {
			return s, passutil.Errorf(p, "task", `task applies to objective = "accuracy"`)
		}
	case ObjectiveAccuracy:
		if c.Task == nil {
			return s, passutil.Errorf(p, "objective", `objective "accuracy" needs task = task.<name>`)
		}
	default:
		return s, passutil.Errorf(p, "objective", "unknown objective %q (want lm_loss or accuracy)", s.objective)
	}
	if c.Dataset != nil {
		if err := passutil.CheckDataset(p, r, "dataset", *c.Dataset, false); err != nil {
			return s, err
		}
	}
	if s.EvalSizes, err = passutil.ResolveEvalSizes(p, cfg, c.Sequences, c.SeqLen, c.Batch, c.Seed); err != nil {
		return s, err
	}
	if c.RetrainTokens == nil {
		if c.RetrainLR != nil {
			return s, passutil.Errorf(p, "retrain_lr", "retrain_lr applies with retrain_tokens")
		}
		return s, nil
	}
	if c.Dataset == nil {
		return s, passutil.Errorf(p, "retrain_tokens", "retrain_tokens needs dataset = dataset.<name> to distill on")
	}
	// The distill pass's options and defaults, checkpoints off: a
	// candidate's retraining is short, and its score is what is cached.
	zero, shuffle := 0, true
	t, err := passutil.ResolveTrain(p, cfg, passutil.TrainOptions{Tokens: c.RetrainTokens, LR: c.RetrainLR,
		Batch: &s.Batch, SeqLen: &s.SeqLen, Seed: &s.Seed, Shuffle: &shuffle, CheckpointEvery: &zero})
	if err != nil {
		return s, fmt.Errorf("retraining: %w", err)
	}
	s.retrain = &t
	return s, nil
}

func (k *Constraints) resolve(p *recipe.Pass, cfg ir.Config) (Budget, error) {
	b := Budget{Tolerance: DefaultTolerance, SeqLen: cfg.MaxSeq, Batch: 1}
	bad := func(attr, format string, args ...any) (Budget, error) {
		return Budget{}, blockErrorf(p, "constraints", "", attr, format, args...)
	}
	count := func(attr string, v *float64, dst *int64) error {
		if v == nil {
			return nil
		}
		if !(*v >= 1) || *v > 9e18 {
			_, err := bad(attr, "%s = %g must be a positive count", attr, *v)
			return err
		}
		*dst = int64(*v)
		return nil
	}
	if err := count("params", k.Params, &b.Params); err != nil {
		return b, err
	}
	if err := count("active_params", k.ActiveParams, &b.ActiveParams); err != nil {
		return b, err
	}
	if err := count("flops_per_token", k.FLOPsPerToken, &b.FLOPs); err != nil {
		return b, err
	}
	if k.Memory != nil {
		v, err := ParseBytes(*k.Memory)
		if err != nil {
			return bad("memory", "%v", err)
		}
		b.Memory = v
	}
	if b.Params == 0 && b.ActiveParams == 0 && b.Memory == 0 && b.FLOPs == 0 {
		return bad("", "constraints sets no budget: give params, active_params, memory or flops_per_token")
	}
	if k.SeqLen != nil {
		if b.SeqLen = *k.SeqLen; b.SeqLen < 1 {
			return bad("seq_len", "seq_len = %d must be at least 1", b.SeqLen)
		}
	} else if b.SeqLen == 0 && (b.Memory > 0 || b.FLOPs > 0) {
		return bad("", "the model states no context length; give seq_len for the KV cache and attention FLOPs")
	}
	if k.Batch != nil {
		if b.Batch = *k.Batch; b.Batch < 1 {
			return bad("batch", "batch = %d must be at least 1", b.Batch)
		}
	}
	if k.Tolerance != nil {
		if b.Tolerance = *k.Tolerance; !(b.Tolerance >= 0 && b.Tolerance < 1) {
			return bad("tolerance", "tolerance = %g must be in [0, 1)", b.Tolerance)
		}
	}
	return b, nil
}

func (c *Config) resolveSpace(p *recipe.Pass, cfg ir.Config) (map[string][]int, error) {
	if !cfg.Uniform() {
		return nil, fmt.Errorf("search needs every layer the same width (homogeneous pruning); this model's layers differ")
	}
	l := cfg.Layers[0]
	if l.MoE() {
		// An experts axis needs expert pruning from importance scores
		// (which experts, and their neurons); until then, say so.
		return nil, fmt.Errorf("search does not prune mixture-of-experts layers yet (%d experts per layer); search a dense model", l.Experts)
	}
	cur := map[string]int{AxisHidden: cfg.Hidden, AxisMLP: l.MLP, AxisHeads: l.Heads, AxisKVHeads: l.KVHeads, AxisLayers: len(cfg.Layers)}
	axes := map[string][]int{}
	for _, a := range c.Space {
		n, ok := cur[a.Axis]
		if !ok {
			return nil, blockErrorf(p, "space", a.Axis, "", "unknown axis %q (want %s)", a.Axis, strings.Join(axisNames, ", "))
		}
		if _, dup := axes[a.Axis]; dup {
			return nil, blockErrorf(p, "space", a.Axis, "", "axis %q has two space blocks", a.Axis)
		}
		roundTo, maxPrune := 1, 1.0
		if a.RoundTo != nil {
			roundTo = *a.RoundTo
		}
		if a.MaxPrune != nil {
			maxPrune = *a.MaxPrune
		}
		vals, err := axisValues(a.Axis, n, a.Ratios, a.Sizes, roundTo, maxPrune)
		if err != nil {
			attr := "ratios"
			switch {
			case a.Sizes != nil:
				attr = "sizes"
			case strings.Contains(err.Error(), "round_to"):
				attr = "round_to"
			case strings.Contains(err.Error(), "max_prune"):
				attr = "max_prune"
			}
			return nil, blockErrorf(p, "space", a.Axis, attr, "%v", err)
		}
		axes[a.Axis] = vals
	}
	if len(axes) == 0 {
		return nil, fmt.Errorf("the search space is empty: give space \"<axis>\" blocks for some of %s", strings.Join(axisNames, ", "))
	}
	return axes, nil
}

// plan enumerates and selects the candidates.
func (c *Config) plan(s settings, cfg ir.Config) (all, fit []Candidate, err error) {
	all, err = Enumerate(cfg, s.axes, s.budget)
	if err != nil {
		return nil, nil, err
	}
	l := cfg.Layers[0]
	base := Sizes{Hidden: cfg.Hidden, MLP: l.MLP, Heads: l.Heads, KVHeads: l.KVHeads, Layers: len(cfg.Layers)}
	fit, err = Select(all, s.budget, base)
	return all, fit, err
}

// Plan lists the candidates under the stage and plans the one closest to
// the budget; which one wins is known only after scoring.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	cfg, err := pc.Model(c.Model)
	if err != nil {
		return nil, err
	}
	if !pc.HasScores(c.Scores) {
		return nil, fmt.Errorf("%s is not produced by an earlier pass", c.Scores)
	}
	s, err := c.resolve(p, pc.Recipe, cfg)
	if err != nil {
		return nil, err
	}
	if c.Metric != "" {
		if blocks, ok := pc.LayerMetrics(c.Scores); ok {
			if _, has := blocks[c.Metric]; !has {
				return nil, passutil.Errorf(p, "metric", "%s will have no layer metric %q", c.Scores, c.Metric)
			}
		}
	}
	// Scoring tokenizes the data or the task with the model's tokenizer.
	if _, err := pc.Tokenizer(c.Model); err != nil {
		return nil, err
	}
	all, fit, err := c.plan(s, cfg)
	if err != nil {
		return nil, err
	}
	// A random pick is known before scoring: plan with it.
	first, picked := 0, -1
	if s.pick == PickRandom {
		first = RandomPick(s.Seed, min(s.topK, len(fit)))
		picked = first
	}
	pc.Detail(FormatPlan(len(all), fit, s.topK, picked, s.budget))
	out := fit[first].Config(cfg)
	return &out, nil
}

// RandomPick is the index in [0, k) that pick = "random" keeps for seed:
// uniform over the k candidates, the same for the same seed.
func RandomPick(seed int64, k int) int {
	// The stream constant only keeps this draw apart from other uses of
	// the seed.
	return rand.New(rand.NewPCG(uint64(seed), 0x5ea4c4)).IntN(k)
}
