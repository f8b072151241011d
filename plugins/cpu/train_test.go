package cpu

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
)

func trainOptim() backend.OptimConfig {
	return backend.OptimConfig{LR: 3e-3, MinLR: 3e-4, WarmupSteps: 1, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, GradClip: 1}
}

// TestTrainCEMatchesEngine: Train is the engine's Trainer fed the data's
// rows in order, wrapping around, with the mask applied to the targets —
// bitwise.
func TestTrainCEMatchesEngine(t *testing.T) {
	f := loadStories(t)
	const n, l, bs, accum, steps = 7, 32, 2, 2, 3
	path, rows := f.sequences(t, n, l)
	mask := make([]uint8, n*l)
	for i := range mask {
		mask[i] = uint8(min(1, i%5))
	}
	maskPath := filepath.Join(t.TempDir(), "mask.npy")
	if err := npy.WriteUint8(maskPath, []int{n, l}, mask); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t)
	id := load(t, b, f.dir)
	var events []backend.TrainEvent
	res, err := b.Train(context.Background(), backend.TrainRequest{
		Model: id, Objective: backend.ObjectiveCE, Mode: backend.ModeFull, Optim: trainOptim(),
		Data: backend.Sequences{Path: path, MaskPath: maskPath}, Steps: steps, BatchSize: bs, GradAccum: accum,
	}, func(e backend.TrainEvent) { events = append(events, e) })
	if err != nil {
		t.Fatal(err)
	}

	// The same run on the engine directly.
	m, err := hf.Load(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p, err := engine.FromIR(m)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := engine.New(p, engine.Options{Threads: 1})
	o := trainOptim()
	tr, err := engine.NewTrainer(e, nil, engine.TrainConfig{
		Schedule: engine.Schedule{Peak: o.LR, Min: o.MinLR, Warmup: o.WarmupSteps, Total: steps},
		Beta1:    o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay, ClipNorm: o.GradClip,
	})
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	for s := 0; s < steps; s++ {
		var micro []engine.Batch
		for a := 0; a < accum; a++ {
			var mb engine.Batch
			mb.B, mb.T = bs, l
			for k := 0; k < bs; k++ {
				r := next % n
				next++
				for j := 0; j < l; j++ {
					mb.Tokens = append(mb.Tokens, int32(rows[r][j]))
					id := int32(-1)
					if j+1 < l && mask[r*l+j+1] == 1 {
						id = int32(rows[r][j+1])
					}
					mb.Targets.IDs = append(mb.Targets.IDs, id)
				}
			}
			micro = append(micro, mb)
		}
		st, err := tr.Step(micro)
		if err != nil {
			t.Fatal(err)
		}
		ev := events[s]
		if ev.Step != s+1 || ev.Steps != steps || ev.Loss != st.Loss || ev.LR != st.LR || ev.GradNorm != st.GradNorm || ev.Tokens != int64((s+1)*bs*accum*l) {
			t.Errorf("event %d: %+v; engine step %+v", s, ev, st)
		}
	}
	got := b.models[id].params.Flat()
	for i, v := range p.Flat() {
		if got[i] != v {
			t.Fatalf("weight %d: backend %v, engine %v", i, got[i], v)
		}
	}
	if res.Steps != steps || res.FinalLoss != events[steps-1].Loss || len(res.History) != steps || res.Tokens != int64(steps*bs*accum*l) || res.ResumedFrom != 0 {
		t.Errorf("result %+v", res)
	}
}

