package correct

import (
	"errors"
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
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
)

const fullRecipe = passtest.Inputs + `
pass "correct" {
  model            = model.base
  dataset          = dataset.corpus
  into             = "fixed"
  steps            = 10
  batch            = 2
  grad_accum       = 3
  seq_len          = 16
  lr               = 0.001
  min_lr           = 0.0001
  warmup           = 2
  weight_decay     = 0.01
  grad_clip        = 0.5
  beta2            = 0.99
  seed             = 7
  eval_every       = 4
  val_sequences    = 5
  log_every        = 5
  checkpoint_every = 3
}
`

func ptr[T any](v T) *T { return &v }

func TestDecode(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	r := env.MustLoad(t, reg, fullRecipe)
	got := r.Passes[0].Config.(*Config)
	want := &Config{
		Model: recipe.Ref{Kind: "model", Name: "base"}, Dataset: recipe.Ref{Kind: "dataset", Name: "corpus"},
		TrainOptions: passutil.TrainOptions{
			Steps: ptr(10), Batch: ptr(2), GradAccum: ptr(3), SeqLen: ptr(16), LR: ptr(0.001), MinLR: ptr(0.0001),
			Warmup: ptr(2), WeightDecay: ptr(0.01), GradClip: ptr(0.5), Beta2: ptr(0.99), Seed: ptr(int64(7)),
			EvalEvery: ptr(4), ValSequences: ptr(5), LogEvery: ptr(5), CheckpointEvery: ptr(3),
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
	plan, err := pipeline.MakePlan(r, reg)
	if err != nil {
		t.Fatal(err)
	}
	// correct keeps the architecture.
	if st := plan.Stages[1]; st.Slot != "model.fixed" || !reflect.DeepEqual(*st.Config, env.Config) {
		t.Errorf("plan stage %+v, want model.fixed with the base architecture", st)
	}
}

func TestRecipeErrors(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	block := func(body string) string {
		return passtest.Inputs + "pass \"correct\" {\n  model   = model.base\n  dataset = dataset.corpus\n  into    = \"fixed\"\n" + body + "}\n"
	}
	tests := []struct {
		name, src string
		at        string // text whose position the error must name ("" = the pass block)
		want      string
	}{
		{"wrong type", block("  steps = \"many\"\n"), `"many"`, `Invalid value for "steps"`},
		{"unknown attribute", block("  stepz = 3\n"), "stepz", "Unsupported argument"},
		{"fractional steps", block("  steps = 1.5\n"), "1.5", `Invalid value for "steps"`},
		{"dataset is a model", block("  steps = 1\n")[:0] + passtest.Inputs + "pass \"correct\" {\n  model = model.base\n  dataset = model.base\n  into = \"x\"\n  steps = 1\n}\n", "model.base\n  into", "dataset"},
		{"no budget", block(""), `pass "correct"`, "steps = N or tokens = N"},
		{"both budgets", block("  steps = 3\n  tokens = 100\n"), "100", "give one budget"},
		{"zero steps", block("  steps = 0\n"), "0\n", "at least 1"},
		{"bad mode", block("  steps = 3\n  mode = \"half\"\n"), `"half"`, `unknown mode "half"`},
		{"rank without lora", block("  steps = 3\n  rank = 4\n"), "4\n", `mode = "lora" only`},
		{"unknown target", block("  steps = 3\n  mode = \"lora\"\n  targets = [\"q_proj\", \"wq\"]\n"), `["q_proj"`, `unknown LoRA target "wq"`},
		{"empty targets", block("  steps = 3\n  mode = \"lora\"\n  targets = []\n"), "[]", "targets is empty"},
		{"zero rank", block("  steps = 3\n  mode = \"lora\"\n  rank = 0\n"), "0\n", "rank = 0"},
		{"seq_len over context", block("  steps = 3\n  seq_len = 65\n"), "65", "context of 64"},
		{"min_lr above lr", block("  steps = 3\n  lr = 0.01\n  min_lr = 0.1\n"), "0.1\n", "min_lr = 0.1"},
		{"warmup beyond steps", block("  steps = 3\n  warmup = 4\n"), "4\n", "warmup = 4"},
		{"negative clip", block("  steps = 3\n  grad_clip = -1\n"), "-1", "grad_clip"},
		{"router_aux_weight on a dense model", block("  steps = 3\n  router_aux_weight = 0.01\n"), "0.01", "no routed layers"},
		{"beta1 one", block("  steps = 3\n  beta1 = 1\n"), "1\n", "beta1 = 1"},
		{"negative eval_every", block("  steps = 3\n  eval_every = -2\n"), "-2", "eval_every"},
		{"instruct data", strings.Replace(block("  steps = 3\n"), "dataset.corpus", "dataset.pairs", 1), "dataset.pairs", "instruction data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, diags := env.Load(t, reg, tc.src)
			at := ""
			if tc.at != "" {
				at = passtest.Pos(t, tc.src, tc.at)
			}
			if diags.HasErrors() {
				t.Log(diags.Error())
				if !strings.Contains(diags.Error(), tc.want) {
					t.Errorf("diagnostics %q do not mention %q", diags.Error(), tc.want)
				}
				if got := passtest.DiagPos(diags); got != at {
					t.Errorf("diagnostic at %s, want %s", got, at)
				}
				return
			}
			_, err := pipeline.MakePlan(r, reg)
			if err == nil {
				t.Fatalf("plan succeeded, want an error mentioning %q", tc.want)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if at != "" && !strings.Contains(err.Error(), at) {
				t.Errorf("error %q does not name %s", err, at)
			}
		})
	}
}

func TestRun(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	fake := passtest.NewFake()
	var progress []int
	man, err := env.Run(t, reg, fullRecipe, fake, pipeline.Events{Progress: func(p *recipe.Pass, done, total int, msg string) {
		if total != 10 {
			t.Errorf("progress total %d, want 10", total)
		}
		progress = append(progress, done)
	}})
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(env.Dir, "run")
	modelDir := filepath.Join(env.Dir, "model")

	loads := fake.CallsOf("Load")
	if len(loads) != 1 || loads[0].Req != (backend.LoadRequest{Dir: modelDir, Trainable: true}) {
		t.Fatalf("loads %+v, want the base model once, trainable", loads)
	}
	valPath := env.DataFile(t, "corpus-validation-L16-????????????????.npy")
	trainPath := env.DataFile(t, "corpus-train-L16-????????????????.npy")
	val := &backend.Sequences{Path: valPath, Limit: 5}

	evals := fake.CallsOf("Evaluate")
	if len(evals) != 1 {
		t.Fatalf("%d Evaluate calls, want 1 (before training; the final loss comes from Train)", len(evals))
	}
	if got := evals[0].Req.(backend.EvalRequest); !reflect.DeepEqual(got, backend.EvalRequest{Model: "m1", LM: val, BatchSize: 2}) {
		t.Errorf("evaluate request %+v", got)
	}
	if evals[0].Rows != 5 || evals[0].SeqLen != 16 {
		t.Errorf("validation rows %d × %d, want 5 × 16", evals[0].Rows, evals[0].SeqLen)
	}

	trains := fake.CallsOf("Train")
	if len(trains) != 1 {
		t.Fatalf("%d Train calls", len(trains))
	}
	tr := trains[0].Req.(backend.TrainRequest)
	if !strings.HasPrefix(tr.CheckpointDir, filepath.Join(run, "checkpoints", "correct@")) {
		t.Errorf("checkpoint dir %s is not under the run's checkpoints", tr.CheckpointDir)
	}
	origShape, orig := passtest.ReadInt32(t, trainPath)
	shufShape, shuf := passtest.ReadInt32(t, tr.Data.Path)
	want := backend.TrainRequest{
		Model: "m1", Objective: backend.ObjectiveCE, Mode: backend.ModeFull,
		Optim: backend.OptimConfig{LR: 0.001, MinLR: 0.0001, WarmupSteps: 2, WeightDecay: 0.01, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, GradClip: 0.5},
		Data:  backend.Sequences{Path: tr.Data.Path}, Steps: 10, BatchSize: 2, GradAccum: 3, Seed: 7,
		Validation: val, EvalEvery: 4, CheckpointDir: tr.CheckpointDir, CheckpointEvery: 3,
	}
	if !reflect.DeepEqual(tr, want) {
		t.Errorf("train request\n%+v\nwant\n%+v", tr, want)
	}
	// The training data is the prepared train split, rows shuffled by the seed.
	if !reflect.DeepEqual(shufShape, origShape) || origShape[1] != 16 {
		t.Fatalf("shuffled data %v, prepared %v", shufShape, origShape)
	}
	perm := passutil.Permutation(origShape[0], 0, 7)
	for i, src := range perm {
		if !slices.Equal(shuf[i*16:(i+1)*16], orig[src*16:(src+1)*16]) {
			t.Fatalf("row %d of the training data is not row %d of the split", i, src)
		}
	}
	if slices.Equal(shuf, orig) {
		t.Error("training data is not shuffled")
	}

	// The pass saved the backend's model and added the tokenizer.
	saves := fake.CallsOf("Save")
	outDir := filepath.Join(run, "passes", "00-correct", "model")
	if len(saves) != 1 || saves[0].Req != (backend.SaveRequest{Model: "m1", Dir: outDir}) {
		t.Fatalf("saves %+v", saves)
	}
	out, err := hf.Load(outDir)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	base, err := hf.Load(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	if out.Tokenizer == nil || len(out.Tokenizer.Pieces) != env.Config.Vocab {
		t.Error("the output model has no tokenizer")
	}
	on, _ := out.Tensors[ir.NameFinalNorm].Float32()
	bn, _ := base.Tensors[ir.NameFinalNorm].Float32()
	for i := range bn {
		if on[i] != 2*bn[i] {
			t.Fatalf("output norm[%d] = %g, want the trained %g", i, on[i], 2*bn[i])
		}
	}
	if rel := fake.CallsOf("Release"); len(rel) != 1 || rel[0].Req != backend.ModelID("m1") {
		t.Errorf("releases %+v", rel)
	}
	if _, err := os.Stat(tr.CheckpointDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("checkpoints still there after success: %v", err)
	}

	rec := passtest.Pass(t, man, "correct")
	m := rec.Metrics
	for k, v := range map[string]any{
		"val_loss_before": 2.0, "val_ppl_before": math.Exp(2), "val_loss": 2 - 10.0/1000, "val_ppl": math.Exp(2 - 10.0/1000),
		"steps": 10, "tokens": int64(10 * 2 * 3 * 16), "tokens_per_step": int64(96), "train_loss": 3 - 10.0/100,
		"train_sequences": origShape[0],
	} {
		if !reflect.DeepEqual(m[k], v) {
			t.Errorf("metric %s = %v (%T), want %v (%T)", k, m[k], m[k], v, v)
		}
	}
	if _, ok := m["resumed_from"]; ok {
		t.Error("resumed_from set on a fresh run")
	}
	curve := m["val_history"].([]passutil.ValPoint)
	var steps []int
	for _, p := range curve {
		steps = append(steps, p.Step)
	}
	if !slices.Equal(steps, []int{4, 8, 10}) {
		t.Errorf("validation curve at steps %v, want 4 8 10", steps)
	}
	// Progress: the loss before, then every 5 steps and every evaluation.
	if !slices.Equal(progress, []int{0, 4, 5, 8, 10}) {
		t.Errorf("progress at %v", progress)
	}
	hist, err := os.ReadFile(filepath.Join(run, "passes", "00-correct", passutil.HistoryFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(hist)), "\n")
	if len(lines) != 11 || lines[4] != "4,2.96,0.001,1,384,1.996," {
		t.Errorf("history.csv has %d lines; line 4 = %q", len(lines), lines[4])
	}
}

func TestTokenBudget(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	fake := passtest.NewFake()
	src := passtest.Inputs + `
pass "correct" {
  model      = model.base
  dataset    = dataset.corpus
  into       = "fixed"
  tokens     = 1000
  batch      = 2
  grad_accum = 3
  seq_len    = 16
  shuffle    = false
}
`
	man, err := env.Run(t, reg, src, fake, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	tr := fake.CallsOf("Train")[0].Req.(backend.TrainRequest)
	// 96 tokens per step: ⌈1000/96⌉ = 11 steps. Unset options take the
	// documented defaults.
	if tr.Steps != 11 {
		t.Errorf("steps %d, want 11", tr.Steps)
	}
	wantOptim := backend.OptimConfig{LR: 1e-4, MinLR: 1e-5, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, GradClip: 1}
	if tr.Optim != wantOptim || tr.Seed != 0 || tr.EvalEvery != 11 || tr.CheckpointEvery != 2 {
		t.Errorf("defaults: optim %+v seed %d eval_every %d checkpoint_every %d", tr.Optim, tr.Seed, tr.EvalEvery, tr.CheckpointEvery)
	}
	if tr.Data.Path != env.DataFile(t, "corpus-train-L16-????????????????.npy") {
		t.Errorf("shuffle = false trains on %s, not the prepared split", tr.Data.Path)
	}
	if m := passtest.Pass(t, man, "correct").Metrics; m["tokens_budget"] != int64(1000) {
		t.Errorf("tokens_budget = %v", m["tokens_budget"])
	}
}

func TestModes(t *testing.T) {
	tests := []struct {
		name, attrs string
		caps        []string
		mode        string
		lora        *backend.LoRAConfig
		err         string
	}{
		{"lora defaults", `mode = "lora"`, nil, backend.ModeLoRA,
			&backend.LoRAConfig{Rank: 8, Alpha: 8, Targets: backend.LoRATargets}, ""},
		{"lora custom", "mode = \"lora\"\n  rank = 4\n  alpha = 16\n  targets = [\"v_proj\", \"q_proj\"]", nil, backend.ModeLoRA,
			&backend.LoRAConfig{Rank: 4, Alpha: 16, Targets: []string{"v_proj", "q_proj"}}, ""},
		{"norm-only", `mode = "norm-only"`, nil, backend.ModeNormOnly, nil, ""},
		{"lora unsupported", `mode = "lora"`, []string{backend.CapTrain, backend.CapEvaluate}, "", nil, `does not offer "lora"`},
		{"train unsupported", `mode = "full"`, []string{backend.CapEvaluate}, "", nil, `does not offer "train"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := passtest.NewEnv(t)
			reg := passtest.Registry(t, Pass{})
			fake := passtest.NewFake()
			if tc.caps != nil {
				fake.Caps = tc.caps
			}
			src := passtest.Inputs + "pass \"correct\" {\n  model = model.base\n  dataset = dataset.corpus\n  into = \"x\"\n  steps = 2\n  seq_len = 16\n  " + tc.attrs + "\n}\n"
			_, err := env.Run(t, reg, src, fake, pipeline.Events{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, backend.ErrUnsupported) {
					t.Fatalf("error %v, want %q (ErrUnsupported)", err, tc.err)
				}
				if n := len(fake.CallsOf("Train")); n != 0 {
					t.Errorf("%d Train calls despite the missing capability", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tr := fake.CallsOf("Train")[0].Req.(backend.TrainRequest)
			if tr.Mode != tc.mode || !reflect.DeepEqual(tr.LoRA, tc.lora) {
				t.Errorf("mode %q lora %+v, want %q %+v", tr.Mode, tr.LoRA, tc.mode, tc.lora)
			}
		})
	}
}

func TestResume(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	fake := passtest.NewFake()
	fake.FailAtStep = 7
	src := func(lr string) string {
		return passtest.Inputs + `
pass "correct" {
  model            = model.base
  dataset          = dataset.corpus
  into             = "fixed"
  steps            = 10
  seq_len          = 16
  lr               = ` + lr + `
  checkpoint_every = 3
}
`
	}
	_, err := env.Run(t, reg, src("0.001"), fake, pipeline.Events{})
	if err == nil || !strings.Contains(err.Error(), "injected interruption") || !strings.Contains(err.Error(), passtest.Pos(t, src("0.001"), `pass "correct"`)) {
		t.Fatalf("error %v, want the injected interruption at the pass", err)
	}
	first := fake.CallsOf("Train")[0].Req.(backend.TrainRequest)
	b, err := os.ReadFile(filepath.Join(first.CheckpointDir, passtest.CheckpointFile))
	if err != nil || string(b) != `{"step":6}` {
		t.Fatalf("checkpoint after the interruption: %q, %v", b, err)
	}

	// The same recipe again resumes from the checkpoint the backend left.
	fake.FailAtStep = 0
	man, err := env.Run(t, reg, src("0.001"), fake, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	second := fake.CallsOf("Train")[1].Req.(backend.TrainRequest)
	if second.CheckpointDir != first.CheckpointDir {
		t.Errorf("resumed run used %s, the interrupted one %s", second.CheckpointDir, first.CheckpointDir)
	}
	if got := passtest.Pass(t, man, "correct").Metrics["resumed_from"]; got != 6 {
		t.Errorf("resumed_from = %v, want 6", got)
	}
	if _, err := os.Stat(first.CheckpointDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("checkpoint dir remains after the resumed run finished: %v", err)
	}

	// A changed configuration never resumes another configuration's
	// checkpoint, and clears it.
	fake.FailAtStep = 4
	if _, err := env.Run(t, reg, src("0.002"), fake, pipeline.Events{}); err == nil {
		t.Fatal("want the injected interruption")
	}
	fake.FailAtStep = 0
	man, err = env.Run(t, reg, src("0.003"), fake, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	calls := fake.CallsOf("Train")
	third, fourth := calls[2].Req.(backend.TrainRequest), calls[3].Req.(backend.TrainRequest)
	if third.CheckpointDir == fourth.CheckpointDir {
		t.Error("different configurations share a checkpoint directory")
	}
	if _, ok := passtest.Pass(t, man, "correct").Metrics["resumed_from"]; ok {
		t.Error("a changed configuration resumed a stale checkpoint")
	}
	if _, err := os.Stat(third.CheckpointDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale checkpoint of another configuration was not removed: %v", err)
	}
}

// TestTokenizerJSONOnly: a model directory whose vocabulary is only a
// tokenizer.json (byte-level BPE, as Llama 3 ships) is refused with a
// message that says so, not as a model without a tokenizer.
func TestTokenizerJSONOnly(t *testing.T) {
	env := passtest.NewEnv(t)
	dir := filepath.Join(env.Dir, "model")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tokenizer") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	passtest.WriteFile(t, dir, "tokenizer.json", `{"model": {"type": "BPE"}}`)
	src := passtest.Inputs + `
pass "correct" {
  model   = model.base
  dataset = dataset.corpus
  into    = "fixed"
  steps   = 1
}
`
	_, err = env.Run(t, passtest.Registry(t, Pass{}), src, passtest.NewFake(), pipeline.Events{})
	if err == nil || !strings.Contains(err.Error(), "tokenizer.json") || !strings.Contains(err.Error(), "cannot read") {
		t.Errorf("error %v should explain that tokenizer.json is not read", err)
	}
}
