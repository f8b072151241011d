package prunedepth

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
	"github.com/whittle-ml/whittle/passes/score"
)

func TestSelect(t *testing.T) {
	tests := []struct {
		name       string
		imp        []float64
		n          int
		contiguous bool
		want       []int
	}{
		{"individual two lowest", []float64{5, 1, 3, 1, 4}, 2, false, []int{1, 3}},
		{"individual three, sorted output", []float64{5, 1, 3, 1, 4}, 3, false, []int{1, 2, 3}},
		{"individual ties keep lower index", []float64{2, 2, 2, 2}, 2, false, []int{0, 1}},
		{"individual negative scores", []float64{-1, 0, -3, 2}, 1, false, []int{2}},
		{"individual scattered", []float64{0.1, 5, 0.2, 5, 1, 1}, 2, false, []int{0, 2}},
		// Contiguous sums of 2: 5.1 5.2 5.2 6 2 -> start 4.
		{"contiguous differs from individual", []float64{0.1, 5, 0.2, 5, 1, 1}, 2, true, []int{4, 5}},
		// Sums 6 4 4 5: the earliest of the tied minima.
		{"contiguous tie takes earliest", []float64{5, 1, 3, 1, 4}, 2, true, []int{1, 2}},
		{"contiguous three", []float64{5, 1, 3, 1, 4}, 3, true, []int{1, 2, 3}},
		{"contiguous at the end", []float64{9, 9, 9, 1, 1}, 2, true, []int{3, 4}},
		{"contiguous at the start", []float64{0, 0, 9, 9, 9}, 2, true, []int{0, 1}},
		{"contiguous single", []float64{3, 2, 1, 4}, 1, true, []int{2}},
		{"all but one", []float64{3, 2, 1, 4}, 3, true, []int{0, 1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			imp := append([]float64(nil), tc.imp...)
			got, err := Select(imp, tc.n, tc.contiguous)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Select(%v, %d, contiguous=%v) = %v, want %v", tc.imp, tc.n, tc.contiguous, got, tc.want)
			}
			if !reflect.DeepEqual(imp, tc.imp) {
				t.Errorf("Select modified its input: %v", imp)
			}
		})
	}
}

func TestSelectErrors(t *testing.T) {
	tests := []struct {
		imp []float64
		n   int
	}{
		{[]float64{1, 2, 3}, 0},
		{[]float64{1, 2, 3}, -1},
		{[]float64{1, 2, 3}, 3},
		{[]float64{1, 2, 3}, 4},
		{nil, 1},
		{[]float64{1, math.NaN(), 3}, 1},
	}
	for _, tc := range tests {
		for _, contiguous := range []bool{true, false} {
			if got, err := Select(tc.imp, tc.n, contiguous); err == nil {
				t.Errorf("Select(%v, %d, %v) = %v, want an error", tc.imp, tc.n, contiguous, got)
			}
		}
	}
}

