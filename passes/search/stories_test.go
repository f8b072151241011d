package search_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/passes"
	"github.com/whittle-ml/whittle/passes/search"
	"github.com/whittle-ml/whittle/plugins/cpu"
)

type cpuProvider struct{}

func (cpuProvider) Open(ctx context.Context, b *recipe.Backend) (backend.Backend, error) {
	return cpu.New(cpu.Options{Threads: 2})
}

func runStories(t *testing.T, ctx context.Context, dir, src string, ev pipeline.Events) (*pipeline.Manifest, error) {
	t.Helper()
	reg, err := passes.Registry()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "recipe.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r, diags := recipe.Load(path, map[string]string{"data": shareddata.Dir(t)}, reg.Language())
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return pipeline.Run(ctx, r, reg, pipeline.Options{Dir: filepath.Join(dir, "run"), Backends: cpuProvider{}}, ev)
}

// storiesInputs: stories260K (hidden 64, MLP 172, 8 heads over 4 KV
// heads, 5 layers: 260,032 parameters) and TinyStories text, scored on
// 16 sequences of 64 tokens.
const storiesInputs = `
variable "data" {
  type = string
}
model "teacher" {
  path      = "${var.data}/models/stories260K/stories260K.bin"
  tokenizer = "${var.data}/models/stories260K/tok512.bin"
}
dataset "stories" {
  path                = "${var.data}/corpora/tinystories_val.txt"
  validation_fraction = 0.1
}
pass "score" {
  model   = model.teacher
  dataset = dataset.stories
  into    = "imp"
  samples = 16
  seq_len = 64
  layers  = ["lm_loss"]
}
`

// searchBlock searches hidden, MLP and layers (the sizes listed) at
// ≈160K parameters.
func searchBlock(extra, layers string) string {
	return `
pass "search" {
  model     = model.teacher
  scores    = scores.imp
  into      = "student"
  dataset   = dataset.stories
  metric    = "lm_loss"
  sequences = 16
  seq_len   = 64
  top_k     = 3
  seed      = 1
` + extra + `
  constraints {
    params    = 165000
    tolerance = 0.05
  }
  space "hidden" {
    ratios = [1, 0.875, 0.75, 0.625]
  }
  space "mlp" {
    ratios   = [1, 0.875, 0.75, 0.625, 0.5]
    round_to = 4
  }
  space "layers" {
    sizes = ` + layers + `
  }
}
`
}

func readResults(t *testing.T, dir string, man *pipeline.Manifest) *search.Results {
	t.Helper()
	runs, err := search.ReadRun(filepath.Join(dir, "run"), man)
	if err != nil || len(runs) != 1 {
		t.Fatalf("search results: %v, %v", runs, err)
	}
	return runs[0].Results
}

