package search

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/tokenizer"
	"github.com/whittle-ml/whittle/passes/eval"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
	"github.com/whittle-ml/whittle/passes/prunedepth"
	"github.com/whittle-ml/whittle/passes/prunewidth"
)

// ResultsFile is the table of candidates the pass writes in its directory.
const ResultsFile = "candidates.json"

// cacheVersion changes when what a cached score means changes.
const cacheVersion = "search-score-v1"

// Score is a scored candidate's result.
type Score struct {
	// Value is the objective: LM loss (lower is better) or accuracy.
	Value float64 `json:"value"`
	// Tokens (lm_loss) or Items (accuracy) were scored.
	Tokens int `json:"tokens,omitempty"`
	Items  int `json:"items,omitempty"`
	// Dropped are the layers the candidate removed.
	Dropped []int `json:"dropped_layers,omitempty"`
	// RetrainLoss is the final training loss of the retraining.
	RetrainLoss *float64 `json:"retrain_loss,omitempty"`
	Seconds     float64  `json:"seconds"`
	// Key is the content key the score is cached under.
	Key string `json:"key"`
}

// Row is one candidate of the results table.
type Row struct {
	Rank int `json:"rank"` // 1 = closest to the budget
	Candidate
	Scored bool   `json:"scored"`
	Score  *Score `json:"score,omitempty"`
	// Cached marks a score read back from an earlier, interrupted run.
	Cached bool `json:"cached,omitempty"`
	Winner bool `json:"winner,omitempty"`
}

// Results is candidates.json.
type Results struct {
	Model     string `json:"model"`
	Objective string `json:"objective"`
	// LowerIsBetter is true for lm_loss.
	LowerIsBetter bool  `json:"lower_is_better"`
	RetrainTokens int64 `json:"retrain_tokens,omitempty"`
	// Pick is "random" when the winner was drawn from the first PickedFrom
	// candidates (by Seed) instead of being the best scored ("" = best).
	Pick       string `json:"pick,omitempty"`
	PickedFrom int    `json:"picked_from,omitempty"`
	Seed       int64  `json:"seed,omitempty"`
	Budget     struct {
		Params        int64   `json:"params,omitempty"`
		ActiveParams  int64   `json:"active_params,omitempty"`
		Memory        int64   `json:"memory_bytes,omitempty"`
		FLOPsPerToken int64   `json:"flops_per_token,omitempty"`
		SeqLen        int     `json:"seq_len"`
		Batch         int     `json:"batch"`
		Tolerance     float64 `json:"tolerance"`
	} `json:"budget"`
	SpaceSize int   `json:"space_size"`
	Rows      []Row `json:"candidates"`
}

// Winner is the winning row, or nil.
func (r *Results) Winner() *Row {
	for i := range r.Rows {
		if r.Rows[i].Winner {
			return &r.Rows[i]
		}
	}
	return nil
}

// scorer holds what scoring candidates shares.
type scorer struct {
	c        *Config
	p        *recipe.Pass
	rc       *pipeline.RunContext
	s        settings
	m        *ir.Model
	table    *scores.Table
	tok      *tokenizer.Tokenizer
	be       backend.Backend
	keyBase  string
	cacheDir string

	val       *backend.Sequences
	trainRows backend.Sequences
	teacher   backend.ModelID
	release   func()
}

