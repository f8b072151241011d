package plugin

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
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
	"github.com/whittle-ml/whittle/ir/modelio"
	"github.com/whittle-ml/whittle/passes"
)

// findUp returns the first ancestor-relative path that exists.
func findUp(t *testing.T, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// statsBackend answers Stats with activation norms that follow a fixed
// pattern over the loaded model's shapes, so the test can compute the
// expected Wanda scores independently.
type statsBackend struct {
	fakeBackend
	cfg      map[backend.ModelID]ir.Config
	requests []backend.StatsRequest
}

func actMLP(l, j int) float64    { return 1 + float64((j*7+l*3)%11)/4 }
func actHeadCh(l, c int) float64 { return 1 + float64((c*5+l)%7)/3 }
func actHidden(d int) float64    { return 1 + float64((d*3)%13)/5 }

func (b *statsBackend) Load(ctx context.Context, req backend.LoadRequest) (backend.ModelID, error) {
	id, err := b.fakeBackend.Load(ctx, req)
	if err != nil {
		return "", err
	}
	m, err := hf.Load(req.Dir)
	if err != nil {
		return "", err
	}
	defer m.Close()
	if b.cfg == nil {
		b.cfg = map[backend.ModelID]ir.Config{}
	}
	b.cfg[id] = m.Config
	return id, nil
}

func (b *statsBackend) Stats(_ context.Context, req backend.StatsRequest) (*backend.StatsResult, error) {
	c, ok := b.cfg[req.Model]
	if !ok {
		return nil, fmt.Errorf("no model %q", req.Model)
	}
	if _, err := os.Stat(req.Data.Path); err != nil {
		return nil, err
	}
	b.requests = append(b.requests, req)
	r := &backend.StatsResult{Sequences: req.Data.Limit, Tokens: req.Data.Limit * 64}
	for l, lc := range c.Layers {
		var mlp, hc []float64
		for j := range lc.MLP {
			mlp = append(mlp, actMLP(l, j))
		}
		for ch := range lc.Heads * lc.HeadDim {
			hc = append(hc, actHeadCh(l, ch))
		}
		r.MLP, r.HeadChannels = append(r.MLP, mlp), append(r.HeadChannels, hc)
	}
	for d := range c.Hidden {
		r.Hidden = append(r.Hidden, actHidden(d))
	}
	return r, nil
}

// columnAbsSums returns Σ_i |W[i,j]| per column of a [rows, cols] tensor.
func columnAbsSums(t *testing.T, m *ir.Model, name string) []float64 {
	t.Helper()
	w, err := m.Tensors[name].Float32()
	if err != nil {
		t.Fatal(err)
	}
	rows, cols := m.Tensors[name].Shape[0], m.Tensors[name].Shape[1]
	out := make([]float64, cols)
	for r := range rows {
		for c := range cols {
			out[c] += math.Abs(float64(w[r*cols+c]))
		}
	}
	return out
}

// TestWandaExamplePlugin builds the out-of-tree example from its own
// module, runs its recipe through the pipeline, and checks both the scores
// it produces (against the formula, computed here) and their effect on the
// pruned model.
func TestWandaExamplePlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example plugin")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the example with")
	}
	data := findUp(t, filepath.Join("shared", "data"))
	if data == "" {
		t.Skip("shared/data not found")
	}
	example := findUp(t, filepath.Join("examples", "plugins", "wanda"))
	if example == "" {
		t.Fatal("examples/plugins/wanda not found")
	}
	plugins := t.TempDir()
	build := exec.Command(goTool, "build", "-o", filepath.Join(plugins, Prefix+"wanda"), ".")
	build.Dir = example
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example: %v\n%s", err, out)
	}

	h, _ := newTestHost(t, plugins)
	reg, err := passes.Registry()
	if err != nil {
		t.Fatal(err)
	}
	infos := h.RegisterPasses(context.Background(), reg)
	if len(infos) != 1 || infos[0].Err != nil || infos[0].Version != "0.1.0" || !reflect.DeepEqual(infos[0].Kinds, []string{"wanda-score"}) {
		t.Fatalf("plugins = %+v", infos)
	}

	work := t.TempDir()
	corpus := filepath.Join(work, "calib.txt")
	text := strings.Repeat("Once upon a time there was a little girl named Lily. She liked to play in the park with her dog.\n\n", 60)
	if err := os.WriteFile(corpus, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	r, diags := recipe.Load(filepath.Join(example, "prune-wanda.hcl"), map[string]string{"data": data, "corpus": corpus}, reg.Language())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if _, err := pipeline.MakePlan(r, reg); err != nil {
		t.Fatal(err)
	}
	be := &statsBackend{}
	runDir := filepath.Join(work, "run")
	opts := pipeline.Options{Dir: runDir, Backends: &Provider{Host: h, Default: func() (backend.Backend, error) { return be, nil }}}
	if _, err := pipeline.Run(context.Background(), r, reg, opts, pipeline.Events{}); err != nil {
		t.Fatal(err)
	}
	if len(be.requests) != 1 || be.requests[0].Data.Limit != 32 || !be.requests[0].Activations {
		t.Errorf("Stats requests = %+v", be.requests)
	}

	// The expected scores, from the formula in the plugin's documentation.
	teacher, err := modelio.Load(filepath.Join(data, "models", "stories260K", "stories260K.bin"),
		modelio.LoadOptions{Tokenizer: filepath.Join(data, "models", "stories260K", "tok512.bin")})
	if err != nil {
		t.Fatal(err)
	}
	defer teacher.Close()
	cfg := teacher.Config
	want := &scores.Table{Method: "wanda-sp", Samples: 32, Hidden: make([]float64, cfg.Hidden)}
	for l, lc := range cfg.Layers {
		down := columnAbsSums(t, teacher, ir.LayerName(l, ir.RoleDown))
		mlp := make([]float64, lc.MLP)
		for j := range mlp {
			mlp[j] = actMLP(l, j) * down[j]
		}
		o := columnAbsSums(t, teacher, ir.LayerName(l, ir.RoleO))
		heads := make([]float64, lc.Heads)
		for c := range o {
			heads[c/lc.HeadDim] += actHeadCh(l, c) * o[c]
		}
		want.MLP, want.Heads = append(want.MLP, mlp), append(want.Heads, heads)
		for _, role := range []string{ir.RoleQ, ir.RoleK, ir.RoleV, ir.RoleGate, ir.RoleUp} {
			for d, s := range columnAbsSums(t, teacher, ir.LayerName(l, role)) {
				want.Hidden[d] += s
			}
		}
	}
	for d := range want.Hidden {
		want.Hidden[d] *= actHidden(d)
	}
	got, err := scores.Load(filepath.Join(runDir, "passes", "00-wanda-score", "scores.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Method != want.Method || got.Samples != want.Samples {
		t.Errorf("method %q samples %d, want %q %d", got.Method, got.Samples, want.Method, want.Samples)
	}
	near := func(what string, g, w []float64) {
		if len(g) != len(w) {
			t.Fatalf("%s: %d scores, want %d", what, len(g), len(w))
		}
		for i := range w {
			// Summation order differs; float64 sums of float32 weights.
			if math.Abs(g[i]-w[i]) > 1e-9*math.Abs(w[i]) {
				t.Fatalf("%s[%d] = %v, want %v", what, i, g[i], w[i])
			}
		}
	}
	near("hidden", got.Hidden, want.Hidden)
	for l := range cfg.Layers {
		near(fmt.Sprintf("mlp[%d]", l), got.MLP[l], want.MLP[l])
		near(fmt.Sprintf("heads[%d]", l), got.Heads[l], want.Heads[l])
	}

	// The effect: prune-width kept exactly the top half of each layer's
	// neurons by these scores, which is not what magnitude alone keeps.
	student, err := hf.Load(filepath.Join(runDir, "passes", "01-prune-width", "model"))
	if err != nil {
		t.Fatal(err)
	}
	defer student.Close()
	differs := false
	for l, lc := range cfg.Layers {
		keep := scores.TopK(want.MLP[l], lc.MLP/2)
		if n := student.Config.Layers[l].MLP; n != len(keep) {
			t.Fatalf("layer %d: student MLP %d, want %d", l, n, len(keep))
		}
		tw, _ := teacher.Tensors[ir.LayerName(l, ir.RoleUp)].Float32()
		sw, _ := student.Tensors[ir.LayerName(l, ir.RoleUp)].Float32()
		for i, j := range keep {
			// up_proj rows are neurons; hidden columns were not pruned.
			if !reflect.DeepEqual(sw[i*cfg.Hidden:(i+1)*cfg.Hidden], tw[j*cfg.Hidden:(j+1)*cfg.Hidden]) {
				t.Fatalf("layer %d: student neuron %d is not teacher neuron %d", l, i, j)
			}
		}
		if !reflect.DeepEqual(keep, scores.TopK(columnAbsSums(t, teacher, ir.LayerName(l, ir.RoleDown)), lc.MLP/2)) {
			differs = true
		}
	}
	if !differs {
		t.Error("the activation norms changed no layer's choice of neurons")
	}
	if student.Config.Layers[0].KVHeads != 2 || student.Config.Layers[0].Heads != 4 {
		t.Errorf("student heads %d/%d, want 4/2", student.Config.Layers[0].Heads, student.Config.Layers[0].KVHeads)
	}
}
