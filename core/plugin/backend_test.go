package plugin

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/plugin/wire"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/ir"
)

// syncBuffer is a log sink safe for the plugin's log goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestHost(t *testing.T, dirs ...string) (*Host, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	h := New(Options{Dirs: dirs, Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(h.Close)
	return h, logs
}

// exercise calls every Backend method and records what came back, errors
// included, in a comparable form.
func exercise(t *testing.T, be backend.Backend) map[string]any {
	t.Helper()
	ctx := context.Background()
	out := map[string]any{}
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	info, err := be.Info(ctx)
	out["info"], out["info.err"] = info, errText(err)
	id, err := be.Load(ctx, backend.LoadRequest{Dir: "/models/a", Trainable: true})
	out["load"], out["load.err"] = id, errText(err)
	_, err = be.Load(ctx, backend.LoadRequest{})
	out["load-bad.err"] = errText(err)
	st, err := be.Stats(ctx, backend.StatsRequest{Model: id, Data: backend.Sequences{Path: "x.npy", Limit: 4}, Activations: true, BlockInfluence: true})
	out["stats"], out["stats.err"] = st, errText(err)
	ev, err := be.Evaluate(ctx, backend.EvalRequest{Model: id, LM: &backend.Sequences{Path: "v.npy", Limit: 2}, SkipLayers: [][]int{{1}, {0, 2}},
		Choices: []backend.ChoiceItem{{Contexts: [][]int{{1}}, Continuations: [][]int{{2}}, Gold: 0}}})
	out["eval"], out["eval.err"] = ev, errText(err)
	var events []backend.TrainEvent
	tr, err := be.Train(ctx, backend.TrainRequest{Model: id, Objective: backend.ObjectiveCE, Mode: backend.ModeFull,
		Optim: backend.OptimConfig{LR: 1e-3}, Steps: 5, BatchSize: 2, GradAccum: 1, EvalEvery: 2}, func(e backend.TrainEvent) { events = append(events, e) })
	out["train"], out["train.err"], out["train.events"] = tr, errText(err), events
	_, err = be.Generate(ctx, backend.GenerateRequest{Model: id, Prompts: [][]int{{1}}, MaxTokens: 3})
	out["generate.err"], out["generate.unsupported"] = errText(err), errors.Is(err, backend.ErrUnsupported)
	bm := be.(backend.Benchmarker)
	br, err := bm.Bench(ctx, bench.Request{Shape: "stories260K", Workload: bench.Train, Batch: 2, Seq: 8, Seconds: 1, Threads: 3})
	out["bench"], out["bench.err"] = br, errText(err)
	_, err = bm.Bench(ctx, bench.Request{Shape: "stories260K", Workload: bench.Forward, Batch: 2, Seq: 8})
	out["bench-forward.err"], out["bench-forward.unsupported"] = errText(err), errors.Is(err, backend.ErrUnsupported)
	dir := t.TempDir()
	err = be.Save(ctx, backend.SaveRequest{Model: id, Dir: dir, DType: "bf16"})
	saved, _ := os.ReadFile(filepath.Join(dir, "from"))
	out["save"], out["save.err"] = string(saved), errText(err)
	out["release.err"] = errText(be.Release(ctx, id))
	out["release-again.err"] = errText(be.Release(ctx, id))
	return out
}

func TestServedBackendMatchesInProcess(t *testing.T) {
	dir := t.TempDir()
	path := pluginScript(t, dir, "fake", "backend")
	h, logs := newTestHost(t, dir)
	decl := &recipe.Backend{Name: "fake", Plugin: path, Config: map[string]cty.Value{"threads": cty.NumberIntVal(4)}}
	served, err := h.OpenBackend(context.Background(), decl)
	if err != nil {
		t.Fatal(err)
	}
	// The block's attributes reach the plugin as a JSON object.
	direct := &fakeBackend{config: `{"threads":4}`}
	got, want := exercise(t, served), exercise(t, direct)
	for k := range want {
		// Errors come back with the plugin named in front.
		if w, ok := want[k].(string); ok && strings.HasSuffix(k, ".err") && w != "" {
			g := got[k].(string)
			if !strings.HasSuffix(g, ": "+w) || !strings.Contains(g, `backend "fake" (plugin `+path+")") {
				t.Errorf("%s: served %q, want the plugin's name and then %q", k, g, w)
			}
			continue
		}
		if !reflect.DeepEqual(got[k], want[k]) {
			t.Errorf("%s: served %#v\n   in-process %#v", k, got[k], want[k])
		}
	}
	if !want["generate.unsupported"].(bool) || !want["bench-forward.unsupported"].(bool) {
		t.Error("the fake's Generate and forward Bench should be unsupported")
	}
	if r := got["bench"].(*bench.Result); r == nil || r.TokensPerS != 2*8*3/2. || r.Threads != 3 {
		t.Errorf("served bench result %+v", r)
	}
	if err := served.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// The plugin's own log line (sdk.Logger in TestMain) reached our slog.
	if !strings.Contains(logs.String(), "backend opened") {
		t.Errorf("plugin log not forwarded; host log:\n%s", logs)
	}
}

