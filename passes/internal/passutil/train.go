package passutil

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/curves"
	"github.com/whittle-ml/whittle/core/data"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// Training defaults, documented in the README's recipe reference.
const (
	DefaultBatch       = 8
	DefaultLR          = 1e-4
	DefaultMinLRFactor = 0.1 // min_lr = 0.1 × lr
	DefaultGradClip    = 1.0
	DefaultBeta1       = 0.9
	DefaultBeta2       = 0.95
	DefaultEps         = 1e-8
	DefaultLoRARank    = 8
)

// TrainOptions are the training attributes the correct, distill and
// instruction-tune blocks share; their configs embed it, and the recipe
// language decodes its fields as part of the block. nil means unset.
type TrainOptions struct {
	// Mode is full, lora or norm-only; Rank, Alpha and Targets tune LoRA.
	Mode    *string  `hcl:"mode,optional"`
	Rank    *int     `hcl:"rank,optional"`
	Alpha   *float64 `hcl:"alpha,optional"`
	Targets []string `hcl:"targets,optional"`

	// Steps or Tokens (one of them) is the budget; a token budget is
	// rounded up to whole steps of batch × grad_accum × seq_len tokens.
	Steps     *int   `hcl:"steps,optional"`
	Tokens    *int64 `hcl:"tokens,optional"`
	Batch     *int   `hcl:"batch,optional"`
	GradAccum *int   `hcl:"grad_accum,optional"`
	SeqLen    *int   `hcl:"seq_len,optional"`

	LR          *float64 `hcl:"lr,optional"`
	MinLR       *float64 `hcl:"min_lr,optional"`
	Warmup      *int     `hcl:"warmup,optional"`
	WeightDecay *float64 `hcl:"weight_decay,optional"`
	GradClip    *float64 `hcl:"grad_clip,optional"`
	Beta1       *float64 `hcl:"beta1,optional"`
	Beta2       *float64 `hcl:"beta2,optional"`
	Eps         *float64 `hcl:"eps,optional"`

	// RouterAuxWeight weighs the routers' load-balancing loss of a
	// mixture-of-experts model (backend.LossConfig.RouterAuxWeight).
	RouterAuxWeight *float64 `hcl:"router_aux_weight,optional"`

	Seed            *int64 `hcl:"seed,optional"`
	Shuffle         *bool  `hcl:"shuffle,optional"`
	EvalEvery       *int   `hcl:"eval_every,optional"`
	ValSequences    *int   `hcl:"val_sequences,optional"`
	LogEvery        *int   `hcl:"log_every,optional"`
	CheckpointEvery *int   `hcl:"checkpoint_every,optional"`
}

// Train is a resolved training configuration.
type Train struct {
	Mode      string
	LoRA      *backend.LoRAConfig
	Steps     int
	Batch     int
	GradAccum int
	SeqLen    int
	Optim     backend.OptimConfig
	Seed      int64
	Shuffle   bool
	// EvalEvery is 0 when only the end is evaluated.
	EvalEvery    int
	ValSequences int
	LogEvery     int
	// CheckpointEvery is 0 when no checkpoints are written.
	CheckpointEvery int
	// TokensBudget is the tokens attribute, when the budget was given so.
	TokensBudget int64
	// RouterAuxWeight is the router balancing loss's weight (0: none).
	RouterAuxWeight float64
}

// TokensPerStep is the sequence positions one optimizer step consumes.
func (t Train) TokensPerStep() int64 { return int64(t.Batch) * int64(t.GradAccum) * int64(t.SeqLen) }

