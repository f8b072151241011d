package data

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// sharedData finds shared/data by walking up from the package directory,
// or skips the test.
func sharedData(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		for _, cand := range []string{filepath.Join(dir, "shared", "data"), filepath.Join(dir, "..", "shared", "data")} {
			if st, err := os.Stat(cand); err == nil && st.IsDir() {
				return cand
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("shared/data not found")
		}
		dir = parent
	}
}

var (
	tokOnce sync.Once
	tokVal  *tokenizer.Tokenizer
	tokErr  error
)

// tok512 is stories260K's tokenizer.
func tok512(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	path := filepath.Join(sharedData(t), "models", "stories260K", "tok512.bin")
	tokOnce.Do(func() { tokVal, tokErr = tokenizer.LoadLlama2c(path) })
	if tokErr != nil {
		t.Fatal(tokErr)
	}
	return tokVal
}

func ints(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}