func TestSelfBackend(t *testing.T) {
	dir := t.TempDir()
	path := pluginScript(t, dir, "self", "backend")
	h := New(Options{Dirs: []string{}, SelfCommand: []string{path}})
	defer h.Close()
	p := &Provider{Host: h, Default: func() (backend.Backend, error) { return &fakeBackend{config: "in-process"}, nil }}
	ctx := context.Background()
	for _, c := range []struct {
		decl *recipe.Backend
		want string
	}{
		{nil, "in-process"},
		{&recipe.Backend{Name: "cpu"}, "in-process"},
		{&recipe.Backend{Name: "cpu", Plugin: Self}, "{}"},
	} {
		be, err := p.Open(ctx, c.decl)
		if err != nil {
			t.Fatal(err)
		}
		info, err := be.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Capabilities[2]; got != c.want {
			t.Errorf("Open(%+v): backend config %q, want %q", c.decl, got, c.want)
		}
		be.Close()
	}
	if _, err := (&Provider{Host: h}).Open(ctx, nil); err == nil || !strings.Contains(err.Error(), "no built-in backend") {
		t.Errorf("Open without a default = %v", err)
	}
	for _, decl := range []*recipe.Backend{
		{Name: "cpu", Config: map[string]cty.Value{"threads": cty.NumberIntVal(4)}},
		{Name: "cpu", SHA256: strings.Repeat("ab", 32)},
	} {
		if _, err := p.Open(ctx, decl); err == nil || !strings.Contains(err.Error(), `backend "cpu"`) {
			t.Errorf("Open(%+v) = %v, want a refusal of settings the built-in backend would ignore", decl, err)
		}
	}
}

func TestBackendLookupByName(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	pluginScript(t, second, "fake", "backend")
	h, _ := newTestHost(t, first, second)
	be, err := h.OpenBackend(context.Background(), &recipe.Backend{Name: "x", Plugin: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	be.Close()
	_, err = h.OpenBackend(context.Background(), &recipe.Backend{Name: "x", Plugin: "nope"})
	if err == nil || !strings.Contains(err.Error(), `plugin "nope" not found`) || !strings.Contains(err.Error(), first) {
		t.Errorf("missing plugin: %v", err)
	}
}

func TestTamperedPluginRefused(t *testing.T) {
	dir := t.TempDir()
	path := pluginScript(t, dir, "fake", "backend")
	sum, err := FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := newTestHost(t, dir)
	ctx := context.Background()
	// The pinned digest lets the genuine binary start (and go-plugin's
	// SecureConfig check passes too).
	be, err := h.OpenBackend(ctx, &recipe.Backend{Name: "fake", Plugin: path, SHA256: sum})
	if err != nil {
		t.Fatalf("genuine binary refused: %v", err)
	}
	be.Close()
	// Tamper: the same plugin with one more byte.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("# changed\n")
	f.Close()
	got, _ := FileSHA256(path)
	_, err = h.OpenBackend(ctx, &recipe.Backend{Name: "fake", Plugin: path, SHA256: sum})
	t.Logf("tampered: %v", err)
	var te *TamperedError
	if !errors.As(err, &te) {
		t.Fatalf("tampered binary: err = %v, want a TamperedError", err)
	}
	for _, want := range []string{"refusing to start", path, sum, got} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
}

func TestProtocolVersionMismatch(t *testing.T) {
	dir := t.TempDir()
	h, _ := newTestHost(t, dir)
	for _, c := range []struct {
		mode   string
		plugin int
		advice string
	}{
		{"old", wire.ProtocolVersion - 1, "rebuild the plugin"},
		{"new", wire.ProtocolVersion + 1, "upgrade whittle"},
	} {
		path := pluginScript(t, dir, c.mode, c.mode)
		_, err := h.OpenBackend(context.Background(), &recipe.Backend{Name: "x", Plugin: path})
		var ve *wire.VersionError
		if !errors.As(err, &ve) {
			t.Fatalf("%s plugin: err = %v, want a VersionError", c.mode, err)
		}
		if ve.PluginVersion != c.plugin || ve.HostVersion != wire.ProtocolVersion {
			t.Errorf("%s plugin: %+v", c.mode, ve)
		}
		msg := err.Error()
		t.Logf("%s plugin: %s", c.mode, msg)
		for _, want := range []string{
			"protocol version " + strconv.Itoa(c.plugin),
			"this whittle speaks version " + strconv.Itoa(wire.ProtocolVersion),
			c.advice, path,
		} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s plugin: message %q lacks %q", c.mode, msg, want)
			}
		}
	}
}

