// Package score is the `score` pass: Minitron importance estimation. One
// forward pass over calibration sequences gives the activation statistics
// of every MLP neuron, attention head and hidden channel; layer rankings
// come from the LM loss with a layer (or a contiguous block) removed, from
// Block Influence, or from multiple-choice accuracy with the block removed.
// The result is a scores.Table (higher = more important) for prune-width
// and prune-depth.
package score

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/tokenizer"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
)

// Layer metrics (Config.Layers and the keys of scores.Table.Layers).
const (
	MetricLMLoss         = "lm_loss"
	MetricBlockInfluence = "block_influence"
	MetricAccuracy       = "accuracy"
)

// Expert importance methods (Config.ExpertImportance), over the tokens of
// the calibration set.
const (
	// ExpertsMeanOutput is Model Optimizer's mcore_minitron rule: the mean,
	// over the tokens routed to the expert, of the L2 norm of its weighted
	// output ‖w·expert(x)‖₂.
	ExpertsMeanOutput = "mean_output"
	// ExpertsTotalOutput is the same norm summed over the tokens, so that
	// an expert that is rarely chosen counts for less.
	ExpertsTotalOutput = "total_output"
	// ExpertsProbMass is the routed probability mass: the router's softmax
	// probability of the expert summed over all tokens (before top-k).
	ExpertsProbMass = "prob_mass"
)

// DefaultSamples is the paper's calibration set size.
const DefaultSamples = 1024

// LayersFile is the per-layer CSV the pass writes beside scores.json.
const LayersFile = "layers.csv"

// Config is the pass block's schema.
type Config struct {
	Model recipe.Ref `hcl:"model"`
	// Dataset provides the calibration sequences (train split) and the LM
	// loss data (validation split). Only accuracy needs none.
	Dataset *recipe.Ref `hcl:"dataset,optional"`
	Samples *int        `hcl:"samples,optional"`
	SeqLen  *int        `hcl:"seq_len,optional"`
	Batch   *int        `hcl:"batch,optional"`
	// Seed draws the calibration sequences (and few-shot examples).
	Seed *int64 `hcl:"seed,optional"`
	// Activations collects MLP, head and hidden-channel scores (default
	// true).
	Activations *bool `hcl:"activations,optional"`
	// Layers lists the layer metrics to compute.
	Layers []string `hcl:"layers,optional"`
	// Block is the number of contiguous layers removed at a time by the
	// lm_loss and accuracy sweeps (default 1).
	Block *int `hcl:"block,optional"`
	// Task is the multiple-choice task of the accuracy metric.
	Task *recipe.Ref `hcl:"task,optional"`
	// ExpertImportance ranks the routed experts of a mixture-of-experts
	// model: mean_output (the default), total_output or prob_mass.
	ExpertImportance string `hcl:"expert_importance,optional"`
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "score",
		Description: "importance scores: activation statistics of neurons, heads and channels; layer rankings by LM loss, Block Influence or task accuracy",
		Produces:    recipe.SlotScores,
		NewConfig:   func() any { return &Config{} },
	}
}

// settings is a checked configuration.
type settings struct {
	samples, seqLen, batch, block int
	seed                          int64
	activations                   bool
	metrics                       []string
	experts                       string
}

func (s settings) has(metric string) bool {
	for _, m := range s.metrics {
		if m == metric {
			return true
		}
	}
	return false
}

