package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/ir/tokenizer"
	"github.com/whittle-ml/whittle/passes/search"
)

// TestPlanSearchConfigOnly: `whittle plan` lists a search's candidates on
// the config-only Llama-3.1-8B (with a stand-in vocabulary of its size,
// which the score pass's plan needs), among them NVIDIA's
// Llama-3.1-Minitron-4B-Depth (16 layers: 4,540,469,248 parameters) and
// -Width (hidden 3072, MLP 9216: 4,512,746,496).
func TestPlanSearchConfigOnly(t *testing.T) {
	abs, err := filepath.Abs(llama8B)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tok := &tokenizer.Tokenizer{UNK: 0, BOS: 1, EOS: 2}
	for i := 0; i < 128256; i++ {
		tok.Pieces = append(tok.Pieces, fmt.Sprintf("p%d", i))
		tok.Scores = append(tok.Scores, float32(-i))
		tok.Types = append(tok.Types, tokenizer.Normal)
	}
	tok.Types[0], tok.Types[1], tok.Types[2] = tokenizer.Unknown, tokenizer.Control, tokenizer.Control
	if err := tokenizer.WriteLlama2c(tok, filepath.Join(dir, "tok.bin")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "text.txt"), "one.\n\ntwo.\n")
	recipe := writeFile(t, filepath.Join(dir, "r.hcl"), `model "teacher" {
  path      = "`+filepath.ToSlash(abs)+`"
  tokenizer = "tok.bin"
}
dataset "text" {
  path                = "text.txt"
  validation_fraction = 0.5
}
pass "score" {
  model   = model.teacher
  dataset = dataset.text
  into    = "imp"
  layers  = ["lm_loss"]
}
pass "search" {
  model   = model.teacher
  scores  = scores.imp
  into    = "student"
  dataset = dataset.text
  metric  = "lm_loss"
  constraints {
    params = 4.6e9
  }
  space "hidden" {
    ratios = [1, 0.75]
  }
  space "mlp" {
    sizes = [14336, 9216]
  }
  space "layers" {
    ratios = [1, 0.5]
  }
}
`)
	plan := mustWhittle(t, "plan", recipe)
	for _, want := range []string{"model (config only)", "8 candidates in the space, 2 within 3% below the budget",
		"4096  14336     32   8      16  4,540,469,248", "3072   9216     32   8      32  4,512,746,496"} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan lacks %q:\n%s", want, plan)
		}
	}
}

// TestReportSearch: report prints a search's scored candidates and its
// winner, and --plot draws score against parameters.
func TestReportSearch(t *testing.T) {
	run := t.TempDir()
	man := pipeline.Manifest{Passes: []pipeline.PassRecord{{Index: 0, Name: "find", Kind: search.Kind, Status: pipeline.StatusDone}}}
	b, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(run, pipeline.ManifestName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	res := search.Results{Objective: "lm_loss", LowerIsBetter: true, SpaceSize: 12}
	for i, loss := range []float64{4.25, 4.125} {
		row := search.Row{Rank: i + 1, Scored: true, Winner: i == 1, Score: &search.Score{Value: loss}}
		row.Hidden, row.MLP, row.Heads, row.KVHeads, row.Layers, row.Params = 48+8*i, 128, 8, 4, 5-i, int64(160000-1000*i)
		res.Rows = append(res.Rows, row)
	}
	res.Rows = append(res.Rows, search.Row{Rank: 3})
	b, err = json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	dir := pipeline.PassDir(run, 0, "find")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, search.ResultsFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(t.TempDir(), "search.png")
	out := mustWhittle(t, "report", run, "--plot", png)
	for _, want := range []string{"search find: 12 candidates in the space, 3 meet the budget, 2 scored by lm_loss",
		"winner: hidden=56 mlp=128 heads=8/4 layers=4, 159,000 parameters, lm_loss = 4.1250", "plot        " + png} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if st, err := os.Stat(png); err != nil || st.Size() == 0 {
		t.Errorf("plot not written: %v", err)
	}
}

// TestSearchExamplePlans: the shipped search example validates and lists
// its candidates at the ≈160K-parameter budget.
func TestSearchExamplePlans(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "search", "stories260k.hcl")
	varData := "data=" + sharedData(t)
	mustWhittle(t, "validate", path, "-var", varData)
	plan := mustWhittle(t, "plan", path, "-var", varData)
	if !strings.Contains(plan, "within 3% below the budget (params ≤ 160,000); the first 6 (*) are scored") {
		t.Errorf("plan:\n%s", plan)
	}
}
