package pipeline

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

// scalePass multiplies a model's embedding by a factor; it counts its runs
// and fails on demand so the tests can watch caching and resumption.
type scalePass struct {
	runs  *int
	fail  *string              // name of the pass that fails
	onRun func(rc *RunContext) // called first in Run, when set
}

type scaleConfig struct {
	Model  recipe.Ref `hcl:"model"`
	Factor float64    `hcl:"factor"`
}

func (s scalePass) Spec() recipe.KindSpec {
	return recipe.KindSpec{Kind: "scale", Description: "test pass", Produces: recipe.SlotModel, NewConfig: func() any { return &scaleConfig{} }}
}

func (s scalePass) Plan(pc *PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c, err := pc.Model(p.Config.(*scaleConfig).Model)
	return &c, err
}

func (s scalePass) Run(ctx context.Context, rc *RunContext, p *recipe.Pass) error {
	*s.runs++
	if s.onRun != nil {
		s.onRun(rc)
	}
	if *s.fail == p.Name {
		return errors.New("injected failure")
	}
	c := p.Config.(*scaleConfig)
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	emb, err := m.Tensors[ir.NameEmbed].Float32()
	if err != nil {
		return err
	}
	out := make([]float32, len(emb))
	for i, v := range emb {
		out[i] = v * float32(c.Factor)
	}
	tensors := map[string]*ir.Tensor{}
	for k, v := range m.Tensors {
		tensors[k] = v
	}
	tensors[ir.NameEmbed] = ir.FromFloat32(ir.F32, m.Tensors[ir.NameEmbed].Shape, out)
	rc.Metric("factor", c.Factor)
	rc.SetModel(&ir.Model{Config: m.Config.Clone(), Tensors: tensors})
	return nil
}

// tinyModel writes a small random Llama model as a Hugging Face directory.
func tinyModel(t *testing.T, dir string) {
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
}

// scaleWork is a work directory holding the tiny model "base" and
// testRecipe as r.hcl.
func scaleWork(t *testing.T) (work, recipePath string) {
	t.Helper()
	work = t.TempDir()
	tinyModel(t, filepath.Join(work, "base"))
	recipePath = filepath.Join(work, "r.hcl")
	if err := os.WriteFile(recipePath, []byte(testRecipe), 0o644); err != nil {
		t.Fatal(err)
	}
	return work, recipePath
}

const testRecipe = `
variable "factor" {
  type    = number
  default = 2
}
model "base" {
  path   = "base"
  format = "hf"
}
pass "scale" {
  name   = "first"
  model  = model.base
  into   = "a"
  factor = var.factor
}
pass "scale" {
  name   = "second"
  model  = model.a
  into   = "b"
  factor = 3
}
output "final" {
  model  = model.b
  format = "hf"
  path   = "out/final"
}
`

