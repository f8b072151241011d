package recipe

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

func TestFuncs(t *testing.T) {
	t.Setenv("WHITTLE_TEST_ENV", "from-env")
	if _, set := os.LookupEnv("WHITTLE_TEST_UNSET"); set {
		t.Skip("WHITTLE_TEST_UNSET is set in the environment")
	}
	// Loaded from the package directory: data/prompt.txt exists only
	// relative to the recipe's directory (testdata), so file() and
	// abspath() are shown to resolve there and not in the working directory.
	r := mustLoad(t, "testdata/funcs.hcl", nil)
	dir, _ := filepath.Abs("testdata")
	want := map[string]cty.Value{
		"prompt":   cty.StringVal("Once upon a time\n"),
		"home":     cty.StringVal("from-env"),
		"fallback": cty.StringVal("fallback"),
		"empty":    cty.StringVal(""),
		"data":     cty.StringVal(dir + string(filepath.Separator) + "data"),
		"up":       cty.StringVal(filepath.Join(filepath.Dir(dir), "x", "y")),
		"base":     cty.StringVal("c.txt"),
		"dir":      cty.StringVal(filepath.FromSlash("a/b")),
		"joined":   cty.StringVal(filepath.FromSlash("a/c")),
		"short":    cty.StringVal(filepath.FromSlash("x/y")),
		"std":      cty.StringVal("a,b,c,3"),
		"n":        cty.NumberIntVal(5 + 2 + 1), // "héllo" counts characters, not bytes
		"json":     cty.ObjectVal(map[string]cty.Value{"k": cty.StringVal("v")}),
	}
	cfg := r.Backends[0].Config
	if len(cfg) != len(want) {
		t.Errorf("got %d attributes, want %d", len(cfg), len(want))
	}
	for k, w := range want {
		if got, ok := cfg[k]; !ok || !got.RawEquals(w) {
			t.Errorf("%s = %#v, want %#v", k, got, w)
		}
	}
}

func TestFileFuncErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bin.txt"), []byte{0xff, 0xfe}, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ expr, want string }{
		{`file("bin.txt")`, `bin.txt is not valid UTF-8 text`},
		{`file(".")`, `. is not a regular file`},
		{`file("nope.txt")`, `cannot read nope.txt: no such file or directory`},
	} {
		src := "backend \"b\" {\n  x = " + c.expr + "\n}\n"
		_, diags := Parse(filepath.Join(dir, "r.hcl"), []byte(src), nil, nil)
		if len(diags) != 1 {
			t.Errorf("%s: got %d diagnostics:\n%s", c.expr, len(diags), diagLines(diags))
			continue
		}
		want := `Call to function "file" failed: ` + c.want + "."
		if diags[0].Detail != want || diags[0].Subject.Start.Line != 2 || diags[0].Subject.Start.Column != 7 {
			t.Errorf("%s: got %q at %d:%d, want %q at 2:7", c.expr, diags[0].Detail, diags[0].Subject.Start.Line, diags[0].Subject.Start.Column, want)
		}
	}
}
