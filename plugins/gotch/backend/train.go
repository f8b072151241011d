package backend

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/batch"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// Train runs the optimization loop of req on the model's weights, with
// the CPU backend's data order and semantics: step s (0-based) consumes
// the BatchSize×GradAccum sequences starting at row s·BatchSize·GradAccum
// of Data (wrapping around) as GradAccum micro-batches whose mean loss is
// differentiated; gradients are clipped to GradClip (global norm, as
// PyTorch's clip_grad_norm_) and AdamW (decay on matrices only) steps at
// the warm-up + cosine learning rate. A Train that fails or is cancelled
// leaves the weights as they were.
func (b *Backend) Train(ctx context.Context, req api.TrainRequest, events func(api.TrainEvent)) (*api.TrainResult, error) {
	var res *api.TrainResult
	err := b.do(ctx, func() error {
		r, err := req.Resolve()
		if err != nil {
			return fmt.Errorf("gotch: train %s: %w", req.Model, err)
		}
		j, err := b.newTrainJob(r)
		if err != nil {
			return fmt.Errorf("gotch: train %s: %w", req.Model, err)
		}
		defer j.close()
		res, err = j.run(ctx, events)
		if err != nil {
			j.rollback()
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return ctx.Err()
			}
			return fmt.Errorf("gotch: train %s: %w", req.Model, err)
		}
		return nil
	})
	return res, err
}

// trainJob is one Train call being run.
type trainJob struct {
	b        *Backend
	req      api.ResolvedTrain
	m        *model
	teacher  *model
	data     *batch.Sequences
	val      *batch.Sequences
	obj      objective
	params   []string       // trainable tensors' names (checkpoint keys)
	ws       []torch.Tensor // the trainable tensors: weights, or adapters
	wd       []float64      // their weight decay
	lora     *loraSet
	state    *torch.Scope
	mom, vel []torch.Tensor // AdamW moments, like ws
	adamT    int
	snapshot map[string][]float32
	// Checkpoint identity and what a resumed run carries over.
	fingerprint string
	start       int
	tokens      int64
	history     []api.TrainEvent
}

