// Package eval is the `eval` pass: language-model loss and perplexity on
// held-out text, zero- or few-shot multiple-choice accuracy, LAMBADA-style
// last-word accuracy, and sample generations. It produces no slot; the
// numbers go to the pass's metrics and to eval.json.
package eval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/tokenizer"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
)

// Files the pass writes into its directory.
const (
	ReportFile  = "eval.json"
	SamplesFile = "samples.txt"
)

// DefaultMaxTokens is how many tokens a sample generates by default.
const DefaultMaxTokens = 64

// now is the clock that times LM evaluation; tests replace it.
var now = time.Now

// Config is the pass block's schema.
type Config struct {
	Model recipe.Ref `hcl:"model"`
	// Datasets are scored by LM loss on Split (default validation).
	Datasets  []recipe.Ref `hcl:"datasets,optional"`
	Split     *string      `hcl:"split,optional"`
	Sequences *int         `hcl:"sequences,optional"`
	SeqLen    *int         `hcl:"seq_len,optional"`
	Batch     *int         `hcl:"batch,optional"`
	// Tasks are multiple-choice or last-word tasks.
	Tasks []recipe.Ref `hcl:"tasks,optional"`
	// Seed draws few-shot examples and seeds sampling.
	Seed *int64 `hcl:"seed,optional"`
	// Prompts are continued by MaxTokens generated tokens each.
	Prompts     []string `hcl:"prompts,optional"`
	MaxTokens   *int     `hcl:"max_tokens,optional"`
	Temperature *float64 `hcl:"temperature,optional"`
	TopP        *float64 `hcl:"top_p,optional"`
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "eval",
		Description: "evaluate a model: LM loss and perplexity, multiple-choice and last-word accuracy, sample generations",
		NewConfig:   func() any { return &Config{} },
	}
}

type settings struct {
	passutil.EvalSizes
	split             string
	maxTokens         int
	temperature, topP float64
}

func (c *Config) check(p *recipe.Pass, r *recipe.Recipe, cfg ir.Config) (settings, error) {
	s := settings{split: "validation", maxTokens: DefaultMaxTokens, topP: 1}
	if len(c.Datasets) == 0 && len(c.Tasks) == 0 && len(c.Prompts) == 0 {
		return s, errors.New("nothing to evaluate: give datasets, tasks or prompts")
	}
	if c.Split != nil {
		s.split = *c.Split
		if s.split != "validation" && s.split != "train" {
			return s, passutil.Errorf(p, "split", "unknown split %q (want validation or train)", s.split)
		}
	}
	var err error
	if s.EvalSizes, err = passutil.ResolveEvalSizes(p, cfg, c.Sequences, c.SeqLen, c.Batch, c.Seed); err != nil {
		return s, err
	}
	if c.MaxTokens != nil {
		if s.maxTokens = *c.MaxTokens; s.maxTokens < 1 {
			return s, passutil.Errorf(p, "max_tokens", "max_tokens = %d must be at least 1", s.maxTokens)
		}
	}
	if c.Temperature != nil {
		if s.temperature = *c.Temperature; !(s.temperature >= 0) || math.IsInf(s.temperature, 0) {
			return s, passutil.Errorf(p, "temperature", "temperature = %g must be a non-negative number (0 = greedy)", s.temperature)
		}
	}
	if c.TopP != nil {
		if s.topP = *c.TopP; !(s.topP > 0 && s.topP <= 1) {
			return s, passutil.Errorf(p, "top_p", "top_p = %g must be in (0, 1]", s.topP)
		}
	}
	if len(c.Prompts) == 0 {
		for _, a := range []string{"max_tokens", "temperature", "top_p"} {
			if passutil.HasAttr(p, a) {
				return s, passutil.Errorf(p, a, "%s applies to generation; give prompts = [...]", a)
			}
		}
	}
	seen := map[string]bool{}
	for _, d := range c.Datasets {
		if seen[d.Name] {
			return s, passutil.Errorf(p, "datasets", "%s listed twice", d)
		}
		seen[d.Name] = true
		if err := passutil.CheckDataset(p, r, "datasets", d, false); err != nil {
			return s, err
		}
	}
	seen = map[string]bool{}
	for _, t := range c.Tasks {
		if seen[t.Name] {
			return s, passutil.Errorf(p, "tasks", "%s listed twice", t)
		}
		seen[t.Name] = true
	}
	return s, nil
}