// TestTrainKLSelfTeacher: distilling a model from an identical copy starts
// at zero loss, and validation reports LM loss and KL.
func TestTrainKLSelfTeacher(t *testing.T) {
	f := loadStories(t)
	path, _ := f.sequences(t, 6, 32)
	b := newBackend(t)
	student, teacher := load(t, b, f.dir), load(t, b, f.dir)
	before, err := b.Evaluate(context.Background(), backend.EvalRequest{Model: teacher, LM: &backend.Sequences{Path: path, Limit: 4}, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Train(context.Background(), backend.TrainRequest{
		Model: student, Teacher: teacher, Objective: backend.ObjectiveKL,
		Loss: backend.LossConfig{Temperature: 2, ScaleT2: true}, Mode: backend.ModeFull, Optim: trainOptim(),
		Data: backend.Sequences{Path: path}, Steps: 2, BatchSize: 2,
		Validation: &backend.Sequences{Path: path, Limit: 4}, EvalEvery: 1,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l := res.History[0].Loss; math.Abs(l) > 1e-6 {
		t.Errorf("first step's KL to an identical teacher is %v", l)
	}
	for _, ev := range res.History {
		if ev.ValLoss == nil || ev.ValKL == nil {
			t.Fatalf("step %d has no validation", ev.Step)
		}
	}
	// The first step's gradient is exactly zero, so only weight decay
	// moved the student; Adam then amplifies the tiny differences.
	if ev := res.History[0]; *ev.ValKL < 0 || *ev.ValKL > 1e-5 || math.Abs(*ev.ValLoss-before.LM.Loss) > 1e-3 {
		t.Errorf("step 1: validation loss %v (teacher %v), KL %v", *ev.ValLoss, before.LM.Loss, *ev.ValKL)
	}
	if ev := res.History[1]; !(*ev.ValKL > *res.History[0].ValKL) {
		t.Errorf("step 2: KL %v did not grow from %v", *ev.ValKL, *res.History[0].ValKL)
	}
	after, err := b.Evaluate(context.Background(), backend.EvalRequest{Model: student, LM: &backend.Sequences{Path: path, Limit: 4}, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if *res.ValLoss != after.LM.Loss {
		t.Errorf("final validation loss %v, Evaluate on the trained model %v", *res.ValLoss, after.LM.Loss)
	}
	// The teacher is untouched.
	again, _ := b.Evaluate(context.Background(), backend.EvalRequest{Model: teacher, LM: &backend.Sequences{Path: path, Limit: 4}, BatchSize: 2})
	if again.LM.Loss != before.LM.Loss {
		t.Errorf("teacher loss moved from %v to %v", before.LM.Loss, again.LM.Loss)
	}
}

// changedTensors trains and reports which tensors moved.
func changedTensors(t *testing.T, req backend.TrainRequest) (map[string]bool, *backend.TrainResult) {
	t.Helper()
	f := loadStories(t)
	path, _ := f.sequences(t, 4, 32)
	b := newBackend(t)
	id := load(t, b, f.dir)
	p := b.models[id].params
	before := slices.Clone(p.Flat())
	req.Model, req.Data = id, backend.Sequences{Path: path}
	res, err := b.Train(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	changed := map[string]bool{}
	for _, tn := range p.Tensors() {
		if !slices.Equal(tn.Data, before[tn.Offset:tn.Offset+len(tn.Data)]) {
			changed[tn.Name] = true
		}
	}
	return changed, res
}

func TestTrainNormOnly(t *testing.T) {
	changed, _ := changedTensors(t, backend.TrainRequest{Objective: backend.ObjectiveCE, Mode: backend.ModeNormOnly, Optim: trainOptim(), Steps: 2, BatchSize: 2})
	f := loadStories(t)
	for _, name := range f.m.TensorNames() {
		if changed[name] != strings.Contains(name, "norm") {
			t.Errorf("%s: changed = %v", name, changed[name])
		}
	}
}

func TestTrainLoRA(t *testing.T) {
	o := trainOptim()
	o.LR = 1e-2
	changed, res := changedTensors(t, backend.TrainRequest{
		Objective: backend.ObjectiveCE, Mode: backend.ModeLoRA, Optim: o, Steps: 4, BatchSize: 2, Seed: 3,
		LoRA: &backend.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "down_proj"}},
	})
	f := loadStories(t)
	for _, name := range f.m.TensorNames() {
		want := strings.HasSuffix(name, "q_proj.weight") || strings.HasSuffix(name, "down_proj.weight")
		if changed[name] != want {
			t.Errorf("%s: changed = %v, want %v", name, changed[name], want)
		}
	}
	// B starts at zero: the first step sees the base model, and the
	// adapters then learn.
	if h := res.History; !(h[len(h)-1].Loss < h[0].Loss) {
		t.Errorf("LoRA training did not lower the loss: %v → %v", h[0].Loss, h[len(h)-1].Loss)
	}
}

// TestTrainResume: a run cancelled after a checkpoint and started again
// with the same request ends with bitwise the weights and history of an
// uninterrupted run.
func TestTrainResume(t *testing.T) {
	f := loadStories(t)
	path, _ := f.sequences(t, 5, 32)
	val, _ := f.sequences(t, 2, 32)
	kl := backend.LossConfig{Temperature: 1.5, TopK: 20, CEWeight: 0.3}
	for _, c := range []struct {
		name string
		req  backend.TrainRequest
	}{
		{"full-ce", backend.TrainRequest{Objective: backend.ObjectiveCE, Mode: backend.ModeFull}},
		{"lora-kl", backend.TrainRequest{Objective: backend.ObjectiveKL, Loss: kl, Mode: backend.ModeLoRA,
			LoRA: &backend.LoRAConfig{Rank: 2, Targets: []string{"v_proj", "up_proj"}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			req.Optim, req.Data, req.Steps, req.BatchSize, req.GradAccum, req.Seed = trainOptim(), backend.Sequences{Path: path}, 5, 2, 2, 11
			req.Validation, req.EvalEvery = &backend.Sequences{Path: val}, 2
			run := func(b *Backend, req backend.TrainRequest, cancelAt int) (*backend.TrainResult, []float32, error) {
				t.Helper()
				id := load(t, b, f.dir)
				req.Model = id
				if req.Objective == backend.ObjectiveKL {
					req.Teacher = load(t, b, f.dir)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				res, err := b.Train(ctx, req, func(ev backend.TrainEvent) {
					if ev.Step == cancelAt {
						cancel()
					}
				})
				return res, b.models[id].params.Flat(), err
			}
			want, wantW, err := run(newBackend(t), req, -1)
			if err != nil {
				t.Fatal(err)
			}

			ck := req
			ck.CheckpointDir, ck.CheckpointEvery = t.TempDir(), 2
			b := newBackend(t)
			_, w, err := run(b, ck, 3)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled run returned %v", err)
			}
			// The cancelled run left the model as it was loaded.
			b2 := newBackend(t)
			if fresh := b2.models[load(t, b2, f.dir)].params.Flat(); !slices.Equal(w, fresh) {
				t.Error("a cancelled run left its weights changed")
			}
			// Resume on the same backend (the model as loaded again) and
			// on a fresh one.
			for i, bk := range []*Backend{b, newBackend(t)} {
				got, gotW, err := run(bk, ck, -1)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 && got.ResumedFrom != 2 || i == 1 && got.ResumedFrom != 5 {
					t.Errorf("resume %d started at step %d", i, got.ResumedFrom)
				}
				if !slices.Equal(gotW, wantW) {
					t.Fatalf("resume %d: final weights differ from the uninterrupted run's", i)
				}
				if len(got.History) != len(want.History) {
					t.Fatalf("resume %d: %d history entries, want %d", i, len(got.History), len(want.History))
				}
				for s, ev := range got.History {
					w := want.History[s]
					if ev.Loss != w.Loss || ev.GradNorm != w.GradNorm || ev.Tokens != w.Tokens || (ev.ValLoss == nil) != (w.ValLoss == nil) || ev.ValLoss != nil && *ev.ValLoss != *w.ValLoss {
						t.Errorf("resume %d: step %d is %+v, uninterrupted %+v", i, s+1, ev, w)
					}
				}
			}
			// Another request does not resume from this checkpoint.
			other := ck
			other.Optim.LR *= 2
			got, _, err := run(newBackend(t), other, -1)
			if err != nil {
				t.Fatal(err)
			}
			if got.ResumedFrom != 0 {
				t.Errorf("a different request resumed from step %d", got.ResumedFrom)
			}
		})
	}
}

func TestTrainRejects(t *testing.T) {
	f := loadStories(t)
	path, _ := f.sequences(t, 2, 16)
	b := newBackend(t)
	id := load(t, b, f.dir)
	other := load(t, b, f.dir)
	ok := backend.TrainRequest{Model: id, Objective: backend.ObjectiveCE, Mode: backend.ModeFull, Optim: trainOptim(), Data: backend.Sequences{Path: path}, Steps: 1, BatchSize: 1}
	for _, c := range []struct {
		name string
		edit func(r *backend.TrainRequest)
		want string
	}{
		{"no steps", func(r *backend.TrainRequest) { r.Steps = 0 }, "steps"},
		{"no batch", func(r *backend.TrainRequest) { r.BatchSize = 0 }, "batch_size"},
		{"objective", func(r *backend.TrainRequest) { r.Objective = "mse" }, "objective"},
		{"mode", func(r *backend.TrainRequest) { r.Mode = "half" }, "mode"},
		{"kl without teacher", func(r *backend.TrainRequest) { r.Objective = backend.ObjectiveKL }, "teacher"},
		{"self teacher", func(r *backend.TrainRequest) { r.Objective, r.Teacher = backend.ObjectiveKL, id }, "teacher"},
		{"ce weight", func(r *backend.TrainRequest) {
			r.Objective, r.Teacher, r.Loss.CEWeight = backend.ObjectiveKL, other, 1.5
		}, "ce_weight"},
		{"lr", func(r *backend.TrainRequest) { r.Optim.LR = 0 }, "learning rate"},
		{"lora target", func(r *backend.TrainRequest) {
			r.Mode, r.LoRA = backend.ModeLoRA, &backend.LoRAConfig{Rank: 2, Targets: []string{"embed"}}
		}, "lora target"},
		{"lora outside lora mode", func(r *backend.TrainRequest) { r.LoRA = &backend.LoRAConfig{Rank: 2} }, "lora"},
		{"data", func(r *backend.TrainRequest) { r.Data.Path = filepath.Join(t.TempDir(), "none.npy") }, "none.npy"},
		{"model", func(r *backend.TrainRequest) { r.Model = "m99" }, "m99"},
	} {
		r := ok
		c.edit(&r)
		if _, err := b.Train(context.Background(), r, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	if _, err := b.Train(context.Background(), ok, nil); err != nil {
		t.Errorf("the valid request failed: %v", err)
	}
	// With ce, a teacher is only measured against.
	withTeacher := ok
	withTeacher.Teacher, withTeacher.Validation = other, &backend.Sequences{Path: path}
	res, err := b.Train(context.Background(), withTeacher, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ValKL == nil || !(*res.ValKL > 0) {
		t.Errorf("ce with a teacher: validation KL %v", res.ValKL)
	}
}
