// Package prunedepth is the `prune-depth` pass: remove whole decoder
// layers, either an explicit list or the least important ones by a layer
// metric from a score pass.
package prunedepth

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
)

// Config is the pass block's schema: either Layers, or Remove with Scores.
type Config struct {
	Model recipe.Ref `hcl:"model"`
	// Layers lists the layers to drop (0-based).
	Layers []int `hcl:"layers,optional"`
	// Remove is how many layers to drop, chosen from Scores.
	Remove int         `hcl:"remove,optional"`
	Scores *recipe.Ref `hcl:"scores,optional"`
	// Metric names the layer ranking in the scores table.
	Metric string `hcl:"metric,optional"`
	// Selection is "contiguous" (the block of Remove layers with the least
	// summed per-layer importance), "individual" (the Remove least
	// important), or "block" (the block whose removal as a whole was
	// measured least important: the metric must come from a score pass
	// with block = Remove, whose entry l scores removing l..l+Remove−1).
	Selection string `hcl:"selection,optional"`
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "prune-depth",
		Description: "remove decoder layers: an explicit list, or the least important by a layer metric",
		Produces:    recipe.SlotModel,
		NewConfig:   func() any { return &Config{} },
	}
}

func (c *Config) check(layers int) error {
	switch {
	case len(c.Layers) > 0 && c.Remove > 0:
		return fmt.Errorf("give either layers or remove, not both")
	case len(c.Layers) == 0 && c.Remove <= 0:
		return fmt.Errorf("give layers = [...] or remove = N")
	case c.Remove >= layers:
		return fmt.Errorf("remove = %d would leave no layers of %d", c.Remove, layers)
	case c.Remove > 0 && c.Scores == nil:
		return fmt.Errorf("remove = N needs scores = scores.<name> with a layer metric")
	}
	switch c.Selection {
	case "", "contiguous", "individual", "block":
	default:
		return fmt.Errorf("unknown selection %q (want contiguous, individual or block)", c.Selection)
	}
	if c.Selection == "block" && c.Remove == 0 {
		return fmt.Errorf("selection = \"block\" chooses among scored blocks; give remove = N, not layers")
	}
	return nil
}

// checkScores checks the scores a removal ranks layers by: produced by an
// earlier pass, holding the metric, measured by blocks of Remove layers
// for selection = "block". Passes that do not declare their metrics
// (plugins) are checked when the table is read.
func (c *Config) checkScores(pc *pipeline.PlanContext) error {
	if c.Scores == nil {
		return nil
	}
	if !pc.HasScores(*c.Scores) {
		return fmt.Errorf("scores.%s is not produced by an earlier pass", c.Scores.Name)
	}
	if c.Remove == 0 {
		return nil
	}
	if c.Metric == "" {
		return fmt.Errorf("remove = N needs metric = \"<name>\": the layer metric of scores.%s to rank layers by", c.Scores.Name)
	}
	blocks, ok := pc.LayerMetrics(*c.Scores)
	if !ok {
		return nil
	}
	n, has := blocks[c.Metric]
	if !has {
		names := make([]string, 0, len(blocks))
		for m := range blocks {
			names = append(names, m)
		}
		sort.Strings(names)
		return fmt.Errorf("scores.%s will have no layer metric %q (its score pass computes %v)", c.Scores.Name, c.Metric, names)
	}
	if c.Selection == "block" && n != c.Remove {
		return fmt.Errorf("selection = \"block\" with remove = %d needs scores.%s's %q measured by removing blocks of %d layers (score pass block = %d); it is measured with blocks of %d",
			c.Remove, c.Scores.Name, c.Metric, c.Remove, c.Remove, n)
	}
	return nil
}

// Plan computes the remaining layers.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	cfg, err := pc.Model(c.Model)
	if err != nil {
		return nil, err
	}
	if err := c.check(len(cfg.Layers)); err != nil {
		return nil, err
	}
	if err := c.checkScores(pc); err != nil {
		return nil, err
	}
	drop := c.Layers
	if c.Remove > 0 {
		drop = make([]int, c.Remove) // which ones is known only at run time
		for i := range drop {
			drop[i] = i
		}
	}
	dropSet := map[int]bool{}
	for _, l := range drop {
		if l < 0 || l >= len(cfg.Layers) || dropSet[l] {
			return nil, fmt.Errorf("layer %d is out of range [0,%d) or listed twice", l, len(cfg.Layers))
		}
		dropSet[l] = true
	}
	if len(dropSet) == len(cfg.Layers) {
		return nil, fmt.Errorf("layers = %v lists all %d layers; at least one must remain", c.Layers, len(cfg.Layers))
	}
	kept := cfg.Layers[:0]
	for i, l := range cfg.Layers {
		if !dropSet[i] {
			kept = append(kept, l)
		}
	}
	cfg.Layers = kept
	return &cfg, nil
}

