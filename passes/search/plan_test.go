package search_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/tokenizer"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
	"github.com/whittle-ml/whittle/passes/score"
	"github.com/whittle-ml/whittle/passes/search"
)

// llama8B is Llama-3.1-8B's config.json alone (no weights).
var llama8B, _ = filepath.Abs(filepath.Join("..", "..", "cmd", "whittle", "testdata", "llama-3.1-8b", "config.json"))

// writeVocab writes a llama2.c tokenizer.bin of n pieces (the 256 byte
// pieces and filler), so that a config-only model of that vocabulary can
// be planned with a score pass, which needs a tokenizer.
func writeVocab(t *testing.T, path string, n int) {
	t.Helper()
	tok := passtest.Tokenizer()
	for i := len(tok.Pieces); i < n; i++ {
		tok.Pieces = append(tok.Pieces, fmt.Sprintf("w%d", i))
		tok.Scores = append(tok.Scores, float32(-i))
		tok.Types = append(tok.Types, tokenizer.Normal)
	}
	if err := tokenizer.WriteLlama2c(tok, path); err != nil {
		t.Fatal(err)
	}
}

const llamaInputs = `
model "base" {
  path      = "%s"
  tokenizer = "tok.bin"
}
dataset "corpus" {
  path                = "corpus.txt"
  validation_fraction = 0.2
}
pass "score" {
  model   = model.base
  dataset = dataset.corpus
  into    = "imp"
  layers  = ["lm_loss"]
}
`

// minitronParams is the parameter count of a Llama-3.1-8B pruned to the
// sizes, by hand: untied embedding and head, q/o of heads·128 × hidden,
// k/v of kv·128 × hidden, three MLP matrices, two norms per layer and
// the final norm.
func minitronParams(hidden, mlp, heads, kv, layers int64) int64 {
	const vocab, hd = 128256, 128
	perLayer := 2*heads*hd*hidden + 2*kv*hd*hidden + 3*hidden*mlp + 2*hidden
	return 2*vocab*hidden + layers*perLayer + hidden
}

// TestPlanLlama8BMinitron plans a params = 4.6e9 search on the config-only
// Llama-3.1-8B: its candidates include the shapes of NVIDIA's
// Llama-3.1-Minitron-4B-Width and -Depth, with the parameter counts the
// paper reports.
func TestPlanLlama8BMinitron(t *testing.T) {
	env := passtest.NewEnv(t)
	writeVocab(t, filepath.Join(env.Dir, "tok.bin"), 128256)
	reg := passtest.Registry(t, score.Pass{}, search.Pass{})
	src := fmt.Sprintf(llamaInputs, llama8B) + `
pass "search" {
  model   = model.base
  scores  = scores.imp
  into    = "student"
  dataset = dataset.corpus
  metric  = "lm_loss"
  top_k   = 4
  constraints {
    params = 4.6e9
  }
  space "hidden" {
    ratios = [1, 0.875, 0.75, 0.625, 0.5]
  }
  space "mlp" {
    ratios   = [1, 0.875, 0.75, 0.65625, 0.5]
    round_to = 512
  }
  space "layers" {
    ratios    = [1, 0.875, 0.75, 0.625, 0.5]
    max_prune = 0.5
  }
}
`
	r := env.MustLoad(t, reg, src)
	plan, err := pipeline.MakePlan(r, reg)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Stages[0].ConfigOnly {
		t.Fatal("the model should be config-only")
	}
	st := plan.Stages[len(plan.Stages)-1]
	// The two reference shapes, with the paper's counts checked against
	// the hand formula first.
	for _, ref := range []struct {
		name                          string
		hidden, mlp, heads, kv, layer int64
		paper                         int64
	}{
		{"Minitron-4B-Width", 3072, 9216, 32, 8, 32, 4_512_746_496},
		{"Minitron-4B-Depth", 4096, 14336, 32, 8, 16, 4_540_469_248},
	} {
		if got := minitronParams(ref.hidden, ref.mlp, ref.heads, ref.kv, ref.layer); got != ref.paper {
			t.Fatalf("%s: hand count %d, paper %d", ref.name, got, ref.paper)
		}
		row := regexp.MustCompile(fmt.Sprintf(`(?m)^ +\*? +\d+ +%d +%d +%d +%d +%d +%s `, ref.hidden, ref.mlp, ref.heads, ref.kv, ref.layer,
			regexp.QuoteMeta(pipeline.FormatCount(ref.paper))))
		if !row.MatchString(st.Detail) {
			t.Errorf("%s (%d params) is not among the planned candidates:\n%s", ref.name, ref.paper, st.Detail)
		}
	}
	// Every listed candidate is within 3%% below the budget.
	n, marked := 0, 0
	for _, line := range strings.Split(st.Detail, "\n")[2:] {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "*") {
			marked++
		}
		f := strings.Fields(strings.TrimPrefix(line, "*"))
		if len(f) < 7 {
			continue
		}
		n++
		var p int64
		fmt.Sscan(strings.ReplaceAll(f[6], ",", ""), &p)
		if p > 4.6e9 || p < 0.97*4.6e9 {
			t.Errorf("candidate %v has %d params, outside [0.97, 1]·4.6e9", f, p)
		}
	}
	if n < 2 || marked != 4 {
		t.Errorf("%d candidates listed, %d marked; want ≥ 2 and top_k = 4 marked:\n%s", n, marked, st.Detail)
	}
	t.Logf("\n%s", st.Detail)
	// The planned student is the candidate closest to the budget.
	if st.Config == nil || st.Params.Total > 4.6e9 || st.Params.Total < 0.97*4.6e9 {
		t.Errorf("planned student %v with %d params", st.Config, st.Params.Total)
	}
}

// TestMemoryFormula checks MemoryBytes on Llama-3.1-8B at 8k tokens
// against the hand computation: bf16 weights (2 bytes × 8,030,261,248
// parameters, Meta's count) plus K and V of 32 layers × 8 KV heads × 128
// dims × 8192 tokens × 2 sequences, 2 bytes each.
func TestMemoryFormula(t *testing.T) {
	b, err := os.ReadFile(llama8B)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := hf.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	const params = 8_030_261_248
	want := int64(2*params + 2*32*2*8*128*8192*2)
	if got := search.MemoryBytes(&cfg, 8192, 2); got != want {
		t.Errorf("MemoryBytes = %d, want %d", got, want)
	}
	// 16 GB of weights and 2 GiB of cache: "18.2GB" is just over it.
	for _, tc := range []struct {
		in   string
		want int64
	}{{"12GB", 12e9}, {"12 GB", 12e9}, {"16GiB", 16 << 30}, {"1.5e9", 1.5e9}, {"512MiB", 512 << 20}, {"2tb", 2e12}} {
		if got, err := search.ParseBytes(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "GB", "-1GB", "12 parsecs", "NaN"} {
		if _, err := search.ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) succeeded", bad)
		}
	}
}
