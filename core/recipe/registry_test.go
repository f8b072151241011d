package recipe

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestRegister(t *testing.T) {
	type withRemain struct {
		Rest hcl.Body `hcl:",remain"`
	}
	type reserved struct {
		Name string `hcl:"name"`
	}
	type forEach struct {
		Each []string `hcl:"for_each,optional"`
	}
	type badField struct {
		C chan int `hcl:"c"`
	}
	type badTag struct {
		R Ref `hcl:"r" ref:"modle"`
	}
	type nested struct {
		Inner *struct {
			F func() `hcl:"f"`
		} `hcl:"inner,block"`
	}
	cfg := func(v any) func() any { return func() any { return v } }
	for _, c := range []struct {
		spec KindSpec
		want string
	}{
		{KindSpec{Kind: "bad kind", NewConfig: cfg(&scoreConfig{})}, "not a valid identifier"},
		{KindSpec{Kind: "score", NewConfig: cfg(&scoreConfig{})}, "registered twice"},
		{KindSpec{Kind: "k", Produces: "dataset", NewConfig: cfg(&scoreConfig{})}, `unknown slot kind "dataset"`},
		{KindSpec{Kind: "k"}, "NewConfig is nil"},
		{KindSpec{Kind: "k", NewConfig: cfg(scoreConfig{})}, "non-nil pointer to a struct"},
		{KindSpec{Kind: "k", NewConfig: cfg(&withRemain{})}, "remain"},
		{KindSpec{Kind: "k", NewConfig: cfg(&reserved{})}, `attribute "name" is reserved`},
		{KindSpec{Kind: "k", NewConfig: cfg(&forEach{})}, `field Each: attribute "for_each" is reserved`},
		{KindSpec{Kind: "k", NewConfig: cfg(&badField{})}, "field C"},
		{KindSpec{Kind: "k", NewConfig: cfg(&badTag{})}, `unknown namespace "modle"`},
		{KindSpec{Kind: "k", NewConfig: cfg(&nested{})}, "field F"},
	} {
		reg := testRegistry(t)
		err := reg.Register(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Register(%s, %T): err = %v, want it to mention %q", c.spec.Kind, c.spec.NewConfig, err, c.want)
		}
	}
	reg := testRegistry(t)
	if got := strings.Join(reg.Kinds(), ","); got != "eval,prune,score" {
		t.Errorf("Kinds = %s", got)
	}
	if s, ok := reg.Lookup("prune"); !ok || s.Produces != SlotModel {
		t.Errorf("Lookup(prune) = %+v, %v", s, ok)
	}
	if _, ok := reg.Lookup("nope"); ok {
		t.Error("Lookup(nope) found a kind")
	}
}

func TestNilRegistry(t *testing.T) {
	_, diags := Parse("r.hcl", []byte("pass \"prune\" {\n  into = \"x\"\n}\n"), nil, nil)
	want := `r.hcl:1:6: error: Unknown pass kind; No pass kind "prune" is registered; no pass kinds are registered at all.` + "\n"
	if got := diagLines(diags); got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}

// TestNewConfigChanged covers a kind whose NewConfig stops returning the
// type it registered with: Load reports it instead of decoding into it.
func TestNewConfigChanged(t *testing.T) {
	reg := NewRegistry()
	calls := 0
	err := reg.Register(KindSpec{Kind: "eval", NewConfig: func() any {
		calls++
		if calls > 1 {
			return &scoreConfig{}
		}
		return &evalConfig{}
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, diags := Parse("r.hcl", []byte("pass \"eval\" {\n}\n"), nil, reg)
	if len(diags) != 1 || !strings.Contains(diags[0].Detail, "as at registration") {
		t.Errorf("got %s", diagLines(diags))
	}
}