func TestCheck(t *testing.T) {
	scores := &recipe.Ref{Kind: "scores", Name: "layers"}
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"explicit layers", Config{Layers: []int{1, 2}}, ""},
		{"remove with scores", Config{Remove: 2, Scores: scores}, ""},
		{"individual", Config{Remove: 1, Scores: scores, Selection: "individual"}, ""},
		{"contiguous", Config{Remove: 1, Scores: scores, Selection: "contiguous"}, ""},
		{"both", Config{Layers: []int{1}, Remove: 1, Scores: scores}, "not both"},
		{"neither", Config{}, "remove = N"},
		{"remove all", Config{Remove: 4, Scores: scores}, "no layers"},
		{"remove without scores", Config{Remove: 1}, "needs scores"},
		{"block", Config{Remove: 2, Scores: scores, Selection: "block"}, ""},
		{"block with a list", Config{Layers: []int{1, 2}, Selection: "block"}, "give remove = N"},
		{"unknown selection", Config{Remove: 1, Scores: scores, Selection: "random"}, `"random"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.check(4)
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("check = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestSelectBlock(t *testing.T) {
	tests := []struct {
		name string
		imp  []float64
		n    int
		want []int
	}{
		// Blocks of 2 start at 0..2; the truncated block at 3 is no
		// candidate. Summing per-layer values would pick [2 3] instead.
		{"truncated last entry ignored", []float64{5, 1, 3, 0.5}, 2, []int{1, 2}},
		{"last full block", []float64{5, 4, 1, 9}, 2, []int{2, 3}},
		{"first block", []float64{-1, 0, 0, -5, -5}, 3, []int{0, 1, 2}},
		{"ties take earliest", []float64{2, 1, 1, 3, 0}, 2, []int{1, 2}},
		{"single layers", []float64{3, 2, 1, 4}, 1, []int{2}},
		{"all but one, cut-short blocks ignored", []float64{3, 2, 1, 0}, 3, []int{1, 2, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SelectBlock(tc.imp, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("SelectBlock(%v, %d) = %v, want %v", tc.imp, tc.n, got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		imp []float64
		n   int
	}{{[]float64{1, 2, 3}, 0}, {[]float64{1, 2, 3}, 3}, {nil, 1}, {[]float64{1, math.NaN(), 3}, 1}} {
		if got, err := SelectBlock(tc.imp, tc.n); err == nil {
			t.Errorf("SelectBlock(%v, %d) = %v, want an error", tc.imp, tc.n, got)
		}
	}
}

func TestBlockSize(t *testing.T) {
	tests := []struct {
		method, metric string
		want           int
		ok             bool
	}{
		{"activations(samples=256,seq_len=128)+lm_loss(block=2)+block_influence", "lm_loss", 2, true},
		{"activations(samples=256,seq_len=128)+lm_loss(block=2)+block_influence", "block_influence", 1, true},
		{"lm_loss(block=1)+accuracy(task=winogrande,block=3)", "accuracy", 3, true},
		{"lm_loss(block=1)", "accuracy", 0, false},
		{"lm_loss(block=x)", "lm_loss", 0, false},
		{"lm_loss(block=0)", "lm_loss", 0, false},
		{"lm_loss(block=2", "lm_loss", 0, false},
		{"", "lm_loss", 0, false},
		// A metric whose name is a prefix of another's is not confused with it.
		{"lm_loss_v2(block=4)", "lm_loss", 0, false},
	}
	for _, tc := range tests {
		n, ok := BlockSize(tc.method, tc.metric)
		if n != tc.want || ok != tc.ok {
			t.Errorf("BlockSize(%q, %q) = %d, %v, want %d, %v", tc.method, tc.metric, n, ok, tc.want, tc.ok)
		}
	}
}

// depthRecipe scores the tiny model's blocks of layers with the fake
// backend, whose LM loss rises by 0.1·(l+1) for every removed layer l, and
// prunes by that table.
func depthRecipe(block int, selection string, remove int) string {
	return passtest.Inputs + fmt.Sprintf(`
pass "score" {
  model       = model.base
  dataset     = dataset.corpus
  into        = "imp"
  samples     = 4
  seq_len     = 16
  activations = false
  layers      = ["lm_loss"]
  block       = %d
}

pass "prune-depth" {
  model     = model.base
  scores    = scores.imp
  into      = "short"
  remove    = %d
  metric    = "lm_loss"
  selection = %q
}
`, block, remove, selection)
}

func TestRunBlockSelection(t *testing.T) {
	reg := passtest.Registry(t, score.Pass{}, Pass{})
	tests := []struct {
		name          string
		block, remove int
		selection     string
		want          []int
		err           string
	}{
		// The fake scores removing l..l+1 as 0.1(l+1)+0.1(l+2), truncated
		// at layer 3: [0.3 0.5 0.7 0.4]. The block at 0 is cheapest.
		{"block of 2", 2, 2, "block", []int{0, 1}, ""},
		{"block of 3", 3, 3, "block", []int{0, 1, 2}, ""},
		{"block sweep of 1 for remove 2", 1, 2, "block", nil, "block = 2"},
		{"block sweep of 3 for remove 2", 3, 2, "block", nil, "block = 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := passtest.NewEnv(t)
			man, err := env.Run(t, reg, depthRecipe(tc.block, tc.selection, tc.remove), passtest.NewFake(), pipeline.Events{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := passtest.Pass(t, man, "prune-depth").Metrics["dropped_layers"]
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("dropped %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzBlockSize feeds arbitrary methods (scores.json is a file a user may
// edit): BlockSize never panics and reports a positive size when it
// reports one.
func FuzzBlockSize(f *testing.F) {
	f.Add("activations(samples=256,seq_len=128)+lm_loss(block=2)+block_influence", "lm_loss")
	f.Add("accuracy(task=copa,block=3)", "accuracy")
	f.Add("lm_loss(block=", "lm_loss")
	f.Fuzz(func(t *testing.T, method, metric string) {
		if n, ok := BlockSize(method, metric); ok && n < 1 {
			t.Errorf("BlockSize(%q, %q) = %d, true", method, metric, n)
		}
	})
}

// TestPlanErrors checks that what a run would reject for reasons known
// before it starts is rejected by the plan, at the pass's position, and
// that the plan rejects nothing a run accepts.
func TestPlanErrors(t *testing.T) {
	reg := passtest.Registry(t, score.Pass{}, Pass{})
	explicit := func(layers string) string {
		return passtest.Inputs + fmt.Sprintf("pass \"prune-depth\" {\n  model  = model.base\n  into   = \"short\"\n  layers = %s\n}\n", layers)
	}
	tests := []struct {
		name, src, want string
	}{
		{"keeps one layer", explicit("[0, 1, 2]"), ""},
		{"removes every layer", explicit("[3, 1, 0, 2]"), "lists all 4 layers"},
		{"metric computed", depthRecipe(2, "block", 2), ""},
		{"block size differs", depthRecipe(1, "block", 2), "measured with blocks of 1"},
		{"metric not computed", strings.Replace(depthRecipe(1, "contiguous", 2), `metric    = "lm_loss"`, `metric = "accuracy"`, 1), `no layer metric "accuracy"`},
		{"metric missing", strings.Replace(depthRecipe(1, "contiguous", 2), `metric    = "lm_loss"`, "", 1), "needs metric"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := passtest.NewEnv(t)
			r := env.MustLoad(t, reg, tc.src)
			_, err := pipeline.MakePlan(r, reg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("plan: %v", err)
				}
				return
			}
			at := pipeline.At(r.Passes[len(r.Passes)-1].DeclRange)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), at) {
				t.Fatalf("plan error %v, want %q at %s", err, tc.want, at)
			}
			// A run makes the same check before any pass runs.
			fake := passtest.NewFake()
			if _, err := env.Run(t, reg, tc.src, fake, pipeline.Events{}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run error %v, want %q", err, tc.want)
			}
			if len(fake.Calls) != 0 {
				t.Errorf("the run called the backend %d times before failing its check", len(fake.Calls))
			}
		})
	}
}
