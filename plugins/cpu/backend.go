// Package cpu is whittle's pure-Go compute backend: core/backend.Backend
// over the batched float32 engine (statistics, evaluation, training) and
// the reference forward pass (generation).
//
// Models are held as float32 master weights whatever LoadRequest.Trainable
// says. Every loaded model owns one inference engine whose activation
// buffers are reused across calls; Train builds a training engine over the
// same weights, so nothing is copied between them.
package cpu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

// Version is the backend's version, reported by Info.
const Version = "0.1.0"

// defaultBatch is the batch size of Stats and Evaluate when the request
// leaves it 0.
const defaultBatch = 8

// Options configures a Backend.
type Options struct {
	// Threads is the number of goroutines the engines use; 0 means
	// GOMAXPROCS.
	Threads int
	// Log receives progress and diagnostics; nil discards them.
	Log *slog.Logger
}

// Backend is the CPU backend. Calls are serialized by a mutex; a Train
// events callback must not call back into the backend.
type Backend struct {
	threads int
	log     *slog.Logger

	mu     sync.Mutex
	models map[backend.ModelID]*model
	next   int
	closed bool
}

var _ backend.Backend = (*Backend)(nil)

// model is one loaded model.
type model struct {
	id     backend.ModelID
	dir    string
	params *engine.Params

	inf  *engine.Engine                           // inference engine, built on first use
	hook func(l int, a *engine.Activations) error // set while Stats runs
	ref  *reference.Model                         // for Generate, dropped when the weights change
	hash string                                   // sha256 of the weights, "" until needed
}

// New returns a CPU backend.
func New(opts Options) (*Backend, error) {
	if opts.Threads < 0 {
		return nil, fmt.Errorf("cpu: negative thread count %d", opts.Threads)
	}
	b := &Backend{threads: opts.Threads, log: opts.Log, models: map[backend.ModelID]*model{}}
	if b.threads == 0 {
		b.threads = runtime.GOMAXPROCS(0)
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b, nil
}

// Info describes the backend.
func (b *Backend) Info(ctx context.Context) (backend.Info, error) {
	return backend.Info{
		Name:    "cpu",
		Version: Version,
		Device:  "cpu",
		Threads: b.threads,
		Capabilities: []string{
			backend.CapTrain, backend.CapLoRA, backend.CapStats, backend.CapEvaluate, backend.CapGenerate, backend.CapBench,
		},
	}, nil
}

// Load reads a Hugging Face model directory into float32 weights.
func (b *Backend) Load(ctx context.Context, req backend.LoadRequest) (backend.ModelID, error) {
	if err := b.lock(ctx); err != nil {
		return "", err
	}
	defer b.mu.Unlock()
	m, err := hf.Load(req.Dir)
	if err != nil {
		return "", fmt.Errorf("cpu: load %s: %w", req.Dir, err)
	}
	defer m.Close()
	p, err := engine.FromIR(m)
	if err != nil {
		return "", fmt.Errorf("cpu: load %s: %w", req.Dir, err)
	}
	b.next++
	id := backend.ModelID(fmt.Sprintf("m%d", b.next))
	b.models[id] = &model{id: id, dir: req.Dir, params: p}
	c := p.Config
	b.log.Info("model loaded", "model", id, "dir", req.Dir, "layers", len(c.Layers), "hidden", c.Hidden, "params", c.Params().Total)
	return id, nil
}

// Save writes a model as a Hugging Face directory in the requested dtype.
// LoRA adapters never outlive Train here (they are merged into the
// weights when it finishes), so the weights saved are the merged ones.
func (b *Backend) Save(ctx context.Context, req backend.SaveRequest) error {
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.mu.Unlock()
	m, err := b.model(req.Model)
	if err != nil {
		return err
	}
	dt := ir.F32
	if req.DType != "" {
		if dt, err = ir.ParseDType(req.DType); err != nil {
			return fmt.Errorf("cpu: save %s: %w", req.Model, err)
		}
	}
	im, err := m.params.ToIR(dt)
	if err != nil {
		return fmt.Errorf("cpu: save %s: %w", req.Model, err)
	}
	im.Source = m.dir
	if err := hf.Save(im, req.Dir, hf.SaveOptions{}); err != nil {
		return fmt.Errorf("cpu: save %s to %s: %w", req.Model, req.Dir, err)
	}
	return nil
}

// Release frees a model.
func (b *Backend) Release(ctx context.Context, id backend.ModelID) error {
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.mu.Unlock()
	if _, err := b.model(id); err != nil {
		return err
	}
	delete(b.models, id)
	return nil
}

// Close releases every model; later calls fail.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.models = map[backend.ModelID]*model{}
	b.closed = true
	return nil
}

var errClosed = errors.New("cpu: backend is closed")

// lock takes the call mutex unless the backend is closed or ctx is done.
func (b *Backend) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errClosed
	}
	return nil
}

func (b *Backend) model(id backend.ModelID) (*model, error) {
	m, ok := b.models[id]
	if !ok {
		return nil, fmt.Errorf("cpu: no model %q is loaded", id)
	}
	return m, nil
}

// engine returns the model's inference engine, with no layers skipped and
// no adapters attached.
func (m *model) engine(threads int) (*engine.Engine, error) {
	if m.inf == nil {
		e, err := engine.New(m.params, engine.Options{
			Threads:   threads,
			Inference: true,
			OnLayer: func(l int, a *engine.Activations) error {
				if m.hook == nil {
					return nil
				}
				return m.hook(l, a)
			},
		})
		if err != nil {
			return nil, fmt.Errorf("cpu: model %s: %w", m.id, err)
		}
		m.inf = e
	}
	return m.inf, nil
}

// changed forgets what was derived from the weights.
func (m *model) changed() {
	m.ref = nil
	m.hash = ""
}

func batchSize(n int) (int, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("negative batch size %d", n)
	case n == 0:
		return defaultBatch, nil
	}
	return n, nil
}
