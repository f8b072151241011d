package recipe

import (
	"reflect"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// TestConfigAttrs: what the one schema derivation makes of each kind of
// field, written out by hand.
func TestConfigAttrs(t *testing.T) {
	type cfg struct {
		Model   Ref            `hcl:"model" doc:"the input"`
		Teacher *Ref           `hcl:"teacher,optional" ref:"model"`
		Tasks   []Ref          `hcl:"tasks,optional"`
		Any     Ref            `hcl:"source,attr"`
		Steps   int            `hcl:"steps,optional"`
		Weights map[string]int `hcl:"weights"`
		Expr    hcl.Expression `hcl:"expr,optional"`
		Inner   *struct{}      `hcl:"inner,block"`
		Skipped string
	}
	got, err := ConfigAttrs(reflect.TypeOf(cfg{}))
	if err != nil {
		t.Fatal(err)
	}
	want := []ConfigAttr{
		{Name: "model", Field: 0, Required: true, Doc: "the input", Type: RefType, IsRef: true, Ref: []string{"model"}},
		{Name: "teacher", Field: 1, Type: RefType, IsRef: true, RefPtr: true, Ref: []string{"model"}},
		{Name: "tasks", Field: 2, Type: cty.List(RefType), IsRef: true, RefList: true, Ref: []string{"task"}},
		{Name: "source", Field: 3, Required: true, Type: RefType, IsRef: true},
		{Name: "steps", Field: 4, Type: cty.Number},
		{Name: "weights", Field: 5, Required: true, Type: cty.Map(cty.Number)},
		{Name: "expr", Field: 6, Type: cty.NilType},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d attributes, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Field != w.Field || g.Required != w.Required || g.Doc != w.Doc ||
			!g.Type.Equals(w.Type) || g.IsRef != w.IsRef || g.RefPtr != w.RefPtr || g.RefList != w.RefList ||
			!reflect.DeepEqual(g.Ref, w.Ref) {
			t.Errorf("attribute %d = %+v\nwant          %+v", i, g, w)
		}
	}
	for _, name := range []string{"name", "into", "backend", "for_each"} {
		if !ReservedPassAttr(name) {
			t.Errorf("%q is not reserved", name)
		}
	}
	if ReservedPassAttr("model") {
		t.Error(`"model" is reserved`)
	}
}
