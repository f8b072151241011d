package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

// tinyModel writes a small random Llama model as a Hugging Face directory.
func tinyModel(t *testing.T, dir string) *ir.Model {
	t.Helper()
	cfg := ir.Config{Arch: "llama", Vocab: 16, Hidden: 8, Layers: ir.UniformLayers(2, ir.LayerConfig{Heads: 2, KVHeads: 1, HeadDim: 4, MLP: 12}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 32, Tied: true, BOS: 1, EOS: 2}
	names, shapes := cfg.ExpectedShapes()
	rng := rand.New(rand.NewPCG(1, 2))
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}}
	for _, n := range names {
		sh := shapes[n]
		v := make([]float32, ir.NewTensor(ir.F32, sh, nil).NumElements())
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.1)
		}
		m.Tensors[n] = ir.FromFloat32(ir.F32, sh, v)
	}
	if err := hf.Save(m, dir, hf.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return m
}

// passSetup starts the test pass plugin and returns a registry holding its
// kinds, and a work directory with a model "base".
func passSetup(t *testing.T) (*Host, *pipeline.Registry, string) {
	t.Helper()
	plugins := t.TempDir()
	pluginScript(t, plugins, "testpass", "pass")
	pluginScript(t, plugins, "fake", "backend") // a backend-only plugin: no kinds
	h, _ := newTestHost(t, plugins)
	reg := pipeline.NewRegistry()
	infos := h.RegisterPasses(context.Background(), reg)
	if len(infos) != 2 {
		t.Fatalf("infos = %+v", infos)
	}
	for _, in := range infos {
		if in.Err != nil {
			t.Fatalf("%s: %v", in.Name, in.Err)
		}
	}
	if got := infos[1]; got.Name != "testpass" || got.Version != "1.2.3" || got.Protocol != ProtocolVersion || got.Backend ||
		!reflect.DeepEqual(got.Kinds, []string{"echo-score", "halve-mlp"}) || len(got.SHA256) != 64 {
		t.Errorf("testpass info = %+v", got)
	}
	if got := infos[0]; got.Name != "fake" || !got.Backend || len(got.Kinds) != 0 {
		t.Errorf("fake info = %+v", got)
	}
	if got := reg.Kinds(); !reflect.DeepEqual(got, []string{"echo-score", "halve-mlp"}) {
		t.Errorf("registered kinds = %v", got)
	}
	work := t.TempDir()
	tinyModel(t, filepath.Join(work, "base"))
	return h, reg, work
}

const passRecipe = `
variable "crash" {
  type    = bool
  default = false
}
model "base" {
  path = "base"
}
pass "echo-score" {
  model  = model.base
  into   = "echo"
  factor = 2
  tags   = ["a", "b"]
  extra  = [model.base]
  crash  = var.crash
}
pass "halve-mlp" {
  model = model.base
  into  = "half"
}
`

