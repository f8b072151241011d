// Package passtest holds what the compute passes' tests share: a fake
// backend that records every request and answers with values a test can
// compute by hand, a tiny model with a byte-level tokenizer, and helpers
// that write inputs and run a recipe.
package passtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

// Call is one recorded backend request.
type Call struct {
	Method string
	Req    any
	// Rows and SeqLen describe the token file the request named (Data for
	// Train and Stats, LM for Evaluate), as the fake read it, Limit applied.
	Rows, SeqLen int
}

// Fake is a backend.Backend for tests. Its answers are simple functions
// of the request (see each method), so tests can predict them exactly.
type Fake struct {
	mu     sync.Mutex
	Caps   []string
	Calls  []Call
	models map[backend.ModelID]*fakeModel
	next   int
	Closed int

	// BaseLoss gives a model's LM loss by its directory (default 2).
	BaseLoss map[string]float64
	// FailAtStep makes Train return an error once it reaches that step
	// (after writing that step's checkpoint), like an interrupted run.
	FailAtStep int
	// Generate, when set, answers Generate.
	GenerateFunc func(req backend.GenerateRequest) (*backend.GenerateResult, error)
}

type fakeModel struct {
	dir     string
	m       *ir.Model
	trained int // Train calls on this model
}

// NewFake returns a fake offering every capability.
func NewFake() *Fake {
	return &Fake{
		Caps:     []string{backend.CapTrain, backend.CapLoRA, backend.CapStats, backend.CapEvaluate, backend.CapGenerate},
		models:   map[backend.ModelID]*fakeModel{},
		BaseLoss: map[string]float64{},
	}
}

// Provider opens the fake for every backend block (and the default).
type Provider struct {
	Fake   *Fake
	Opened []*recipe.Backend
}

// Open implements pipeline.BackendProvider.
func (p *Provider) Open(ctx context.Context, b *recipe.Backend) (backend.Backend, error) {
	p.Opened = append(p.Opened, b)
	return p.Fake, nil
}

// CallsOf returns the recorded calls of one method, in order.
func (f *Fake) CallsOf(method string) []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Call
	for _, c := range f.Calls {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

func (f *Fake) record(c Call) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, c)
}

func (f *Fake) model(id backend.ModelID) (*fakeModel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.models[id]
	if !ok {
		return nil, fmt.Errorf("fake: no model %q loaded", id)
	}
	return m, nil
}

