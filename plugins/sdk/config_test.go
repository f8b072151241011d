package sdk

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

type fullConfig struct {
	Model    Ref               `hcl:"model" doc:"input"`
	Teacher  *Ref              `hcl:"teacher,optional" ref:"model"`
	Tasks    []Ref             `hcl:"tasks,optional"`
	Anything []Ref             `hcl:"inputs,optional"`
	Steps    int               `hcl:"steps"`
	LR       *float64          `hcl:"lr,optional"`
	Tags     []string          `hcl:"tags,optional"`
	Weights  map[string]int    `hcl:"weights,optional"`
	Nested   []map[string]bool `hcl:"nested,optional"`
	Ignored  string
}

func TestSchemaOf(t *testing.T) {
	attrs, err := schemaOf(reflect.TypeOf(fullConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		name     string
		ty       cty.Type
		required bool
		refs     []string
		list     bool
	}
	var got []row
	for _, a := range attrs {
		got = append(got, row{a.name, a.ty, a.required, a.refKinds, a.refList})
	}
	want := []row{
		{"model", refType, true, []string{"model"}, false},
		{"teacher", refType, false, []string{"model"}, false},
		{"tasks", cty.List(refType), false, []string{"task"}, true},
		{"inputs", cty.List(refType), false, namespaces, true},
		{"steps", cty.Number, true, nil, false},
		{"lr", cty.Number, false, nil, false},
		{"tags", cty.List(cty.String), false, nil, false},
		{"weights", cty.Map(cty.Number), false, nil, false},
		{"nested", cty.List(cty.Map(cty.Bool)), false, nil, false},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d attributes: %+v", len(got), got)
	}
	for i := range want {
		if got[i].name != want[i].name || !got[i].ty.Equals(want[i].ty) || got[i].required != want[i].required ||
			!reflect.DeepEqual(got[i].refs, want[i].refs) || got[i].list != want[i].list {
			t.Errorf("attribute %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if attrs[0].doc != "input" {
		t.Errorf("doc = %q", attrs[0].doc)
	}
}

func TestSchemaOfRejects(t *testing.T) {
	type block struct {
		B struct{} `hcl:"b,block"`
	}
	type remain struct {
		R hcl.Body `hcl:",remain"`
	}
	type reserved struct {
		N string `hcl:"into"`
	}
	type forEach struct {
		Each map[string]string `hcl:"for_each,optional"`
	}
	type backendAttr struct {
		B string `hcl:"backend,optional"`
	}
	type unexported struct {
		x int `hcl:"x"`
	}
	type badRef struct {
		M Ref `hcl:"m" ref:"modle"`
	}
	type badType struct {
		C chan int `hcl:"c"`
	}
	type dup struct {
		A int `hcl:"a"`
		B int `hcl:"a,optional"`
	}
	_ = unexported{x: 0}.x
	for _, c := range []struct {
		v    any
		want string
	}{
		{block{}, "attributes only"},
		{remain{}, "attributes only"},
		{reserved{}, `field N: attribute "into" is reserved`},
		{forEach{}, `field Each: attribute "for_each" is reserved`},
		{backendAttr{}, `field B: attribute "backend" is reserved`},
		{unexported{}, "must be exported"},
		{badRef{}, `unknown namespace "modle"`},
		{badType{}, "field C"},
		{dup{}, "declared twice"},
		{0, "not a struct"},
	} {
		_, err := schemaOf(reflect.TypeOf(c.v))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%T: err = %v, want it to mention %q", c.v, err, c.want)
		}
	}
}

func TestDecodeConfig(t *testing.T) {
	attrs, err := schemaOf(reflect.TypeOf(fullConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	// The host's encoding: cty JSON values, references as objects.
	data := `{"@implementation":"x","model":{"kind":"model","name":"a"},"teacher":{"kind":"model","name":"t"},
		"tasks":[{"kind":"task","name":"w"}],"steps":12,"lr":0.5,"tags":["p","q"],"weights":{"k":2}}`
	var got fullConfig
	if err := decodeConfig(attrs, []byte(data), &got); err != nil {
		t.Fatal(err)
	}
	lr := 0.5
	want := fullConfig{Model: Ref{Kind: "model", Name: "a"}, Teacher: &Ref{Kind: "model", Name: "t"}, Tasks: []Ref{{Kind: "task", Name: "w"}},
		Steps: 12, LR: &lr, Tags: []string{"p", "q"}, Weights: map[string]int{"k": 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v\nwant    %+v", got, want)
	}
	for _, bad := range []string{
		`{"steps":1}`, // model missing
		`{"model":{"kind":"model","name":"a"},"steps":1.5}`, // not a whole number
		`{"model":{"kind":"model","name":"a"},"steps":"x"}`,
		`[1]`,
	} {
		var c fullConfig
		if err := decodeConfig(attrs, []byte(bad), &c); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// FuzzDecodeConfig checks that no host message can make decoding panic.
func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte(`{"model":{"kind":"model","name":"a"},"steps":3,"tags":["x"]}`))
	f.Add([]byte(`{"model":null,"steps":1e400}`))
	attrs, err := schemaOf(reflect.TypeOf(fullConfig{}))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c fullConfig
		_ = decodeConfig(attrs, b, &c)
	})
}