// TestStoriesLMLoss runs a search on stories260K scored by LM loss, every
// candidate dropping layers, some KV groups too, and checks it against the passes it
// composes: the winner is what prune-width and prune-depth make of the
// same sizes, and its score is what eval measures on it.
func TestStoriesLMLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("runs stories260K on the CPU")
	}
	dir := t.TempDir()
	// A wider tolerance and top_k, so that candidates with 2 KV heads are
	// scored too.
	block := searchBlock("  space \"kv_heads\" {\n    sizes = [4, 2]\n  }\n", "[4, 3]")
	block = strings.Replace(strings.Replace(block, "tolerance = 0.05", "tolerance = 0.08", 1), "top_k     = 3", "top_k     = 8", 1)
	man, err := runStories(t, context.Background(), dir, storiesInputs+block+`
pass "eval" {
  model     = model.student
  datasets  = [dataset.stories]
  sequences = 16
  seq_len   = 64
}
`, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	res := readResults(t, dir, man)
	win := res.Winner()
	if win == nil {
		t.Fatal("no winner")
	}
	t.Logf("%d candidates in the space, %d within the budget; winner %s (%d params) loss %.4f", res.SpaceSize, len(res.Rows), win.Sizes, win.Params, win.Score.Value)
	scored := 0
	for _, r := range res.Rows {
		if r.Params > 165000 || r.Params < 0.92*165000 {
			t.Errorf("candidate %s has %d params, outside the budget", r.Sizes, r.Params)
		}
		if r.Scored {
			scored++
			if r.Score == nil || !(r.Score.Value > 0) || !(r.Score.Value >= win.Score.Value) {
				t.Errorf("candidate %s: score %+v, winner %.4f", r.Sizes, r.Score, win.Score.Value)
			}
		}
	}
	kv2 := 0
	for _, r := range res.Rows {
		if r.Scored && r.KVHeads == 2 {
			kv2++
		}
	}
	if scored != min(8, len(res.Rows)) || len(res.Rows) < 2 || kv2 == 0 {
		t.Fatalf("%d of %d candidates scored (%d with 2 KV heads), want top_k = 8 of at least 2, some with 2 KV heads", scored, len(res.Rows), kv2)
	}
	var evalLoss float64
	for _, p := range man.Passes {
		if p.Name == "eval" {
			evalLoss, _ = p.Metrics["dataset.stories.loss"].(float64)
		}
	}
	if math.Abs(evalLoss-win.Score.Value) > 1e-9 {
		t.Errorf("eval of the produced student: loss %.6f; the search scored the winner %.6f", evalLoss, win.Score.Value)
	}

	// The same student from prune-width and prune-depth.
	dir2 := t.TempDir()
	depth := ""
	if n := 5 - win.Layers; n > 0 {
		depth = `
pass "prune-depth" {
  model     = model.student
  scores    = scores.imp
  into      = "student"
  remove    = ` + strconv.Itoa(n) + `
  metric    = "lm_loss"
}
`
	}
	man2, err := runStories(t, context.Background(), dir2, storiesInputs+`
pass "prune-width" {
  model  = model.teacher
  scores = scores.imp
  into   = "student"
  hidden   = `+strconv.Itoa(win.Hidden)+`
  mlp      = `+strconv.Itoa(win.MLP)+`
  heads    = `+strconv.Itoa(win.Heads)+`
  kv_heads = `+strconv.Itoa(win.KVHeads)+`
}
`+depth, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := hf.Load(filepath.Join(dir, "run", "passes", "01-search", "model"))
	if err != nil {
		t.Fatal(err)
	}
	last := man2.Passes[len(man2.Passes)-1]
	want, err := hf.Load(pipeline.PassDir(filepath.Join(dir2, "run"), last.Index, last.Name) + "/model")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Config, want.Config) {
		t.Fatalf("search produced %+v, the prune passes %+v", got.Config, want.Config)
	}
	for name, w := range want.Tensors {
		g, ok := got.Tensors[name]
		if !ok {
			t.Errorf("%s missing from the search's student", name)
			continue
		}
		gv, _ := g.Float32()
		wv, _ := w.Float32()
		if !reflect.DeepEqual(gv, wv) {
			t.Errorf("%s differs between the search's student and the prune passes'", name)
		}
	}
}

