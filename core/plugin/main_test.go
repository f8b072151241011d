package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/core/plugin/wire"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/plugins/sdk"
)

// The test binary doubles as every plugin the tests start: a wrapper
// script named whittle-plugin-<x> re-executes it with WHITTLE_TEST_PLUGIN
// set, and TestMain serves instead of testing. No second binary to build.
const modeEnv = "WHITTLE_TEST_PLUGIN"

func TestMain(m *testing.M) {
	mode := os.Getenv(modeEnv)
	if mode == "" {
		os.Exit(runTests(m))
	}
	if f := os.Getenv("WHITTLE_TEST_PIDFILE"); f != "" && mode != "host" {
		_ = os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	var err error
	switch mode {
	case "backend":
		sdk.ServeBackendFunc(func(cfg json.RawMessage) (sdk.Backend, error) {
			sdk.Logger().Warn("backend opened", "config", string(cfg))
			return &fakeBackend{config: string(cfg)}, nil
		})
	case "old", "new":
		v := wire.ProtocolVersion - 1
		if mode == "new" {
			v = wire.ProtocolVersion + 1
		}
		err = sdk.ServeVersion(sdk.Plugin{Name: mode, Version: "0.0.1", Backend: func(json.RawMessage) (sdk.Backend, error) {
			return &fakeBackend{}, nil
		}}, v)
	case "pass":
		sdk.Serve(testPassPlugin())
	case "host":
		err = serveAsHost()
	default:
		err = fmt.Errorf("unknown %s=%q", modeEnv, mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runTests runs the tests with a temp dir of their own, plugins
// included, and fails if anything is left in it: sockets, directories.
func runTests(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "whittle-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	os.Setenv("TMPDIR", tmp)
	code := m.Run()
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		fmt.Fprintf(os.Stderr, "FAIL: the tests left %v in their temp dir\n", names)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// serveAsHost is a whittle stand-in for TestPluginDiesWithHost: it opens
// the backend plugin at $WHITTLE_TEST_HOST_PLUGIN, writes
// $WHITTLE_TEST_HOST_READY and waits to be killed.
func serveAsHost() error {
	h := New(Options{Dirs: []string{}})
	if _, err := h.OpenBackend(context.Background(), &recipe.Backend{Name: "x", Plugin: os.Getenv("WHITTLE_TEST_HOST_PLUGIN")}); err != nil {
		return err
	}
	if err := os.WriteFile(os.Getenv("WHITTLE_TEST_HOST_READY"), []byte("ready"), 0o644); err != nil {
		return err
	}
	select {}
}

// pluginScript writes dir/whittle-plugin-<name>, a script that runs this
// test binary as the plugin of the given mode, and returns its path.
func pluginScript(t *testing.T, dir, name, mode string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, Prefix+name)
	script := fmt.Sprintf("#!/bin/sh\n%s=%s exec %q -test.run='^$' \"$@\"\n", modeEnv, mode, exe)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// fakeBackend computes deterministic, request-dependent answers, so that
// served and in-process results can be compared exactly.
type fakeBackend struct {
	config string
	loaded map[backend.ModelID]string
	n      int
}

func (f *fakeBackend) Info(context.Context) (backend.Info, error) {
	return backend.Info{Name: "fake", Version: "1", Device: "cpu", Threads: 2,
		Capabilities: []string{backend.CapStats, backend.CapTrain, f.config}}, nil
}

func (f *fakeBackend) Load(_ context.Context, req backend.LoadRequest) (backend.ModelID, error) {
	if req.Dir == "" {
		return "", errors.New("load: empty directory")
	}
	if f.loaded == nil {
		f.loaded = map[backend.ModelID]string{}
	}
	f.n++
	id := backend.ModelID(fmt.Sprintf("m%d", f.n))
	f.loaded[id] = req.Dir
	return id, nil
}

func (f *fakeBackend) Save(_ context.Context, req backend.SaveRequest) error {
	dir, ok := f.loaded[req.Model]
	if !ok {
		return fmt.Errorf("save: no model %q", req.Model)
	}
	if err := os.MkdirAll(req.Dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(req.Dir, "from"), []byte(dir+" "+req.DType), 0o644)
}

func (f *fakeBackend) Release(_ context.Context, id backend.ModelID) error {
	if _, ok := f.loaded[id]; !ok {
		return fmt.Errorf("release: no model %q", id)
	}
	delete(f.loaded, id)
	return nil
}

func (f *fakeBackend) Stats(_ context.Context, req backend.StatsRequest) (*backend.StatsResult, error) {
	if _, ok := f.loaded[req.Model]; !ok {
		return nil, fmt.Errorf("stats: no model %q", req.Model)
	}
	r := &backend.StatsResult{Sequences: req.Data.Limit, Tokens: 7 * req.Data.Limit}
	if req.Activations {
		// Values that need every bit of a float64 to round-trip.
		r.MLP = [][]float64{{1.0 / 3, 2e-300, 1e300}, {0.1, 0.2, 0.3}}
		r.Heads = [][]float64{{1, 2}, {3, 4}}
		r.HeadChannels = [][]float64{{0.5, 0.25, 0.125, 1}, {2, 3, 4, 5}}
		r.Hidden = []float64{0, 5e-324, 1.7976931348623157e300}
	}
	if req.BlockInfluence {
		r.BlockInfluence = []float64{0.75, 1.0 / 7}
	}
	return r, nil
}

func (f *fakeBackend) Evaluate(_ context.Context, req backend.EvalRequest) (*backend.EvalResult, error) {
	res := &backend.EvalResult{}
	if req.LM != nil {
		res.LM = &backend.LMResult{Loss: 2.5 + float64(req.LM.Limit), Tokens: 100}
	}
	for _, s := range req.SkipLayers {
		res.Skipped = append(res.Skipped, backend.SkippedResult{Layers: s, LM: &backend.LMResult{Loss: float64(len(s)) / 3, Tokens: 100}})
	}
	if len(req.Choices) > 0 {
		res.Choices = &backend.ChoiceResult{Accuracy: 0.5, AccuracyNorm: 0.25, Items: len(req.Choices), Predictions: []int{1, 0}}
	}
	return res, nil
}

// Train reports one event per step; WHITTLE_TEST_STEP_DELAY slows it down
// so a test can kill the process mid-training.
func (f *fakeBackend) Train(ctx context.Context, req backend.TrainRequest, events func(backend.TrainEvent)) (*backend.TrainResult, error) {
	delay, _ := time.ParseDuration(os.Getenv("WHITTLE_TEST_STEP_DELAY"))
	res := &backend.TrainResult{Steps: req.Steps}
	for s := 1; s <= req.Steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ev := backend.TrainEvent{Step: s, Steps: req.Steps, Loss: 3 / float64(s), LR: req.Optim.LR, Tokens: int64(s * req.BatchSize * 8)}
		if req.EvalEvery > 0 && s%req.EvalEvery == 0 {
			v := 0.0 // a pointer to zero must survive the trip
			ev.ValLoss = &v
		}
		events(ev)
		res.History = append(res.History, ev)
		res.FinalLoss, res.Tokens = ev.Loss, ev.Tokens
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return res, nil
}

func (f *fakeBackend) Generate(context.Context, backend.GenerateRequest) (*backend.GenerateResult, error) {
	return nil, fmt.Errorf("generate: %w", backend.ErrUnsupported)
}

// Bench answers from the request alone; the forward workload is
// unsupported, to carry that error across too.
func (f *fakeBackend) Bench(_ context.Context, req bench.Request) (*bench.Result, error) {
	if req.Workload == bench.Forward {
		return nil, fmt.Errorf("bench forward: %w", backend.ErrUnsupported)
	}
	r := &bench.Result{Shape: req.Shape, Workload: req.Workload, Batch: req.Batch, Seq: req.Seq, Device: "cpu", Kernel: "fake",
		FLOPsPerStep: float64(req.Batch * req.Seq * 1000), Threads: req.Threads}
	r.Finish(3, req.Seconds+1)
	return r, nil
}

func (f *fakeBackend) Close() error { return nil }
