package cpu

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/batch"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
)

// Defaults for zero fields of backend.OptimConfig and LoRAConfig.
const (
	defaultBeta1 = 0.9
	defaultBeta2 = 0.999
	defaultEps   = 1e-8
)

// CheckpointFile is the name of the training checkpoint inside
// TrainRequest.CheckpointDir.
const CheckpointFile = "train.ckpt"

// Train runs the optimization loop of req on the model's weights.
//
// Step s (0-based) consumes the BatchSize×GradAccum sequences starting at
// row s·BatchSize·GradAccum of Data, wrapping around; its micro-batches
// are contiguous runs of BatchSize rows. Mode lora trains fresh adapters
// (seeded by Seed) and merges them into the weights when Train returns.
// With objective ce a Teacher is optional and only measured against
// (ValKL). A Train that fails or is cancelled (ctx.Err() is returned
// between steps) leaves the model's weights as they were, so the same
// request can resume from its checkpoint in this process too. Checkpoints
// are written every CheckpointEvery steps and after the last step; one is
// resumed when the request (apart from model ids, validation and
// checkpoint settings), the data's shape and the starting weights of
// model and teacher all match, and ignored (with a warning) otherwise.
func (b *Backend) Train(ctx context.Context, req backend.TrainRequest, events func(backend.TrainEvent)) (*backend.TrainResult, error) {
	if err := b.lock(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	m, err := b.model(req.Model)
	if err != nil {
		return nil, err
	}
	job, err := b.newTrainJob(m, req)
	if err != nil {
		return nil, fmt.Errorf("cpu: train %s: %w", req.Model, err)
	}
	defer job.close()
	res, err := job.run(ctx, events)
	if err != nil {
		job.rollback()
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cpu: train %s: %w", req.Model, err)
	}
	return res, nil
}

// trainJob is one Train call being run.
type trainJob struct {
	b        *Backend
	req      backend.TrainRequest
	m        *model
	teacher  *model
	data     *batch.Sequences
	val      *batch.Sequences
	trainer  *engine.Trainer
	lora     *engine.LoRA
	gradAcc  int
	snapshot map[int][]float32 // trainable tensors' initial values, by Tensors index
	hash0    string            // the model's weights hash before the run
	// Checkpoint identity and what a resumed run carries over.
	fingerprint string
	start       int
	tokens      int64
	history     []backend.TrainEvent
}

func (b *Backend) newTrainJob(m *model, req backend.TrainRequest) (*trainJob, error) {
	j := &trainJob{b: b, req: req, m: m, gradAcc: req.GradAccum}
	cfg := &m.params.Config
	switch {
	case req.Steps <= 0:
		return nil, fmt.Errorf("steps %d must be positive", req.Steps)
	case req.BatchSize <= 0:
		return nil, fmt.Errorf("batch_size %d must be positive", req.BatchSize)
	case req.GradAccum < 0:
		return nil, fmt.Errorf("negative grad_accum %d", req.GradAccum)
	case req.EvalEvery < 0 || req.CheckpointEvery < 0:
		return nil, fmt.Errorf("negative eval_every %d or checkpoint_every %d", req.EvalEvery, req.CheckpointEvery)
	}
	if j.gradAcc == 0 {
		j.gradAcc = 1
	}
	obj, err := objective(req)
	if err != nil {
		return nil, err
	}
	if req.Objective == backend.ObjectiveKL && req.Teacher == "" {
		return nil, fmt.Errorf("objective kl needs a teacher")
	}
	if req.Teacher != "" {
		if req.Teacher == req.Model {
			return nil, fmt.Errorf("the teacher %s is the model being trained; load it a second time", req.Teacher)
		}
		if j.teacher, err = b.model(req.Teacher); err != nil {
			return nil, err
		}
		if v := j.teacher.params.Config.Vocab; v != cfg.Vocab {
			return nil, fmt.Errorf("teacher %s has a vocabulary of %d, the model %d", req.Teacher, v, cfg.Vocab)
		}
	}
	tc := engine.TrainConfig{
		Objective:   obj,
		Schedule:    engine.Schedule{Peak: req.Optim.LR, Min: req.Optim.MinLR, Warmup: req.Optim.WarmupSteps, Total: req.Steps},
		Beta1:       orDefault(req.Optim.Beta1, defaultBeta1),
		Beta2:       orDefault(req.Optim.Beta2, defaultBeta2),
		Eps:         orDefault(req.Optim.Eps, defaultEps),
		WeightDecay: req.Optim.WeightDecay,
		ClipNorm:    req.Optim.GradClip,
	}
	switch o := req.Optim; {
	case !(o.LR > 0) || math.IsInf(o.LR, 0):
		return nil, fmt.Errorf("learning rate %g must be positive", o.LR)
	case !(o.MinLR >= 0) || math.IsInf(o.MinLR, 0):
		return nil, fmt.Errorf("min_lr %g must be non-negative", o.MinLR)
	case o.WarmupSteps < 0:
		return nil, fmt.Errorf("negative warmup_steps %d", o.WarmupSteps)
	case !(o.GradClip >= 0):
		return nil, fmt.Errorf("grad_clip %g must be non-negative", o.GradClip)
	}
	var frozen func(string) bool
	if err := req.CheckMode(); err != nil {
		return nil, err
	}
	switch req.Mode {
	case backend.ModeFull, "":
	case backend.ModeNormOnly:
		frozen = func(name string) bool { return !isNorm(name) }
	case backend.ModeLoRA:
		frozen = func(string) bool { return true }
		if j.lora, err = newLoRA(*cfg, req); err != nil {
			return nil, err
		}
	}
	if j.data, err = batch.Open(req.Data, cfg.Vocab, cfg.MaxSeq); err != nil {
		return nil, err
	}
	if req.Validation != nil {
		if j.val, err = batch.Open(*req.Validation, cfg.Vocab, cfg.MaxSeq); err != nil {
			j.close()
			return nil, fmt.Errorf("validation: %w", err)
		}
	}
	student, err := engine.New(m.params, engine.Options{Threads: b.threads, Frozen: frozen})
	if err != nil {
		j.close()
		return nil, err
	}
	if j.lora != nil {
		if err := student.SetLoRA(j.lora); err != nil {
			j.close()
			return nil, err
		}
	}
	var teacher engine.Teacher
	if j.teacher != nil && req.Objective == backend.ObjectiveKL {
		te, err := j.teacher.engine(b.threads)
		if err != nil {
			j.close()
			return nil, err
		}
		teacher = te
	}
	if j.trainer, err = engine.NewTrainer(student, teacher, tc); err != nil {
		j.close()
		return nil, err
	}
	// Keep what training changes, to restore it if the run fails.
	j.snapshot = map[int][]float32{}
	for i, t := range m.params.Tensors() {
		if frozen == nil || !frozen(t.Name) {
			j.snapshot[i] = append([]float32(nil), t.Data...)
		}
	}
	return j, nil
}

func orDefault(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

func isNorm(name string) bool { return strings.Contains(name, "norm") }

// objective maps the request's objective and loss settings onto the
// engine's: KL weight 1 − CEWeight.
func objective(req backend.TrainRequest) (engine.Objective, error) {
	l := req.Loss
	switch req.Objective {
	case backend.ObjectiveCE:
		return engine.Objective{}, nil
	case backend.ObjectiveKL:
		switch {
		case !(l.CEWeight >= 0 && l.CEWeight <= 1):
			return engine.Objective{}, fmt.Errorf("ce_weight %g outside [0, 1]", l.CEWeight)
		case !(l.Temperature >= 0) || math.IsInf(l.Temperature, 0):
			return engine.Objective{}, fmt.Errorf("temperature %g must be positive", l.Temperature)
		case l.TopK < 0:
			return engine.Objective{}, fmt.Errorf("negative top_k %d", l.TopK)
		}
		return engine.Objective{KLWeight: 1 - l.CEWeight, Temperature: l.Temperature, ScaleT2: l.ScaleT2, TopK: l.TopK}, nil
	}
	return engine.Objective{}, fmt.Errorf("unknown objective %q (want %s or %s)", req.Objective, backend.ObjectiveCE, backend.ObjectiveKL)
}

// newLoRA builds the adapters of a lora-mode request.
func newLoRA(cfg ir.Config, req backend.TrainRequest) (*engine.LoRA, error) {
	c, err := req.LoRA.Resolve()
	if err != nil {
		return nil, err
	}
	return engine.NewLoRA(cfg, engine.LoRAConfig{Rank: c.Rank, Alpha: c.Alpha, Targets: c.Roles}, uint64(req.Seed))
}

func (j *trainJob) close() {
	if j.data != nil {
		j.data.Close()
	}
	if j.val != nil {
		j.val.Close()
	}
	if j.m.inf != nil {
		j.m.inf.SetLoRA(nil)
	}
}

// rollback restores the weights a failed run may have changed.
func (j *trainJob) rollback() {
	ts := j.m.params.Tensors()
	for i, v := range j.snapshot {
		copy(ts[i].Data, v)
	}
	j.m.changed()
	j.m.hash = j.hash0
}

func (j *trainJob) run(ctx context.Context, events func(backend.TrainEvent)) (*backend.TrainResult, error) {
	req := j.req
	m := j.m
	if req.CheckpointDir != "" {
		if err := j.resume(); err != nil {
			return nil, err
		}
	}
	inf, err := m.engine(j.b.threads)
	if err != nil {
		return nil, err
	}
	if j.lora != nil {
		if err := inf.SetLoRA(j.lora); err != nil {
			return nil, err
		}
	}
	var teacherInf *engine.Engine
	if j.teacher != nil {
		if teacherInf, err = j.teacher.engine(j.b.threads); err != nil {
			return nil, err
		}
	}
	j.hash0 = m.hash
	m.changed()
	began := time.Now()
	tokens0 := j.tokens
	bs, l := req.BatchSize, j.data.Cols
	micro := make([]engine.Batch, j.gradAcc)
	for step := j.start; step < req.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for i := range micro {
			first := (step*j.gradAcc + i) * bs
			mb := &micro[i]
			tok, ids, err := j.data.Batch(first%j.data.Rows, bs, mb.Tokens, mb.Targets.IDs)
			if err != nil {
				return nil, err
			}
			*mb = engine.Batch{Tokens: tok, B: bs, T: l, Targets: engine.Targets{IDs: ids}}
		}
		st, err := j.trainer.Step(micro)
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", step+1, err)
		}
		j.tokens += int64(bs * l * j.gradAcc)
		ev := backend.TrainEvent{Step: step + 1, Steps: req.Steps, Loss: st.Loss, LR: st.LR, GradNorm: st.GradNorm, Tokens: j.tokens}
		last := step+1 == req.Steps
		if j.val != nil && (last || req.EvalEvery > 0 && (step+1)%req.EvalEvery == 0) {
			p, err := lmPass(ctx, inf, teacherInf, j.val, bs)
			if err != nil {
				return nil, fmt.Errorf("step %d: validation: %w", step+1, err)
			}
			ev.ValLoss = &p.ce
			if teacherInf != nil {
				ev.ValKL = &p.kl
			}
		}
		j.history = append(j.history, ev)
		if req.CheckpointDir != "" && (last || req.CheckpointEvery > 0 && (step+1)%req.CheckpointEvery == 0) {
			if err := j.save(step + 1); err != nil {
				return nil, err
			}
		}
		j.b.log.Debug("train step", "model", m.id, "step", ev.Step, "steps", ev.Steps, "loss", ev.Loss, "lr", ev.LR, "grad_norm", ev.GradNorm)
		if events != nil {
			events(ev)
		}
	}
	if j.lora != nil {
		inf.SetLoRA(nil)
		if err := j.lora.Merge(m.params, j.b.threads); err != nil {
			return nil, err
		}
	}
	res := &backend.TrainResult{Steps: req.Steps, Tokens: j.tokens, History: j.history, ResumedFrom: j.start}
	if n := len(j.history); n > 0 {
		last := j.history[n-1]
		res.FinalLoss, res.ValLoss, res.ValKL = last.Loss, last.ValLoss, last.ValKL
	}
	if s := time.Since(began).Seconds(); s > 0 {
		res.TokensPerS = float64(j.tokens-tokens0) / s
	}
	return res, nil
}

