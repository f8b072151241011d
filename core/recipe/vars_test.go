package recipe

import (
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

func TestVarOverrides(t *testing.T) {
	reg := testRegistry(t)
	cases := []struct {
		name, raw string
		want      cty.Value
	}{
		{"s", "hello world", cty.StringVal("hello world")},
		{"s", `"quoted"`, cty.StringVal(`"quoted"`)}, // strings are taken as written
		{"n", "42", cty.NumberIntVal(42)},
		{"n", " 2.5e-1 ", cty.NumberFloatVal(0.25)},
		{"b", "true", cty.True},
		{"ls", `["a", "b"]`, cty.ListVal([]cty.Value{cty.StringVal("a"), cty.StringVal("b")})},
		{"ls", `[1]`, cty.ListVal([]cty.Value{cty.StringVal("1")})}, // converted to the element type
		{"mn", `{ a = 1, b = 2 }`, cty.MapVal(map[string]cty.Value{"a": cty.NumberIntVal(1), "b": cty.NumberIntVal(2)})},
		{"obj", `{ name = "m", steps = 3 }`, cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal("m"), "steps": cty.NumberIntVal(3)})},
		{"untyped_num", "7", cty.NumberIntVal(7)},
		{"untyped_none", "text", cty.StringVal("text")},
		{"untyped_list", `["p", "q"]`, cty.TupleVal([]cty.Value{cty.StringVal("p"), cty.StringVal("q")})},
		{"anything", "12", cty.StringVal("12")},
	}
	for _, c := range cases {
		t.Run(c.name+"="+c.raw, func(t *testing.T) {
			vars := map[string]string{"untyped_none": "set"}
			vars[c.name] = c.raw
			r, diags := Load("testdata/vars.hcl", vars, reg)
			if len(diags) > 0 {
				t.Fatalf("diagnostics:\n%s", diagLines(diags))
			}
			if got := r.Variables[c.name]; !got.RawEquals(c.want) {
				t.Errorf("var.%s = %#v, want %#v", c.name, got, c.want)
			}
		})
	}

	// Defaults stand when nothing overrides them, converted to the type.
	r, diags := Load("testdata/vars.hcl", map[string]string{"untyped_none": "v"}, reg)
	if len(diags) > 0 {
		t.Fatalf("diagnostics:\n%s", diagLines(diags))
	}
	for name, want := range map[string]cty.Value{
		"s": cty.StringVal("default"), "n": cty.NumberIntVal(1), "b": cty.False,
		"ls": cty.ListValEmpty(cty.String), "mn": cty.MapValEmpty(cty.Number),
		"obj":         cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal("x"), "steps": cty.NumberIntVal(0)}),
		"untyped_num": cty.NumberIntVal(5), "untyped_none": cty.StringVal("v"),
		"untyped_list": cty.TupleVal([]cty.Value{cty.StringVal("a")}), "anything": cty.StringVal("z"),
	} {
		if got := r.Variables[name]; !got.RawEquals(want) {
			t.Errorf("default var.%s = %#v, want %#v", name, got, want)
		}
	}
}

// TestVarOverrideErrors: a value that does not parse as the variable's
// type says which type and shows an example, and the example it shows is
// itself accepted.
func TestVarOverrideErrors(t *testing.T) {
	reg := testRegistry(t)
	cases := []struct {
		name, raw, want string
	}{
		{"ls", "x", "expected a list(string) value in HCL syntax"},
		{"ls", `[a, b]`, "strings inside lists and maps need quotes"},
		{"ls", `["a"`, "expected a list(string) value in HCL syntax, which this is not"},
		{"mn", `{ a = "x" }`, "variable has type map(number)"},
		{"obj", `{ name = "m" }`, "variable has type object"},
		{"n", "ten", "variable has type number"},
		{"untyped_list", "[p]", "expected a value in HCL syntax"},
	}
	for _, c := range cases {
		t.Run(c.name+"="+c.raw, func(t *testing.T) {
			_, diags := Load("testdata/vars.hcl", map[string]string{"untyped_none": "v", c.name: c.raw}, reg)
			if !diags.HasErrors() {
				t.Fatalf("-var %s=%s accepted", c.name, c.raw)
			}
			msg := diagLines(diags)
			if !strings.Contains(msg, c.want) {
				t.Errorf("diagnostics %q do not say %q", msg, c.want)
			}
			_, example, ok := strings.Cut(msg, "for example -var ")
			if !ok {
				t.Fatalf("diagnostics %q show no example", msg)
			}
			example = strings.TrimSuffix(strings.TrimSpace(example), ".")
			example = strings.Trim(example, "'")
			name, value, _ := strings.Cut(example, "=")
			if name != c.name {
				t.Fatalf("example %q sets another variable", example)
			}
			if _, diags := Load("testdata/vars.hcl", map[string]string{"untyped_none": "v", name: value}, reg); diags.HasErrors() {
				t.Errorf("the example -var %s=%s is rejected:\n%s", name, value, diagLines(diags))
			}
		})
	}
}
