// Package shareddata locates the project's shared test assets
// (../shared/data from the repository root: the stories260K model, corpora,
// tasks) for tests, which skip when the assets are absent.
package shareddata

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir returns the shared data directory, found by walking up from the
// test's working directory, or skips the test.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "shared", "data")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Skip("shared/data not found above the package directory")
		}
		dir = up
	}
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