func (c *Config) check(p *recipe.Pass, r *recipe.Recipe, cfg ir.Config) (settings, error) {
	s := settings{samples: DefaultSamples, seqLen: passutil.DefaultSeqLen(cfg), batch: passutil.DefaultBatch, block: 1, activations: true}
	if c.Samples != nil {
		if s.samples = *c.Samples; s.samples < 1 {
			return s, passutil.Errorf(p, "samples", "samples = %d must be at least 1", s.samples)
		}
	}
	if c.SeqLen != nil {
		s.seqLen = *c.SeqLen
		if s.seqLen < 2 {
			return s, passutil.Errorf(p, "seq_len", "seq_len = %d must be at least 2", s.seqLen)
		}
		if cfg.MaxSeq > 0 && s.seqLen > cfg.MaxSeq {
			return s, passutil.Errorf(p, "seq_len", "seq_len = %d exceeds the model's context of %d tokens", s.seqLen, cfg.MaxSeq)
		}
	}
	if c.Batch != nil {
		if s.batch = *c.Batch; s.batch < 1 {
			return s, passutil.Errorf(p, "batch", "batch = %d must be at least 1", s.batch)
		}
	}
	if c.Seed != nil {
		s.seed = *c.Seed
	}
	if c.Activations != nil {
		s.activations = *c.Activations
	}
	switch s.experts = c.ExpertImportance; s.experts {
	case "":
		s.experts = ExpertsMeanOutput
	case ExpertsMeanOutput, ExpertsTotalOutput, ExpertsProbMass:
	default:
		return s, passutil.Errorf(p, "expert_importance", "unknown expert_importance %q (want %s, %s or %s)", s.experts, ExpertsMeanOutput, ExpertsTotalOutput, ExpertsProbMass)
	}
	if c.ExpertImportance != "" && (!s.activations || !hasMoE(cfg)) {
		return s, passutil.Errorf(p, "expert_importance", "expert_importance ranks the experts of a mixture-of-experts model from its activations; this pass collects none or the model has no experts")
	}
	seen := map[string]bool{}
	for _, m := range c.Layers {
		switch m {
		case MetricLMLoss, MetricBlockInfluence, MetricAccuracy:
		default:
			return s, passutil.Errorf(p, "layers", "unknown layer metric %q (want %s, %s or %s)", m, MetricLMLoss, MetricBlockInfluence, MetricAccuracy)
		}
		if seen[m] {
			return s, passutil.Errorf(p, "layers", "layer metric %q listed twice", m)
		}
		seen[m] = true
		s.metrics = append(s.metrics, m)
	}
	if !s.activations && len(s.metrics) == 0 {
		return s, passutil.Errorf(p, "activations", "nothing to score: activations = false and no layer metrics; set activations = true or layers = [...]")
	}
	if c.Block != nil {
		s.block = *c.Block
		if s.block < 1 || s.block >= len(cfg.Layers) {
			return s, passutil.Errorf(p, "block", "block = %d must be between 1 and %d (the model has %d layers)", s.block, len(cfg.Layers)-1, len(cfg.Layers))
		}
		if !s.has(MetricLMLoss) && !s.has(MetricAccuracy) {
			return s, passutil.Errorf(p, "block", "block applies to the lm_loss and accuracy sweeps; neither is in layers")
		}
	}
	switch {
	case s.has(MetricAccuracy) && c.Task == nil:
		return s, passutil.Errorf(p, "layers", "the accuracy metric needs task = task.<name> (a multiple-choice task)")
	case !s.has(MetricAccuracy) && c.Task != nil:
		return s, passutil.Errorf(p, "task", "task is only used by the accuracy layer metric; add \"accuracy\" to layers")
	}
	if c.Dataset == nil && (s.activations || s.has(MetricLMLoss) || s.has(MetricBlockInfluence)) {
		return s, errors.New("give dataset = dataset.<name>: activations, lm_loss and block_influence run on its sequences")
	}
	if c.Dataset != nil {
		if err := passutil.CheckDataset(p, r, "dataset", *c.Dataset, false); err != nil {
			return s, err
		}
	}
	return s, nil
}

// Plan checks the options against the model; scores have no architecture.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	cfg, err := pc.Model(c.Model)
	if err != nil {
		return nil, err
	}
	s, err := c.check(p, pc.Recipe, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := pc.Tokenizer(c.Model); err != nil {
		return nil, err
	}
	// The block each layer metric is measured with, as Run records it in
	// the table's method (see prunedepth.BlockSize).
	blocks := map[string]int{}
	for _, m := range s.metrics {
		blocks[m] = 1
		if m != MetricBlockInfluence {
			blocks[m] = s.block
		}
	}
	pc.SetLayerMetrics(blocks)
	return nil, nil
}