func get[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// ResolveTrain checks the training attributes against the model's
// architecture and fills in the defaults. Errors name the attribute's
// position in the recipe.
func ResolveTrain(p *recipe.Pass, cfg ir.Config, f TrainOptions) (Train, error) {
	var t Train
	bad := func(attr, format string, args ...any) (Train, error) {
		return Train{}, Errorf(p, attr, format, args...)
	}

	t.Mode = get(f.Mode, backend.ModeFull)
	switch t.Mode {
	case backend.ModeFull, backend.ModeNormOnly:
		for _, a := range []struct {
			name string
			set  bool
		}{{"rank", f.Rank != nil}, {"alpha", f.Alpha != nil}, {"targets", f.Targets != nil}} {
			if a.set {
				return bad(a.name, "%s applies to mode = \"lora\" only (mode is %q)", a.name, t.Mode)
			}
		}
	case backend.ModeLoRA:
		l := &backend.LoRAConfig{Rank: get(f.Rank, DefaultLoRARank)}
		if l.Rank < 1 {
			return bad("rank", "rank = %d must be at least 1", l.Rank)
		}
		l.Alpha = get(f.Alpha, float64(l.Rank))
		if !(l.Alpha > 0) || math.IsInf(l.Alpha, 0) {
			return bad("alpha", "alpha = %g must be a positive number", l.Alpha)
		}
		l.Targets = append([]string(nil), backend.LoRATargets...)
		if f.Targets != nil {
			if len(f.Targets) == 0 {
				return bad("targets", "targets is empty; list the matrices to adapt, from %s", strings.Join(backend.LoRATargets, ", "))
			}
			seen := map[string]bool{}
			for _, tg := range f.Targets {
				if !contains(backend.LoRATargets, tg) {
					return bad("targets", "unknown LoRA target %q (want some of %s)", tg, strings.Join(backend.LoRATargets, ", "))
				}
				if seen[tg] {
					return bad("targets", "LoRA target %q listed twice", tg)
				}
				seen[tg] = true
			}
			l.Targets = append([]string(nil), f.Targets...)
		}
		t.LoRA = l
	default:
		return bad("mode", "unknown mode %q (want full, lora or norm-only)", t.Mode)
	}

	t.Batch = get(f.Batch, DefaultBatch)
	if t.Batch < 1 {
		return bad("batch", "batch = %d must be at least 1", t.Batch)
	}
	t.GradAccum = get(f.GradAccum, 1)
	if t.GradAccum < 1 {
		return bad("grad_accum", "grad_accum = %d must be at least 1", t.GradAccum)
	}
	t.SeqLen = get(f.SeqLen, DefaultSeqLen(cfg))
	if t.SeqLen < 2 {
		return bad("seq_len", "seq_len = %d must be at least 2", t.SeqLen)
	}
	if cfg.MaxSeq > 0 && t.SeqLen > cfg.MaxSeq {
		return bad("seq_len", "seq_len = %d exceeds the model's context of %d tokens", t.SeqLen, cfg.MaxSeq)
	}
	switch {
	case f.Steps != nil && f.Tokens != nil:
		return bad("tokens", "steps and tokens both set; give one budget")
	case f.Steps != nil:
		t.Steps = *f.Steps
		if t.Steps < 1 {
			return bad("steps", "steps = %d must be at least 1", t.Steps)
		}
	case f.Tokens != nil:
		t.TokensBudget = *f.Tokens
		if t.TokensBudget < 1 {
			return bad("tokens", "tokens = %d must be at least 1", t.TokensBudget)
		}
		per := t.TokensPerStep()
		steps := (t.TokensBudget + per - 1) / per
		if steps > math.MaxInt32 {
			return bad("tokens", "tokens = %d is %d steps of %d tokens; too many", t.TokensBudget, steps, per)
		}
		t.Steps = int(steps)
	default:
		return Train{}, errors.New("give a training budget: steps = N or tokens = N")
	}

	o := &t.Optim
	o.LR = get(f.LR, DefaultLR)
	if !(o.LR > 0) || math.IsInf(o.LR, 0) {
		return bad("lr", "lr = %g must be a positive number", o.LR)
	}
	o.MinLR = get(f.MinLR, o.LR*DefaultMinLRFactor)
	if !(o.MinLR >= 0 && o.MinLR <= o.LR) {
		return bad("min_lr", "min_lr = %g must be between 0 and lr = %g", o.MinLR, o.LR)
	}
	o.WarmupSteps = get(f.Warmup, 0)
	if o.WarmupSteps < 0 || o.WarmupSteps > t.Steps {
		return bad("warmup", "warmup = %d steps must be between 0 and the %d training steps", o.WarmupSteps, t.Steps)
	}
	o.WeightDecay = get(f.WeightDecay, 0)
	if !(o.WeightDecay >= 0) || math.IsInf(o.WeightDecay, 0) {
		return bad("weight_decay", "weight_decay = %g must be a non-negative number", o.WeightDecay)
	}
	o.GradClip = get(f.GradClip, DefaultGradClip)
	if !(o.GradClip >= 0) || math.IsInf(o.GradClip, 0) {
		return bad("grad_clip", "grad_clip = %g must be a non-negative number (0 turns clipping off)", o.GradClip)
	}
	o.Beta1 = get(f.Beta1, DefaultBeta1)
	if !(o.Beta1 >= 0 && o.Beta1 < 1) {
		return bad("beta1", "beta1 = %g must be in [0, 1)", o.Beta1)
	}
	o.Beta2 = get(f.Beta2, DefaultBeta2)
	if !(o.Beta2 >= 0 && o.Beta2 < 1) {
		return bad("beta2", "beta2 = %g must be in [0, 1)", o.Beta2)
	}
	o.Eps = get(f.Eps, DefaultEps)
	if !(o.Eps > 0) || math.IsInf(o.Eps, 0) {
		return bad("eps", "eps = %g must be a positive number", o.Eps)
	}

	t.RouterAuxWeight = get(f.RouterAuxWeight, 0)
	switch {
	case !(t.RouterAuxWeight >= 0) || math.IsInf(t.RouterAuxWeight, 0):
		return bad("router_aux_weight", "router_aux_weight = %g must be a non-negative number", t.RouterAuxWeight)
	case t.RouterAuxWeight > 0 && !hasMoE(cfg):
		return bad("router_aux_weight", "router_aux_weight applies to mixture-of-experts models; this one has no routed layers")
	}

	t.Seed = get(f.Seed, 0)
	t.Shuffle = get(f.Shuffle, true)
	t.EvalEvery = get(f.EvalEvery, 0)
	if t.EvalEvery < 0 {
		return bad("eval_every", "eval_every = %d must not be negative", t.EvalEvery)
	}
	t.ValSequences = get(f.ValSequences, 0)
	if t.ValSequences < 0 {
		return bad("val_sequences", "val_sequences = %d must not be negative (0 = all)", t.ValSequences)
	}
	t.LogEvery = get(f.LogEvery, max(1, t.Steps/20))
	if t.LogEvery < 1 {
		return bad("log_every", "log_every = %d must be at least 1", t.LogEvery)
	}
	t.CheckpointEvery = get(f.CheckpointEvery, max(1, (t.Steps+9)/10))
	if t.CheckpointEvery < 0 {
		return bad("checkpoint_every", "checkpoint_every = %d must not be negative (0 = no checkpoints)", t.CheckpointEvery)
	}
	return t, nil
}

// CheckTrain resolves a training pass's options against the trained
// model's architecture (ResolveTrain) and checks its dataset attribute
// (CheckDataset; instruct asks for prompt/response pairs), as both its Plan
// and Run do.
func CheckTrain(p *recipe.Pass, r *recipe.Recipe, cfg ir.Config, o TrainOptions, dataset recipe.Ref, instruct bool) (Train, error) {
	t, err := ResolveTrain(p, cfg, o)
	if err != nil {
		return Train{}, err
	}
	if err := CheckDataset(p, r, "dataset", dataset, instruct); err != nil {
		return Train{}, err
	}
	return t, nil
}

func hasMoE(cfg ir.Config) bool {
	for _, l := range cfg.Layers {
		if l.MoE() {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Job is one training run of a pass.
type Job struct {
	Pass    *recipe.Pass
	Model   recipe.Ref  // the model trained (the student)
	Teacher *recipe.Ref // distillation only
	Dataset recipe.Ref
	// Data sets Packing and Template; SeqLen comes from Train.
	Data      data.Options
	Objective string
	Loss      backend.LossConfig
	Train     Train
}

// HistoryFile is the per-step training log a training pass writes (core/curves
// draws it).
const HistoryFile = curves.HistoryFile

// ValPoint is one evaluation during training, as recorded in metrics.
type ValPoint struct {
	Step    int      `json:"step"`
	Tokens  int64    `json:"tokens"`
	ValLoss *float64 `json:"val_loss,omitempty"`
	ValKL   *float64 `json:"val_kl,omitempty"`
}

// RunTrain prepares the data, loads the model (and teacher), measures
// validation loss before, trains with a resumable checkpoint directory,
// measures after, saves the model as the pass's output and records
// metrics and history.csv.
func RunTrain(ctx context.Context, rc *pipeline.RunContext, job Job) error {
	tr := &trainRun{rc: rc, job: job, t: job.Train}
	if err := tr.openBackend(ctx); err != nil {
		return err
	}
	if err := tr.prepareData(); err != nil {
		return err
	}
	release, err := tr.loadModels(ctx)
	if err != nil {
		return err
	}
	defer release()
	if err := tr.measureBefore(ctx); err != nil {
		return err
	}
	req, ckptRoot, err := tr.request()
	if err != nil {
		return err
	}
	res, history, err := tr.train(ctx, req)
	if err != nil {
		return err
	}
	if err := tr.record(ctx, res, history); err != nil {
		return err
	}
	if err := SaveModel(ctx, rc, tr.be, tr.student.id, tr.student.dir); err != nil {
		return err
	}
	// The model is saved: the checkpoints served their purpose.
	if ckptRoot != "" {
		if err := os.RemoveAll(req.CheckpointDir); err != nil {
			rc.Log.Warn("removing checkpoints", "dir", req.CheckpointDir, "err", err)
		}
		os.Remove(ckptRoot) // only when empty
	}
	return nil
}

// trainRun is one RunTrain in progress: what its steps share.
type trainRun struct {
	rc  *pipeline.RunContext
	job Job
	t   Train
	be  backend.Backend
	tok *tokenizer.Tokenizer

	trainRows backend.Sequences
	val       *backend.Sequences // nil when the dataset has no validation split

	student loadedModel
	teacher *loadedModel // distillation only
}

// loadedModel is a model loaded in the backend, and the directory it was
// loaded from.
type loadedModel struct {
	id  backend.ModelID
	dir string
}

// openBackend opens the pass's backend, checks it can train (with LoRA
// when asked) and that the student and teacher share a tokenizer.
func (tr *trainRun) openBackend(ctx context.Context) error {
	be, err := tr.rc.Backend(ctx)
	if err != nil {
		return err
	}
	caps := []string{backend.CapTrain, backend.CapEvaluate}
	if tr.t.Mode == backend.ModeLoRA {
		caps = append(caps, backend.CapLoRA)
	}
	if _, err := CheckCaps(ctx, be, caps...); err != nil {
		return err
	}
	tr.be = be
	if tr.tok, err = tr.rc.Tokenizer(tr.job.Model); err != nil {
		return err
	}
	// A teacher's tokenizer matches the model's: the pass's Plan checked
	// it, and pipeline.Run plans every pass before running any.
	return nil
}

// prepareData tokenizes the dataset, shuffles the training rows when
// asked and picks the validation rows.
func (tr *trainRun) prepareData() error {
	t, rc := tr.t, tr.rc
	opts := tr.job.Data
	opts.SeqLen = t.SeqLen
	prep, err := rc.PrepareDataset(tr.job.Dataset, tr.tok, opts)
	if err != nil {
		return err
	}
	rc.Metric("train_sequences", prep.TrainRows)
	rc.Metric("train_targets", prep.TrainTargets)
	if tr.trainRows, err = t.TrainRows(prep); err != nil {
		return fmt.Errorf("shuffling %s: %w", tr.job.Dataset, err)
	}
	if prep.Validation.Path != "" {
		v := prep.Validation
		v.Limit = t.ValSequences
		tr.val = &v
	} else {
		rc.Log.Warn("the dataset has no validation split; no validation loss is measured", "dataset", tr.job.Dataset.String())
	}
	return nil
}

// loadModels loads the student, trainable, and the teacher; release
// unloads them.
func (tr *trainRun) loadModels(ctx context.Context) (release func(), err error) {
	id, dir, srel, err := LoadModel(ctx, tr.rc, tr.be, tr.job.Model, true)
	if err != nil {
		return nil, err
	}
	tr.student = loadedModel{id, dir}
	if tr.job.Teacher == nil {
		return srel, nil
	}
	tid, tdir, trel, err := LoadModel(ctx, tr.rc, tr.be, *tr.job.Teacher, false)
	if err != nil {
		srel()
		return nil, err
	}
	tr.teacher = &loadedModel{tid, tdir}
	return func() { trel(); srel() }, nil
}

// measureBefore records the validation loss of the student (and teacher)
// before training.
func (tr *trainRun) measureBefore(ctx context.Context) error {
	if tr.val == nil {
		return nil
	}
	rc, t := tr.rc, tr.t
	loss, err := tr.valLoss(ctx, tr.student.id, "validation loss before training", "")
	if err != nil {
		return err
	}
	rc.Metric("val_loss_before", loss)
	rc.Metric("val_ppl_before", Perplexity(loss))
	rc.Report(pipeline.Update{Total: t.Steps, Unit: pipeline.UnitStep, Msg: fmt.Sprintf("validation loss before: %.4f", loss), Log: true})
	if tr.teacher != nil {
		loss, err := tr.valLoss(ctx, tr.teacher.id, "teacher validation loss", " for the teacher")
		if err != nil {
			return err
		}
		rc.Metric("teacher_val_loss", loss)
		rc.Metric("teacher_val_ppl", Perplexity(loss))
	}
	return nil
}

// valLoss is a model's language-model loss on the validation rows; what
// names the measurement in an error from the backend, whose the model in
// an answer without a loss.
func (tr *trainRun) valLoss(ctx context.Context, id backend.ModelID, what, whose string) (float64, error) {
	ev, err := tr.be.Evaluate(ctx, backend.EvalRequest{Model: id, LM: tr.val, BatchSize: tr.t.Batch})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if ev.LM == nil {
		return 0, errors.New("the backend returned no language-model loss" + whose)
	}
	return ev.LM.Loss, nil
}

// Request is the backend's training request for these options: model
// trained on rows (to teacher's logits when teacher is set), without
// validation or checkpoints.
func (t Train) Request(model, teacher backend.ModelID, objective string, loss backend.LossConfig, rows backend.Sequences) backend.TrainRequest {
	loss.RouterAuxWeight = t.RouterAuxWeight
	return backend.TrainRequest{
		Model:     model,
		Teacher:   teacher,
		Objective: objective,
		Loss:      loss,
		Mode:      t.Mode,
		LoRA:      t.LoRA,
		Optim:     t.Optim,
		Data:      rows,
		Steps:     t.Steps,
		BatchSize: t.Batch,
		GradAccum: t.GradAccum,
		Seed:      t.Seed,
	}
}

// TrainRows are the training rows of a prepared dataset as the training
// passes read them: shuffled with the seed when asked (the permutation is
// cached next to the token file).
func (t Train) TrainRows(prep *data.Prepared) (backend.Sequences, error) {
	if !t.Shuffle {
		return prep.Train, nil
	}
	rows, _, err := SampleRows(prep.Train, filepath.Dir(prep.Train.Path), "shuffled", 0, t.Seed)
	return rows, err
}

// request builds the backend's training request, with its checkpoint
// directory (under root) when checkpoints are on.
func (tr *trainRun) request() (req backend.TrainRequest, root string, err error) {
	t := tr.t
	var teacher backend.ModelID
	if tr.teacher != nil {
		teacher = tr.teacher.id
	}
	req = t.Request(tr.student.id, teacher, tr.job.Objective, tr.job.Loss, tr.trainRows)
	if tr.val != nil {
		req.Validation = tr.val
		// Evaluating at the last step gives the final validation loss
		// (and KL) even when no curve was asked for.
		req.EvalEvery = t.EvalEvery
		if req.EvalEvery == 0 {
			req.EvalEvery = t.Steps
		}
	}
	if t.CheckpointEvery > 0 {
		srcs := []string{tr.student.dir}
		if tr.teacher != nil && tr.teacher.dir != "" {
			srcs = append(srcs, tr.teacher.dir)
		}
		if root, req.CheckpointDir, err = checkpointDir(tr.rc, tr.job.Pass, srcs, tr.trainRows); err != nil {
			return req, "", err
		}
		req.CheckpointEvery = t.CheckpointEvery
	}
	return req, root, nil
}

// train runs the backend's training, reporting every step (a log line
// every log_every steps and at evaluations), and returns the result with
// the per-step history.
func (tr *trainRun) train(ctx context.Context, req backend.TrainRequest) (*backend.TrainResult, []backend.TrainEvent, error) {
	t, rc := tr.t, tr.rc
	rc.Log.Info("training", "steps", t.Steps, "tokens_per_step", t.TokensPerStep(), "checkpoints", req.CheckpointDir)
	var history []backend.TrainEvent
	events := func(ev backend.TrainEvent) {
		history = append(history, ev)
		rc.Report(pipeline.Update{Done: ev.Step, Total: t.Steps, Unit: pipeline.UnitStep, Tokens: ev.Tokens, Msg: progressLine(ev),
			Log: ev.Step%t.LogEvery == 0 || ev.Step == t.Steps || ev.ValLoss != nil})
	}
	res, err := tr.be.Train(ctx, req, events)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			// Whatever the backend made of the cancellation, the pipeline
			// must see it to report an interruption.
			if !errors.Is(err, cerr) {
				err = fmt.Errorf("%w: %w", cerr, err)
			}
			if req.CheckpointDir != "" {
				return nil, nil, fmt.Errorf("training interrupted (checkpoints in %s; run again to resume): %w", req.CheckpointDir, err)
			}
		}
		return nil, nil, fmt.Errorf("training: %w", err)
	}
	if len(res.History) > 0 {
		history = res.History
	}
	return res, history, nil
}

// record measures the validation loss after training when the backend
// did not, and records the metrics, the validation curve and history.csv.
func (tr *trainRun) record(ctx context.Context, res *backend.TrainResult, history []backend.TrainEvent) error {
	rc, t := tr.rc, tr.t
	valLoss := res.ValLoss
	if tr.val != nil && valLoss == nil {
		loss, err := tr.valLoss(ctx, tr.student.id, "validation loss after training", "")
		if err != nil {
			return err
		}
		valLoss = &loss
	}
	if valLoss != nil {
		rc.Metric("val_loss", *valLoss)
		rc.Metric("val_ppl", Perplexity(*valLoss))
	}
	if res.ValKL != nil {
		rc.Metric("val_kl", *res.ValKL)
	}
	rc.Metric("steps", res.Steps)
	rc.Metric("tokens", res.Tokens)
	rc.Metric("tokens_per_step", t.TokensPerStep())
	if t.TokensBudget > 0 {
		rc.Metric("tokens_budget", t.TokensBudget)
	}
	rc.Metric("train_loss", res.FinalLoss)
	rc.Metric("tokens_per_s", res.TokensPerS)
	if res.ResumedFrom > 0 {
		rc.Metric("resumed_from", res.ResumedFrom)
	}
	var curve []ValPoint
	for _, ev := range history {
		if ev.ValLoss != nil || ev.ValKL != nil {
			curve = append(curve, ValPoint{Step: ev.Step, Tokens: ev.Tokens, ValLoss: ev.ValLoss, ValKL: ev.ValKL})
		}
	}
	if len(curve) > 0 {
		rc.Metric("val_history", curve)
	}
	return writeHistory(filepath.Join(rc.Dir, HistoryFile), history)
}

// checkpointDir is where this pass's checkpoints live: under the run
// directory, outside the pass directory (which the pipeline clears before
// running a pass again), in a directory keyed by everything the run
// depends on so that a changed input never resumes a stale checkpoint.
// Checkpoints of the same pass with another key are removed.
func checkpointDir(rc *pipeline.RunContext, p *recipe.Pass, modelDirs []string, train backend.Sequences) (root, dir string, err error) {
	cfg, err := json.Marshal(p.Config)
	if err != nil {
		return "", "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "kind=%s\nconfig=%s\n", p.Kind, cfg)
	// The data by content: its file name depends on how the tokenizer is
	// spelled (see data.TokenizerHash), which changes when a model is
	// reloaded from its saved directory.
	for _, f := range []string{train.Path, train.MaskPath} {
		if f == "" {
			continue
		}
		fr, err := pipeline.HashPath(f)
		if err != nil {
			return "", "", fmt.Errorf("hashing %s for the checkpoint key: %w", f, err)
		}
		fmt.Fprintf(h, "data=%s\n", fr.SHA256)
	}
	for _, d := range modelDirs {
		fr, err := pipeline.HashPath(d)
		if err != nil {
			return "", "", fmt.Errorf("hashing %s for the checkpoint key: %w", d, err)
		}
		fmt.Fprintf(h, "model=%s\n", fr.SHA256)
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	root = filepath.Join(rc.RunDir, "checkpoints")
	// By name, not position, as the pipeline resumes passes; '@' cannot
	// occur in a pass name, so one pass's prefix is no other's.
	prefix := p.Name + "@"
	dir = filepath.Join(root, prefix+key)
	if entries, err := os.ReadDir(root); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) && e.Name() != prefix+key {
				os.RemoveAll(filepath.Join(root, e.Name()))
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	return root, dir, nil
}

// progressLine describes a training step; the step count is the
// update's own, for displays to place.
func progressLine(ev backend.TrainEvent) string {
	s := fmt.Sprintf("loss %.4f lr %.3g", ev.Loss, ev.LR)
	if ev.ValLoss != nil {
		s += fmt.Sprintf(" val_loss %.4f", *ev.ValLoss)
	}
	if ev.ValKL != nil {
		s += fmt.Sprintf(" val_kl %.4f", *ev.ValKL)
	}
	return s
}

// writeHistory writes the training events as CSV; evaluation columns are
// empty on steps without an evaluation.
func writeHistory(path string, hist []backend.TrainEvent) error {
	var b strings.Builder
	b.WriteString("step,loss,lr,grad_norm,tokens,val_loss,val_kl\n")
	opt := func(v *float64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatFloat(*v, 'g', -1, 64)
	}
	for _, ev := range hist {
		fmt.Fprintf(&b, "%d,%s,%s,%s,%d,%s,%s\n", ev.Step,
			strconv.FormatFloat(ev.Loss, 'g', -1, 64), strconv.FormatFloat(ev.LR, 'g', -1, 64),
			strconv.FormatFloat(ev.GradNorm, 'g', -1, 64), ev.Tokens, opt(ev.ValLoss), opt(ev.ValKL))
	}
	return fsutil.WriteFile(path, []byte(b.String()))
}