// checkpointIdentity is what must match for a checkpoint to be resumed:
// the request (without the fields that do not change the weights), the
// data's shape and the starting weights of model and teacher.
type checkpointIdentity struct {
	Request    backend.TrainRequest `json:"request"`
	DataShape  [2]int               `json:"data_shape"`
	Weights    string               `json:"weights"`
	Teacher    string               `json:"teacher,omitempty"`
	Params     int                  `json:"params"`
	LoRAParams int                  `json:"lora_params"`
}

func (j *trainJob) identity() (string, error) {
	r := j.req
	r.Model, r.Teacher, r.Validation, r.EvalEvery, r.CheckpointDir, r.CheckpointEvery = "", "", nil, 0, "", 0
	id := checkpointIdentity{Request: r, DataShape: [2]int{j.data.Rows, j.data.Cols}, Weights: j.m.weightsHash(), Params: len(j.m.params.Flat())}
	if j.teacher != nil {
		id.Teacher = j.teacher.weightsHash()
	}
	if j.lora != nil {
		id.LoRAParams = len(j.lora.Flat())
	}
	data, err := json.Marshal(id)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// weightsHash is the sha256 of the weights' bytes, cached until they
// change.
func (m *model) weightsHash() string {
	if m.hash == "" {
		h := sha256.New()
		buf := make([]byte, 0, 1<<16)
		for _, v := range m.params.Flat() {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			if len(buf) == cap(buf) {
				h.Write(buf)
				buf = buf[:0]
			}
		}
		h.Write(buf)
		m.hash = hex.EncodeToString(h.Sum(nil))
	}
	return m.hash
}

// resume loads the checkpoint of this request, if there is one.
func (j *trainJob) resume() error {
	var err error
	if j.fingerprint, err = j.identity(); err != nil {
		return err
	}
	path := filepath.Join(j.req.CheckpointDir, CheckpointFile)
	ck, err := readCheckpoint(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if ck.Fingerprint != j.fingerprint {
		j.b.log.Warn("checkpoint belongs to another training run; starting afresh", "path", path)
		return nil
	}
	if ck.Step > j.req.Steps {
		return fmt.Errorf("%s: checkpoint at step %d is past the run's %d steps", path, ck.Step, j.req.Steps)
	}
	opt := j.trainer.Opt
	targets := map[string][]float32{"weights": j.m.params.Flat()}
	if j.lora != nil {
		targets["lora"] = j.lora.Flat()
	}
	for name, dst := range targets {
		src := ck.Arrays[name]
		if len(src) != len(dst) {
			return fmt.Errorf("%s: %s holds %d values, the run needs %d", path, name, len(src), len(dst))
		}
		copy(dst, src)
	}
	moments := func(name string, n int) ([]float32, error) {
		v := ck.Arrays[name]
		if len(v) != 0 && len(v) != n {
			return nil, fmt.Errorf("%s: %s holds %d values, the run needs %d", path, name, len(v), n)
		}
		if len(v) == 0 {
			return nil, nil
		}
		return v, nil
	}
	n := len(j.m.params.Flat())
	if opt.M, err = moments("adam_m", n); err != nil {
		return err
	}
	if opt.V, err = moments("adam_v", n); err != nil {
		return err
	}
	if j.lora != nil {
		n = len(j.lora.Flat())
		if opt.LoRAM, err = moments("lora_m", n); err != nil {
			return err
		}
		if opt.LoRAV, err = moments("lora_v", n); err != nil {
			return err
		}
	}
	if (opt.M == nil) != (opt.V == nil) || (opt.LoRAM == nil) != (opt.LoRAV == nil) {
		return fmt.Errorf("%s: optimizer moments are incomplete", path)
	}
	opt.T = ck.AdamT
	j.trainer.SetStepIndex(ck.Step)
	j.start, j.tokens, j.history = ck.Step, ck.Tokens, ck.History
	j.b.log.Info("resuming training from checkpoint", "model", j.m.id, "path", path, "step", ck.Step)
	return nil
}

// save writes the checkpoint after step steps.
func (j *trainJob) save(step int) error {
	opt := j.trainer.Opt
	ck := &checkpoint{
		Fingerprint: j.fingerprint,
		Step:        step,
		AdamT:       opt.T,
		Tokens:      j.tokens,
		History:     j.history,
		Arrays: map[string][]float32{
			"weights": j.m.params.Flat(),
			"adam_m":  opt.M,
			"adam_v":  opt.V,
		},
	}
	if j.lora != nil {
		ck.Arrays["lora"] = j.lora.Flat()
		ck.Arrays["lora_m"] = opt.LoRAM
		ck.Arrays["lora_v"] = opt.LoRAV
	}
	path := filepath.Join(j.req.CheckpointDir, CheckpointFile)
	if err := writeCheckpoint(path, ck); err != nil {
		return err
	}
	j.b.log.Debug("checkpoint written", "model", j.m.id, "path", path, "step", step)
	return nil
}
