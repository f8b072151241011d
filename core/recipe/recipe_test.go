package recipe

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

var update = flag.Bool("update", false, "rewrite golden files")

// Fake pass kinds: one producing scores, one producing models (with a
// nested block and a list attribute), one producing nothing.
type scoreConfig struct {
	Model   Ref `hcl:"model"`
	Data    Ref `hcl:"data" ref:"dataset"`
	Samples int `hcl:"samples,optional"`
}

type roundBlock struct {
	Multiple int `hcl:"multiple"`
}

type pruneConfig struct {
	Model      Ref         `hcl:"model"`
	Scores     *Ref        `hcl:"scores,optional"`
	Ratio      float64     `hcl:"ratio"`
	KeepLayers []int       `hcl:"keep_layers,optional"`
	Round      *roundBlock `hcl:"round,block"`
}

type evalConfig struct {
	Model   Ref   `hcl:"model"`
	Teacher *Ref  `hcl:"teacher,optional" ref:"model"`
	Tasks   []Ref `hcl:"tasks,optional"`
}

func testRegistry(t testing.TB) *Registry {
	t.Helper()
	reg := NewRegistry()
	for _, s := range []KindSpec{
		{Kind: "score", Produces: SlotScores, NewConfig: func() any { return &scoreConfig{} }},
		{Kind: "prune", Produces: SlotModel, NewConfig: func() any { return &pruneConfig{} }},
		{Kind: "eval", NewConfig: func() any { return &evalConfig{} }},
	} {
		if err := reg.Register(s); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

func diagLines(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		b.WriteString(FormatDiagnostic(d))
		b.WriteByte('\n')
	}
	return b.String()
}

func mustLoad(t *testing.T, path string, vars map[string]string) *Recipe {
	t.Helper()
	r, diags := Load(path, vars, testRegistry(t))
	if len(diags) > 0 {
		t.Fatalf("Load(%s): unexpected diagnostics:\n%s", path, diagLines(diags))
	}
	return r
}

func TestValidRecipe(t *testing.T) {
	r := mustLoad(t, "testdata/valid.hcl", nil)
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	if r.Path != filepath.Join(dir, "valid.hcl") || r.Dir != dir {
		t.Errorf("Path, Dir = %q, %q", r.Path, r.Dir)
	}
	src, _ := os.ReadFile("testdata/valid.hcl")
	if string(r.Source) != string(src) || r.Files["testdata/valid.hcl"] == nil {
		t.Errorf("Source or Files not kept")
	}

	wantVars := map[string]cty.Value{
		"steps":        cty.NumberIntVal(200),
		"student_name": cty.StringVal("student"),
		"ratios":       cty.ListVal([]cty.Value{cty.NumberFloatVal(0.5), cty.NumberFloatVal(0.75)}),
		"verbose":      cty.False,
	}
	if len(r.Variables) != len(wantVars) {
		t.Errorf("Variables = %#v", r.Variables)
	}
	for k, want := range wantVars {
		if got, ok := r.Variables[k]; !ok || !got.RawEquals(want) {
			t.Errorf("var.%s = %#v, want %#v", k, got, want)
		}
	}

	// Ranges are checked separately; zero them for the struct comparison.
	checkRange(t, "model path", r.Models[0].PathRange, 31, 15)
	checkRange(t, "tokenizer", r.Models[0].TokenizerRange, 32, 15)
	checkRange(t, "model decl", r.Models[0].DeclRange, 30, 1)
	checkRange(t, "dataset path", r.Datasets[0].PathRange, 37, 25)
	checkRange(t, "task path", r.Tasks[0].PathRange, 47, 14)
	checkRange(t, "pass decl", r.Passes[1].DeclRange, 70, 1)
	checkRange(t, "into", r.Passes[1].IntoRange, 76, 13)
	checkRange(t, "output decl", r.Outputs[0].DeclRange, 97, 1)
	for _, m := range r.Models {
		m.DeclRange, m.PathRange, m.TokenizerRange = hcl.Range{}, hcl.Range{}, hcl.Range{}
	}
	for _, d := range r.Datasets {
		d.DeclRange, d.PathRange = hcl.Range{}, hcl.Range{}
	}
	for _, x := range r.Tasks {
		x.DeclRange, x.PathRange = hcl.Range{}, hcl.Range{}
	}
	for _, b := range r.Backends {
		b.DeclRange = hcl.Range{}
	}
	for _, p := range r.Passes {
		if p.Body == nil {
			t.Errorf("pass %s: no Body", p.Name)
		}
		p.DeclRange, p.IntoRange, p.Body = hcl.Range{}, hcl.Range{}, nil
	}
	for _, o := range r.Outputs {
		o.DeclRange = hcl.Range{}
	}

	wantModels := []*Model{{Name: "teacher", Path: filepath.Join(dir, "models/stories260K.bin"), Tokenizer: filepath.Join(dir, "models/tok512.bin"), Format: "llama2c"}}
	wantDatasets := []*Dataset{
		{Name: "corpus", Path: filepath.Join(dir, "data/corpus.txt"), Format: "text", ValidationFraction: 0.05, Seed: 7},
		{Name: "chat", Path: filepath.Join(dir, "data/chat.jsonl"), Format: "jsonl", ValidationFraction: 0.1},
	}
	wantTasks := []*Task{{Name: "hellaswag", Path: "/abs/tasks/hellaswag.jsonl", Limit: 100, FewShot: 5}}
	wantBackends := []*Backend{
		{Name: "cpu", Config: map[string]cty.Value{}},
		{Name: "gpu", Plugin: filepath.Join(dir, "plugins/whittle-gotch"), SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			Config: map[string]cty.Value{
				"device":  cty.StringVal("cuda:0"),
				"threads": cty.NumberIntVal(4),
				"flags":   cty.TupleVal([]cty.Value{cty.StringVal("a"), cty.StringVal("b")}),
				"verbose": cty.False,
			}},
	}
	multiple := &roundBlock{Multiple: 8}
	wantPasses := []*Pass{
		{Kind: "score", Name: "score", Index: 0, Into: "importance",
			Config: &scoreConfig{Model: Ref{"model", "teacher"}, Data: Ref{"dataset", "corpus"}, Samples: 64}},
		{Kind: "prune", Name: "prune-width", Index: 1, Into: "student", Backend: &Ref{"backend", "cpu"},
			Config: &pruneConfig{Model: Ref{"model", "teacher"}, Scores: &Ref{"scores", "importance"}, Ratio: 0.5, Round: multiple}},
		{Kind: "prune", Name: "prune-2", Index: 2, Into: "student",
			Config: &pruneConfig{Model: Ref{"model", "student"}, Ratio: 0.75, KeepLayers: []int{0, 1, 2, 3}}},
		{Kind: "eval", Name: "eval", Index: 3, Backend: &Ref{"backend", "gpu"},
			Config: &evalConfig{Model: Ref{"model", "student"}, Teacher: &Ref{"model", "teacher"}, Tasks: []Ref{{"task", "hellaswag"}}}},
	}
	wantOutputs := []*Output{
		{Name: "student", Model: Ref{"model", "student"}, Format: "hf", Path: "student-hf", DType: "bf16"},
		{Name: "gguf", Model: Ref{"model", "student"}, Format: "gguf", Path: "out/student-200.gguf"},
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"models", r.Models, wantModels}, {"datasets", r.Datasets, wantDatasets}, {"tasks", r.Tasks, wantTasks},
		{"passes", r.Passes, wantPasses}, {"outputs", r.Outputs, wantOutputs},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s:\n got %s\nwant %s", c.name, dump(c.got), dump(c.want))
		}
	}
	// cty values compare with RawEquals, not DeepEqual.
	if len(r.Backends) != len(wantBackends) {
		t.Fatalf("got %d backends", len(r.Backends))
	}
	for i, want := range wantBackends {
		got := r.Backends[i]
		if got.Name != want.Name || got.Plugin != want.Plugin || got.SHA256 != want.SHA256 || len(got.Config) != len(want.Config) {
			t.Errorf("backend %d = %+v, want %+v", i, got, want)
		}
		for k, v := range want.Config {
			if !got.Config[k].RawEquals(v) {
				t.Errorf("backend %s: %s = %#v, want %#v", want.Name, k, got.Config[k], v)
			}
		}
	}

	reg := testRegistry(t)
	for i, want := range []Ref{{"scores", "importance"}, {"model", "student"}, {"model", "student"}, {}} {
		if got := r.Passes[i].Slot(reg); got != want {
			t.Errorf("pass %d Slot = %v, want %v", i, got, want)
		}
	}
}