// Run scores the top candidates and produces the best.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	s, err := c.resolve(p, rc.Recipe, m.Config)
	if err != nil {
		return err
	}
	all, fit, err := c.plan(s, m.Config)
	if err != nil {
		return err
	}
	table, err := rc.Scores(c.Scores)
	if err != nil {
		return err
	}
	sc := &scorer{c: c, p: p, rc: rc, s: s, m: m, table: table, release: func() {}}
	defer func() { sc.release() }()
	if err := sc.prepare(ctx); err != nil {
		return err
	}
	res := &Results{Model: c.Model.String(), Objective: s.objective, LowerIsBetter: s.objective == ObjectiveLMLoss, SpaceSize: len(all)}
	if s.retrain != nil {
		res.RetrainTokens = *c.RetrainTokens
	}
	b := &res.Budget
	b.Params, b.ActiveParams, b.Memory, b.FLOPsPerToken = s.budget.Params, s.budget.ActiveParams, s.budget.Memory, s.budget.FLOPs
	b.SeqLen, b.Batch, b.Tolerance = s.budget.SeqLen, s.budget.Batch, s.budget.Tolerance
	k := min(s.topK, len(fit))
	// Which of the top k are scored: all, or the random pick alone.
	scoreIt := func(i int) bool { return i < k }
	if s.pick == PickRandom {
		pick := RandomPick(s.Seed, k)
		scoreIt = func(i int) bool { return i == pick }
		res.Pick, res.PickedFrom, res.Seed = PickRandom, k, s.Seed
	}
	best := -1
	var scoredRows []Row
	for i, cand := range fit {
		row := Row{Rank: i + 1, Candidate: cand, Scored: scoreIt(i)}
		if row.Scored {
			if err := ctx.Err(); err != nil {
				return err
			}
			rc.Progress(i, k, fmt.Sprintf("candidate %d/%d: %s", i+1, k, cand.Sizes))
			score, cached, err := sc.score(ctx, cand.Sizes)
			if err != nil {
				return fmt.Errorf("candidate %s: %w", cand.Sizes, err)
			}
			row.Score, row.Cached = score, cached
			rc.Report(pipeline.Update{Done: i + 1, Total: k, Msg: fmt.Sprintf("candidate %d/%d scored: %s = %.4f", i+1, k, s.objective, score.Value), Log: true})
			if best < 0 || better(score.Value, res.Rows[best].Score.Value, res.LowerIsBetter) {
				best = i
			}
		}
		res.Rows = append(res.Rows, row)
	}
	res.Rows[best].Winner = true
	for _, row := range res.Rows {
		if row.Scored {
			scoredRows = append(scoredRows, row)
		}
	}
	w := res.Rows[best]
	out, _, err := sc.prune(w.Sizes)
	if err != nil {
		return err
	}
	if err := writeResults(filepath.Join(rc.Dir, ResultsFile), res); err != nil {
		return err
	}
	rc.Metric("space_size", len(all))
	rc.Metric("candidates", len(fit))
	rc.Metric("scored", len(scoredRows))
	rc.Metric("winner", w.Sizes)
	rc.Metric("winner_rank", w.Rank)
	rc.Metric("winner_"+s.objective, w.Score.Value)
	rc.Metric("params_before", m.Config.Params().Total)
	rc.Metric("params_after", out.Config.Params().Total)
	// Every scored candidate, for the manifest: the table of the search.
	rc.Metric("table", scoredRows)
	rc.SetModel(out)
	return nil
}

func better(a, b float64, lower bool) bool {
	if lower {
		return a < b
	}
	return a > b
}

func writeResults(path string, r *Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, append(b, '\n'))
}

// ReadResults reads a search pass's candidates.json.
func ReadResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// prepare opens the backend, tokenizes the data, loads the teacher when
// candidates are retrained, and computes the part of the cache key every
// candidate shares.
func (sc *scorer) prepare(ctx context.Context) error {
	c, s, rc := sc.c, sc.s, sc.rc
	be, err := rc.Backend(ctx)
	if err != nil {
		return err
	}
	caps := []string{backend.CapEvaluate}
	if s.retrain != nil {
		caps = append(caps, backend.CapTrain)
	}
	if _, err := passutil.CheckCaps(ctx, be, caps...); err != nil {
		return err
	}
	sc.be = be
	if sc.tok, err = rc.Tokenizer(c.Model); err != nil {
		return err
	}
	h := sha256.New()
	fmt.Fprintf(h, "version=%s\nobjective=%s\nsequences=%d\nseq_len=%d\nbatch=%d\nseed=%d\nmetric=%s\nselection=%s\n",
		cacheVersion, s.objective, s.Sequences, s.SeqLen, s.Batch, s.Seed, c.Metric, c.Selection)
	refs := []recipe.Ref{c.Model, c.Scores}
	if c.Dataset != nil {
		refs = append(refs, *c.Dataset)
	}
	if c.Task != nil {
		refs = append(refs, *c.Task)
	}
	for _, ref := range refs {
		hash, err := rc.Hash(ref)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s=%s\n", ref, hash)
	}
	// Backends differ in rounding, so scores from another one are not reused.
	if sc.p.Backend != nil {
		fmt.Fprintf(h, "backend=%s\n", sc.p.Backend.Name)
	}
	if t := s.retrain; t != nil {
		fmt.Fprintf(h, "retrain_tokens=%d\nsteps=%d\noptim=%+v\nmode=%s\n", *c.RetrainTokens, t.Steps, t.Optim, t.Mode)
	}
	if sc.s.nonUniform {
		fmt.Fprintf(h, "uniform=false\nnormalize=%s\n", c.Normalize)
	}
	sc.keyBase = hex.EncodeToString(h.Sum(nil))
	// Outside the pass directory, which the pipeline clears before a
	// pass runs again: the cache must survive an interrupted run.
	sc.cacheDir = filepath.Join(rc.RunDir, "search", sc.p.Name)

	if c.Dataset != nil {
		prep, err := rc.PrepareDataset(*c.Dataset, sc.tok, data.Options{SeqLen: s.SeqLen})
		if err != nil {
			return err
		}
		if s.objective == ObjectiveLMLoss {
			if prep.Validation.Path == "" {
				return passutil.Errorf(sc.p, "dataset", "%s has no validation split (validation_fraction = 0); candidates are scored on held-out text", *c.Dataset)
			}
			v := prep.Validation
			v.Limit = s.Sequences
			sc.val = &v
		}
		if s.retrain != nil {
			if sc.trainRows, err = s.retrain.TrainRows(prep); err != nil {
				return fmt.Errorf("shuffling %s: %w", *c.Dataset, err)
			}
		}
	}
	return nil
}

