package score

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
	"github.com/whittle-ml/whittle/passes/prunedepth"
	"github.com/whittle-ml/whittle/passes/prunewidth"
)

func ptr[T any](v T) *T { return &v }

func registry(t *testing.T) *pipeline.Registry {
	return passtest.Registry(t, Pass{}, prunewidth.Pass{}, prunedepth.Pass{})
}

func scoreRecipe(attrs string) string {
	return passtest.Inputs + `
pass "score" {
  model   = model.base
  into    = "imp"
` + attrs + `}
`
}

const fullAttrs = `  dataset = dataset.corpus
  samples = 20
  seq_len = 16
  batch   = 4
  seed    = 9
  layers  = ["lm_loss", "block_influence", "accuracy"]
  task    = task.choice
`

func TestDecodeAndPlan(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := registry(t)
	r := env.MustLoad(t, reg, scoreRecipe(fullAttrs+"  block = 2\n  activations = false\n"))
	got := r.Passes[0].Config.(*Config)
	want := &Config{Model: recipe.Ref{Kind: "model", Name: "base"}, Dataset: &recipe.Ref{Kind: "dataset", Name: "corpus"},
		Samples: ptr(20), SeqLen: ptr(16), Batch: ptr(4), Seed: ptr(int64(9)), Activations: ptr(false),
		Layers: []string{"lm_loss", "block_influence", "accuracy"}, Block: ptr(2), Task: &recipe.Ref{Kind: "task", Name: "choice"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
	plan, err := pipeline.MakePlan(r, reg)
	if err != nil {
		t.Fatal(err)
	}
	if st := plan.Stages[1]; st.Slot != "scores.imp" || st.Config != nil {
		t.Errorf("plan stage %+v, want scores.imp and no architecture", st)
	}
}

func TestRecipeErrors(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := registry(t)
	tests := []struct {
		name, attrs, at, want string
	}{
		{"unknown metric", "  dataset = dataset.corpus\n  layers = [\"perplexity\"]\n", `["perplexity"]`, `unknown layer metric "perplexity"`},
		{"metric twice", "  dataset = dataset.corpus\n  layers = [\"lm_loss\", \"lm_loss\"]\n", `["lm_loss", "lm_loss"]`, "listed twice"},
		{"accuracy without task", "  dataset = dataset.corpus\n  layers = [\"accuracy\"]\n", `["accuracy"]`, "needs task = task.<name>"},
		{"task without accuracy", "  dataset = dataset.corpus\n  task = task.choice\n", "task.choice\n", `add "accuracy" to layers`},
		{"block too big", "  dataset = dataset.corpus\n  layers = [\"lm_loss\"]\n  block = 4\n", "4\n", "block = 4 must be between 1 and 3"},
		{"block zero", "  dataset = dataset.corpus\n  layers = [\"lm_loss\"]\n  block = 0\n", "0\n", "block = 0"},
		{"block without a sweep", "  dataset = dataset.corpus\n  layers = [\"block_influence\"]\n  block = 3\n", "3\n}", "neither is in layers"},
		{"nothing to score", "  dataset = dataset.corpus\n  activations = false\n", "false", "nothing to score"},
		{"no dataset", "  samples = 4\n", `pass "score"`, "give dataset = dataset.<name>"},
		{"zero samples", "  dataset = dataset.corpus\n  samples = 0\n", "0\n", "samples = 0"},
		{"seq_len over context", "  dataset = dataset.corpus\n  seq_len = 100\n", "100", "context of 64"},
		{"instruct calibration", "  dataset = dataset.pairs\n", "dataset.pairs", "instruction data"},
		{"task is a dataset", "  layers = [\"accuracy\"]\n  task = dataset.corpus\n", "dataset.corpus", "reference to a task"},
		{"unknown expert importance", "  dataset = dataset.corpus\n  expert_importance = \"tokens\"\n", `"tokens"`, `unknown expert_importance "tokens"`},
		{"expert importance on a dense model", "  dataset = dataset.corpus\n  expert_importance = \"prob_mass\"\n", `"prob_mass"`, "no experts"},
		{"layers not a list", "  dataset = dataset.corpus\n  layers = \"lm_loss\"\n", `"lm_loss"`, `Invalid value for "layers"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := scoreRecipe(tc.attrs)
			r, diags := env.Load(t, reg, src)
			at := passtest.Pos(t, src, tc.at)
			if diags.HasErrors() {
				if !strings.Contains(diags.Error(), tc.want) || passtest.DiagPos(diags) != at {
					t.Errorf("diagnostics %q at %s, want %q at %s", diags.Error(), passtest.DiagPos(diags), tc.want, at)
				}
				return
			}
			_, err := pipeline.MakePlan(r, reg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), at) {
				t.Fatalf("plan error %v, want %q at %s", err, tc.want, at)
			}
		})
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func nearAll(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !near(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestRun(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := registry(t)
	fake := passtest.NewFake()
	// Prune with the scores, width and depth, to check they fit the
	// pruning passes.
	src := scoreRecipe(fullAttrs) + `
pass "prune-width" {
  model  = model.base
  scores = scores.imp
  into   = "narrow"
  mlp      = 5
  heads    = 2
  kv_heads = 1
}
pass "prune-depth" {
  model     = model.base
  scores    = scores.imp
  into      = "shallow"
  metric    = "lm_loss"
  remove    = 1
}
`
	man, err := env.Run(t, reg, src, fake, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(env.Dir, "run")
	trainPath := env.DataFile(t, "corpus-train-L16-????????????????.npy")
	valPath := env.DataFile(t, "corpus-validation-L16-????????????????.npy")

	if loads := fake.CallsOf("Load"); len(loads) != 1 || loads[0].Req != (backend.LoadRequest{Dir: filepath.Join(env.Dir, "model")}) {
		t.Fatalf("loads %+v, want the model once, not trainable", loads)
	}
	stats := fake.CallsOf("Stats")
	if len(stats) != 1 {
		t.Fatalf("%d Stats calls", len(stats))
	}
	sr := stats[0].Req.(backend.StatsRequest)
	if want := (backend.StatsRequest{Model: "m1", Data: backend.Sequences{Path: sr.Data.Path}, BatchSize: 4, Activations: true, BlockInfluence: true}); sr != want {
		t.Errorf("stats request %+v, want %+v", sr, want)
	}
	// The calibration set: 20 rows of the train split, drawn by the seed.
	cshape, calib := passtest.ReadInt32(t, sr.Data.Path)
	oshape, orig := passtest.ReadInt32(t, trainPath)
	if !slices.Equal(cshape, []int{20, 16}) {
		t.Fatalf("calibration shape %v, want [20 16]", cshape)
	}
	for i, r := range passutil.Permutation(oshape[0], 20, 9) {
		if !slices.Equal(calib[i*16:(i+1)*16], orig[r*16:(r+1)*16]) {
			t.Fatalf("calibration row %d is not train row %d", i, r)
		}
	}

	evals := fake.CallsOf("Evaluate")
	if len(evals) != 2 {
		t.Fatalf("%d Evaluate calls, want the LM sweep and the accuracy sweep", len(evals))
	}
	sweep := [][]int{{0}, {1}, {2}, {3}}
	lm := evals[0].Req.(backend.EvalRequest)
	if !reflect.DeepEqual(lm, backend.EvalRequest{Model: "m1", LM: &backend.Sequences{Path: valPath, Limit: 20}, SkipLayers: sweep, BatchSize: 4}) {
		t.Errorf("LM sweep request %+v", lm)
	}
	acc := evals[1].Req.(backend.EvalRequest)
	if len(acc.Choices) != 6 || acc.LM != nil || !reflect.DeepEqual(acc.SkipLayers, sweep) {
		t.Errorf("accuracy sweep request: %d items, LM %v, skip %v", len(acc.Choices), acc.LM, acc.SkipLayers)
	}

	// The table: the backend's statistics as they are; layer importances
	// computed from the fake's losses (+0.1·(l+1) per removed layer l) and
	// accuracies (−0.05·(l+1)).
	tab, err := scores.Load(filepath.Join(run, "passes", "00-score", "scores.json"))
	if err != nil {
		t.Fatal(err)
	}
	fs := passtest.FakeStats(env.Config, true, true)
	if !reflect.DeepEqual(tab.Hidden, fs.Hidden) || !reflect.DeepEqual(tab.Heads, fs.Heads) || !reflect.DeepEqual(tab.MLP, fs.MLP) {
		t.Error("activation scores differ from the backend's statistics")
	}
	wantLayers := map[string][]float64{
		"lm_loss":         {0.1, 0.2, 0.3, 0.4},
		"block_influence": {0.1, 0.2, 0.3, 0.4},
		"accuracy":        {0.05, 0.1, 0.15, 0.2},
	}
	for k, v := range wantLayers {
		if !nearAll(tab.Layers[k], v) {
			t.Errorf("layers[%s] = %v, want %v", k, tab.Layers[k], v)
		}
	}
	if tab.Samples != 20 || tab.Method != "activations(samples=20,seq_len=16)+block_influence+lm_loss(block=1)+accuracy(task=choice,block=1)" {
		t.Errorf("samples %d method %q", tab.Samples, tab.Method)
	}
	csv, err := os.ReadFile(filepath.Join(run, "passes", "00-score", LayersFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	if lines[0] != "layer,lm_loss,block_influence,accuracy,lm_loss_removed,accuracy_removed" || len(lines) != 5 || !strings.HasPrefix(lines[1], "0,0.1") {
		t.Errorf("layers.csv:\n%s", csv)
	}
	m := passtest.Pass(t, man, "score").Metrics
	if m["baseline_loss"] != 2.0 || m["baseline_accuracy"] != 0.75 || m["samples"] != 20 || m["tokens"] != 320 {
		t.Errorf("metrics %v", m)
	}

	// prune-width keeps each layer's top units by the fake's scores: the
	// last MLP neurons (score 1000l + j) and, in the better KV group (the
	// second: heads 2, 3), both heads.
	narrow, err := hf.Load(filepath.Join(run, "passes", "01-prune-width", "model"))
	if err != nil {
		t.Fatal(err)
	}
	defer narrow.Close()
	if l := narrow.Config.Layers[0]; l.MLP != 5 || l.Heads != 2 || l.KVHeads != 1 {
		t.Fatalf("pruned layer %+v", l)
	}
	base, err := hf.Load(filepath.Join(env.Dir, "model"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	rows := func(m *ir.Model, name string) [][]float32 {
		tn := m.Tensors[name]
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		var out [][]float32
		for r := 0; r < tn.Shape[0]; r++ {
			out = append(out, v[r*tn.Shape[1]:(r+1)*tn.Shape[1]])
		}
		return out
	}
	for l := range narrow.Config.Layers {
		q, bq := rows(narrow, ir.LayerName(l, ir.RoleQ)), rows(base, ir.LayerName(l, ir.RoleQ))
		if !reflect.DeepEqual(q, bq[4:8]) { // heads 2 and 3, head_dim 2
			t.Errorf("layer %d: kept query rows are not those of heads 2 and 3", l)
		}
		g, bg := rows(narrow, ir.LayerName(l, ir.RoleGate)), rows(base, ir.LayerName(l, ir.RoleGate))
		if !reflect.DeepEqual(g, bg[7:12]) {
			t.Errorf("layer %d: kept MLP neurons are not the top five (7..11)", l)
		}
	}
	// prune-depth removes the layer whose removal costs the least loss.
	if got := passtest.Pass(t, man, "prune-depth").Metrics["dropped_layers"]; !reflect.DeepEqual(got, []int{0}) {
		t.Errorf("dropped %v, want layer 0", got)
	}
}

func TestBlocks(t *testing.T) {
	if got := blocks(4, 2); !reflect.DeepEqual(got, [][]int{{0, 1}, {1, 2}, {2, 3}, {3}}) {
		t.Errorf("blocks(4, 2) = %v", got)
	}
	if got := blocks(3, 1); !reflect.DeepEqual(got, [][]int{{0}, {1}, {2}}) {
		t.Errorf("blocks(3, 1) = %v", got)
	}
}

func TestBlockSweep(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := registry(t)
	fake := passtest.NewFake()
	// No activations; a block of 2; more samples than the data has.
	src := scoreRecipe("  dataset = dataset.corpus\n  seq_len = 16\n  samples = 100000\n  activations = false\n  layers = [\"lm_loss\", \"accuracy\"]\n  task = task.choice\n  block = 2\n")
	man, err := env.Run(t, reg, src, fake, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(fake.CallsOf("Stats")); n != 0 {
		t.Errorf("%d Stats calls without activations or block_influence", n)
	}
	lm := fake.CallsOf("Evaluate")[0].Req.(backend.EvalRequest)
	if want := [][]int{{0, 1}, {1, 2}, {2, 3}, {3}}; !reflect.DeepEqual(lm.SkipLayers, want) {
		t.Errorf("sweep %v, want %v", lm.SkipLayers, want)
	}
	tab, err := scores.Load(filepath.Join(env.Dir, "run", "passes", "00-score", "scores.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{0.3, 0.5, 0.7, 0.4}; !nearAll(tab.Layers["lm_loss"], want) {
		t.Errorf("lm_loss = %v, want %v", tab.Layers["lm_loss"], want)
	}
	if want := []float64{0.15, 0.25, 0.35, 0.2}; !nearAll(tab.Layers["accuracy"], want) {
		t.Errorf("accuracy = %v, want %v", tab.Layers["accuracy"], want)
	}
	if tab.Hidden != nil || tab.MLP != nil {
		t.Error("activation scores without activations")
	}
	// Fewer train rows than samples: all of them.
	_, orig := passtest.ReadInt32(t, env.DataFile(t, "corpus-train-L16-????????????????.npy"))
	if got := passtest.Pass(t, man, "score").Metrics["samples"]; got != len(orig)/16 {
		t.Errorf("samples = %v, want all %d train rows", got, len(orig)/16)
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name, attrs string
		caps        []string
		fake        func(*passtest.Fake)
		want        string
	}{
		{"last-word task", "  dataset = dataset.corpus\n  seq_len = 16\n  layers = [\"accuracy\"]\n  task = task.lambada\n", nil, nil, "no multiple-choice items"},
		{"no stats capability", "  dataset = dataset.corpus\n  seq_len = 16\n", []string{backend.CapEvaluate}, nil, `does not offer "stats"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := passtest.NewEnv(t)
			fake := passtest.NewFake()
			if tc.caps != nil {
				fake.Caps = tc.caps
			}
			_, err := env.Run(t, registry(t), scoreRecipe(tc.attrs), fake, pipeline.Events{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckStats(t *testing.T) {
	cfg := passtest.TinyConfig(300)
	good := passtest.FakeStats(cfg, true, true)
	if err := checkStats(cfg, good, true, true); err != nil {
		t.Fatal(err)
	}
	bad := []func(r *backend.StatsResult){
		func(r *backend.StatsResult) { r.Hidden = r.Hidden[1:] },
		func(r *backend.StatsResult) { r.MLP = r.MLP[1:] },
		func(r *backend.StatsResult) { r.MLP[2] = r.MLP[2][1:] },
		func(r *backend.StatsResult) { r.Heads[1] = append(r.Heads[1], 0) },
		func(r *backend.StatsResult) { r.BlockInfluence = nil },
	}
	for i, f := range bad {
		r := passtest.FakeStats(cfg, true, true)
		f(r)
		if err := checkStats(cfg, r, true, true); err == nil {
			t.Errorf("case %d: a malformed result passed", i)
		}
	}
}

// moeStats is a well-formed statistics answer for a MoE config: layer l
// expert e has probability mass 10l+e, output norm sum 100-e and e+1
// routed tokens.
func moeStats(cfg ir.Config) *backend.StatsResult {
	n := len(cfg.Layers)
	r := &backend.StatsResult{ExpertMLP: make([][][]float64, n), ExpertProb: make([][]float64, n),
		ExpertOutput: make([][]float64, n), ExpertTokens: make([][]int, n), SharedMLP: make([][]float64, n)}
	for l, lc := range cfg.Layers {
		if !lc.MoE() {
			continue
		}
		for e := range lc.Experts {
			r.ExpertProb[l] = append(r.ExpertProb[l], float64(10*l+e))
			r.ExpertOutput[l] = append(r.ExpertOutput[l], float64(100-e))
			r.ExpertTokens[l] = append(r.ExpertTokens[l], e+1)
			r.ExpertMLP[l] = append(r.ExpertMLP[l], make([]float64, lc.ExpertMLP))
		}
		r.SharedMLP[l] = make([]float64, lc.SharedMLP)
	}
	return r
}

// Each expert-importance method reads its statistic: the mean output norm
// per routed token (Model Optimizer's), the summed norm, or the routed
// probability mass; dense layers have none.
func TestExpertScores(t *testing.T) {
	cfg := irtest.MoEFamilies()["qwen2_moe"] // layer 1 is dense
	st := moeStats(cfg)
	st.ExpertTokens[0][3] = 0 // never chosen: 0 under mean_output
	for _, tc := range []struct {
		method string
		want   []float64
	}{
		{ExpertsMeanOutput, []float64{100, 99.0 / 2, 98.0 / 3, 0}},
		{ExpertsTotalOutput, []float64{100, 99, 98, 97}},
		{ExpertsProbMass, []float64{0, 1, 2, 3}},
	} {
		got := ExpertScores(cfg, st, tc.method)
		if !nearAll(got[0], tc.want) || got[1] != nil {
			t.Errorf("%s: %v, want %v for layer 0 and nil for the dense layer 1", tc.method, got, tc.want)
		}
	}
}

func TestCheckExpertStats(t *testing.T) {
	cfg := irtest.MoEFamilies()["qwen2_moe"]
	if err := checkExpertStats(cfg, moeStats(cfg)); err != nil {
		t.Fatal(err)
	}
	bad := []func(r *backend.StatsResult){
		func(r *backend.StatsResult) { r.ExpertProb = r.ExpertProb[1:] },
		func(r *backend.StatsResult) { r.ExpertOutput[0] = r.ExpertOutput[0][1:] },
		func(r *backend.StatsResult) { r.ExpertTokens[2] = append(r.ExpertTokens[2], 1) },
		func(r *backend.StatsResult) { r.ExpertMLP[0][1] = r.ExpertMLP[0][1][1:] },
		func(r *backend.StatsResult) { r.SharedMLP[2] = nil },
	}
	for i, f := range bad {
		r := moeStats(cfg)
		f(r)
		if err := checkExpertStats(cfg, r); err == nil {
			t.Errorf("case %d: a malformed result passed", i)
		}
	}
}
