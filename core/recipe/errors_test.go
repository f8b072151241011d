package recipe

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorGolden loads each testdata/errors/<name>.hcl and compares every
// diagnostic, one FormatDiagnostic line each, with <name>.golden (rewrite
// with -update, then review the diff: the positions are the point).
func TestErrorGolden(t *testing.T) {
	cases := []struct {
		name string
		vars map[string]string
	}{
		{name: "syntax"},
		{name: "unknown_block"},
		{name: "duplicates"},
		{name: "variables"},
		{name: "overrides", vars: map[string]string{"n": "abc", "b": "yes", "l": "[1,", "m": `{a = "x"}`, "s": "free text", "nope": "1", "stpes": "2"}},
		{name: "locals"},
		{name: "unknown_kind"},
		{name: "attributes"},
		{name: "slots"},
		{name: "refs"},
		{name: "into"},
		{name: "blocks"},
		{name: "funcs"},
		{name: "forged"},
		{name: "for_each"},
	}
	reg := testRegistry(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join("testdata", "errors", c.name+".hcl")
			r, diags := Load(path, c.vars, reg)
			if r == nil {
				t.Fatal("Load returned a nil recipe for a readable file")
			}
			if !diags.HasErrors() {
				t.Fatalf("no errors:\n%s", diagLines(diags))
			}
			for _, d := range diags {
				if d.Subject == nil && c.vars == nil {
					t.Errorf("diagnostic without a position: %s", FormatDiagnostic(d))
				}
			}
			got := diagLines(diags)
			golden := strings.TrimSuffix(path, ".hcl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("diagnostics differ from %s:\n got:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}
