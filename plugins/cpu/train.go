package cpu

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"time"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/batch"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
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
	res, err := req.Resolve()
	if err != nil {
		return nil, fmt.Errorf("cpu: train %s: %w", req.Model, err)
	}
	job, err := b.newTrainJob(m, res)
	if err != nil {
		return nil, fmt.Errorf("cpu: train %s: %w", req.Model, err)
	}
	defer job.close()
	out, err := job.run(ctx, events)
	if err != nil {
		job.rollback()
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cpu: train %s: %w", req.Model, err)
	}
	return out, nil
}

// trainJob is one Train call being run.
type trainJob struct {
	b        *Backend
	req      backend.ResolvedTrain
	m        *model
	teacher  *model
	data     *batch.Sequences
	val      *batch.Sequences
	trainer  *engine.Trainer
	lora     *engine.LoRA
	snapshot map[int][]float32 // trainable tensors' initial values, by Tensors index
	hash0    string            // the model's weights hash before the run
	// Checkpoint identity and what a resumed run carries over.
	fingerprint string
	start       int
	tokens      int64
	history     []backend.TrainEvent
}

func (b *Backend) newTrainJob(m *model, req backend.ResolvedTrain) (*trainJob, error) {
	j := &trainJob{b: b, req: req, m: m}
	cfg := &m.params.Config
	var err error
	if req.Teacher != "" {
		if j.teacher, err = b.model(req.Teacher); err != nil {
			return nil, err
		}
		if err := req.CheckTeacherVocab(cfg.Vocab, j.teacher.params.Config.Vocab); err != nil {
			return nil, err
		}
	}
	o := req.Optim
	tc := engine.TrainConfig{
		Objective:   engine.Objective{KLWeight: req.KLWeight, Temperature: req.Loss.Temperature, ScaleT2: req.Loss.ScaleT2, TopK: req.Loss.TopK, RouterAux: req.Loss.RouterAuxWeight},
		Schedule:    engine.Schedule{Peak: o.LR, Min: o.MinLR, Warmup: o.WarmupSteps, Total: req.Steps},
		Beta1:       o.Beta1,
		Beta2:       o.Beta2,
		Eps:         o.Eps,
		WeightDecay: o.WeightDecay,
		ClipNorm:    o.GradClip,
	}
	var frozen func(string) bool // nil: everything trains
	if req.Mode != backend.ModeFull {
		frozen = func(name string) bool { return !req.Trains(name) }
	}
	if req.Adapters != nil {
		a := req.Adapters
		if j.lora, err = engine.NewLoRA(*cfg, engine.LoRAConfig{Rank: a.Rank, Alpha: a.Alpha, Targets: a.Roles}, uint64(req.Seed)); err != nil {
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
	if j.teacher != nil && req.KLWeight > 0 {
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
	micro := make([]engine.Batch, req.GradAccum)
	for step := j.start; step < req.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for i := range micro {
			first := (step*req.GradAccum + i) * bs
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
		j.tokens += int64(bs * l * req.GradAccum)
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

// identity is the checkpoint key of this run (see
// backend.ResolvedTrain.CheckpointKey).
func (j *trainJob) identity() (string, error) {
	st := backend.CheckpointState{
		DataShape: [2]int{j.data.Rows, j.data.Cols},
		Weights:   j.m.weightsHash(),
		Layout:    []string{fmt.Sprintf("weights/%d", len(j.m.params.Flat()))},
	}
	if j.teacher != nil {
		st.Teacher = j.teacher.weightsHash()
	}
	if j.lora != nil {
		st.Layout = append(st.Layout, fmt.Sprintf("lora/%d", len(j.lora.Flat())))
	}
	return j.req.CheckpointKey(st)
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
