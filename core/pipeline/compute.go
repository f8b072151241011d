package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// BackendProvider opens the compute backends passes run on. The CLI wires
// the in-process CPU backend and the plugin host; tests wire fakes.
type BackendProvider interface {
	// Open returns the backend a `backend` block declares, or the default
	// backend when b is nil.
	Open(ctx context.Context, b *recipe.Backend) (backend.Backend, error)
}

// Backend returns the backend this pass runs on: the one its `backend`
// attribute names, else the default. Backends are opened once per run and
// closed when it ends.
func (rc *RunContext) Backend(ctx context.Context) (backend.Backend, error) {
	run := rc.run
	var decl *recipe.Backend
	key := ""
	if rc.pass != nil && rc.pass.Backend != nil {
		key = rc.pass.Backend.Name
		for _, b := range run.r.Backends {
			if b.Name == key {
				decl = b
			}
		}
		if decl == nil {
			return nil, fmt.Errorf("backend.%s is not declared", key)
		}
	}
	if be, ok := run.backends[key]; ok {
		return be, nil
	}
	if run.opts.Backends == nil {
		return nil, fmt.Errorf("no compute backend is configured for this run")
	}
	be, err := run.opts.Backends.Open(ctx, decl)
	if err != nil {
		if key == "" {
			return nil, fmt.Errorf("starting the default backend: %w", err)
		}
		return nil, fmt.Errorf("%s: starting backend %q: %w", At(decl.DeclRange), key, err)
	}
	run.backends[key] = be
	return be, nil
}

func (run *runner) closeBackends() {
	for k, be := range run.backends {
		if err := be.Close(); err != nil {
			run.log.Warn("closing backend", "backend", k, "err", err)
		}
		delete(run.backends, k)
	}
}

// ModelDir returns a Hugging Face directory holding the model in a slot,
// for backends, which load models from files. Models produced by passes
// already have one; declared models in other formats are written once
// into the run directory.
func (rc *RunContext) ModelDir(ref recipe.Ref) (string, error) {
	run := rc.run
	s, ok := run.slots[slotKey(ref)]
	if !ok || ref.Kind != string(recipe.SlotModel) {
		return "", fmt.Errorf("%s is not an available model", ref)
	}
	if s.dir != "" {
		return s.dir, nil
	}
	m, err := run.model(ref)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(run.opts.Dir, "inputs", sanitize(ref.Name)+"-"+s.hash[:12])
	if _, err := os.Stat(filepath.Join(dir, hf.ConfigFile)); err != nil {
		if err := hf.Save(m, dir, hf.SaveOptions{}); err != nil {
			return "", fmt.Errorf("writing %s for the backend: %w", ref, err)
		}
	}
	s.dir = dir
	return dir, nil
}

// Hash is the content hash of a slot a pass refers to (a model, scores,
// dataset or task), as the pipeline keys pass results by it; a pass that
// caches partial results of its own keys them by it too.
func (rc *RunContext) Hash(ref recipe.Ref) (string, error) {
	s, ok := rc.run.slots[slotKey(ref)]
	if !ok || s.hash == "" {
		return "", fmt.Errorf("%s is not available", ref)
	}
	return s.hash, nil
}

// SetModelDir publishes a model a backend saved as a Hugging Face
// directory. When dir is this pass's own "model" directory the pipeline
// keeps it as the artifact instead of writing the model again.
func (rc *RunContext) SetModelDir(dir string) error {
	m, err := hf.Load(dir)
	if err != nil {
		return err
	}
	rc.model = m
	rc.modelDir = dir
	return nil
}

// OutputModelDir is where a pass should have its backend save the model it
// produces (see SetModelDir).
func (rc *RunContext) OutputModelDir() string { return filepath.Join(rc.Dir, "model") }

// Tokenizer returns the tokenizer of a model slot.
func (rc *RunContext) Tokenizer(ref recipe.Ref) (*tokenizer.Tokenizer, error) {
	m, err := rc.Model(ref)
	if err != nil {
		return nil, err
	}
	if m.Tokenizer == nil {
		return nil, missingTokenizer(ref, m.Source)
	}
	return m.Tokenizer, nil
}

// missingTokenizer explains why the model in ref, read from source, has no
// tokenizer.
func missingTokenizer(ref recipe.Ref, source string) error {
	if source != "" {
		path := filepath.Join(source, "tokenizer.json")
		if _, err := os.Stat(path); err == nil {
			_, why := tokenizer.LoadTokenizerJSON(path)
			return fmt.Errorf("%s has only a tokenizer.json, which whittle cannot read (%v); give the model block a tokenizer (tokenizer.model, llama2.c tokenizer.bin, or a byte-level BPE tokenizer.json)", ref, why)
		}
	}
	return fmt.Errorf("%s has no tokenizer; give the model block a tokenizer", ref)
}

// PrepareDataset tokenizes a declared dataset into train/validation
// sequence files, cached in the run directory by content.
func (rc *RunContext) PrepareDataset(ref recipe.Ref, tok *tokenizer.Tokenizer, opts data.Options) (*data.Prepared, error) {
	ds, err := rc.Dataset(ref)
	if err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(rc.RunDir, "data")
	}
	p, err := data.Prepare(ds, tok, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: dataset %q: %w", At(ds.DeclRange), ds.Name, err)
	}
	return p, nil
}

// PrepareTask tokenizes a declared evaluation task.
func (rc *RunContext) PrepareTask(ref recipe.Ref, tok *tokenizer.Tokenizer, seed uint64) (*data.Task, error) {
	t, err := rc.Task(ref)
	if err != nil {
		return nil, err
	}
	task, err := data.PrepareTask(t, tok, seed)
	if err != nil {
		return nil, fmt.Errorf("%s: task %q: %w", At(t.DeclRange), t.Name, err)
	}
	return task, nil
}

// sameDir reports whether two paths name the same directory.
func sameDir(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	ca, err1 := filepath.Abs(a)
	cb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && ca == cb
}
