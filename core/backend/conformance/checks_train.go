package conformance

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

// targetsOf returns each position's next-token target (−1 at the last
// position and where the mask excludes it).
func targetsOf(row []int, mask []uint8) []int {
	t := make([]int, len(row))
	for j := range row {
		t[j] = -1
		if j+1 < len(row) && (mask == nil || mask[j+1] == 1) {
			t[j] = row[j+1]
		}
	}
	return t
}

// microLoss is the training loss of one step of single-row micro-batches:
// the mean over micro-batches of each one's objective.
func microLoss(g *golden, teacherLogits [][][]float64, obj objective, rows [][]int, masks [][]uint8) float64 {
	var total float64
	for i, r := range rows {
		var m []uint8
		if masks != nil {
			m = masks[i]
		}
		var acts []decoder64.LayerActs
		if obj.routerAux > 0 {
			acts = make([]decoder64.LayerActs, len(g.Config.Layers))
		}
		z := [][][]float64{g.Forward(r, nil, acts)}
		var zt [][][]float64
		if teacherLogits != nil {
			zt = [][][]float64{teacherLogits[i]}
		}
		l, _, _, _ := obj.batchLoss(z, zt, [][]int{targetsOf(r, m)})
		if obj.routerAux > 0 {
			l += obj.routerAux * routerAux(&g.Config, acts)
		}
		total += l
	}
	return total / float64(len(rows))
}

func goldenObjective(kind string, l backend.LossConfig) objective {
	if kind == backend.ObjectiveCE {
		return objective{routerAux: l.RouterAuxWeight}
	}
	return objective{alpha: 1 - l.CEWeight, tau: l.Temperature, scaleT2: l.ScaleT2, topK: l.TopK, routerAux: l.RouterAuxWeight}
}

// routerAux is Hugging Face's load_balancing_loss_func over one
// micro-batch's routing: the rows of all MoE layers with one expert count
// concatenated, num_experts · Σ_e f_e·P_e with f_e the mean over rows of
// the top-k one-hot masks summed over slots and P_e the mean router
// probability; groups of other counts add.
func routerAux(cfg *ir.Config, acts []decoder64.LayerActs) float64 {
	groups := map[int][]decoder64.MoEActs{}
	for l, lc := range cfg.Layers {
		if lc.MoE() {
			groups[lc.Experts] = append(groups[lc.Experts], acts[l].MoE...)
		}
	}
	var total float64
	for ne, rows := range groups {
		f, p := make([]float64, ne), make([]float64, ne)
		for _, r := range rows {
			for _, e := range r.Chosen {
				f[e]++
			}
			for e, v := range r.Probs {
				p[e] += v
			}
		}
		m := float64(len(rows))
		var s float64
		for e := range f {
			s += f[e] / m * p[e] / m
		}
		total += float64(ne) * s
	}
	return total
}

func hasMoE(cfg ir.Config) bool {
	for _, l := range cfg.Layers {
		if l.MoE() {
			return true
		}
	}
	return false
}

// gradCase is one gradient check's setting, and the float64 gradient by
// central differences (for the entries checked).
type gradCase struct {
	rows    [][]int
	masks   [][]uint8
	obj     objective
	tlog    [][][]float64
	loss    float64
	grad    map[string][]float64 // NaN where not computed
	checked map[string][]int
	full    bool // every entry computed
}