func writeRecipe(t *testing.T, dir, src string) string {
	t.Helper()
	path := filepath.Join(dir, "r.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func loadRecipe(t *testing.T, path string, reg *pipeline.Registry, vars map[string]string) *recipe.Recipe {
	t.Helper()
	r, diags := recipe.Load(path, vars, reg.Language())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return r
}

func TestPassPluginRun(t *testing.T) {
	h, reg, work := passSetup(t)
	r := loadRecipe(t, writeRecipe(t, work, passRecipe), reg, nil)

	plan, err := pipeline.MakePlan(r, reg)
	if err != nil {
		t.Fatal(err)
	}
	if got := plan.Stages[len(plan.Stages)-1]; got.Slot != "model.half" || got.Config.Layers[0].MLP != 6 || got.Config.Layers[1].MLP != 6 {
		t.Errorf("planned half = %+v", got)
	}

	runDir := filepath.Join(work, "run")
	var progress []string
	opts := pipeline.Options{Dir: runDir, Backends: &Provider{Default: func() (backend.Backend, error) { return &fakeBackend{}, nil }}}
	ev := pipeline.Events{Progress: func(p *recipe.Pass, done, total int, msg string) { progress = append(progress, p.Name+":"+msg) }}
	man, err := pipeline.Run(context.Background(), r, reg, opts, ev)
	if err != nil {
		t.Fatal(err)
	}
	// echo-score: the backend's hidden statistics (through the host's
	// backend, served back to the plugin) times factor.
	tab, err := scores.Load(filepath.Join(runDir, "passes", "00-echo-score", "scores.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := (&fakeBackend{loaded: map[backend.ModelID]string{"m": ""}}).Stats(context.Background(), backend.StatsRequest{Model: "m", Activations: true})
	want := &scores.Table{Method: "echo a,b", Samples: 3}
	for _, v := range st.Hidden {
		want.Hidden = append(want.Hidden, 2*v)
	}
	if !reflect.DeepEqual(tab, want) {
		t.Errorf("scores = %+v, want %+v", tab, want)
	}
	if got := man.Passes[0].Metrics["factor"]; got != 2.0 {
		t.Errorf("metric factor = %v", got)
	}
	if !reflect.DeepEqual(progress, []string{"echo-score:done"}) {
		t.Errorf("progress = %v", progress)
	}
	// halve-mlp: the saved model keeps the first half of every down_proj's
	// columns.
	base, err := hf.Load(filepath.Join(work, "base"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	half, err := hf.Load(filepath.Join(runDir, "passes", "01-halve-mlp", "model"))
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	for l := range 2 {
		a, _ := base.Tensors[ir.LayerName(l, ir.RoleDown)].Float32()
		b, _ := half.Tensors[ir.LayerName(l, ir.RoleDown)].Float32()
		for row := range 8 {
			if !reflect.DeepEqual(a[row*12:row*12+6], b[row*6:row*6+6]) {
				t.Fatalf("layer %d row %d: %v, want %v", l, row, b[row*6:row*6+6], a[row*12:row*12+6])
			}
		}
	}
	// Unchanged plugin, config and inputs: both passes are reused.
	man, err = pipeline.Run(context.Background(), r, reg, opts, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range man.Passes {
		if !p.Resumed {
			t.Errorf("pass %s ran again", p.Name)
		}
	}
	// The config recorded in the manifest names the plugin build.
	// A rebuilt plugin (another binary digest) runs its passes again.
	plugins := filepath.Dir(h.Find()[1].Path)
	f, err := os.OpenFile(filepath.Join(plugins, Prefix+"testpass"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("# rebuilt\n")
	f.Close()
	h2, _ := newTestHost(t, plugins)
	reg2 := pipeline.NewRegistry()
	h2.RegisterPasses(context.Background(), reg2)
	man2, err := pipeline.Run(context.Background(), loadRecipe(t, filepath.Join(work, "r.hcl"), reg2, nil), reg2, opts, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range man2.Passes {
		if p.Resumed {
			t.Errorf("pass %s reused after the plugin changed", p.Name)
		}
	}
	var rec map[string]any
	if err := json.Unmarshal(man.Passes[0].Config, &rec); err != nil {
		t.Fatal(err)
	}
	if impl, _ := rec["@implementation"].(string); !strings.HasPrefix(impl, "testpass 1.2.3 sha256:") || rec["factor"] != 2.0 {
		t.Errorf("recorded config = %v", rec)
	}
}

func TestPassPluginDiagnostics(t *testing.T) {
	_, reg, work := passSetup(t)
	src := `model "base" {
  path = "base"
}
pass "echo-score" {
  into   = "echo"
  model  = model.bsae
  factor = "high"
  tag    = ["a"]
  extra  = [scores.none]
}
pass "halve-mlp" {
  into  = "half"
}
`
	_, diags := recipe.Load(writeRecipe(t, work, src), nil, reg.Language())
	var got []string
	for _, d := range diags {
		got = append(got, recipe.FormatDiagnostic(d))
	}
	path := filepath.Join(work, "r.hcl")
	want := []string{
		path + `:6:12: error: Reference to undefined model; No model block or earlier pass produces model.bsae. Available: base. Did you mean model.base?`,
		path + `:7:12: error: Invalid value for "factor"; a number is required.`,
		path + `:8:3: error: Unsupported argument; An argument named "tag" is not expected here. Did you mean "tags"?`,
		path + `:9:13: error: Reference to undefined scores`,
		path + `:11:18: error: Missing required argument; The argument "model" is required, but no definition was found.`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d diagnostics, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("diagnostic %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

func TestPassPluginCrash(t *testing.T) {
	h, reg, work := passSetup(t)
	path := writeRecipe(t, work, passRecipe)
	runDir := filepath.Join(work, "run")
	opts := pipeline.Options{Dir: runDir, Backends: &Provider{Default: func() (backend.Backend, error) { return &fakeBackend{}, nil }}}
	_, err := pipeline.Run(context.Background(), loadRecipe(t, path, reg, map[string]string{"crash": "true"}), reg, opts, pipeline.Events{})
	var ce *CrashError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a CrashError", err)
	}
	msg := err.Error()
	t.Logf("crash error: %s", msg)
	for _, want := range []string{`pass "echo-score"`, `plugin "testpass"`, "exited unexpectedly", "resume"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	man, err := pipeline.ReadManifest(filepath.Join(runDir, pipeline.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if len(man.Passes) != 1 || man.Passes[0].Status != pipeline.StatusFailed {
		t.Fatalf("manifest passes = %+v", man.Passes)
	}
	// The same host starts the plugin again, and the run completes.
	if _, err := pipeline.Run(context.Background(), loadRecipe(t, path, reg, nil), reg, opts, pipeline.Events{}); err != nil {
		t.Fatalf("run after the crash: %v", err)
	}
	_ = h
}

// TestDescriptionCache: with a cache directory, a second registration
// learns the plugins' kinds without starting them, the cached kinds run
// (the plugin starts on first use), and a damaged entry is replaced.
func TestDescriptionCache(t *testing.T) {
	plugins, cache := t.TempDir(), t.TempDir()
	pluginScript(t, plugins, "testpass", "pass")
	pluginScript(t, plugins, "fake", "backend")
	register := func() (*Host, *pipeline.Registry, []Info) {
		h, _ := newTestHost(t, plugins)
		h.opts.CacheDir = cache
		reg := pipeline.NewRegistry()
		return h, reg, h.RegisterPasses(context.Background(), reg)
	}
	started := func(h *Host) int {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.starts
	}
	h1, _, first := register()
	if n := started(h1); n != 2 {
		t.Fatalf("the first registration started %d plugins, want 2", n)
	}
	entries, _ := filepath.Glob(filepath.Join(cache, "*.pb"))
	if len(entries) != 2 {
		t.Fatalf("cache holds %v", entries)
	}
	h2, reg, second := register()
	if n := started(h2); n != 0 {
		t.Errorf("the cached registration started %d plugins", n)
	}
	if !reflect.DeepEqual(first, second) {
		t.Errorf("cached infos %+v\nwant %+v", second, first)
	}
	work := t.TempDir()
	tinyModel(t, filepath.Join(work, "base"))
	r := loadRecipe(t, writeRecipe(t, work, passRecipe), reg, nil)
	opts := pipeline.Options{Dir: filepath.Join(work, "run"), Backends: &Provider{Default: func() (backend.Backend, error) { return &fakeBackend{}, nil }}}
	if _, err := pipeline.Run(context.Background(), r, reg, opts, pipeline.Events{}); err != nil {
		t.Fatal(err)
	}
	if n := started(h2); n != 1 {
		t.Errorf("running the recipe started %d plugins, want the pass plugin alone", n)
	}
	for _, e := range entries {
		if err := os.WriteFile(e, []byte("not a protobuf \xff"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h3, _, third := register()
	if n := started(h3); n != 2 || !reflect.DeepEqual(third, first) {
		t.Errorf("with damaged entries: %d started, infos %+v", n, third)
	}
	for _, e := range entries {
		if data, _ := os.ReadFile(e); strings.HasPrefix(string(data), "not a protobuf") {
			t.Errorf("%s was not rewritten", e)
		}
	}
}
