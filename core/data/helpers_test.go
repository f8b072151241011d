package data

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"

	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// sharedData finds shared/data by walking up from the package directory,
// or skips the test.
func sharedData(t testing.TB) string {
	t.Helper()
	return shareddata.Dir(t)
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