func (s *suite) gradientOf(f, teacher *fixture, kind string, lc backend.LossConfig, masked bool) *gradCase {
	key := fmt.Sprintf("%s/%v/%s/%+v/%v", f.name, teacher != nil, kind, lc, masked)
	if gc, ok := s.grads[key]; ok {
		return gc
	}
	gc := &gradCase{rows: f.seqs[:2], obj: goldenObjective(kind, lc), grad: map[string][]float64{}, checked: map[string][]int{}}
	if masked {
		gc.masks = f.mask[:2]
	}
	if teacher != nil {
		for _, r := range gc.rows {
			gc.tlog = append(gc.tlog, teacher.g.Forward(r, nil, nil))
		}
	}
	gc.loss = microLoss(f.g, gc.tlog, gc.obj, gc.rows, gc.masks)
	rng := rand.New(rand.NewPCG(3, 4))
	// Every weight of the tiny model for plain cross-entropy (the AdamW
	// check needs them all); a sample of each tensor otherwise.
	perTensor := 24
	switch {
	case f.tok != nil:
		perTensor = 1
	case kind == backend.ObjectiveCE && masked:
		perTensor = math.MaxInt
		gc.full = true
	}
	names := make([]string, 0, len(f.g.W))
	for n := range f.g.W {
		names = append(names, n)
	}
	sort.Strings(names)
	type entry struct {
		name string
		i    int
	}
	var entries []entry
	for _, name := range names {
		w := f.g.W[name]
		if f.tok != nil && !strings.Contains(name, "layers.4.") && !strings.HasPrefix(name, "model.norm") && name != ir.NameEmbed {
			continue
		}
		var idx []int
		if perTensor >= len(w) {
			for i := range w {
				idx = append(idx, i)
			}
		} else {
			idx = rng.Perm(len(w))[:perTensor]
		}
		if name == ir.NameEmbed {
			// Rows of tokens the batch uses have non-zero gradients.
			d := f.g.Config.Hidden
			idx = append(idx, gc.rows[0][3]*d+rng.IntN(d), gc.rows[1][5]*d+rng.IntN(d))
		}
		out := make([]float64, len(w))
		for i := range out {
			out[i] = math.NaN()
		}
		gc.grad[name] = out
		gc.checked[name] = idx
		for _, i := range idx {
			entries = append(entries, entry{name, i})
		}
	}
	// Central differences, split over goroutines that each perturb their
	// own copy of the weights.
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for k := 0; k < workers; k++ {
		g := f.g.Clone()
		// A mixture of experts' loss jumps where a step changes a token's
		// experts: a smaller step (exact enough in float64) avoids that.
		h := 1e-4
		if hasMoE(f.g.Config) {
			h = 1e-6
		}
		wg.Go(func() {
			for e := k; e < len(entries); e += workers {
				w := g.W[entries[e].name]
				i := entries[e].i
				orig := w[i]
				w[i] = orig + h
				lp := microLoss(g, gc.tlog, gc.obj, gc.rows, gc.masks)
				w[i] = orig - h
				lm := microLoss(g, gc.tlog, gc.obj, gc.rows, gc.masks)
				w[i] = orig
				gc.grad[entries[e].name][i] = (lp - lm) / (2 * h)
			}
		})
	}
	wg.Wait()
	if s.grads == nil {
		s.grads = map[string]*gradCase{}
	}
	s.grads[key] = gc
	return gc
}

// trainOnce loads f (and teacher), trains with req filled in, and returns
// the result, the weights before and after.
func (s *suite) trainOnce(t *testing.T, b backend.Backend, f, teacher *fixture, req backend.TrainRequest) (*backend.TrainResult, *ir.Model, []backend.TrainEvent) {
	t.Helper()
	req.Model = s.load(t, b, f, true)
	if teacher != nil {
		req.Teacher = s.load(t, b, teacher, false)
	}
	var events []backend.TrainEvent
	res, err := b.Train(s.ctx, req, func(e backend.TrainEvent) { events = append(events, e) })
	if err != nil {
		t.Fatalf("train: %v", err)
	}
	return res, s.saved(t, b, req.Model), events
}

