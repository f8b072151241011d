package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"

	"google.golang.org/grpc"

	pb "github.com/whittle-ml/whittle/core/plugin/proto/whittle/plugin/v1"
	"github.com/whittle-ml/whittle/core/plugin/wire"
)

// Pass is a pass kind a plugin serves. Kind[C] is the implementation.
type Pass interface {
	kind() string
	describe() (*pb.PassKind, error)
	plan(pc *PlanContext, config []byte) (*Config, error)
	run(ctx context.Context, rc *RunContext, config []byte) error
}

// Kind defines a pass kind whose recipe block decodes into a C, a struct
// with hcl tags (see the package documentation for the rules).
type Kind[C any] struct {
	// Name is the kind as recipes write it: pass "<Name>" { ... }.
	Name        string
	Description string
	// Produces says what `into` names: ProducesModel, ProducesScores or
	// nothing (the zero value).
	Produces Slot
	// Plan returns the architecture a model-producing pass outputs, from
	// its inputs' architectures alone (no weights); `whittle plan` shows
	// it. Required when Produces is ProducesModel; other kinds may use it
	// to check their configuration early.
	Plan func(pc *PlanContext, cfg *C) (*Config, error)
	// Run executes the pass and publishes its result through rc.
	Run func(ctx context.Context, rc *RunContext, cfg *C) error
}

func (k Kind[C]) kind() string { return k.Name }

func (k Kind[C]) attrs() ([]attr, error) {
	return schemaOf(reflect.TypeOf((*C)(nil)).Elem())
}

func (k Kind[C]) describe() (*pb.PassKind, error) {
	if k.Run == nil {
		return nil, fmt.Errorf("pass kind %q has no Run function", k.Name)
	}
	if k.Produces == ProducesModel && k.Plan == nil {
		return nil, fmt.Errorf("pass kind %q produces a model but has no Plan function", k.Name)
	}
	attrs, err := k.attrs()
	if err != nil {
		return nil, fmt.Errorf("pass kind %q: %w", k.Name, err)
	}
	pattrs, err := describeAttrs(attrs)
	if err != nil {
		return nil, fmt.Errorf("pass kind %q: %w", k.Name, err)
	}
	return &pb.PassKind{Kind: k.Name, Description: k.Description, Produces: string(k.Produces), Attributes: pattrs}, nil
}