// trainPass is a built-in test pass that trains on its backend and keeps
// the loss curve as scores.
type trainPass struct{ onEvent func(backend.TrainEvent) }

type trainConfig struct {
	Model recipe.Ref `hcl:"model"`
	Steps int        `hcl:"steps"`
}

func (trainPass) Spec() recipe.KindSpec {
	return recipe.KindSpec{Kind: "train-test", Produces: recipe.SlotScores, NewConfig: func() any { return &trainConfig{} }}
}

func (trainPass) Plan(*pipeline.PlanContext, *recipe.Pass) (*ir.Config, error) { return nil, nil }

func (tp trainPass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*trainConfig)
	be, err := rc.Backend(ctx)
	if err != nil {
		return err
	}
	dir, err := rc.ModelDir(c.Model)
	if err != nil {
		return err
	}
	id, err := be.Load(ctx, backend.LoadRequest{Dir: dir, Trainable: true})
	if err != nil {
		return err
	}
	res, err := be.Train(ctx, backend.TrainRequest{Model: id, Steps: c.Steps, BatchSize: 1}, func(ev backend.TrainEvent) {
		if tp.onEvent != nil {
			tp.onEvent(ev)
		}
	})
	if err != nil {
		return err
	}
	t := &scores.Table{Method: "train", Layers: map[string][]float64{}}
	for _, ev := range res.History {
		t.Layers["loss"] = append(t.Layers["loss"], ev.Loss)
	}
	rc.SetScores(t)
	return nil
}

func TestBackendCrashMidTraining(t *testing.T) {
	plugins, work := t.TempDir(), t.TempDir()
	path := pluginScript(t, plugins, "fake", "backend")
	pidFile := filepath.Join(work, "pid")
	t.Setenv("WHITTLE_TEST_PIDFILE", pidFile)
	t.Setenv("WHITTLE_TEST_STEP_DELAY", "10ms")
	tinyModel(t, filepath.Join(work, "base"))
	src := `
model "base" {
  path = "base"
}
backend "fake" {
  plugin = "` + path + `"
}
pass "train-test" {
  name  = "warmup"
  model = model.base
  into  = "a"
  steps = 2
}
pass "train-test" {
  name    = "train"
  model   = model.base
  into    = "b"
  steps   = 40
  backend = backend.fake
}
`
	kill := true
	tp := trainPass{onEvent: func(ev backend.TrainEvent) {
		if !kill || ev.Step != 3 {
			return
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Errorf("reading the plugin's pid: %v", err)
			return
		}
		pid, _ := strconv.Atoi(string(b))
		proc, err := os.FindProcess(pid)
		if err == nil {
			err = proc.Kill()
		}
		if err != nil {
			t.Errorf("killing the plugin: %v", err)
		}
	}}
	reg := pipeline.NewRegistry()
	if err := reg.Register(tp); err != nil {
		t.Fatal(err)
	}
	h, _ := newTestHost(t)
	r := loadRecipe(t, writeRecipe(t, work, src), reg, nil)
	runDir := filepath.Join(work, "run")
	opts := pipeline.Options{Dir: runDir, Backends: &Provider{Host: h, Default: func() (backend.Backend, error) { return &fakeBackend{}, nil }}}

	_, err := pipeline.Run(context.Background(), r, reg, opts, pipeline.Events{})
	var ce *CrashError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a CrashError", err)
	}
	t.Logf("crash error: %v", err)
	for _, want := range []string{`pass "train"`, `backend "fake" (plugin ` + path + ")", "exited unexpectedly during Train", "same run directory to resume"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	man, err := pipeline.ReadManifest(filepath.Join(runDir, pipeline.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if len(man.Passes) != 2 || man.Passes[0].Status != pipeline.StatusDone || man.Passes[1].Status != pipeline.StatusFailed ||
		!strings.Contains(man.Passes[1].Error, "exited unexpectedly") {
		t.Fatalf("manifest after the crash: %+v", man.Passes)
	}

	// Resume: the finished pass is reused, the crashed one runs again.
	kill = false
	man, err = pipeline.Run(context.Background(), r, reg, opts, pipeline.Events{})
	if err != nil {
		t.Fatalf("resumed run: %v", err)
	}
	if !man.Passes[0].Resumed || man.Passes[1].Resumed || man.Passes[1].Status != pipeline.StatusDone {
		t.Errorf("resumed run passes: %+v", man.Passes)
	}
	tab, err := scores.Load(filepath.Join(runDir, "passes", "01-train", "scores.json"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tab.Layers["loss"]); n != 40 {
		t.Errorf("resumed training recorded %d steps, want 40", n)
	}
}