// blocks lists the layer sets a removal sweep bypasses: the block of n
// layers starting at each layer, cut short at the last layer.
func blocks(layers, n int) [][]int {
	out := make([][]int, layers)
	for l := range out {
		for j := l; j < min(l+n, layers); j++ {
			out[l] = append(out[l], j)
		}
	}
	return out
}

// Run scores.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	sc := &scoring{rc: rc, p: p, c: c, cfg: m.Config, raw: map[string][]float64{}}
	if sc.s, err = c.check(p, rc.Recipe, sc.cfg); err != nil {
		return err
	}
	if err := sc.openBackend(ctx); err != nil {
		return err
	}
	if err := sc.prepareData(); err != nil {
		return err
	}
	id, _, release, err := passutil.LoadModel(ctx, rc, sc.be, c.Model, false)
	if err != nil {
		return err
	}
	defer release()
	sc.id = id
	sc.t = &scores.Table{Samples: sc.calibRows}
	sc.countStages()

	s := sc.s
	if s.activations || s.has(MetricBlockInfluence) {
		if err := sc.statistics(ctx); err != nil {
			return err
		}
	}
	sweep := blocks(len(sc.cfg.Layers), s.block)
	if s.has(MetricLMLoss) {
		if err := sc.lossSweep(ctx, sweep); err != nil {
			return err
		}
	}
	if s.has(MetricAccuracy) {
		if err := sc.accuracySweep(ctx, sweep); err != nil {
			return err
		}
	}
	rc.Progress(sc.stages, sc.stages, "done")
	return sc.finish()
}

// scoring is one Run in progress: what its stages share.
type scoring struct {
	rc  *pipeline.RunContext
	p   *recipe.Pass
	c   *Config
	cfg ir.Config
	s   settings
	be  backend.Backend
	tok *tokenizer.Tokenizer
	id  backend.ModelID

	// calib holds the calibration rows drawn from the train split;
	// lmData the LM-loss rows, from the validation split when there is one.
	calib, lmData backend.Sequences
	calibRows     int

	t      *scores.Table
	method []string
	raw    map[string][]float64 // extra CSV columns: the sweeps' raw values

	stage, stages int
}

// openBackend opens the pass's backend, checks it offers what the chosen
// metrics need, and the model's tokenizer.
func (sc *scoring) openBackend(ctx context.Context) error {
	s := sc.s
	be, err := sc.rc.Backend(ctx)
	if err != nil {
		return err
	}
	var caps []string
	if s.activations || s.has(MetricBlockInfluence) {
		caps = append(caps, backend.CapStats)
	}
	if s.has(MetricLMLoss) || s.has(MetricAccuracy) {
		caps = append(caps, backend.CapEvaluate)
	}
	if _, err := passutil.CheckCaps(ctx, be, caps...); err != nil {
		return err
	}
	sc.be = be
	sc.tok, err = sc.rc.Tokenizer(sc.c.Model)
	return err
}

// prepareData does everything that reads the dataset: calibration rows
// drawn from the train split, LM-loss rows from the validation split.
func (sc *scoring) prepareData() error {
	c, s, rc := sc.c, sc.s, sc.rc
	if c.Dataset == nil {
		return nil
	}
	prep, err := rc.PrepareDataset(*c.Dataset, sc.tok, data.Options{SeqLen: s.seqLen})
	if err != nil {
		return err
	}
	sc.calib, sc.calibRows, err = passutil.SampleRows(prep.Train, filepath.Dir(prep.Train.Path), "calib", s.samples, s.seed)
	if err != nil {
		return fmt.Errorf("drawing calibration sequences from %s: %w", *c.Dataset, err)
	}
	if sc.calibRows < s.samples {
		rc.Log.Info("the dataset has fewer sequences than samples; using them all", "sequences", sc.calibRows, "samples", s.samples)
	}
	sc.lmData = sc.calib
	if prep.Validation.Path != "" {
		sc.lmData = prep.Validation
		sc.lmData.Limit = s.samples
	}
	rc.Metric("samples", sc.calibRows)
	rc.Metric("seq_len", s.seqLen)
	return nil
}

