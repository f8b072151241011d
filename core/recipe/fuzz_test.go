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