// Run drops the layers.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	if err := c.check(len(m.Config.Layers)); err != nil {
		return err
	}
	drop := c.Layers
	if c.Remove > 0 {
		t, err := rc.Scores(*c.Scores)
		if err != nil {
			return err
		}
		imp, ok := t.Layers[c.Metric]
		if !ok {
			return fmt.Errorf("scores.%s has no layer metric %q", c.Scores.Name, c.Metric)
		}
		if c.Selection == "block" {
			if n, ok := BlockSize(t.Method, c.Metric); !ok || n != c.Remove {
				return fmt.Errorf("selection = \"block\" with remove = %d needs scores.%s's %q measured by removing blocks of %d layers (score pass block = %d); its method is %q",
					c.Remove, c.Scores.Name, c.Metric, c.Remove, c.Remove, t.Method)
			}
			drop, err = SelectBlock(imp, c.Remove)
		} else {
			drop, err = Select(imp, c.Remove, c.Selection != "individual")
		}
		if err != nil {
			return fmt.Errorf("scores.%s %q: %w", c.Scores.Name, c.Metric, err)
		}
	}
	out, err := m.DropLayers(drop)
	if err != nil {
		return err
	}
	rc.Metric("dropped_layers", drop)
	rc.Metric("params_before", m.Config.Params().Total)
	rc.Metric("params_after", out.Config.Params().Total)
	rc.SetModel(out)
	return nil
}

// Select picks n layers to remove from per-layer importances (higher is
// more important): the n least important, or the contiguous block of n
// with the least summed importance (earliest block on ties).
func Select(importance []float64, n int, contiguous bool) ([]int, error) {
	if n <= 0 || n >= len(importance) {
		return nil, fmt.Errorf("cannot remove %d of %d layers", n, len(importance))
	}
	// NaN compares false both ways, which would make the choice arbitrary.
	for i, v := range importance {
		if math.IsNaN(v) {
			return nil, fmt.Errorf("layer %d has importance NaN", i)
		}
	}
	if !contiguous {
		idx := make([]int, len(importance))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return importance[idx[a]] < importance[idx[b]] })
		out := append([]int(nil), idx[:n]...)
		sort.Ints(out)
		return out, nil
	}
	best, bestSum := 0, math.Inf(1)
	for start := 0; start+n <= len(importance); start++ {
		var sum float64
		for _, v := range importance[start : start+n] {
			sum += v
		}
		if sum < bestSum {
			best, bestSum = start, sum
		}
	}
	out := make([]int, n)
	for i := range out {
		out[i] = best + i
	}
	return out, nil
}

// SelectBlock picks the block of n layers to remove from block
// importances: entry l scores removing layers l..l+n−1 together (higher is
// more important), as a score pass with block = n measures them. Entries
// past len−n describe blocks cut short at the last layer and are not
// candidates. The earliest block wins ties.
func SelectBlock(importance []float64, n int) ([]int, error) {
	if n <= 0 || n >= len(importance) {
		return nil, fmt.Errorf("cannot remove %d of %d layers", n, len(importance))
	}
	best := -1
	for start := 0; start+n <= len(importance); start++ {
		v := importance[start]
		if math.IsNaN(v) {
			return nil, fmt.Errorf("the block at layer %d has importance NaN", start)
		}
		if best < 0 || v < importance[best] {
			best = start
		}
	}
	out := make([]int, n)
	for i := range out {
		out[i] = best + i
	}
	return out, nil
}

// BlockSize reads the block size a layer metric was measured with from a
// score table's method, which the score pass writes as parts joined by
// "+", e.g. "activations(...)+lm_loss(block=2)+accuracy(task=w,block=2)".
// Metrics measured one layer at a time without a block parameter
// (block_influence) report 1.
func BlockSize(method, metric string) (int, bool) {
	for _, part := range strings.Split(method, "+") {
		if part == metric {
			return 1, true
		}
		args, ok := strings.CutPrefix(part, metric+"(")
		if !ok {
			continue
		}
		args, ok = strings.CutSuffix(args, ")")
		if !ok {
			return 0, false
		}
		for _, a := range strings.Split(args, ",") {
			if v, ok := strings.CutPrefix(a, "block="); ok {
				n, err := strconv.Atoi(v)
				return n, err == nil && n > 0
			}
		}
		return 1, true
	}
	return 0, false
}
