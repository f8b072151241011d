package recipe

import (
	"encoding/json"
	"strings"
	"testing"
)

// TuneShared stands for attributes several kinds share by embedding it.
type TuneShared struct {
	Steps   *int        `hcl:"steps,optional"`
	LR      float64     `hcl:"lr,optional"`
	Teacher *Ref        `hcl:"teacher,optional" ref:"model"`
	Round   *roundBlock `hcl:"round,block"`
	Deeper
}

// Deeper is embedded two levels down.
type Deeper struct {
	Depth int `hcl:"depth,optional"`
}

type tuneConfig struct {
	Model Ref `hcl:"model"`
	TuneShared
	Extra string `hcl:"extra,optional"`
}

// tuneFlat declares tuneConfig's fields itself, in the same order.
type tuneFlat struct {
	Model   Ref
	Steps   *int
	LR      float64
	Teacher *Ref
	Round   *roundBlock
	Depth   int
	Extra   string
}

func embedRegistry(t *testing.T) *Registry {
	t.Helper()
	reg := NewRegistry()
	// lr preset by NewConfig stays when the recipe does not set it.
	if err := reg.Register(KindSpec{Kind: "tune", Produces: SlotModel, NewConfig: func() any {
		return &tuneConfig{TuneShared: TuneShared{LR: 0.5}}
	}}); err != nil {
		t.Fatal(err)
	}
	return reg
}

const embedModels = `
model "a" {
  path = "a.bin"
}
dataset "d" {
  path = "d.txt"
}
`

func TestEmbeddedConfig(t *testing.T) {
	src := embedModels + `
pass "tune" {
  model   = model.a
  steps   = 7
  teacher = model.a
  extra   = "x"
  depth   = 2
  into    = "b"
  round {
    multiple = 4
  }
}
pass "tune" {
  model = model.b
  lr    = 0.25
  into  = "c"
}
`
	r, diags := Parse("r.hcl", []byte(src), nil, embedRegistry(t))
	if len(diags) > 0 {
		t.Fatalf("diagnostics:\n%s", diagLines(diags))
	}
	c := r.Passes[0].Config.(*tuneConfig)
	if c.Model != (Ref{"model", "a"}) || c.Steps == nil || *c.Steps != 7 || c.LR != 0.5 || c.Teacher == nil || *c.Teacher != (Ref{"model", "a"}) ||
		c.Round == nil || c.Round.Multiple != 4 || c.Depth != 2 || c.Extra != "x" {
		t.Errorf("first pass decoded as %+v", c)
	}
	c = r.Passes[1].Config.(*tuneConfig)
	if c.Model != (Ref{"model", "b"}) || c.Steps != nil || c.LR != 0.25 || c.Teacher != nil || c.Round != nil || c.Depth != 0 || c.Extra != "" {
		t.Errorf("second pass decoded as %+v", c)
	}

	// The config's JSON (which the run manifest hashes) is that of the
	// same fields declared directly.
	c = r.Passes[0].Config.(*tuneConfig)
	got, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(tuneFlat{c.Model, c.Steps, c.LR, c.Teacher, c.Round, c.Depth, c.Extra})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("JSON %s, want %s", got, want)
	}
}

func TestEmbeddedConfigErrors(t *testing.T) {
	src := embedModels + `
pass "tune" {
  model   = model.a
  stpes   = 3
  lr      = "fast"
  teacher = dataset.d
  into    = "b"
  round {
  }
}
`
	_, diags := Parse("r.hcl", []byte(src), nil, embedRegistry(t))
	// Each problem once, located, with suggestions drawn from the embedded
	// struct's attributes as from the config's own.
	want := `r.hcl:11:3: error: Unsupported argument; An argument named "stpes" is not expected here. Did you mean "steps"?
r.hcl:12:13: error: Invalid value for "lr"; a number is required.
r.hcl:13:13: error: Invalid reference; The value must be a reference to a model, such as model.<name>; got dataset.d.
r.hcl:15:9: error: Missing required argument; The argument "multiple" is required, but no definition was found.
`
	if got := diagLines(diags); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
}

func TestRegisterEmbedded(t *testing.T) {
	type unexported struct {
		X int `hcl:"x,optional"`
	}
	type byPointer struct {
		*TuneShared
	}
	type private struct {
		unexported
	}
	type clash struct {
		TuneShared
		Other int `hcl:"steps,optional"`
	}
	type sameGoName struct {
		TuneShared
		LR string `hcl:"rate,optional"`
	}
	type inBlock struct {
		B *struct {
			Deeper
		} `hcl:"b,block"`
	}
	type untaggedField struct {
		Model  Ref `hcl:"model"`
		Nested struct{ Deeper }
	}
	cfg := func(v any) func() any { return func() any { return v } }
	for _, c := range []struct {
		v    any
		want string
	}{
		{&byPointer{}, "embedded field TuneShared: only an exported struct type"},
		{&private{}, "embedded field unexported"},
		{&clash{}, `same attribute steps`},
		{&sameGoName{}, "same Go name LR"},
		{&inBlock{}, "embedded field Deeper"},
	} {
		err := NewRegistry().Register(KindSpec{Kind: "k", NewConfig: cfg(c.v)})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Register(%T): err = %v, want it to mention %q", c.v, err, c.want)
		}
	}
	// A named field without a tag is no attribute, whatever it embeds.
	if err := NewRegistry().Register(KindSpec{Kind: "k", NewConfig: cfg(&untaggedField{})}); err != nil {
		t.Errorf("Register(untaggedField): %v", err)
	}
}