// key is a candidate's content key.
func (sc *scorer) key(sz Sizes) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%+v\n", sc.keyBase, sz)
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// prune builds a candidate from the model and the scores: width by
// prune-width's rule, then the layers the metric ranks least important.
func (sc *scorer) prune(sz Sizes) (*ir.Model, []int, error) {
	if sc.s.nonUniform {
		return sc.pruneNonUniform(sz)
	}
	m := sc.m
	l := m.Config.Layers[0]
	out := m
	var err error
	if sz.Hidden != m.Config.Hidden || sz.MLP != l.MLP || sz.Heads != l.Heads || sz.KVHeads != l.KVHeads {
		if out, err = prunewidth.Prune(m, sc.table, sz.Hidden, sz.MLP, sz.Heads, sz.KVHeads); err != nil {
			return nil, nil, err
		}
	}
	n := len(m.Config.Layers) - sz.Layers
	if n == 0 {
		return out, nil, nil
	}
	drop, err := sc.dropLayers(n)
	if err != nil {
		return nil, nil, err
	}
	out, err = out.DropLayers(drop)
	return out, drop, err
}

// dropLayers is the layers the metric ranks least important, n of them.
func (sc *scorer) dropLayers(n int) ([]int, error) {
	imp, ok := sc.table.Layers[sc.c.Metric]
	if !ok {
		return nil, fmt.Errorf("%s has no layer metric %q", sc.c.Scores, sc.c.Metric)
	}
	drop, err := prunedepth.Select(imp, n, sc.c.Selection != "individual")
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", sc.c.Scores, sc.c.Metric, err)
	}
	return drop, nil
}

// pruneNonUniform builds a non-uniform candidate: the layers first, so
// that the MLP and KV-head totals are spent over the layers that stay,
// then width ranked across those layers.
func (sc *scorer) pruneNonUniform(sz Sizes) (*ir.Model, []int, error) {
	m, table := sc.m, sc.table
	var drop []int
	if n := len(m.Config.Layers) - sz.Layers; n > 0 {
		var err error
		if drop, err = sc.dropLayers(n); err != nil {
			return nil, nil, err
		}
		if m, err = m.DropLayers(drop); err != nil {
			return nil, nil, err
		}
		table = keptLayers(table, drop)
	}
	l := sc.m.Config.Layers[0]
	out, err := prunewidth.PruneNonUniform(m, table, prunewidth.NonUniformTargets{
		Hidden: sz.Hidden, MLP: sz.MLP * sz.Layers, KVHeads: sz.KVHeads * sz.Layers,
		RoundTo: prunewidth.DefaultRoundTo(l.MLP), Normalize: sc.c.Normalize,
	})
	return out, drop, err
}