// countStages counts the backend calls the pass reports progress by.
func (sc *scoring) countStages() {
	s := sc.s
	for _, on := range []bool{s.activations || s.has(MetricBlockInfluence), s.has(MetricLMLoss), s.has(MetricAccuracy)} {
		if on {
			sc.stages++
		}
	}
}

// statistics collects the activation statistics and Block Influence in
// one pass over the calibration rows.
func (sc *scoring) statistics(ctx context.Context) error {
	s, t, rc := sc.s, sc.t, sc.rc
	rc.Progress(sc.stage, sc.stages, fmt.Sprintf("activation statistics over %d sequences", sc.calibRows))
	st, err := sc.be.Stats(ctx, backend.StatsRequest{Model: sc.id, Data: sc.calib, BatchSize: s.batch,
		Activations: s.activations, BlockInfluence: s.has(MetricBlockInfluence)})
	if err != nil {
		return fmt.Errorf("activation statistics: %w", err)
	}
	if err := checkStats(sc.cfg, st, s.activations, s.has(MetricBlockInfluence)); err != nil {
		return fmt.Errorf("the backend's statistics do not fit %s: %w", sc.c.Model, err)
	}
	if s.activations {
		t.Hidden, t.Heads, t.MLP = st.Hidden, st.Heads, st.MLP
		method := fmt.Sprintf("activations(samples=%d,seq_len=%d)", sc.calibRows, s.seqLen)
		if hasMoE(sc.cfg) {
			t.Experts = ExpertScores(sc.cfg, st, s.experts)
			t.ExpertMLP, t.SharedMLP = st.ExpertMLP, st.SharedMLP
			method = fmt.Sprintf("activations(samples=%d,seq_len=%d,experts=%s)", sc.calibRows, s.seqLen, s.experts)
		}
		sc.method = append(sc.method, method)
	}
	if s.has(MetricBlockInfluence) {
		setLayer(t, MetricBlockInfluence, st.BlockInfluence)
		sc.method = append(sc.method, MetricBlockInfluence)
	}
	rc.Metric("tokens", st.Tokens)
	sc.stage++
	return nil
}

// lossSweep ranks layers by the LM loss gained with each block removed.
func (sc *scoring) lossSweep(ctx context.Context, sweep [][]int) error {
	s, rc := sc.s, sc.rc
	rc.Progress(sc.stage, sc.stages, fmt.Sprintf("LM loss with each of %d blocks of %d layers removed", len(sweep), s.block))
	ev, err := sc.be.Evaluate(ctx, backend.EvalRequest{Model: sc.id, LM: &sc.lmData, SkipLayers: sweep, BatchSize: s.batch})
	if err != nil {
		return fmt.Errorf("layer-removal sweep: %w", err)
	}
	if ev.LM == nil || len(ev.Skipped) != len(sweep) {
		return fmt.Errorf("the backend answered a sweep of %d removals with %d results", len(sweep), len(ev.Skipped))
	}
	imp, removed := make([]float64, len(sweep)), make([]float64, len(sweep))
	for i, r := range ev.Skipped {
		if r.LM == nil {
			return fmt.Errorf("the backend returned no loss with layers %v removed", sweep[i])
		}
		removed[i] = r.LM.Loss
		imp[i] = r.LM.Loss - ev.LM.Loss
	}
	setLayer(sc.t, MetricLMLoss, imp)
	sc.raw[MetricLMLoss+"_removed"] = removed
	rc.Metric("baseline_loss", ev.LM.Loss)
	sc.method = append(sc.method, fmt.Sprintf("%s(block=%d)", MetricLMLoss, s.block))
	sc.stage++
	return nil
}