// saved returns a model's current weights, through Save.
func (s *suite) saved(t *testing.T, b backend.Backend, id backend.ModelID) *ir.Model {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "after")
	if err := b.Save(s.ctx, backend.SaveRequest{Model: id, Dir: dir}); err != nil {
		t.Fatalf("save: %v", err)
	}
	m, err := hf.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func weightsOf(t *testing.T, m *ir.Model, name string) []float64 {
	t.Helper()
	tt, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tt.Float32()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// checkGradient recovers the gradient of one step from the update AdamW
// makes at step 1 with ε = 1: θ₁ = θ₀ − lr·g/(|g|+1), so
// g = u/(1−|u|) with u = (θ₀−θ₁)/lr.
func (s *suite) checkGradient(t *testing.T, f, teacher *fixture, kind string, lc backend.LossConfig, masked bool) {
	gc := s.gradientOf(f, teacher, kind, lc, masked)
	data := f.data
	if masked {
		data = f.masked
	}
	req := backend.TrainRequest{Objective: kind, Loss: lc, Mode: backend.ModeFull, Data: data, Steps: 1, BatchSize: 1, GradAccum: 2,
		Optim: backend.OptimConfig{LR: 1, MinLR: 1, Eps: 1}}
	res, after, events := s.trainOnce(t, s.b, f, teacher, req)
	if len(events) != 1 || res.Steps != 1 {
		t.Fatalf("%d events, %d steps for a one-step run", len(events), res.Steps)
	}
	s.expectLoss(t, "first step loss", events[0].Loss, gc.loss)
	if res.FinalLoss != events[0].Loss {
		t.Errorf("FinalLoss %g differs from the last event's %g", res.FinalLoss, events[0].Loss)
	}
	var norm2, gmax float64
	for _, g := range gc.grad {
		for _, v := range g {
			if !math.IsNaN(v) {
				gmax = math.Max(gmax, math.Abs(v))
				norm2 += v * v
			}
		}
	}
	if gc.full && !closeRel(events[0].GradNorm, math.Sqrt(norm2), s.tol.Grad, 0) {
		t.Errorf("gradient norm %g, want %g", events[0].GradNorm, math.Sqrt(norm2))
	}
	bad := 0
	for name, want := range gc.grad {
		w0 := f.g.W[name]
		w1 := weightsOf(t, after, name)
		var scale float64
		for _, i := range gc.checked[name] {
			scale = math.Max(scale, math.Abs(want[i]))
		}
		scale = math.Max(scale, 1e-2*gmax)
		for _, i := range gc.checked[name] {
			u := w0[i] - w1[i]
			got := u / (1 - math.Abs(u))
			if math.Abs(got-want[i]) > s.tol.Grad*scale || math.IsNaN(got) {
				if bad < 5 {
					t.Errorf("d loss / d %s[%d] = %.6g, want %.6g (finite differences)", name, i, got, want[i])
				}
				bad++
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d gradient entries differ", bad)
	}
}

// checkAdamWStep checks one step's update against AdamW's formula with
// the finite-difference gradient: decoupled decay on matrices only,
// clipping to the global norm, warm-up learning rate.
func (s *suite) checkAdamWStep(t *testing.T) {
	f := s.tiny
	gc := s.gradientOf(f, nil, backend.ObjectiveCE, backend.LossConfig{}, true)
	const lr, wd, clipTo = 1e-2, 0.1, 0.5
	req := backend.TrainRequest{Objective: backend.ObjectiveCE, Mode: backend.ModeFull, Data: f.masked, Steps: 1, BatchSize: 1, GradAccum: 2,
		Optim: backend.OptimConfig{LR: lr, WarmupSteps: 2, WeightDecay: wd, GradClip: clipTo}}
	_, after, events := s.trainOnce(t, s.b, f, nil, req)
	var norm2, gmax float64
	for _, g := range gc.grad {
		for _, v := range g {
			norm2 += v * v
			gmax = math.Max(gmax, math.Abs(v))
		}
	}
	norm := math.Sqrt(norm2)
	if !closeRel(events[0].GradNorm, norm, s.tol.Grad, 0) {
		t.Errorf("gradient norm %g, want %g", events[0].GradNorm, norm)
	}
	if events[0].LR != lr/2 {
		t.Errorf("first warm-up step's learning rate %g, want %g", events[0].LR, lr/2)
	}
	clip := 1.0
	if norm > clipTo {
		clip = clipTo / (norm + 1e-6)
	}
	step := lr / 2
	bad := 0
	for name, g := range gc.grad {
		w0 := f.g.W[name]
		w1 := weightsOf(t, after, name)
		tt, _ := f.m.Tensor(name)
		decay := 1.0
		if len(tt.Shape) == 2 {
			decay = 1 - step*wd
		}
		for i := range w0 {
			if math.Abs(g[i]) < s.tol.Grad*gmax {
				continue // the update's sign is not determined at this precision
			}
			gh := g[i] * clip
			want := w0[i]*decay - step*gh/(math.Abs(gh)+1e-8)
			if math.Abs(w1[i]-want) > 1e-6*math.Abs(w0[i])+step*s.tol.Grad {
				if bad < 5 {
					t.Errorf("%s[%d] after one step = %.8g, want %.8g", name, i, w1[i], want)
				}
				bad++
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d weights differ from AdamW's update", bad)
	}
}

// checkNormOnly: only norm weights move.
func (s *suite) checkNormOnly(t *testing.T) {
	f := s.tiny
	req := backend.TrainRequest{Objective: backend.ObjectiveCE, Mode: backend.ModeNormOnly, Data: f.data, Steps: 2, BatchSize: 2,
		Optim: backend.OptimConfig{LR: 1e-2}}
	_, after, _ := s.trainOnce(t, s.b, f, nil, req)
	for _, name := range f.m.TensorNames() {
		w0, w1 := f.g.W[name], weightsOf(t, after, name)
		changed := !slices.Equal(w0, w1)
		if isNorm := strings.Contains(name, "norm"); changed != isNorm {
			t.Errorf("%s: changed = %v in norm-only mode", name, changed)
		}
	}
}

// lrAt is OptimConfig's schedule.
func lrAt(o backend.OptimConfig, step, total int) float64 {
	if step < o.WarmupSteps {
		return o.LR * float64(step+1) / float64(o.WarmupSteps)
	}
	if total <= o.WarmupSteps {
		return o.LR
	}
	p := math.Min(1, float64(step-o.WarmupSteps)/float64(total-o.WarmupSteps))
	return o.MinLR + 0.5*(o.LR-o.MinLR)*(1+math.Cos(math.Pi*p))
}

func (s *suite) checkSchedule(t *testing.T) {
	f := s.tiny
	o := backend.OptimConfig{LR: 1e-3, MinLR: 1e-4, WarmupSteps: 2, GradClip: 1}
	req := backend.TrainRequest{Objective: backend.ObjectiveCE, Mode: backend.ModeFull, Data: f.data, Steps: 6, BatchSize: 2, Optim: o}
	res, _, events := s.trainOnce(t, s.b, f, nil, req)
	if len(events) != 6 || len(res.History) != 6 {
		t.Fatalf("%d events and %d history entries, want 6", len(events), len(res.History))
	}
	l := len(f.seqs[0])
	for i, e := range events {
		if e.Step != i+1 || e.Steps != 6 {
			t.Errorf("event %d: step %d of %d", i, e.Step, e.Steps)
		}
		if want := lrAt(o, i, 6); !closeRel(e.LR, want, 1e-9, 0) {
			t.Errorf("step %d: learning rate %g, want %g", i+1, e.LR, want)
		}
		if want := int64((i + 1) * 2 * l); e.Tokens != want {
			t.Errorf("step %d: %d tokens, want %d", i+1, e.Tokens, want)
		}
		if e.ValLoss != nil {
			t.Errorf("step %d has a validation loss without validation data", i+1)
		}
	}
	if res.Tokens != events[5].Tokens || res.ResumedFrom != 0 {
		t.Errorf("result tokens %d / resumed from %d", res.Tokens, res.ResumedFrom)
	}
}

// checkValidation: validation at EvalEvery and at the end, matching the
// golden LM loss and KL of the trained weights.
func (s *suite) checkValidation(t *testing.T) {
	f, teacher := s.tiny, s.teacher
	req := backend.TrainRequest{Objective: backend.ObjectiveKL, Loss: backend.LossConfig{Temperature: 1.5, CEWeight: 0.5}, Mode: backend.ModeFull,
		Data: f.data, Validation: &f.val, EvalEvery: 2, Steps: 3, BatchSize: 2, Optim: backend.OptimConfig{LR: 3e-3}}
	res, after, events := s.trainOnce(t, s.b, f, teacher, req)
	for i, e := range events {
		want := e.Step == 2 || e.Step == 3
		if (e.ValLoss != nil) != want || (e.ValKL != nil) != want {
			t.Errorf("step %d: validation loss present %v, KL present %v, want %v", e.Step, e.ValLoss != nil, e.ValKL != nil, want)
		}
		_ = i
	}
	s.expectFinalValidation(t, f, teacher, after, res)
	if last := events[len(events)-1]; last.ValLoss == nil || *last.ValLoss != *res.ValLoss {
		t.Error("the result's validation loss differs from the last event's")
	}
}

// checkResume: a run cancelled after a checkpoint leaves the weights
// untouched, and the same request then resumes and ends where an
// uninterrupted run does. The cancellation comes from the step-2 event;
// an out-of-process backend sees it a little later (the events stream
// ahead of the client), so the run is long enough for it to land before
// the end, and the resume point is any checkpoint from step 2 on.
func (s *suite) checkResume(t *testing.T) {
	for _, mode := range []string{backend.ModeFull, backend.ModeLoRA} {
		t.Run(mode, func(t *testing.T) {
			if mode == backend.ModeLoRA && s.opts.NoLoRA {
				t.Skip("the backend has no LoRA")
			}
			s.checkResumeMode(t, mode)
		})
	}
}

func (s *suite) checkResumeMode(t *testing.T, mode string) {
	f, teacher := s.tiny, s.teacher
	base := backend.TrainRequest{Objective: backend.ObjectiveKL, Loss: backend.LossConfig{Temperature: 2, TopK: 6}, Mode: mode,
		Data: f.data, Steps: 16, BatchSize: 2, GradAccum: 2, CheckpointEvery: 2, Seed: 3,
		Optim: backend.OptimConfig{LR: 3e-3, MinLR: 1e-4, WarmupSteps: 1, WeightDecay: 0.1, GradClip: 1}}
	if mode == backend.ModeLoRA {
		base.LoRA = &backend.LoRAConfig{Rank: 2, Targets: []string{"v_proj", "up_proj"}}
	}
	straight := base
	straight.CheckpointDir = filepath.Join(t.TempDir(), "straight")
	want, wantW, _ := s.trainOnce(t, s.b, f, teacher, straight)

	dir := filepath.Join(t.TempDir(), "ckpt")
	req := base
	req.CheckpointDir = dir
	req.Model = s.load(t, s.b, f, true)
	req.Teacher = s.load(t, s.b, teacher, false)
	ctx, cancel := context.WithCancel(s.ctx)
	_, err := s.b.Train(ctx, req, func(e backend.TrainEvent) {
		if e.Step == 2 {
			cancel()
		}
	})
	cancel()
	if err == nil {
		t.Fatal("a cancelled run returned no error")
	}
	untouched := s.saved(t, s.b, req.Model)
	for _, name := range f.m.TensorNames() {
		if !slices.Equal(weightsOf(t, untouched, name), f.g.W[name]) {
			t.Errorf("%s changed by a cancelled run", name)
		}
	}
	// A new process would load the model afresh.
	req.Model = s.load(t, s.b, f, true)
	res, err := s.b.Train(s.ctx, req, nil)
	if err != nil {
		t.Fatalf("resuming: %v", err)
	}
	if res.ResumedFrom < 2 || res.ResumedFrom%2 != 0 || res.ResumedFrom >= base.Steps {
		t.Errorf("resumed from step %d, want a checkpoint (every 2 steps) from step 2 on, before step %d", res.ResumedFrom, base.Steps)
	}
	if len(res.History) != len(want.History) {
		t.Fatalf("history of %d steps, want %d", len(res.History), len(want.History))
	}
	for i := range want.History {
		if !closeRel(res.History[i].Loss, want.History[i].Loss, 1e-6, 1e-6) {
			t.Errorf("step %d loss %g after resuming, %g uninterrupted", i+1, res.History[i].Loss, want.History[i].Loss)
		}
	}
	got := s.saved(t, s.b, req.Model)
	for _, name := range f.m.TensorNames() {
		expectVec(t, "resumed "+name, weightsOf(t, got, name), weightsOf(t, wantW, name), 1e-6)
	}
}

func (s *suite) checkLoRA(t *testing.T) {
	f := s.tiny
	req := backend.TrainRequest{Objective: backend.ObjectiveCE, Mode: backend.ModeLoRA, LoRA: &backend.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "down_proj"}},
		Data: f.masked, Steps: 2, BatchSize: 2, Seed: 9, Optim: backend.OptimConfig{LR: 1e-2}}
	if s.opts.NoLoRA {
		req.Model = s.load(t, s.b, f, true)
		_, err := s.b.Train(s.ctx, req, nil)
		if !unsupported(err) {
			t.Errorf("mode lora on a backend without LoRA: error %v, want one wrapping backend.ErrUnsupported", err)
		}
		return
	}
	_, after, events := s.trainOnce(t, s.b, f, nil, req)
	// B starts at zero: the first step sees the base model.
	var z [][][]float64
	var tg [][]int
	for i, r := range f.seqs[:2] {
		z = append(z, f.g.Forward(r, nil, nil))
		tg = append(tg, targetsOf(r, f.mask[i]))
	}
	want, _, _, _ := objective{}.batchLoss(z, nil, tg)
	s.expectLoss(t, "first LoRA step loss", events[0].Loss, want)
	for _, name := range f.m.TensorNames() {
		changed := !slices.Equal(f.g.W[name], weightsOf(t, after, name))
		target := strings.HasSuffix(name, "q_proj.weight") || strings.HasSuffix(name, "down_proj.weight")
		if changed != target {
			t.Errorf("%s: changed = %v after LoRA training of q_proj and down_proj", name, changed)
		}
	}
}

// checkTeacherCE: objective ce takes an optional teacher, only measured
// against: the run trains as it does without one, and its validation
// reports the KL to the teacher of the trained weights.
func (s *suite) checkTeacherCE(t *testing.T) {
	f, teacher := s.tiny, s.teacher
	req := backend.TrainRequest{Objective: backend.ObjectiveCE, Data: f.masked, Validation: &f.val, Steps: 2, BatchSize: 2,
		Optim: backend.OptimConfig{LR: 3e-3}}
	alone, aloneW, _ := s.trainOnce(t, s.b, f, nil, req)
	res, after, _ := s.trainOnce(t, s.b, f, teacher, req)
	for i := range alone.History {
		if !closeRel(res.History[i].Loss, alone.History[i].Loss, 1e-6, 1e-6) {
			t.Errorf("step %d loss %g with a teacher, %g without", i+1, res.History[i].Loss, alone.History[i].Loss)
		}
	}
	for _, name := range f.m.TensorNames() {
		expectVec(t, name+" with a teacher", weightsOf(t, after, name), weightsOf(t, aloneW, name), 1e-6)
	}
	if alone.ValKL != nil {
		t.Error("a run without a teacher reports a validation KL")
	}
	s.expectFinalValidation(t, f, teacher, after, res)
}

// checkLoRADefaults: mode lora without settings adapts every projection
// matrix (backend.LoRATargets), as recipes document, and nothing else.
func (s *suite) checkLoRADefaults(t *testing.T) {
	if s.opts.NoLoRA {
		t.Skip("the backend has no LoRA")
	}
	f := s.tiny
	req := backend.TrainRequest{Objective: backend.ObjectiveCE, Mode: backend.ModeLoRA, Data: f.masked, Steps: 2, BatchSize: 2, Seed: 5,
		Optim: backend.OptimConfig{LR: 1e-2}}
	_, after, _ := s.trainOnce(t, s.b, f, nil, req)
	for _, name := range f.m.TensorNames() {
		changed := !slices.Equal(f.g.W[name], weightsOf(t, after, name))
		target := false
		for _, m := range backend.LoRATargets {
			target = target || strings.HasSuffix(name, "."+m+".weight")
		}
		if changed != target {
			t.Errorf("%s: changed = %v after LoRA training with the default targets", name, changed)
		}
	}
}

// expectFinalValidation: the result's final validation loss and KL (at
// temperature 1) are those of the golden decoder on the trained weights.
func (s *suite) expectFinalValidation(t *testing.T, f *fixture, teacher *fixture, after *ir.Model, res *backend.TrainResult) {
	t.Helper()
	g, err := newGolden(after)
	if err != nil {
		t.Fatal(err)
	}
	var z, zt [][][]float64
	var tg [][]int
	for _, r := range f.valSeqs {
		z = append(z, g.Forward(r, nil, nil))
		zt = append(zt, teacher.g.Forward(r, nil, nil))
		tg = append(tg, targetsOf(r, nil))
	}
	_, ce, kl, _ := objective{alpha: 1, tau: 1}.batchLoss(z, zt, tg)
	if res.ValLoss == nil || res.ValKL == nil {
		t.Fatal("result lacks the final validation loss or KL")
	}
	s.expectLoss(t, "final validation loss", *res.ValLoss, ce)
	s.expectLoss(t, "final validation KL", *res.ValKL, kl)
}