// Plan checks the options; eval produces nothing.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	cfg, err := pc.Model(c.Model)
	if err != nil {
		return nil, err
	}
	if _, err := pc.Tokenizer(c.Model); err != nil {
		return nil, err
	}
	_, err = c.check(p, pc.Recipe, cfg)
	return nil, err
}

// Report is eval.json.
type Report struct {
	Model    string         `json:"model"`
	Datasets []DatasetScore `json:"datasets,omitempty"`
	Tasks    []TaskScore    `json:"tasks,omitempty"`
	Samples  []Sample       `json:"samples,omitempty"`
}

// DatasetScore is the LM evaluation of one dataset.
type DatasetScore struct {
	Name       string  `json:"name"`
	Split      string  `json:"split"`
	SeqLen     int     `json:"seq_len"`
	Sequences  int     `json:"sequences"`
	Tokens     int     `json:"tokens"`
	Loss       float64 `json:"loss"`
	Perplexity float64 `json:"perplexity"`
}

// TaskScore is the evaluation of one task.
type TaskScore struct {
	Name    string `json:"name"`
	Schema  string `json:"schema"`
	FewShot int    `json:"few_shot"`
	Items   int    `json:"items"`
	// Accuracy is multiple-choice accuracy (lowest summed NLL,
	// lm-evaluation-harness's acc) or last-word accuracy (exact greedy
	// reproduction).
	Accuracy float64 `json:"accuracy"`
	// AccuracyNorm (multiple choice) uses the NLL per character of the
	// continuation (lm-evaluation-harness's acc_norm); AccuracyNormTokens
	// the NLL per continuation token.
	AccuracyNorm       *float64 `json:"accuracy_norm,omitempty"`
	AccuracyNormTokens *float64 `json:"accuracy_norm_tokens,omitempty"`
	// Loss (last word) is the NLL per continuation token.
	Loss *float64 `json:"loss,omitempty"`
}

// Sample is one generation.
type Sample struct {
	Prompt       string `json:"prompt"`
	Completion   string `json:"completion"`
	PromptTokens []int  `json:"prompt_tokens"`
	Tokens       []int  `json:"tokens"`
}