// keptLayers is the scores table without the per-layer entries of the
// dropped layers.
func keptLayers(t *scores.Table, drop []int) *scores.Table {
	dropped := map[int]bool{}
	for _, l := range drop {
		dropped[l] = true
	}
	out := *t
	out.MLP, out.Heads = nil, nil
	for l := range t.MLP {
		if !dropped[l] {
			out.MLP = append(out.MLP, t.MLP[l])
			out.Heads = append(out.Heads, t.Heads[l])
		}
	}
	return &out
}

// score returns a candidate's score, from the cache when an earlier run
// computed it.
func (sc *scorer) score(ctx context.Context, sz Sizes) (*Score, bool, error) {
	key := sc.key(sz)
	path := filepath.Join(sc.cacheDir, key+".json")
	if b, err := os.ReadFile(path); err == nil {
		var s Score
		if err := json.Unmarshal(b, &s); err == nil && s.Key == key {
			return &s, true, nil
		}
		sc.rc.Log.Warn("ignoring an unreadable cached score", "file", path)
	}
	start := time.Now()
	cand, drop, err := sc.prune(sz)
	if err != nil {
		return nil, false, err
	}
	dir := filepath.Join(sc.cacheDir, key+".model")
	if err := hf.Save(cand, dir, hf.SaveOptions{}); err != nil {
		return nil, false, fmt.Errorf("writing the candidate for the backend: %w", err)
	}
	defer os.RemoveAll(dir)
	id, err := sc.be.Load(ctx, backend.LoadRequest{Dir: dir, Trainable: sc.s.retrain != nil})
	if err != nil {
		return nil, false, fmt.Errorf("loading the candidate into the backend: %w", err)
	}
	defer func() {
		if err := sc.be.Release(context.WithoutCancel(ctx), id); err != nil {
			sc.rc.Log.Warn("releasing a candidate", "err", err)
		}
	}()
	s := &Score{Dropped: drop, Key: key}
	if sc.s.retrain != nil {
		if err := sc.retrain(ctx, id, s); err != nil {
			return nil, false, err
		}
	}
	if err := sc.evaluate(ctx, id, s); err != nil {
		return nil, false, err
	}
	s.Seconds = time.Since(start).Seconds()
	b, err := json.Marshal(s)
	if err != nil {
		return nil, false, err
	}
	if err := fsutil.WriteFile(path, b); err != nil {
		return nil, false, fmt.Errorf("caching the score: %w", err)
	}
	return s, false, nil
}

// retrain distills the loaded candidate from the model.
func (sc *scorer) retrain(ctx context.Context, id backend.ModelID, s *Score) error {
	if sc.teacher == "" {
		tid, _, release, err := passutil.LoadModel(ctx, sc.rc, sc.be, sc.c.Model, false)
		if err != nil {
			return err
		}
		sc.teacher, sc.release = tid, release
	}
	t := sc.s.retrain
	req := t.Request(id, sc.teacher, backend.ObjectiveKL, backend.LossConfig{Temperature: 1}, sc.trainRows)
	res, err := sc.be.Train(ctx, req, func(ev backend.TrainEvent) {
		sc.rc.Report(pipeline.Update{Done: ev.Step, Total: t.Steps, Unit: pipeline.UnitStep, Tokens: ev.Tokens, Msg: fmt.Sprintf("retraining: loss %.4f", ev.Loss)})
	})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return fmt.Errorf("retraining: %w", err)
	}
	loss := res.FinalLoss
	s.RetrainLoss = &loss
	return nil
}

// evaluate scores the loaded candidate by the objective.
func (sc *scorer) evaluate(ctx context.Context, id backend.ModelID, s *Score) error {
	if sc.s.objective == ObjectiveAccuracy {
		ts, err := eval.TaskAccuracy(ctx, sc.rc, sc.be, id, *sc.c.Task, sc.tok, sc.s.Seed, sc.s.Batch)
		if err != nil {
			return err
		}
		s.Value, s.Items = ts.Accuracy, ts.Items
		return nil
	}
	ev, err := sc.be.Evaluate(ctx, backend.EvalRequest{Model: id, LM: sc.val, BatchSize: sc.s.Batch})
	if err != nil {
		return fmt.Errorf("LM loss: %w", err)
	}
	if ev.LM == nil {
		return errors.New("LM loss: the backend returned none")
	}
	s.Value, s.Tokens = ev.LM.Loss, ev.LM.Tokens
	return nil
}
