// Package shareddata locates the project's shared test assets
// (../shared/data from the repository root: the stories260K model, corpora,
// tasks) for tests, which skip when the assets are absent.
package shareddata

import (
	"os"
	"path/filepath"
	"testing"
)

// Find returns the shared data directory, found by walking up from the
// working directory, or "" when there is none.
func Find() string {
	dir, err := filepath.Abs(".")
	if err != nil {
		return ""
	}
	for {
		p := filepath.Join(dir, "shared", "data")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}

// Dir returns the shared data directory (see Find), or skips the test.
func Dir(t testing.TB) string {
	t.Helper()
	dir := Find()
	if dir == "" {
		t.Skip("shared/data not found above the package directory")
	}
	return dir
}

// Path returns a file or directory under the shared data directory
// (rel is slash-separated), or skips the test when it is missing.
func Path(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(Dir(t), filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		t.Skipf("test asset %s not found: %v", p, err)
	}
	return p
}

// LlamaCpp returns the path of a program of the shared llama.cpp build
// (shared/tools/llamacpp/bin/NAME). It skips the test when shared/ is
// absent and fails it when shared/ is there without the program: a check
// against llama.cpp must not pass silently where it could run.
func LlamaCpp(t testing.TB, name string) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(Dir(t)), "tools", "llamacpp", "bin", name)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("shared/ is present but llama.cpp's %s is not: %v", name, err)
	}
	return bin
}