func (b *Backend) newTrainJob(req api.ResolvedTrain) (*trainJob, error) {
	m, err := b.model(req.Model)
	if err != nil {
		return nil, err
	}
	j := &trainJob{b: b, req: req, m: m, state: torch.NewScope()}
	l := req.Loss
	j.obj = objective{alpha: req.KLWeight, tau: l.Temperature, scaleT2: l.ScaleT2, topK: l.TopK, routerAux: l.RouterAuxWeight}
	cfg := &m.cfg
	if req.Teacher != "" {
		// With objective ce the teacher is only measured against (ValKL).
		if j.teacher, err = b.model(req.Teacher); err != nil {
			return nil, err
		}
		if err := req.CheckTeacherVocab(cfg.Vocab, j.teacher.cfg.Vocab); err != nil {
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
	if m.store != torch.Float32 {
		// Loaded for inference in bfloat16: train from the file's weights.
		if err := b.promote(m); err != nil {
			j.close()
			return nil, err
		}
	}
	for _, name := range m.names {
		if req.Trains(name) {
			w := m.w[name]
			j.params = append(j.params, name)
			j.ws = append(j.ws, w)
			d := 0.0
			if len(w.Shape()) == 2 {
				d = req.Optim.WeightDecay // matrices only, not norm weights
			}
			j.wd = append(j.wd, d)
		}
	}
	if req.Adapters != nil {
		if j.lora, err = b.newLoRA(*cfg, *req.Adapters, req.Seed); err != nil {
			j.close()
			return nil, err
		}
		j.params, j.ws = j.lora.params()
		for range j.ws {
			j.wd = append(j.wd, req.Optim.WeightDecay) // adapters are matrices: decayed, as PEFT's are
		}
	}
	return j, nil
}

// promote reloads a model stored in bfloat16 with float32 weights.
func (b *Backend) promote(m *model) error {
	im, err := hf.Load(m.dir)
	if err != nil {
		return fmt.Errorf("model %s was loaded without trainable and its directory cannot be reloaded in float32: %w", m.id, err)
	}
	defer im.Close()
	fresh, err := b.upload(im, torch.Float32)
	if err != nil {
		return fmt.Errorf("reloading %s in float32: %w", m.dir, err)
	}
	b.log.Warn("model loaded for inference is trained: reloaded with float32 weights", "model", m.id, "dir", m.dir)
	m.free()
	m.w, m.store, m.rope, m.hash = fresh.w, torch.Float32, fresh.rope, ""
	return nil
}

// lrAt is the learning rate of step (0-based): linear warm-up to the peak
// over WarmupSteps, then cosine decay to MinLR at the last step.
func lrAt(o api.OptimConfig, step, total int) float64 {
	if step < o.WarmupSteps {
		return o.LR * float64(step+1) / float64(o.WarmupSteps)
	}
	if total <= o.WarmupSteps {
		return o.LR
	}
	progress := min(1, float64(step-o.WarmupSteps)/float64(total-o.WarmupSteps))
	return o.MinLR + 0.5*(o.LR-o.MinLR)*(1+math.Cos(math.Pi*progress))
}

func (j *trainJob) close() {
	if j.data != nil {
		j.data.Close()
	}
	if j.val != nil {
		j.val.Close()
	}
	s := torch.NewScope()
	for _, t := range j.ws {
		s.SetRequiresGrad(t, false)
	}
	s.ZeroGrad(j.ws)
	s.Free()
	j.state.Free()
	j.lora.free()
	torch.SetGradEnabled(false)
}

// rollback restores the weights a failed run may have changed.
func (j *trainJob) rollback() {
	if j.snapshot == nil {
		return
	}
	s := torch.NewScope()
	defer s.Free()
	for name, v := range j.snapshot {
		t := j.m.w[name]
		s.CopyInto(t, s.FromFloat32(v, t.Shape()...))
	}
	if err := s.Err(); err != nil {
		j.b.log.Error("restoring the weights after a failed run", "model", j.m.id, "err", err)
	}
	j.m.hash = ""
}

func (j *trainJob) run(ctx context.Context, events func(api.TrainEvent)) (*api.TrainResult, error) {
	req, m, b := j.req, j.m, j.b
	// Keep what training changes, to restore it if the run fails (adapters
	// touch the weights only when merged, at the very end).
	j.snapshot = map[string][]float32{}
	if j.lora == nil {
		s := torch.NewScope()
		for _, name := range j.params {
			j.snapshot[name] = s.Float32s(m.w[name])
		}
		err := s.Err()
		s.Free()
		if err != nil {
			return nil, err
		}
	}
	for _, w := range j.ws {
		j.mom = append(j.mom, j.state.ZerosLike(w))
		j.vel = append(j.vel, j.state.ZerosLike(w))
	}
	if err := j.state.Err(); err != nil {
		return nil, err
	}
	if req.CheckpointDir != "" {
		if err := j.resume(); err != nil {
			return nil, err
		}
	}
	m.hash = ""
	ws := j.ws
	{
		s := torch.NewScope()
		for _, w := range ws {
			s.SetRequiresGrad(w, true)
		}
		err := s.Err()
		s.Free()
		if err != nil {
			return nil, err
		}
	}
	wd := j.wd
	began := time.Now()
	tokens0 := j.tokens
	bs, l := req.BatchSize, j.data.Cols
	for step := j.start; step < req.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		lr := lrAt(req.Optim, step, req.Steps)
		var loss float64
		for i := 0; i < req.GradAccum; i++ {
			first := (step*req.GradAccum + i) * bs
			tokens, ids, err := readBatch(j.data, first%j.data.Rows, bs)
			if err != nil {
				return nil, err
			}
			out, err := b.trainMicro(m, j.teacher, j.lora, tokens, ids, bs, l, j.obj, 1/float64(req.GradAccum))
			if err != nil {
				return nil, fmt.Errorf("step %d micro-batch %d: %w", step+1, i, err)
			}
			loss += out.loss / float64(req.GradAccum)
		}
		s := torch.NewScope()
		grads := make([]torch.Tensor, len(ws))
		for i, w := range ws {
			if grads[i] = s.Grad(w); !grads[i].Defined() && s.Err() == nil {
				grads[i] = s.ZerosLike(w) // a weight the loss does not reach
			}
		}
		norm := s.Item64(s.GlobalNorm(grads))
		if err := s.Err(); err != nil {
			s.Free()
			return nil, fmt.Errorf("step %d: %w", step+1, err)
		}
		if math.IsNaN(norm) || math.IsInf(norm, 0) {
			s.Free()
			return nil, fmt.Errorf("step %d: gradient norm is %g", step+1, norm)
		}
		clip := 1.0
		if c := req.Optim.GradClip; c > 0 && norm > c {
			clip = c / (norm + 1e-6)
		}
		j.adamT++
		s.AdamWStep(ws, grads, j.mom, j.vel, wd, int64(j.adamT), lr, req.Optim.Beta1, req.Optim.Beta2, req.Optim.Eps, clip, b.fused)
		s.ZeroGrad(ws)
		err := s.Err()
		s.Free()
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", step+1, err)
		}
		j.tokens += int64(bs * l * req.GradAccum)
		ev := api.TrainEvent{Step: step + 1, Steps: req.Steps, Loss: loss, LR: lr, GradNorm: norm, Tokens: j.tokens}
		last := step+1 == req.Steps
		if j.val != nil && (last || req.EvalEvery > 0 && (step+1)%req.EvalEvery == 0) {
			p, err := b.lmPass(ctx, m, j.teacher, j.val, bs, fwdOpts{adapters: j.lora})
			if err != nil {
				return nil, fmt.Errorf("step %d: validation: %w", step+1, err)
			}
			ev.ValLoss = &p.ce
			if j.teacher != nil {
				ev.ValKL = &p.kl
			}
		}
		j.history = append(j.history, ev)
		if req.CheckpointDir != "" && (last || req.CheckpointEvery > 0 && (step+1)%req.CheckpointEvery == 0) {
			if err := j.save(step + 1); err != nil {
				return nil, err
			}
		}
		b.log.Debug("train step", "model", m.id, "step", ev.Step, "steps", ev.Steps, "loss", ev.Loss, "lr", ev.LR, "grad_norm", ev.GradNorm)
		if events != nil {
			events(ev)
		}
	}
	if j.lora != nil {
		if err := j.lora.merge(m); err != nil {
			return nil, fmt.Errorf("merging the adapters: %w", err)
		}
	}
	res := &api.TrainResult{Steps: req.Steps, Tokens: j.tokens, History: j.history, ResumedFrom: j.start}
	if n := len(j.history); n > 0 {
		last := j.history[n-1]
		res.FinalLoss, res.ValLoss, res.ValKL = last.Loss, last.ValLoss, last.ValKL
	}
	if s := time.Since(began).Seconds(); s > 0 {
		res.TokensPerS = float64(j.tokens-tokens0) / s
	}
	return res, nil
}