func TestRunManifestAndResume(t *testing.T) {
	work, recipePath := scaleWork(t)
	runs, fail := 0, ""
	reg := NewRegistry()
	if err := reg.Register(scalePass{runs: &runs, fail: &fail}); err != nil {
		t.Fatal(err)
	}
	load := func(vars map[string]string) *recipe.Recipe {
		r, diags := recipe.Load(recipePath, vars, reg.Language())
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return r
	}
	runDir := filepath.Join(work, "run")
	ctx := context.Background()

	man, err := Run(ctx, load(nil), reg, Options{Dir: runDir}, Events{})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 2 {
		t.Fatalf("first run executed %d passes, want 2", runs)
	}
	// The manifest's hashes are the files' real hashes.
	src, _ := os.ReadFile(recipePath)
	if man.Recipe.SHA256 != fsutil.HashBytes(src) {
		t.Errorf("recipe hash %s is not the file's", man.Recipe.SHA256)
	}
	if len(man.Inputs) == 0 {
		t.Fatal("manifest lists no inputs")
	}
	for _, fr := range append(append([]FileRecord{}, man.Outputs...), man.Passes[0].Artifacts...) {
		path := fr.Path
		if !filepath.IsAbs(path) {
			path = filepath.Join(runDir, path)
		}
		got, err := HashPath(path)
		if err != nil {
			t.Fatal(err)
		}
		if got.SHA256 != fr.SHA256 {
			t.Errorf("%s: manifest says %s, file hashes to %s", fr.Path, fr.SHA256, got.SHA256)
		}
	}
	// The output holds base * 2 * 3.
	base, err := hf.Load(filepath.Join(work, "base"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	final, err := hf.Load(filepath.Join(runDir, "out", "final"))
	if err != nil {
		t.Fatal(err)
	}
	defer final.Close()
	be, _ := base.Tensors[ir.NameEmbed].Float32()
	fe, _ := final.Tensors[ir.NameEmbed].Float32()
	for i := range be {
		if want := be[i] * 2 * 3; fe[i] != want {
			t.Fatalf("embedding[%d] = %g, want %g", i, fe[i], want)
		}
	}

	// Same recipe again: nothing runs.
	if _, err := Run(ctx, load(nil), reg, Options{Dir: runDir}, Events{}); err != nil {
		t.Fatal(err)
	}
	if runs != 2 {
		t.Fatalf("an unchanged re-run executed %d more passes", runs-2)
	}
	// A changed variable reruns the pass it feeds and everything downstream.
	if _, err := Run(ctx, load(map[string]string{"factor": "5"}), reg, Options{Dir: runDir}, Events{}); err != nil {
		t.Fatal(err)
	}
	if runs != 4 {
		t.Fatalf("after changing factor, %d passes ran, want 2", runs-2)
	}
	// An interrupted run resumes after the last finished pass.
	fail = "second"
	vars := map[string]string{"factor": "7"}
	if _, err := Run(ctx, load(vars), reg, Options{Dir: runDir}, Events{}); err == nil {
		t.Fatal("injected failure did not fail the run")
	}
	// The manifest on disk says the run failed, where, and that the first
	// pass was done.
	failed, err := ReadManifest(filepath.Join(runDir, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	states := failed.PassStates()
	if failed.Status != StatusFailed || len(states) != 2 || states[0].State != StateDone || states[1].State != StateFailed ||
		!strings.Contains(states[1].Error, "injected failure") {
		t.Errorf("failed run recorded status %q and passes %+v", failed.Status, states)
	}
	if err := failed.Incomplete(); err == nil || !strings.Contains(err.Error(), `pass "second"`) {
		t.Errorf("Incomplete = %v, want the failed pass", err)
	}
	fail = ""
	before := runs
	man, err = Run(ctx, load(vars), reg, Options{Dir: runDir}, Events{})
	if err != nil {
		t.Fatal(err)
	}
	if runs-before != 1 {
		t.Fatalf("resume ran %d passes, want 1 (only the pass that failed)", runs-before)
	}
	for _, p := range man.Passes {
		if p.Status != StatusDone {
			t.Errorf("pass %s: status %s", p.Name, p.Status)
		}
	}
	if states := man.PassStates(); man.Status != StatusDone || man.Incomplete() != nil ||
		states[0].State+" "+states[1].State != StateReused+" "+StateDone {
		t.Errorf("resumed run: status %q, passes %+v", man.Status, states)
	}
}

// TestResumeReordered: passes that moved in the recipe (here: a new pass
// inserted before them) are reused from their old directories, which are
// renamed to their new positions, artifacts and all.
func TestResumeReordered(t *testing.T) {
	work := t.TempDir()
	tinyModel(t, filepath.Join(work, "base"))
	runs, fail := 0, ""
	reg := NewRegistry()
	if err := reg.Register(scalePass{runs: &runs, fail: &fail}); err != nil {
		t.Fatal(err)
	}
	load := func(src string) *recipe.Recipe {
		path := filepath.Join(work, "r.hcl")
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		r, diags := recipe.Load(path, nil, reg.Language())
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return r
	}
	runDir := filepath.Join(work, "run")
	ctx := context.Background()
	if _, err := Run(ctx, load(testRecipe), reg, Options{Dir: runDir}, Events{}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(runDir, "passes", "01-second", "model", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	inserted := strings.Replace(testRecipe, `pass "scale" {
  name   = "first"`, `pass "scale" {
  name   = "zeroth"
  model  = model.base
  into   = "z"
  factor = 10
}
pass "scale" {
  name   = "first"`, 1)
	man, err := Run(ctx, load(inserted), reg, Options{Dir: runDir}, Events{})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 3 {
		t.Errorf("%d passes ran after the insertion, want the new one alone", runs-2)
	}
	for i, want := range []struct {
		name    string
		resumed bool
	}{{"zeroth", false}, {"first", true}, {"second", true}} {
		p := man.Passes[i]
		if p.Name != want.name || p.Index != i || p.Resumed != want.resumed {
			t.Errorf("pass %d: %s index %d resumed %v, want %s resumed %v", i, p.Name, p.Index, p.Resumed, want.name, want.resumed)
		}
		for _, a := range p.Artifacts {
			if got, err := HashPath(filepath.Join(runDir, a.Path)); err != nil || got.SHA256 != a.SHA256 {
				t.Errorf("pass %s artifact %s: %v", p.Name, a.Path, err)
			}
		}
	}
	after, err := os.ReadFile(filepath.Join(runDir, "passes", "02-second", "model", "model.safetensors"))
	if err != nil || string(after) != string(before) {
		t.Errorf("the moved pass's model: %v", err)
	}
	if _, err := os.Stat(filepath.Join(runDir, "passes", "01-second")); !os.IsNotExist(err) {
		t.Errorf("the old directory is still there: %v", err)
	}
	// Once more: everything is reused where it now is.
	if _, err := Run(ctx, load(inserted), reg, Options{Dir: runDir}, Events{}); err != nil || runs != 3 {
		t.Errorf("third run: %v, %d passes ran", err, runs-3)
	}
}

// TestManifestRecordsRunningPass: while a pass runs, the manifest on disk
// already names it as running (after the passes done before it), so that a
// run killed mid-pass tells where it was.
func TestManifestRecordsRunningPass(t *testing.T) {
	work, recipePath := scaleWork(t)
	runs, fail := 0, ""
	var seen [][]PassState
	reg := NewRegistry()
	if err := reg.Register(scalePass{runs: &runs, fail: &fail, onRun: func(rc *RunContext) {
		m, err := ReadManifest(filepath.Join(rc.RunDir, ManifestName))
		if err != nil {
			t.Errorf("reading the manifest during a pass: %v", err)
			return
		}
		seen = append(seen, m.PassStates())
	}}); err != nil {
		t.Fatal(err)
	}
	r, diags := recipe.Load(recipePath, nil, reg.Language())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if _, err := Run(context.Background(), r, reg, Options{Dir: filepath.Join(work, "run")}, Events{}); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{StateRunning, StateNotRun}, {StateDone, StateRunning}}
	if len(seen) != len(want) {
		t.Fatalf("saw the manifest %d times, want %d", len(seen), len(want))
	}
	for i, states := range seen {
		for j, st := range states {
			if st.State != want[i][j] {
				t.Errorf("during pass %d, pass %q is %q, want %q", i, st.Name, st.State, want[i][j])
			}
		}
	}
}