// accuracySweep ranks layers by the task accuracy lost with each block
// removed.
func (sc *scoring) accuracySweep(ctx context.Context, sweep [][]int) error {
	c, s, rc := sc.c, sc.s, sc.rc
	task, err := rc.PrepareTask(*c.Task, sc.tok, uint64(s.seed))
	if err != nil {
		return err
	}
	if len(task.Choices) == 0 {
		return passutil.Errorf(sc.p, "task", "%s has no multiple-choice items (schema %s); the accuracy metric needs a multiple-choice task", *c.Task, task.Schema)
	}
	rc.Progress(sc.stage, sc.stages, fmt.Sprintf("%s accuracy with each of %d blocks of %d layers removed", c.Task.Name, len(sweep), s.block))
	ev, err := sc.be.Evaluate(ctx, backend.EvalRequest{Model: sc.id, Choices: task.Choices, SkipLayers: sweep, BatchSize: s.batch})
	if err != nil {
		return fmt.Errorf("layer-removal sweep on %s: %w", *c.Task, err)
	}
	if ev.Choices == nil || len(ev.Skipped) != len(sweep) {
		return fmt.Errorf("the backend answered a sweep of %d removals with %d results", len(sweep), len(ev.Skipped))
	}
	imp, removed := make([]float64, len(sweep)), make([]float64, len(sweep))
	for i, r := range ev.Skipped {
		if r.Choices == nil {
			return fmt.Errorf("the backend returned no accuracy with layers %v removed", sweep[i])
		}
		removed[i] = r.Choices.Accuracy
		imp[i] = ev.Choices.Accuracy - r.Choices.Accuracy
	}
	setLayer(sc.t, MetricAccuracy, imp)
	sc.raw[MetricAccuracy+"_removed"] = removed
	rc.Metric("baseline_accuracy", ev.Choices.Accuracy)
	rc.Metric("task_items", ev.Choices.Items)
	sc.method = append(sc.method, fmt.Sprintf("%s(task=%s,block=%d)", MetricAccuracy, c.Task.Name, s.block))
	sc.stage++
	return nil
}

// finish records the method and layer metrics, writes layers.csv and
// publishes the table.
func (sc *scoring) finish() error {
	t, rc := sc.t, sc.rc
	t.Method = strings.Join(sc.method, "+")
	for _, m := range sc.s.metrics {
		rc.Metric("layers."+m, t.Layers[m])
	}
	if len(sc.s.metrics) > 0 {
		if err := writeLayers(filepath.Join(rc.Dir, LayersFile), sc.s.metrics, t, sc.raw); err != nil {
			return err
		}
	}
	rc.SetScores(t)
	return nil
}

func setLayer(t *scores.Table, metric string, v []float64) {
	if t.Layers == nil {
		t.Layers = map[string][]float64{}
	}
	t.Layers[metric] = v
}

// checkStats verifies that a backend's answer has one score per unit of
// the model, so that a faulty backend cannot produce a table that prunes
// the wrong units.
func checkStats(cfg ir.Config, st *backend.StatsResult, activations, bi bool) error {
	n := len(cfg.Layers)
	if activations {
		if len(st.Hidden) != cfg.Hidden {
			return fmt.Errorf("%d hidden-channel scores for hidden size %d", len(st.Hidden), cfg.Hidden)
		}
		if len(st.MLP) != n || len(st.Heads) != n {
			return fmt.Errorf("MLP and head scores for %d and %d layers, the model has %d", len(st.MLP), len(st.Heads), n)
		}
		if err := checkExpertStats(cfg, st); err != nil {
			return err
		}
		for l, lc := range cfg.Layers {
			if len(st.MLP[l]) != lc.MLP {
				return fmt.Errorf("layer %d: %d MLP scores for %d neurons", l, len(st.MLP[l]), lc.MLP)
			}
			if len(st.Heads[l]) != lc.Heads {
				return fmt.Errorf("layer %d: %d head scores for %d heads", l, len(st.Heads[l]), lc.Heads)
			}
		}
	}
	if bi && len(st.BlockInfluence) != n {
		return fmt.Errorf("%d Block Influence values for %d layers", len(st.BlockInfluence), n)
	}
	return nil
}