// TestStoriesRetrainResume scores candidates after a short distillation
// and interrupts the search after the first candidate: the rerun reuses
// that score and ends with the table of an uninterrupted run.
func TestStoriesRetrainResume(t *testing.T) {
	if testing.Short() {
		t.Skip("trains stories260K on the CPU")
	}
	src := storiesInputs + searchBlock(`  batch          = 4
  retrain_tokens = 768
  retrain_lr     = 0.003
`, "[5, 4, 3]")
	// Uninterrupted.
	full := t.TempDir()
	man, err := runStories(t, context.Background(), full, src, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	want := readResults(t, full, man)

	// Interrupted once the first candidate is scored.
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = runStories(t, ctx, dir, src, pipeline.Events{Update: func(p *recipe.Pass, u pipeline.Update) {
		if p.Kind == search.Kind && u.Done == 1 && u.Unit == "" && u.Total == 3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v, want context.Canceled", err)
	}
	cached, _ := filepath.Glob(filepath.Join(dir, "run", "search", "search", "*.json"))
	if len(cached) != 1 {
		t.Fatalf("%d cached scores after the interruption, want 1", len(cached))
	}
	man, err = runStories(t, context.Background(), dir, src, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	got := readResults(t, dir, man)
	for i, r := range got.Rows {
		if !r.Scored {
			continue
		}
		if r.Cached != (i == 0) {
			t.Errorf("candidate %d cached = %v; only the first was scored before the interruption", i+1, r.Cached)
		}
		w := want.Rows[i]
		if r.Sizes != w.Sizes || r.Score.Value != w.Score.Value || r.Winner != w.Winner || r.Score.RetrainLoss == nil ||
			*r.Score.RetrainLoss != *w.Score.RetrainLoss || !reflect.DeepEqual(r.Score.Dropped, w.Score.Dropped) {
			t.Errorf("candidate %d: resumed %+v %+v, uninterrupted %+v %+v", i+1, r.Sizes, *r.Score, w.Sizes, *w.Score)
		}
	}
	// Retraining helps: each candidate's loss after distillation is below
	// its loss as pruned (the lm_loss search's score of the same sizes).
	plain := t.TempDir()
	man, err = runStories(t, context.Background(), plain, storiesInputs+searchBlock("  batch = 4\n", "[5, 4, 3]"), pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	before := readResults(t, plain, man)
	for i, r := range got.Rows {
		if r.Scored {
			b := before.Rows[i]
			t.Logf("%s: loss %.4f pruned, %.4f after retraining", r.Sizes, b.Score.Value, r.Score.Value)
			if b.Sizes != r.Sizes || !(r.Score.Value < b.Score.Value) {
				t.Errorf("%s: loss %.4f after retraining, %.4f before (%s)", r.Sizes, r.Score.Value, b.Score.Value, b.Sizes)
			}
		}
	}
}

// TestStoriesAccuracy scores candidates by task accuracy: the winner's
// score is what eval measures on the produced student.
func TestStoriesAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs stories260K on the CPU")
	}
	dir := t.TempDir()
	man, err := runStories(t, context.Background(), dir, storiesInputs+`
task "wino" {
  path  = "${var.data}/evals/winogrande.jsonl"
  limit = 24
}
pass "search" {
  model     = model.teacher
  scores    = scores.imp
  into      = "student"
  objective = "accuracy"
  task      = task.wino
  top_k     = 2
  constraints {
    params = 200000
  }
  space "mlp" {
    ratios   = [1, 0.75, 0.625, 0.5]
    round_to = 4
  }
}
pass "eval" {
  model = model.student
  tasks = [task.wino]
}
`, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	res := readResults(t, dir, man)
	win := res.Winner()
	if win == nil || res.LowerIsBetter || win.Score.Items != 24 {
		t.Fatalf("results %+v", res)
	}
	for _, r := range res.Rows {
		if r.Scored && r.Score.Value > win.Score.Value {
			t.Errorf("candidate %s scored %.4f, above the winner's %.4f", r.Sizes, r.Score.Value, win.Score.Value)
		}
	}
	acc := math.NaN()
	for _, p := range man.Passes {
		if p.Name == "eval" {
			acc, _ = p.Metrics["task.wino.acc"].(float64)
		}
	}
	if acc != win.Score.Value {
		t.Errorf("eval of the produced student: accuracy %v; the search scored the winner %v", acc, win.Score.Value)
	}
}

// TestStoriesRandomPick runs a search and a random pick over the same
// candidates: the pick scores one of the top_k alone, its score is the
// search's own for those sizes, its student is what the plan announced,
// and different seeds draw different candidates.
func TestStoriesRandomPick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs stories260K on the CPU")
	}
	reg, err := passes.Registry()
	if err != nil {
		t.Fatal(err)
	}
	picked := map[search.Sizes]bool{}
	for _, seed := range []string{"1", "2", "3", "4"} {
		best := searchBlock("", "[4, 3]")
		best = strings.Replace(best, "seed      = 1", "seed      = "+seed, 1)
		random := strings.Replace(strings.Replace(best, `pass "search" {`, "pass \"search\" {\n  name = \"random\"\n  pick = \"random\"", 1),
			`into      = "student"`, `into      = "picked"`, 1)
		src := storiesInputs + best + random
		dir := t.TempDir()
		man, err := runStories(t, context.Background(), dir, src, pipeline.Events{})
		if err != nil {
			t.Fatal(err)
		}
		runs, err := search.ReadRun(filepath.Join(dir, "run"), man)
		if err != nil || len(runs) != 2 {
			t.Fatalf("search results: %v, %v", runs, err)
		}
		all, pick := runs[0].Results, runs[1].Results
		if runs[0].Pass == "random" {
			all, pick = pick, all
		}
		win := pick.Winner()
		if win == nil || pick.Pick != search.PickRandom || pick.PickedFrom != min(3, len(all.Rows)) {
			t.Fatalf("seed %s: random pick (pass %s) %+v", seed, runs[1].Pass, pick)
		}
		picked[win.Sizes] = true
		for i, r := range pick.Rows {
			if r.Scored != r.Winner {
				t.Errorf("seed %s: candidate %d scored = %v, winner = %v; only the pick is scored", seed, i+1, r.Scored, r.Winner)
			}
			if r.Sizes != all.Rows[i].Sizes {
				t.Fatalf("seed %s: candidate %d is %s in the pick, %s in the search", seed, i+1, r.Sizes, all.Rows[i].Sizes)
			}
		}
		if win.Rank > 3 {
			t.Errorf("seed %s: picked rank %d, outside top_k = 3", seed, win.Rank)
		}
		if ref := all.Rows[win.Rank-1].Score; ref == nil || math.Abs(ref.Value-win.Score.Value) > 1e-9 {
			t.Errorf("seed %s: the pick scored %s %.6f, the search %+v", seed, win.Sizes, win.Score.Value, ref)
		}

		// whittle report calls it picked, not a winner.
		var tb strings.Builder
		if err := search.WriteTable(&tb, "random", pick); err != nil {
			t.Fatal(err)
		}
		if out := tb.String(); !strings.Contains(out, fmt.Sprintf("1 scored by lm_loss (lower is better), picked at random among the first %d (seed %s)", pick.PickedFrom, seed)) ||
			!strings.Contains(out, "picked: "+win.Sizes.String()) || strings.Contains(out, "winner") {
			t.Errorf("seed %s: report of the pick:\n%s", seed, out)
		}

		// The plan continues with the candidate the run picked.
		path := filepath.Join(dir, "recipe.hcl")
		r, diags := recipe.Load(path, map[string]string{"data": shareddata.Dir(t)}, reg.Language())
		if diags.HasErrors() {
			t.Fatal(diags.Error())
		}
		plan, err := pipeline.MakePlan(r, reg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := hf.Load(filepath.Join(pipeline.PassDir(filepath.Join(dir, "run"), 2, "random"), "model"))
		if err != nil {
			t.Fatal(err)
		}
		var planned *ir.Config
		for _, st := range plan.Stages {
			if st.Name == "random" {
				planned = st.Config
			}
		}
		if planned == nil || planned.Hidden != got.Config.Hidden || len(planned.Layers) != len(got.Config.Layers) ||
			planned.Layers[0].MLP != got.Config.Layers[0].MLP || planned.Layers[0].KVHeads != got.Config.Layers[0].KVHeads {
			t.Errorf("seed %s: the plan continues with %+v, the run picked %s", seed, planned, win.Sizes)
		}
	}
	if len(picked) < 2 {
		t.Errorf("seeds 1-4 all picked %v", picked)
	}
}

// TestStoriesNonUniform: with uniform = false every candidate keeps its
// layers' MLP and KV-head totals but spends them where the scores rank
// units highest, so the student's layers differ while its parameter count
// stays within the budget, and its score is what eval measures on it.
func TestStoriesNonUniform(t *testing.T) {
	if testing.Short() {
		t.Skip("runs stories260K on the CPU")
	}
	dir := t.TempDir()
	block := searchBlock("  uniform   = false\n", "[4]")
	man, err := runStories(t, context.Background(), dir, storiesInputs+block+`
pass "eval" {
  model     = model.student
  datasets  = [dataset.stories]
  sequences = 16
  seq_len   = 64
}
`, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	win := readResults(t, dir, man).Winner()
	if win == nil {
		t.Fatal("no winner")
	}
	got, err := hf.Load(filepath.Join(dir, "run", "passes", "01-search", "model"))
	if err != nil {
		t.Fatal(err)
	}
	c := got.Config
	mlp, kv, differ := 0, 0, false
	for _, l := range c.Layers {
		mlp += l.MLP
		kv += l.KVHeads
		differ = differ || l.MLP != c.Layers[0].MLP
		if l.MLP%8 != 0 { // prunewidth.DefaultRoundTo(172)
			t.Errorf("layer MLP width %d is not a multiple of 8", l.MLP)
		}
	}
	if len(c.Layers) != win.Layers || c.Hidden != win.Hidden || mlp > win.MLP*win.Layers || kv != win.KVHeads*win.Layers {
		t.Errorf("student %+v for the winner %s", c.Layers, win.Sizes)
	}
	if !differ {
		t.Errorf("every layer kept %d MLP neurons: nothing non-uniform happened", c.Layers[0].MLP)
	}
	if p := c.Params().Total; p > 165000 {
		t.Errorf("student has %d parameters, over the budget", p)
	}
	for _, p := range man.Passes {
		if p.Name == "eval" {
			if loss, _ := p.Metrics["dataset.stories.loss"].(float64); math.Abs(loss-win.Score.Value) > 1e-9 {
				t.Errorf("eval of the student: loss %.6f; the search scored it %.6f", loss, win.Score.Value)
			}
		}
	}
	t.Logf("winner %s; per-layer MLP %v", win.Sizes, func() []int {
		var v []int
		for _, l := range c.Layers {
			v = append(v, l.MLP)
		}
		return v
	}())
}