// Run evaluates.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	s, err := c.check(p, rc.Recipe, m.Config)
	if err != nil {
		return err
	}
	// The run summary lists each evaluated model with its size.
	rc.Metric("model", c.Model.String())
	rc.Metric("params", m.Config.Params().Total)
	be, err := rc.Backend(ctx)
	if err != nil {
		return err
	}
	var caps []string
	if len(c.Datasets)+len(c.Tasks) > 0 {
		caps = append(caps, backend.CapEvaluate)
	}
	if len(c.Prompts) > 0 {
		caps = append(caps, backend.CapGenerate)
	}
	if _, err := passutil.CheckCaps(ctx, be, caps...); err != nil {
		return err
	}
	tok, err := rc.Tokenizer(c.Model)
	if err != nil {
		return err
	}
	id, _, release, err := passutil.LoadModel(ctx, rc, be, c.Model, false)
	if err != nil {
		return err
	}
	defer release()

	rep := Report{Model: c.Model.String()}
	total, done := len(c.Datasets)+len(c.Tasks), 0
	if len(c.Prompts) > 0 {
		total++
	}
	for _, ref := range c.Datasets {
		rc.Progress(done, total, "LM loss on "+ref.String())
		prep, err := rc.PrepareDataset(ref, tok, data.Options{SeqLen: s.SeqLen})
		if err != nil {
			return err
		}
		seqs, rows := prep.Validation, prep.ValRows
		if s.split == "train" {
			seqs, rows = prep.Train, prep.TrainRows
		}
		if seqs.Path == "" {
			return passutil.Errorf(p, "datasets", "%s has no validation split (validation_fraction = 0); set split = \"train\" or hold out data", ref)
		}
		seqs.Limit = s.Sequences
		if s.Sequences > 0 {
			rows = min(rows, s.Sequences)
		}
		start := now()
		ev, err := be.Evaluate(ctx, backend.EvalRequest{Model: id, LM: &seqs, BatchSize: s.Batch})
		if err != nil {
			return fmt.Errorf("LM loss on %s: %w", ref, err)
		}
		elapsed := now().Sub(start).Seconds()
		if ev.LM == nil {
			return fmt.Errorf("LM loss on %s: the backend returned none", ref)
		}
		ds := DatasetScore{Name: ref.Name, Split: s.split, SeqLen: s.SeqLen, Sequences: rows, Tokens: ev.LM.Tokens,
			Loss: ev.LM.Loss, Perplexity: passutil.Perplexity(ev.LM.Loss)}
		rep.Datasets = append(rep.Datasets, ds)
		rc.Metric("dataset."+ref.Name+".loss", ds.Loss)
		rc.Metric("dataset."+ref.Name+".ppl", ds.Perplexity)
		rc.Metric("dataset."+ref.Name+".tokens", ds.Tokens)
		// Forward throughput (scoring every position of the sequences)
		// goes to the metrics only: eval.json stays a function of the
		// model and data, identical between repeated runs.
		if elapsed > 0 {
			rc.Metric("dataset."+ref.Name+".tokens_per_s", float64(ds.Tokens)/elapsed)
		}
		done++
	}
	for _, ref := range c.Tasks {
		rc.Progress(done, total, "task "+ref.String())
		ts, err := evalTask(ctx, rc, be, id, ref, tok, s)
		if err != nil {
			return err
		}
		rep.Tasks = append(rep.Tasks, ts)
		rc.Metric("task."+ref.Name+".acc", ts.Accuracy)
		if ts.AccuracyNorm != nil {
			rc.Metric("task."+ref.Name+".acc_norm", *ts.AccuracyNorm)
		}
		if ts.AccuracyNormTokens != nil {
			rc.Metric("task."+ref.Name+".acc_norm_tokens", *ts.AccuracyNormTokens)
		}
		if ts.Loss != nil {
			rc.Metric("task."+ref.Name+".loss", *ts.Loss)
		}
		rc.Metric("task."+ref.Name+".items", ts.Items)
		done++
	}
	if len(c.Prompts) > 0 {
		rc.Progress(done, total, fmt.Sprintf("generating from %d prompts", len(c.Prompts)))
		if rep.Samples, err = generate(ctx, p, be, id, tok, m.Config, c.Prompts, s); err != nil {
			return err
		}
		if err := writeSamples(filepath.Join(rc.Dir, SamplesFile), rep.Samples); err != nil {
			return err
		}
		done++
	}
	rc.Progress(done, total, "done")
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(rc.Dir, ReportFile), append(b, '\n'))
}

// TaskAccuracy scores a model loaded in be on a declared task as the pass
// does, few-shot examples drawn with seed; the search pass ranks
// candidates by it.
func TaskAccuracy(ctx context.Context, rc *pipeline.RunContext, be backend.Backend, id backend.ModelID, ref recipe.Ref, tok *tokenizer.Tokenizer, seed int64, batch int) (TaskScore, error) {
	return evalTask(ctx, rc, be, id, ref, tok, settings{EvalSizes: passutil.EvalSizes{Seed: seed, Batch: batch}})
}