// writeLayers writes one row per layer: the importance under each metric,
// then the raw sweep values (loss or accuracy with the block removed).
func writeLayers(path string, metrics []string, t *scores.Table, extra map[string][]float64) error {
	cols := append([]string(nil), metrics...)
	for _, m := range metrics {
		if _, ok := extra[m+"_removed"]; ok {
			cols = append(cols, m+"_removed")
		}
	}
	var b strings.Builder
	b.WriteString("layer," + strings.Join(cols, ",") + "\n")
	rows := len(t.Layers[metrics[0]])
	for l := 0; l < rows; l++ {
		b.WriteString(strconv.Itoa(l))
		for _, col := range cols {
			v, ok := t.Layers[col]
			if !ok {
				v = extra[col]
			}
			b.WriteString("," + strconv.FormatFloat(v[l], 'g', -1, 64))
		}
		b.WriteString("\n")
	}
	return fsutil.WriteFile(path, []byte(b.String()))
}

func hasMoE(cfg ir.Config) bool {
	for _, l := range cfg.Layers {
		if l.MoE() {
			return true
		}
	}
	return false
}

// checkExpertStats verifies the mixture-of-experts fields: one entry per
// expert and neuron of every MoE layer, none for dense layers.
func checkExpertStats(cfg ir.Config, st *backend.StatsResult) error {
	if !hasMoE(cfg) {
		return nil
	}
	n := len(cfg.Layers)
	if len(st.ExpertMLP) != n || len(st.ExpertProb) != n || len(st.ExpertOutput) != n || len(st.ExpertTokens) != n || len(st.SharedMLP) != n {
		return fmt.Errorf("expert statistics for %d/%d/%d/%d/%d layers (neurons/probability/output/tokens/shared), the model has %d",
			len(st.ExpertMLP), len(st.ExpertProb), len(st.ExpertOutput), len(st.ExpertTokens), len(st.SharedMLP), n)
	}
	for l, lc := range cfg.Layers {
		if len(st.ExpertProb[l]) != lc.Experts || len(st.ExpertOutput[l]) != lc.Experts || len(st.ExpertTokens[l]) != lc.Experts || len(st.ExpertMLP[l]) != lc.Experts {
			return fmt.Errorf("layer %d: expert statistics for %d/%d/%d/%d experts (probability/output/tokens/neurons), the layer has %d",
				l, len(st.ExpertProb[l]), len(st.ExpertOutput[l]), len(st.ExpertTokens[l]), len(st.ExpertMLP[l]), lc.Experts)
		}
		for e, v := range st.ExpertMLP[l] {
			if len(v) != lc.ExpertMLP {
				return fmt.Errorf("layer %d expert %d: %d neuron scores for %d neurons", l, e, len(v), lc.ExpertMLP)
			}
		}
		if len(st.SharedMLP[l]) != lc.SharedMLP {
			return fmt.Errorf("layer %d: %d shared-expert scores for %d neurons", l, len(st.SharedMLP[l]), lc.SharedMLP)
		}
	}
	return nil
}

// ExpertScores ranks every MoE layer's routed experts by method (one of
// the Experts* constants); dense layers get nil. An expert no token was
// routed to scores 0 under mean_output, as in Model Optimizer.
func ExpertScores(cfg ir.Config, st *backend.StatsResult, method string) [][]float64 {
	out := make([][]float64, len(cfg.Layers))
	for l, lc := range cfg.Layers {
		if !lc.MoE() {
			continue
		}
		v := make([]float64, lc.Experts)
		for e := range v {
			switch method {
			case ExpertsProbMass:
				v[e] = st.ExpertProb[l][e]
			case ExpertsTotalOutput:
				v[e] = st.ExpertOutput[l][e]
			default:
				if n := st.ExpertTokens[l][e]; n > 0 {
					v[e] = st.ExpertOutput[l][e] / float64(n)
				}
			}
		}
		out[l] = v
	}
	return out
}
