package recipe

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse and Format: they must never
// panic, and every diagnostic must point into the parsed file.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.hcl")
	more, _ := filepath.Glob("testdata/*/*.hcl")
	for _, p := range append(files, more...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"", "{", "pass \"prune\" {", "locals { a = local.a }", "model \"x\" { path = [for i in range(3): i] }",
		"pass \"prune\" { round { round { } } }", "variable \"steps\" { type = list(", "output \"o\" { model = model }",
		"pass \"eval\" { model = model.x.y[0] tasks = [task] }", "x = \"${\"", "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	reg := testRegistry(f)
	f.Fuzz(func(t *testing.T, src []byte) {
		r, diags := Parse("fuzz.hcl", src, map[string]string{"steps": "3"}, reg)
		if r == nil {
			t.Fatal("nil recipe")
		}
		for _, d := range diags {
			if d.Subject != nil && d.Subject.Filename != "fuzz.hcl" {
				t.Fatalf("diagnostic in %q: %s", d.Subject.Filename, FormatDiagnostic(d))
			}
		}
		if err := WriteDiagnostics(io.Discard, diags, r.Files); err != nil {
			t.Fatal(err)
		}
		if !diags.HasErrors() {
			for _, p := range r.Passes {
				if p.Config == nil {
					t.Fatalf("pass %s decoded without errors but has no config", p.Name)
				}
			}
		}
		Format(src)
	})
}

// FuzzVarOverride feeds arbitrary -var values for variables of every kind
// of type: Load never panics, and an accepted value has the declared type.
func FuzzVarOverride(f *testing.F) {
	for _, s := range []string{"x", `["a", "b"]`, "[a", "{ a = 1 }", "1e400", "true", `"q"`, "${x}", "[for x in y: x]", "\xff"} {
		f.Add("ls", s)
		f.Add("obj", s)
	}
	reg := testRegistry(f)
	want := map[string]string{"s": "string", "n": "number", "b": "bool", "ls": "list of string", "mn": "map of number"}
	f.Fuzz(func(t *testing.T, name, raw string) {
		if _, ok := want[name]; !ok && name != "obj" {
			name = "ls"
		}
		r, diags := Load("testdata/vars.hcl", map[string]string{"untyped_none": "v", name: raw}, reg)
		if diags.HasErrors() {
			return
		}
		got := r.Variables[name].Type().FriendlyName()
		if w, ok := want[name]; ok && got != w {
			t.Fatalf("-var %s=%q gave a %s, want a %s", name, raw, got, w)
		}
	})
}