func evalTask(ctx context.Context, rc *pipeline.RunContext, be backend.Backend, id backend.ModelID, ref recipe.Ref, tok *tokenizer.Tokenizer, s settings) (TaskScore, error) {
	task, err := rc.PrepareTask(ref, tok, uint64(s.Seed))
	if err != nil {
		return TaskScore{}, err
	}
	rt, err := rc.Task(ref)
	if err != nil {
		return TaskScore{}, err
	}
	ts := TaskScore{Name: ref.Name, Schema: string(task.Schema), FewShot: rt.FewShot}
	req := backend.EvalRequest{Model: id, BatchSize: s.Batch}
	if task.Schema == data.SchemaLastWord {
		req.LastWord = task.LastWord
	} else {
		req.Choices = task.Choices
	}
	if task.Len() == 0 {
		return ts, fmt.Errorf("%s has no items", ref)
	}
	ev, err := be.Evaluate(ctx, req)
	if err != nil {
		return ts, fmt.Errorf("evaluating %s: %w", ref, err)
	}
	switch {
	case task.Schema == data.SchemaLastWord && ev.LastWord != nil:
		ts.Items, ts.Accuracy = ev.LastWord.Items, ev.LastWord.Accuracy
		loss := ev.LastWord.Loss
		ts.Loss = &loss
	case task.Schema != data.SchemaLastWord && ev.Choices != nil:
		ts.Items, ts.Accuracy = ev.Choices.Items, ev.Choices.Accuracy
		norm, normTok := ev.Choices.AccuracyNorm, ev.Choices.AccuracyNormTokens
		ts.AccuracyNorm, ts.AccuracyNormTokens = &norm, &normTok
	default:
		return ts, fmt.Errorf("evaluating %s: the backend returned no %s result", ref, task.Schema)
	}
	return ts, nil
}

func generate(ctx context.Context, p *recipe.Pass, be backend.Backend, id backend.ModelID, tok *tokenizer.Tokenizer, cfg ir.Config, prompts []string, s settings) ([]Sample, error) {
	req := backend.GenerateRequest{Model: id, MaxTokens: s.maxTokens, Temperature: s.temperature, TopP: s.topP,
		Seed: uint64(s.Seed), StopToken: tok.EOS}
	for i, pr := range prompts {
		ids := tok.Encode(pr, true, false)
		if cfg.MaxSeq > 0 && len(ids)+s.maxTokens > cfg.MaxSeq {
			return nil, passutil.Errorf(p, "prompts", "prompt %d is %d tokens; with max_tokens = %d it exceeds the model's context of %d", i, len(ids), s.maxTokens, cfg.MaxSeq)
		}
		req.Prompts = append(req.Prompts, ids)
	}
	res, err := be.Generate(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("generating samples: %w", err)
	}
	if len(res.Tokens) != len(prompts) {
		return nil, fmt.Errorf("generating samples: %d continuations for %d prompts", len(res.Tokens), len(prompts))
	}
	out := make([]Sample, len(prompts))
	for i, pr := range prompts {
		out[i] = Sample{Prompt: pr, PromptTokens: req.Prompts[i], Tokens: res.Tokens[i],
			Completion: continuation(tok, req.Prompts[i], res.Tokens[i])}
	}
	return out, nil
}

// continuation decodes generated tokens as they follow the prompt (a
// token's text can depend on its predecessor), stopping at EOS.
func continuation(tok *tokenizer.Tokenizer, prompt, gen []int) string {
	var b strings.Builder
	prev := -1
	if len(prompt) > 0 {
		prev = prompt[len(prompt)-1]
	}
	for _, id := range gen {
		if id == tok.EOS || id == tok.BOS {
			break
		}
		b.WriteString(tok.DecodeToken(prev, id))
		prev = id
	}
	return b.String()
}

func writeSamples(path string, samples []Sample) error {
	var b strings.Builder
	for i, s := range samples {
		fmt.Fprintf(&b, "### sample %d\n%s%s\n\n", i, s.Prompt, s.Completion)
	}
	return fsutil.WriteFile(path, []byte(b.String()))
}
