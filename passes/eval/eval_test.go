package eval

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
)

func ptr[T any](v T) *T { return &v }

func evalRecipe(attrs string) string {
	return passtest.Inputs + `
pass "eval" {
  model = model.base
` + attrs + `}
`
}

const fullAttrs = `  datasets    = [dataset.corpus]
  sequences   = 6
  seq_len     = 16
  batch       = 3
  tasks       = [task.choice, task.lambada]
  seed        = 4
  prompts     = ["the cat", "a dog ran"]
  max_tokens  = 5
  temperature = 0.8
  top_p       = 0.9
`

func TestDecodeAndPlan(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	r := env.MustLoad(t, reg, evalRecipe(fullAttrs))
	got := r.Passes[0].Config.(*Config)
	want := &Config{Model: recipe.Ref{Kind: "model", Name: "base"},
		Datasets: []recipe.Ref{{Kind: "dataset", Name: "corpus"}}, Sequences: ptr(6), SeqLen: ptr(16), Batch: ptr(3),
		Tasks: []recipe.Ref{{Kind: "task", Name: "choice"}, {Kind: "task", Name: "lambada"}}, Seed: ptr(int64(4)),
		Prompts: []string{"the cat", "a dog ran"}, MaxTokens: ptr(5), Temperature: ptr(0.8), TopP: ptr(0.9)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
	plan, err := pipeline.MakePlan(r, reg)
	if err != nil {
		t.Fatal(err)
	}
	if st := plan.Stages[1]; st.Slot != "" || st.Config != nil {
		t.Errorf("eval planned %+v; it produces nothing", st)
	}
}

func TestRecipeErrors(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	tests := []struct {
		name, attrs, at, want string
	}{
		{"nothing", "", `pass "eval"`, "nothing to evaluate"},
		{"into", "  into = \"x\"\n  tasks = [task.choice]\n", "into", `Unexpected "into"`},
		{"task in datasets", "  datasets = [task.choice]\n", "[task.choice]", "Element 0"},
		{"dataset twice", "  datasets = [dataset.corpus, dataset.corpus]\n", "[dataset.corpus,", "listed twice"},
		{"task twice", "  tasks = [task.choice, task.choice]\n", "[task.choice,", "listed twice"},
		{"instruct dataset", "  datasets = [dataset.pairs]\n", "[dataset.pairs]", "instruction data"},
		{"bad split", "  datasets = [dataset.corpus]\n  split = \"test\"\n", `"test"`, `unknown split "test"`},
		{"max_tokens without prompts", "  tasks = [task.choice]\n  max_tokens = 3\n", "3\n", "give prompts"},
		{"zero max_tokens", "  prompts = [\"a\"]\n  max_tokens = 0\n", "0\n", "max_tokens = 0"},
		{"top_p zero", "  prompts = [\"a\"]\n  top_p = 0\n", "0\n", "top_p = 0"},
		{"negative temperature", "  prompts = [\"a\"]\n  temperature = -1\n", "-1", "temperature = -1"},
		{"prompts not strings", "  prompts = [[1]]\n", "[[1]]", `Invalid value for "prompts"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := evalRecipe(tc.attrs)
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

func TestRun(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	fake := passtest.NewFake()
	tok := passtest.Tokenizer()
	id := func(p string) int {
		i, ok := tok.ID(p)
		if !ok {
			t.Fatalf("no piece %q", p)
		}
		return i
	}
	// Continuations " sat" + EOS + junk, and "s" up to max_tokens.
	fake.GenerateFunc = func(req backend.GenerateRequest) (*backend.GenerateResult, error) {
		return &backend.GenerateResult{Tokens: [][]int{
			{id(" s"), id("at"), tok.EOS, id("x")},
			{id("s"), id("s"), id("s"), id("s"), id("s")},
		}}, nil
	}
	// A clock that advances 0.25 s per reading times the LM evaluation
	// (two readings) at 0.25 s.
	clock := time.Unix(1000, 0)
	now = func() time.Time { clock = clock.Add(250 * time.Millisecond); return clock }
	defer func() { now = time.Now }()
	man, err := env.Run(t, reg, evalRecipe(fullAttrs), fake, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	valPath := env.DataFile(t, "corpus-validation-L16-????????????????.npy")
	evals := fake.CallsOf("Evaluate")
	if len(evals) != 3 {
		t.Fatalf("%d Evaluate calls, want LM, choices, last word", len(evals))
	}
	if got := evals[0].Req.(backend.EvalRequest); !reflect.DeepEqual(got, backend.EvalRequest{Model: "m1", LM: &backend.Sequences{Path: valPath, Limit: 6}, BatchSize: 3}) {
		t.Errorf("LM request %+v", got)
	}
	ch := evals[1].Req.(backend.EvalRequest)
	if len(ch.Choices) != 6 || ch.LM != nil || len(ch.LastWord) != 0 {
		t.Errorf("choice request: %d choices", len(ch.Choices))
	}
	// Items are the tokenization of the task: context with BOS, then the
	// option joined with a space.
	it := ch.Choices[0]
	if it.Gold != 0 || len(it.Contexts) != 2 || tok.Decode(append(append([]int{}, it.Contexts[0]...), it.Continuations[0]...)) != "the cat sat on the mat." {
		t.Errorf("first item %+v", it)
	}
	lw := evals[2].Req.(backend.EvalRequest)
	if len(lw.LastWord) != 5 || tok.Decode(lw.LastWord[0].Continuation) != " mat" {
		t.Errorf("last-word request: %d items, continuation %q", len(lw.LastWord), tok.Decode(lw.LastWord[0].Continuation))
	}
	gens := fake.CallsOf("Generate")
	wantGen := backend.GenerateRequest{Model: "m1", Prompts: [][]int{tok.Encode("the cat", true, false), tok.Encode("a dog ran", true, false)},
		MaxTokens: 5, Temperature: 0.8, TopP: 0.9, Seed: 4, StopToken: tok.EOS}
	if len(gens) != 1 || !reflect.DeepEqual(gens[0].Req, wantGen) {
		t.Errorf("generate %+v, want %+v", gens, wantGen)
	}

	m := passtest.Pass(t, man, "eval").Metrics
	for k, v := range map[string]any{
		"dataset.corpus.loss": 2.0, "dataset.corpus.ppl": math.Exp(2), "dataset.corpus.tokens": 6 * 15,
		"dataset.corpus.tokens_per_s": 6 * 15 / 0.25, "task.choice.acc": 0.75, "task.choice.acc_norm": 0.75 - 0.1, "task.choice.acc_norm_tokens": 0.75 - 0.2,
		"task.choice.items": 6, "task.lambada.acc": 0.5, "task.lambada.loss": 1.25, "task.lambada.items": 5,
	} {
		if !reflect.DeepEqual(m[k], v) {
			t.Errorf("metric %s = %v (%T), want %v", k, m[k], m[k], v)
		}
	}
	dir := filepath.Join(env.Dir, "run", "passes", "00-eval")
	b, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Datasets) != 1 || rep.Datasets[0].Sequences != 6 || rep.Datasets[0].Split != "validation" ||
		len(rep.Tasks) != 2 || rep.Tasks[0].Schema != "query_choices" || rep.Tasks[1].Schema != "last_word" {
		t.Errorf("report %+v", rep)
	}
	if len(rep.Samples) != 2 || rep.Samples[0].Completion != " sat" || rep.Samples[1].Completion != "sssss" {
		t.Errorf("samples %+v", rep.Samples)
	}
	txt, err := os.ReadFile(filepath.Join(dir, SamplesFile))
	if err != nil || !strings.Contains(string(txt), "the cat sat\n") || !strings.Contains(string(txt), "a dog ransssss\n") {
		t.Errorf("samples.txt %q (%v)", txt, err)
	}
	if n := len(fake.CallsOf("Train")) + len(fake.CallsOf("Save")); n != 0 {
		t.Errorf("eval trained or saved (%d calls)", n)
	}
}

func TestSplitAndFewShot(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	fake := passtest.NewFake()
	src := strings.Replace(passtest.Inputs, "path = \"choices.jsonl\"", "path = \"choices.jsonl\"\n  few_shot = 2\n  limit = 3", 1) + `
pass "eval" {
  model    = model.base
  datasets = [dataset.corpus]
  split    = "train"
  seq_len  = 16
  tasks    = [task.choice]
}
`
	man, err := env.Run(t, reg, src, fake, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	evals := fake.CallsOf("Evaluate")
	trainPath := env.DataFile(t, "corpus-train-L16-????????????????.npy")
	if got := evals[0].Req.(backend.EvalRequest).LM; got.Path != trainPath || got.Limit != 0 {
		t.Errorf("split = train scored %+v", got)
	}
	ch := evals[1].Req.(backend.EvalRequest).Choices
	tok := passtest.Tokenizer()
	// Two solved examples precede each item.
	if len(ch) != 3 || strings.Count(tok.Decode(ch[0].Contexts[0]), "the cat sat on the mat.") != 2 {
		t.Errorf("%d items; first context %q", len(ch), tok.Decode(ch[0].Contexts[0]))
	}
	var rep Report
	b, _ := os.ReadFile(filepath.Join(env.Dir, "run", "passes", "00-eval", ReportFile))
	if err := json.Unmarshal(b, &rep); err != nil || rep.Tasks[0].FewShot != 2 || rep.Datasets[0].Split != "train" {
		t.Errorf("report %+v (%v)", rep, err)
	}
	if man.Passes[0].Metrics["task.choice.items"] != 3 {
		t.Errorf("items %v", man.Passes[0].Metrics["task.choice.items"])
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name, attrs string
		inputs      func(string) string
		caps        []string
		want        string
	}{
		{"prompt beyond context", "  prompts = [\"the cat\"]\n  max_tokens = 62\n", nil, nil, "exceeds the model's context of 64"},
		{"no validation split", "  datasets = [dataset.corpus]\n  seq_len = 16\n",
			func(s string) string {
				return strings.Replace(s, "validation_fraction = 0.2", "validation_fraction = 0", 1)
			}, nil,
			"has no validation split"},
		{"no generate capability", "  prompts = [\"a\"]\n", nil, []string{backend.CapEvaluate}, `does not offer "generate"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := passtest.NewEnv(t)
			fake := passtest.NewFake()
			if tc.caps != nil {
				fake.Caps = tc.caps
			}
			src := evalRecipe(tc.attrs)
			if tc.inputs != nil {
				src = tc.inputs(src)
			}
			_, err := env.Run(t, passtest.Registry(t, Pass{}), src, fake, pipeline.Events{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