// trainMicro runs one micro-batch forward and backward, adding the
// gradient of scale·loss into the trainable weights' gradients.
func (b *Backend) trainMicro(m, teacher *model, adapters *loraSet, tokens []int64, ids []int32, n, t int, obj objective, scale float64) (lossOut, error) {
	s := torch.NewScope()
	defer s.Free()
	defer torch.SetGradEnabled(false)
	x := s.To(s.FromInt64(tokens, int64(n), int64(t)), b.dev)
	if err := s.Err(); err != nil {
		return lossOut{}, err
	}
	in := lossIn{student: m, ids: ids, obj: obj, grad: true, scale: scale}
	if teacher != nil && obj.alpha > 0 {
		th, err := b.forward(s, teacher, x, n, t, fwdOpts{})
		if err != nil {
			return lossOut{}, fmt.Errorf("teacher: %w", err)
		}
		in.teacher, in.th = teacher, th
	}
	torch.SetGradEnabled(true)
	o := fwdOpts{adapters: adapters}
	if obj.routerAux > 0 && hasMoE(&m.cfg) {
		o.aux = &routerAux{s: s}
	}
	h, err := b.forward(s, m, x, n, t, o)
	if err != nil {
		return lossOut{}, err
	}
	in.h = h
	if o.aux != nil {
		in.aux = o.aux.loss(s, b.dev)
	}
	return b.loss(s, in)
}