func (k Kind[C]) decode(config []byte) (*C, error) {
	attrs, err := k.attrs()
	if err != nil {
		return nil, err
	}
	cfg := new(C)
	if err := decodeConfig(attrs, config, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (k Kind[C]) plan(pc *PlanContext, config []byte) (*Config, error) {
	cfg, err := k.decode(config)
	if err != nil {
		return nil, err
	}
	if k.Plan == nil {
		return nil, nil
	}
	return k.Plan(pc, cfg)
}

func (k Kind[C]) run(ctx context.Context, rc *RunContext, config []byte) error {
	cfg, err := k.decode(config)
	if err != nil {
		return err
	}
	return k.Run(ctx, rc, cfg)
}

// PlanContext is what Plan sees: the architectures of the models the
// configuration refers to and the scores that exist at this pass.
type PlanContext struct {
	// PassName is the pass's name in the recipe.
	PassName string
	models   map[string]Config
	scores   map[string]bool
}

// Model returns the architecture in a model slot the configuration
// refers to.
func (pc *PlanContext) Model(ref Ref) (Config, error) {
	if ref.Kind != string(ProducesModel) {
		return Config{}, fmt.Errorf("%s is not a model", ref)
	}
	c, ok := pc.models[ref.Name]
	if !ok {
		return Config{}, fmt.Errorf("%s is not available at this point of the recipe", ref)
	}
	return c.Clone(), nil
}

// HasScores reports whether a scores slot exists at this pass.
func (pc *PlanContext) HasScores(ref Ref) bool { return pc.scores[ref.Name] }

// RunContext is what Run sees: the run's models, scores, datasets and
// backend, all through whittle, and where to publish results. Its methods
// act within the Run call's context.
type RunContext struct {
	// PassName is the pass's name in the recipe.
	PassName string
	// Dir is the pass's own artifact directory (empty at start); RunDir the
	// run directory.
	Dir    string
	RunDir string
	// Log writes to whittle's run log, attributed to this pass.
	Log *slog.Logger

	ctx  context.Context
	host pb.HostClient
	conn *grpc.ClientConn

	mu     sync.Mutex
	be     *wire.BackendClient
	opened []*Model
}

func call(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, wire.FromStatus(err))
}

// ModelDir returns a Hugging Face directory holding a model slot (written
// once by whittle when the model was declared in another format). Treat it
// as read-only.
func (rc *RunContext) ModelDir(ref Ref) (string, error) {
	if ref.Kind != string(ProducesModel) {
		return "", fmt.Errorf("%s is not a model", ref)
	}
	res, err := rc.host.ModelDir(rc.ctx, &pb.ModelDirRequest{Model: ref.Name})
	if err != nil {
		return "", call(ref.String(), err)
	}
	return res.GetDir(), nil
}

// Model loads a model slot. Its tensors are memory-mapped and read on
// demand; it is closed when Run returns.
func (rc *RunContext) Model(ref Ref) (*Model, error) {
	dir, err := rc.ModelDir(ref)
	if err != nil {
		return nil, err
	}
	m, err := LoadModel(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	rc.mu.Lock()
	rc.opened = append(rc.opened, m)
	rc.mu.Unlock()
	return m, nil
}

// Scores returns a scores table an earlier pass produced.
func (rc *RunContext) Scores(ref Ref) (*Scores, error) {
	if ref.Kind != string(ProducesScores) {
		return nil, fmt.Errorf("%s is not a scores slot", ref)
	}
	res, err := rc.host.Scores(rc.ctx, &pb.ScoresRequest{Scores: ref.Name})
	if err != nil {
		return nil, call(ref.String(), err)
	}
	var t Scores
	if err := json.Unmarshal(res.GetTableJson(), &t); err != nil {
		return nil, fmt.Errorf("%s: decoding the table: %w", ref, err)
	}
	return &t, nil
}

// DataOptions says how PrepareDataset tokenizes.
type DataOptions struct {
	// SeqLen is the tokens per sequence (at least 2).
	SeqLen int
	// Packing and Template apply to instruction data (see core/data).
	Packing  bool
	Template string
}

// PrepareDataset tokenizes a declared dataset with the tokenizer of a
// model slot into sequence files that backend requests take
// (Prepared.Train, Prepared.Validation). Files are cached in the run
// directory.
func (rc *RunContext) PrepareDataset(dataset, tokenizerModel Ref, opts DataOptions) (*Prepared, error) {
	if dataset.Kind != "dataset" {
		return nil, fmt.Errorf("%s is not a dataset", dataset)
	}
	if tokenizerModel.Kind != string(ProducesModel) {
		return nil, fmt.Errorf("%s is not a model", tokenizerModel)
	}
	res, err := rc.host.PrepareDataset(rc.ctx, &pb.PrepareDatasetRequest{
		Dataset: dataset.Name, TokenizerModel: tokenizerModel.Name,
		SeqLen: int64(opts.SeqLen), Packing: opts.Packing, Template: opts.Template,
	})
	if err != nil {
		return nil, call(dataset.String(), err)
	}
	var p Prepared
	if err := json.Unmarshal(res.GetPreparedJson(), &p); err != nil {
		return nil, fmt.Errorf("%s: decoding the prepared dataset: %w", dataset, err)
	}
	return &p, nil
}

// Backend returns the run's compute backend for this pass (the one its
// `backend` attribute names, else the default), reached through whittle.
// Do not Close it: the run owns it.
func (rc *RunContext) Backend() (Backend, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.be != nil {
		return rc.be, nil
	}
	be := wire.NewBackendClient(pb.NewBackendClient(rc.conn), func(op string, err error) error {
		return fmt.Errorf("backend %s: %w", op, err)
	}, nil)
	if err := be.Open(rc.ctx, nil); err != nil {
		return nil, err
	}
	rc.be = be
	return be, nil
}

// OutputModelDir is where a model-producing pass should write its model
// (SetModel does; a backend's Save can too, followed by SetModelDir).
func (rc *RunContext) OutputModelDir() string { return filepath.Join(rc.Dir, "model") }

// SetModel saves m into OutputModelDir and publishes it as the pass's
// output model.
func (rc *RunContext) SetModel(m *Model) error {
	dir := rc.OutputModelDir()
	if err := SaveModel(m, dir); err != nil {
		return fmt.Errorf("saving the output model: %w", err)
	}
	return rc.SetModelDir(dir)
}

// SetModelDir publishes a Hugging Face directory as the pass's output
// model; whittle keeps OutputModelDir in place and copies anything else.
func (rc *RunContext) SetModelDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	_, err = rc.host.SetModelDir(rc.ctx, &pb.SetModelDirRequest{Dir: abs})
	return call("publishing the output model", err)
}

// SetScores publishes the pass's output scores.
func (rc *RunContext) SetScores(t *Scores) error {
	if t == nil {
		return errors.New("SetScores: nil table")
	}
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encoding the scores: %w", err)
	}
	_, err = rc.host.SetScores(rc.ctx, &pb.SetScoresRequest{TableJson: b})
	return call("publishing the scores", err)
}

// Metric records a named value (anything JSON can encode) in the run
// manifest.
func (rc *RunContext) Metric(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("metric %q: %w", name, err)
	}
	_, err = rc.host.Metric(rc.ctx, &pb.MetricRequest{Name: name, ValueJson: b})
	return call("metric "+name, err)
}

// Artifact registers an extra file (absolute, or relative to Dir) for the
// manifest to hash.
func (rc *RunContext) Artifact(path string) error {
	_, err := rc.host.Artifact(rc.ctx, &pb.ArtifactRequest{Path: path})
	return call("artifact "+path, err)
}

// Progress reports progress within the pass; errors are ignored (progress
// is advisory).
func (rc *RunContext) Progress(done, total int, msg string) {
	_, _ = rc.host.Progress(rc.ctx, &pb.ProgressRequest{Done: int64(done), Total: int64(total), Message: msg})
}

func (rc *RunContext) close() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, m := range rc.opened {
		m.Close()
	}
	rc.opened = nil
}

// hostLogHandler sends log records to the host's Log call.
type hostLogHandler struct {
	ctx   context.Context
	host  pb.HostClient
	attrs []slog.Attr
	group string
}

func (h *hostLogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *hostLogHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := append([]slog.Attr(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		if h.group != "" {
			a = slog.Group(h.group, a)
		}
		attrs = append(attrs, a)
		return true
	})
	level := "info"
	switch {
	case r.Level < slog.LevelInfo:
		level = "debug"
	case r.Level >= slog.LevelError:
		level = "error"
	case r.Level >= slog.LevelWarn:
		level = "warn"
	}
	_, err := h.host.Log(h.ctx, &pb.LogRequest{Level: level, Message: r.Message, AttrsJson: wire.AttrsJSON(attrs)})
	return err
}

func (h *hostLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		if h.group != "" {
			a = slog.Group(h.group, a)
		}
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *hostLogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	if c.group != "" {
		c.group += "." + name
	} else {
		c.group = name
	}
	return &c
}