func checkRange(t *testing.T, what string, r hcl.Range, line, col int) {
	t.Helper()
	if r.Filename != "testdata/valid.hcl" || r.Start.Line != line || r.Start.Column != col {
		t.Errorf("%s range = %s:%d:%d, want testdata/valid.hcl:%d:%d", what, r.Filename, r.Start.Line, r.Start.Column, line, col)
	}
}

func dump(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// TestForEach: a for_each pass block is one pass per key (map keys in
// order, list items in their order), each with its own name, into and
// config, and later blocks see every instance's slot.
func TestForEach(t *testing.T) {
	src := `
locals {
  ratios = { quarter = 0.25, half = 0.5 }
}
model "teacher" {
  path = "t.bin"
}
dataset "d" {
  path = "d.txt"
}
pass "prune" {
  for_each = local.ratios
  model    = model.teacher
  ratio    = each.value
  into     = "p_${each.key}"
}
pass "score" {
  for_each = ["p_quarter", "p_half"]
  name     = "score-${each.key}"
  model    = model[each.value]
  data     = dataset.d
  into     = "s_${each.key}"
}
pass "eval" {
  for_each = {}
  model    = model.teacher
}
pass "eval" {
  model = model.p_half
}
`
	r, diags := Parse("for_each.hcl", []byte(src), nil, testRegistry(t))
	if diags.HasErrors() {
		t.Fatal(diagLines(diags))
	}
	type got struct {
		Name, Into, EachKey string
		Ratio               float64
		Model               string
	}
	var passes []got
	for _, p := range r.Passes {
		g := got{Name: p.Name, Into: p.Into, EachKey: p.EachKey}
		switch c := p.Config.(type) {
		case *pruneConfig:
			g.Ratio, g.Model = c.Ratio, c.Model.Name
		case *scoreConfig:
			g.Model = c.Model.Name
		case *evalConfig:
			g.Model = c.Model.Name
		}
		passes = append(passes, g)
	}
	want := []got{
		{Name: "prune.half", Into: "p_half", EachKey: "half", Ratio: 0.5, Model: "teacher"},
		{Name: "prune.quarter", Into: "p_quarter", EachKey: "quarter", Ratio: 0.25, Model: "teacher"},
		{Name: "score-p_quarter", Into: "s_p_quarter", EachKey: "p_quarter", Model: "p_quarter"},
		{Name: "score-p_half", Into: "s_p_half", EachKey: "p_half", Model: "p_half"},
		{Name: "eval-2", Model: "p_half"},
	}
	if !reflect.DeepEqual(passes, want) {
		t.Errorf("passes\n%+v\nwant\n%+v", passes, want)
	}
	for i, p := range r.Passes {
		if p.Index != i {
			t.Errorf("pass %s has index %d, want %d", p.Name, p.Index, i)
		}
	}
}