// seqShape opens a token file as a backend would and checks it.
func seqShape(s backend.Sequences) (rows, seqLen int, err error) {
	f, err := npy.Open(s.Path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if f.Descr != "<i4" || len(f.Shape) != 2 {
		return 0, 0, fmt.Errorf("fake: %s is %s %v, want int32 [N, L]", s.Path, f.Descr, f.Shape)
	}
	rows = f.Shape[0]
	if s.Limit > 0 && s.Limit < rows {
		rows = s.Limit
	}
	if s.MaskPath != "" {
		m, err := npy.Open(s.MaskPath)
		if err != nil {
			return 0, 0, err
		}
		defer m.Close()
		if m.Descr != "|u1" || len(m.Shape) != 2 || m.Shape[0] != f.Shape[0] || m.Shape[1] != f.Shape[1] {
			return 0, 0, fmt.Errorf("fake: mask %s is %s %v, tokens %v", s.MaskPath, m.Descr, m.Shape, f.Shape)
		}
	}
	return rows, f.Shape[1], nil
}

// Info implements backend.Backend.
func (f *Fake) Info(ctx context.Context) (backend.Info, error) {
	return backend.Info{Name: "fake", Version: "0", Device: "cpu", Capabilities: f.Caps}, nil
}

// Load reads the Hugging Face directory.
func (f *Fake) Load(ctx context.Context, req backend.LoadRequest) (backend.ModelID, error) {
	f.record(Call{Method: "Load", Req: req})
	m, err := hf.Load(req.Dir)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	id := backend.ModelID(fmt.Sprintf("m%d", f.next))
	f.models[id] = &fakeModel{dir: req.Dir, m: m}
	return id, nil
}

// Save writes the model without its tokenizer (as a real backend, which
// knows weights only, does). A trained model's final norm weight is
// multiplied by 2 per Train call, so tests can tell it was trained.
func (f *Fake) Save(ctx context.Context, req backend.SaveRequest) error {
	f.record(Call{Method: "Save", Req: req})
	fm, err := f.model(req.Model)
	if err != nil {
		return err
	}
	out := &ir.Model{Config: fm.m.Config.Clone(), Tensors: map[string]*ir.Tensor{}}
	for name, t := range fm.m.Tensors {
		v, err := t.Float32()
		if err != nil {
			return err
		}
		v = append([]float32(nil), v...)
		if name == ir.NameFinalNorm {
			for i := range v {
				for k := 0; k < fm.trained; k++ {
					v[i] *= 2
				}
			}
		}
		out.Tensors[name] = ir.FromFloat32(ir.F32, t.Shape, v)
	}
	return hf.Save(out, req.Dir, hf.SaveOptions{})
}

// Release frees a model.
func (f *Fake) Release(ctx context.Context, id backend.ModelID) error {
	f.record(Call{Method: "Release", Req: id})
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.models[id]
	if !ok {
		return fmt.Errorf("fake: no model %q loaded", id)
	}
	m.m.Close()
	delete(f.models, id)
	return nil
}

// FakeStats is what Stats answers for a model: MLP[l][j] = 1000l + j,
// Heads[l][h] = 100l + h, HeadChannels[l][c] = c, Hidden[d] = 10d + 1,
// BlockInfluence[l] = (l+1)/10, each only when requested.
func FakeStats(cfg ir.Config, activations, bi bool) *backend.StatsResult {
	r := &backend.StatsResult{}
	if activations {
		for l, lc := range cfg.Layers {
			mlp := make([]float64, lc.MLP)
			for j := range mlp {
				mlp[j] = float64(1000*l + j)
			}
			heads := make([]float64, lc.Heads)
			for h := range heads {
				heads[h] = float64(100*l + h)
			}
			ch := make([]float64, lc.Heads*lc.HeadDim)
			for c := range ch {
				ch[c] = float64(c)
			}
			r.MLP, r.Heads, r.HeadChannels = append(r.MLP, mlp), append(r.Heads, heads), append(r.HeadChannels, ch)
		}
		r.Hidden = make([]float64, cfg.Hidden)
		for d := range r.Hidden {
			r.Hidden[d] = float64(10*d + 1)
		}
	}
	if bi {
		r.BlockInfluence = make([]float64, len(cfg.Layers))
		for l := range r.BlockInfluence {
			r.BlockInfluence[l] = float64(l+1) / 10
		}
	}
	return r
}

// Stats answers FakeStats.
func (f *Fake) Stats(ctx context.Context, req backend.StatsRequest) (*backend.StatsResult, error) {
	rows, L, err := seqShape(req.Data)
	f.record(Call{Method: "Stats", Req: req, Rows: rows, SeqLen: L})
	if err != nil {
		return nil, err
	}
	fm, err := f.model(req.Model)
	if err != nil {
		return nil, err
	}
	r := FakeStats(fm.m.Config, req.Activations, req.BlockInfluence)
	r.Sequences, r.Tokens = rows, rows*L
	return r, nil
}

// LMLoss is the fake's loss: the model's base loss (BaseLoss, default 2)
// less 0.5 per Train call, plus 0.1·(l+1) for every skipped layer l.
func (f *Fake) LMLoss(fm *fakeModel, skip []int) float64 {
	base, ok := f.BaseLoss[fm.dir]
	if !ok {
		base = 2
	}
	loss := base - 0.5*float64(fm.trained)
	for _, l := range skip {
		loss += 0.1 * float64(l+1)
	}
	return loss
}

// ChoiceAccuracy is the fake's accuracy: 0.75 less 0.05·(l+1) for every
// skipped layer l; AccuracyNorm is 0.1 lower, AccuracyNormTokens 0.2.
func ChoiceAccuracy(skip []int) float64 {
	acc := 0.75
	for _, l := range skip {
		acc -= 0.05 * float64(l+1)
	}
	return acc
}

// Evaluate answers LMLoss, ChoiceAccuracy and, for last-word items,
// accuracy 0.5 and loss 1.25.
func (f *Fake) Evaluate(ctx context.Context, req backend.EvalRequest) (*backend.EvalResult, error) {
	c := Call{Method: "Evaluate", Req: req}
	var err error
	if req.LM != nil {
		c.Rows, c.SeqLen, err = seqShape(*req.LM)
	}
	f.record(c)
	if err != nil {
		return nil, err
	}
	fm, err := f.model(req.Model)
	if err != nil {
		return nil, err
	}
	res := &backend.EvalResult{}
	choices := func(skip []int) *backend.ChoiceResult {
		a := ChoiceAccuracy(skip)
		pred := make([]int, len(req.Choices))
		for i, it := range req.Choices {
			pred[i] = it.Gold
		}
		return &backend.ChoiceResult{Accuracy: a, AccuracyNorm: a - 0.1, AccuracyNormTokens: a - 0.2, Items: len(req.Choices), Predictions: pred}
	}
	if req.LM != nil {
		res.LM = &backend.LMResult{Loss: f.LMLoss(fm, nil), Tokens: c.Rows * (c.SeqLen - 1)}
	}
	if len(req.Choices) > 0 {
		res.Choices = choices(nil)
	}
	if len(req.LastWord) > 0 {
		res.LastWord = &backend.LastWordResult{Accuracy: 0.5, Loss: 1.25, Items: len(req.LastWord)}
	}
	for _, skip := range req.SkipLayers {
		s := backend.SkippedResult{Layers: skip}
		if req.LM != nil {
			s.LM = &backend.LMResult{Loss: f.LMLoss(fm, skip), Tokens: res.LM.Tokens}
		}
		if len(req.Choices) > 0 {
			s.Choices = choices(skip)
		}
		res.Skipped = append(res.Skipped, s)
	}
	return res, nil
}

// checkpoint is the fake's resumable state.
type checkpoint struct {
	Step int `json:"step"`
}

// CheckpointFile is the file the fake keeps in TrainRequest.CheckpointDir.
const CheckpointFile = "fake-checkpoint.json"

// Train runs the request's steps: step s reports loss 3 − s/100 at the
// request's LR, and evaluation steps (multiples of EvalEvery and the last)
// report val_loss = the model's LMLoss − s/1000 and, with a teacher,
// val_kl = 1/s. Every CheckpointEvery steps it writes CheckpointFile; a
// call finding one resumes after its step. A finished run counts as one
// Train call on the model (see Save and LMLoss).
func (f *Fake) Train(ctx context.Context, req backend.TrainRequest, events func(backend.TrainEvent)) (*backend.TrainResult, error) {
	rows, L, err := seqShape(req.Data)
	f.record(Call{Method: "Train", Req: req, Rows: rows, SeqLen: L})
	if err != nil {
		return nil, err
	}
	fm, err := f.model(req.Model)
	if err != nil {
		return nil, err
	}
	if req.Teacher != "" {
		if _, err := f.model(req.Teacher); err != nil {
			return nil, err
		}
	}
	if req.Validation != nil {
		if _, _, err := seqShape(*req.Validation); err != nil {
			return nil, err
		}
	}
	start := 0
	if req.CheckpointDir != "" {
		b, err := os.ReadFile(filepath.Join(req.CheckpointDir, CheckpointFile))
		if err == nil {
			var ck checkpoint
			if err := json.Unmarshal(b, &ck); err != nil {
				return nil, err
			}
			start = ck.Step
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	res := &backend.TrainResult{ResumedFrom: start}
	perStep := int64(req.BatchSize * req.GradAccum * L)
	for s := start + 1; s <= req.Steps; s++ {
		ev := backend.TrainEvent{Step: s, Steps: req.Steps, Loss: 3 - float64(s)/100, LR: req.Optim.LR, GradNorm: 1, Tokens: int64(s) * perStep}
		if req.Validation != nil && req.EvalEvery > 0 && (s%req.EvalEvery == 0 || s == req.Steps) {
			v := f.LMLoss(fm, nil) - float64(s)/1000
			ev.ValLoss = &v
			if req.Teacher != "" {
				kl := 1 / float64(s)
				ev.ValKL = &kl
			}
		}
		events(ev)
		res.History = append(res.History, ev)
		res.Steps, res.Tokens, res.FinalLoss = s, ev.Tokens, ev.Loss
		res.ValLoss, res.ValKL = ev.ValLoss, ev.ValKL
		if req.CheckpointDir != "" && req.CheckpointEvery > 0 && s%req.CheckpointEvery == 0 {
			b, _ := json.Marshal(checkpoint{Step: s})
			if err := os.WriteFile(filepath.Join(req.CheckpointDir, CheckpointFile), b, 0o644); err != nil {
				return nil, err
			}
		}
		if f.FailAtStep > 0 && s == f.FailAtStep {
			return nil, fmt.Errorf("fake: injected interruption at step %d", s)
		}
	}
	res.TokensPerS = 1000
	f.mu.Lock()
	fm.trained++
	f.mu.Unlock()
	return res, nil
}

// Generate answers GenerateFunc, or MaxTokens copies of the last prompt
// token per prompt.
func (f *Fake) Generate(ctx context.Context, req backend.GenerateRequest) (*backend.GenerateResult, error) {
	f.record(Call{Method: "Generate", Req: req})
	if _, err := f.model(req.Model); err != nil {
		return nil, err
	}
	if f.GenerateFunc != nil {
		return f.GenerateFunc(req)
	}
	res := &backend.GenerateResult{}
	for _, p := range req.Prompts {
		out := make([]int, req.MaxTokens)
		for i := range out {
			out[i] = p[len(p)-1]
		}
		res.Tokens = append(res.Tokens, out)
	}
	return res, nil
}

// Close counts closes; the fake stays usable, since a test may run
// several pipelines with it.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Closed++
	return nil
}
