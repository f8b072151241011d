package recipe

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

func dynamicRegistry(t *testing.T) *Registry {
	t.Helper()
	reg := testRegistry(t)
	err := reg.Register(KindSpec{Kind: "plug", Produces: SlotScores, Schema: &Schema{
		Implementation: "plug 1.0 sha256:ab",
		Attributes: []AttrSpec{
			{Name: "model", Ref: []string{"model"}, Required: true},
			{Name: "extra", Ref: []string{"model"}, RefList: true},
			{Name: "samples", Type: cty.Number},
			{Name: "label", Type: cty.String, Required: true},
			{Name: "weights", Type: cty.List(cty.Number)},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestDynamicDecode(t *testing.T) {
	src := `
model "a" { path = "a.bin" }
model "b" { path = "b.bin" }
pass "plug" {
  into    = "s"
  model   = model.a
  extra   = [model.b, model.a]
  samples = "8"
  label   = "x"
}
`
	r, diags := Parse("r.hcl", []byte(src), nil, dynamicRegistry(t))
	if diags.HasErrors() {
		t.Fatalf("diagnostics:\n%s", diagLines(diags))
	}
	cfg, ok := r.Passes[0].Config.(*DynamicConfig)
	if !ok {
		t.Fatalf("Config is %T, want *DynamicConfig", r.Passes[0].Config)
	}
	// Attribute order (extra, model), then position within the list.
	want := []Ref{{"model", "b"}, {"model", "a"}, {"model", "a"}}
	if len(cfg.Refs) != len(want) {
		t.Fatalf("Refs = %v, want %v", cfg.Refs, want)
	}
	for i := range want {
		if cfg.Refs[i] != want[i] {
			t.Errorf("Refs[%d] = %v, want %v", i, cfg.Refs[i], want[i])
		}
	}
	if _, set := cfg.Values["weights"]; set {
		t.Error("unset optional attribute present in Values")
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// "8" was converted to the declared number type.
	wantJSON := `{"@implementation":"plug 1.0 sha256:ab","extra":[{"kind":"model","name":"b"},{"kind":"model","name":"a"}],"label":"x","model":{"kind":"model","name":"a"},"samples":8}`
	if string(b) != wantJSON {
		t.Errorf("JSON = %s\nwant   %s", b, wantJSON)
	}
	// The pipeline finds references by walking the config.
	if got := collectRefs(cfg); len(got) != 3 {
		t.Errorf("collectRefs found %v", got)
	}
}

func TestDynamicDiagnostics(t *testing.T) {
	src := `model "a" { path = "a.bin" }
pass "plug" {
  into    = "s"
  model   = model.nope
  samples = "many"
  labl    = "x"
  weights = [1, "two"]
}
pass "plug" {
  into  = "t"
  model = scores.s
  label = null
  extra = model.a
}
`
	_, diags := Parse("r.hcl", []byte(src), nil, dynamicRegistry(t))
	got := diagLines(diags)
	for _, want := range []string{
		`r.hcl:2:13: error: Missing required argument; The argument "label" is required`,
		`r.hcl:4:13: error: Reference to undefined model; No model block or earlier pass produces model.nope.`,
		`r.hcl:5:13: error: Invalid value for "samples"; a number is required.`,
		`r.hcl:6:3: error: Unsupported argument; An argument named "labl" is not expected here. Did you mean "label"?`,
		`r.hcl:7:13: error: Invalid value for "weights"; a number is required.`,
		`r.hcl:11:11: error: Invalid reference; The value must be a reference to a model, such as model.<name>; got scores.s.`,
		`r.hcl:12:11: error: Invalid value for "label"; The attribute is required; the value must not be null.`,
		`r.hcl:13:11: error: Invalid reference; The value must be a list of references`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing diagnostic %q in:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 8 {
		t.Errorf("%d diagnostics, want 8:\n%s", n, got)
	}
}

func TestDynamicRegister(t *testing.T) {
	for _, c := range []struct {
		attrs []AttrSpec
		want  string
	}{
		{[]AttrSpec{{Name: "1x", Type: cty.Number}}, "not a valid identifier"},
		{[]AttrSpec{{Name: "into", Type: cty.String}}, "reserved"},
		{[]AttrSpec{{Name: "for_each", Type: cty.String}}, `"for_each" is reserved`},
		{[]AttrSpec{{Name: "a", Type: cty.String}, {Name: "a", Type: cty.Number}}, "declared twice"},
		{[]AttrSpec{{Name: "m", Ref: []string{"modle"}}}, `unknown namespace "modle"`},
		{[]AttrSpec{{Name: "a"}}, "has no type"},
	} {
		err := NewRegistry().Register(KindSpec{Kind: "k", Schema: &Schema{Attributes: c.attrs}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Register(%v) = %v, want it to mention %q", c.attrs, err, c.want)
		}
	}
	err := NewRegistry().Register(KindSpec{Kind: "k", Schema: &Schema{}, NewConfig: func() any { return &struct{}{} }})
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("Register with NewConfig and Schema = %v", err)
	}
}
