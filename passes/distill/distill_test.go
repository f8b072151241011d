package distill

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir/tokenizer"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
	"github.com/whittle-ml/whittle/passes/prunewidth"
)

// The student is the base model width-pruned by magnitude, as in a real
// recipe; the teacher is the base model.
const fullRecipe = passtest.Inputs + `
pass "prune-width" {
  model     = model.base
  into      = "student"
  criterion = "magnitude"
  mlp       = 6
}
pass "distill" {
  student     = model.student
  teacher     = model.base
  dataset     = dataset.corpus
  into        = "student"
  steps       = 6
  batch       = 3
  seq_len     = 16
  lr          = 0.002
  temperature = 2
  scale_t2    = true
  top_k       = 5
  ce_weight   = 0.25
  eval_every  = 2
  seed        = 3
}
`

func ptr[T any](v T) *T { return &v }

func registry(t *testing.T) *pipeline.Registry {
	return passtest.Registry(t, prunewidth.Pass{}, Pass{})
}

func TestDecodeAndPlan(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := registry(t)
	r := env.MustLoad(t, reg, fullRecipe)
	got := r.Passes[1].Config.(*Config)
	want := &Config{
		Student: recipe.Ref{Kind: "model", Name: "student"}, Teacher: recipe.Ref{Kind: "model", Name: "base"},
		Dataset: recipe.Ref{Kind: "dataset", Name: "corpus"}, Temperature: ptr(2.0), ScaleT2: ptr(true), TopK: ptr(5),
		CEWeight:     ptr(0.25),
		TrainOptions: passutil.TrainOptions{Steps: ptr(6), Batch: ptr(3), SeqLen: ptr(16), LR: ptr(0.002), EvalEvery: ptr(2), Seed: ptr(int64(3))},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
	plan, err := pipeline.MakePlan(r, reg)
	if err != nil {
		t.Fatal(err)
	}
	// Distillation keeps the student's (pruned) architecture.
	pruned, distilled := plan.Stages[1], plan.Stages[2]
	if distilled.Slot != "model.student" || !reflect.DeepEqual(distilled.Config, pruned.Config) || distilled.Config.Layers[0].MLP != 6 {
		t.Errorf("distill planned %+v, want the pruned architecture %+v", distilled.Config, pruned.Config)
	}
}

func TestRecipeErrors(t *testing.T) {
	env := passtest.NewEnv(t)
	// A model whose vocabulary has one more token.
	tok := passtest.Tokenizer()
	tok.Pieces, tok.Scores, tok.Types = append(tok.Pieces, "zz"), append(tok.Scores, -20), append(tok.Types, 1)
	cfg := env.Config
	cfg.Vocab++
	passtest.WriteModelTok(t, filepath.Join(env.Dir, "big"), cfg, 2, tok)
	reg := registry(t)
	block := func(body string) string {
		return passtest.Inputs + "model \"big\" {\n  path = \"big\"\n}\npass \"distill\" {\n  student = model.base\n  dataset = dataset.corpus\n  into = \"s\"\n  steps = 2\n" + body + "}\n"
	}
	tests := []struct {
		name, src, at, want string
	}{
		{"teacher missing", block(""), "", `"teacher" is required`},
		{"teacher is a dataset", block("  teacher = dataset.corpus\n"), "dataset.corpus\n}", "reference to a model"},
		{"vocabulary differs", block("  teacher = model.big\n"), "model.big", "vocabulary has 297 tokens, the student's 296"},
		{"zero temperature", block("  teacher = model.base\n  temperature = 0\n"), "0\n", "temperature = 0"},
		{"top_k over vocab", block("  teacher = model.base\n  top_k = 1000\n"), "1000", "top_k = 1000"},
		{"ce_weight over 1", block("  teacher = model.base\n  ce_weight = 1.5\n"), "1.5", "ce_weight = 1.5"},
		{"shared options checked", block("  teacher = model.base\n  batch = 0\n"), "0\n", "batch = 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, diags := env.Load(t, reg, tc.src)
			at := ""
			if tc.at != "" {
				at = passtest.Pos(t, tc.src, tc.at)
			}
			if diags.HasErrors() {
				if !strings.Contains(diags.Error(), tc.want) {
					t.Errorf("diagnostics %q do not mention %q", diags.Error(), tc.want)
				}
				if at != "" && passtest.DiagPos(diags) != at {
					t.Errorf("diagnostic at %s, want %s", passtest.DiagPos(diags), at)
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

func TestRun(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := registry(t)
	fake := passtest.NewFake()
	teacherDir := filepath.Join(env.Dir, "model")
	fake.BaseLoss[teacherDir] = 1.5
	man, err := env.Run(t, reg, fullRecipe, fake, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(env.Dir, "run")
	studentDir := filepath.Join(run, "passes", "00-prune-width", "model")

	loads := fake.CallsOf("Load")
	wantLoads := []backend.LoadRequest{{Dir: studentDir, Trainable: true}, {Dir: teacherDir, Trainable: false}}
	if len(loads) != 2 || loads[0].Req != wantLoads[0] || loads[1].Req != wantLoads[1] {
		t.Fatalf("loads %+v, want %+v", loads, wantLoads)
	}
	val := &backend.Sequences{Path: env.DataFile(t, "corpus-validation-L16-????????????????.npy")}
	evals := fake.CallsOf("Evaluate")
	if len(evals) != 2 ||
		!reflect.DeepEqual(evals[0].Req, backend.EvalRequest{Model: "m1", LM: val, BatchSize: 3}) ||
		!reflect.DeepEqual(evals[1].Req, backend.EvalRequest{Model: "m2", LM: val, BatchSize: 3}) {
		t.Fatalf("evaluations %+v, want the student's then the teacher's validation loss", evals)
	}
	tr := fake.CallsOf("Train")[0].Req.(backend.TrainRequest)
	want := backend.TrainRequest{
		Model: "m1", Teacher: "m2", Objective: backend.ObjectiveKL,
		Loss:  backend.LossConfig{Temperature: 2, ScaleT2: true, TopK: 5, CEWeight: 0.25},
		Mode:  backend.ModeFull,
		Optim: backend.OptimConfig{LR: 0.002, MinLR: 0.0002, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, GradClip: 1},
		Data:  tr.Data, Steps: 6, BatchSize: 3, GradAccum: 1, Seed: 3, Validation: val, EvalEvery: 2,
		CheckpointDir: tr.CheckpointDir, CheckpointEvery: 1,
	}
	if !reflect.DeepEqual(tr, want) {
		t.Errorf("train request\n%+v\nwant\n%+v", tr, want)
	}
	if !strings.HasPrefix(tr.CheckpointDir, filepath.Join(run, "checkpoints", "distill@")) {
		t.Errorf("checkpoint dir %s", tr.CheckpointDir)
	}
	if !strings.Contains(filepath.Base(tr.Data.Path), "-shuffled-") || fake.CallsOf("Train")[0].SeqLen != 16 {
		t.Errorf("training data %s", tr.Data.Path)
	}
	saves := fake.CallsOf("Save")
	if len(saves) != 1 || saves[0].Req != (backend.SaveRequest{Model: "m1", Dir: filepath.Join(run, "passes", "01-distill", "model")}) {
		t.Errorf("saves %+v", saves)
	}
	if n := len(fake.CallsOf("Release")); n != 2 {
		t.Errorf("%d releases, want both models", n)
	}
	m := passtest.Pass(t, man, "distill").Metrics
	for k, v := range map[string]any{
		"teacher_val_loss": 1.5, "val_loss_before": 2.0, "val_loss": 2 - 6.0/1000, "val_kl": 1 / 6.0, "steps": 6,
	} {
		if !reflect.DeepEqual(m[k], v) {
			t.Errorf("metric %s = %v, want %v", k, m[k], v)
		}
	}
}

// TestTokenizerMismatch: tokenizers of the same size that encode text
// differently are rejected by the plan (so by validate, plan and run alike,
// before any training), naming the difference when a piece differs.
func TestTokenizerMismatch(t *testing.T) {
	tests := []struct {
		name   string
		change func(tok *tokenizer.Tokenizer)
		want   string
	}{
		{"piece differs", func(tok *tokenizer.Tokenizer) { tok.Pieces[len(tok.Pieces)-1] = "qq" }, `"qq"`},
		{"score differs", func(tok *tokenizer.Tokenizer) { tok.Scores[len(tok.Scores)-1] -= 5 }, "scores, merges or normalization differ"},
		{"same tokenizer", func(*tokenizer.Tokenizer) {}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := passtest.NewEnv(t)
			tok := passtest.Tokenizer()
			tc.change(tok)
			passtest.WriteModelTok(t, filepath.Join(env.Dir, "other"), env.Config, 2, tok)
			reg := registry(t)
			src := passtest.Inputs + `
model "other" {
  path = "other"
}
pass "distill" {
  student = model.base
  teacher = model.other
  dataset = dataset.corpus
  into    = "s"
  steps   = 2
  seq_len = 16
}
`
			_, err := pipeline.MakePlan(env.MustLoad(t, reg, src), reg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("plan: %v", err)
				}
				return
			}
			at := passtest.Pos(t, src, "model.other\n  dataset")
			if err == nil || !strings.Contains(err.Error(), "must share a tokenizer") || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), at) {
				t.Fatalf("plan error %v, want a tokenizer mismatch at %s naming %s", err, at, tc.want)
			}
			fake := passtest.NewFake()
			if _, err := env.Run(t, reg, src, fake, pipeline.Events{}); err == nil || !strings.Contains(err.Error(), "must share a tokenizer") {
				t.Fatalf("run error %v, want the tokenizer mismatch", err)
			}
			if len(fake.Calls) != 0 {
				t.Error("the run used the backend despite the mismatch")
			}
		})
	}
}
