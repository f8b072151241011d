package reference_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"

	"github.com/whittle-ml/whittle/ir/modelio"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

func sharedData(t testing.TB) string {
	t.Helper()
	return shareddata.Dir(t)
}

// TestStoriesNLL checks the forward pass against an independent
// implementation's figure: mean NLL ≈ 1.439 nats/token on the first 200
// TinyStories validation paragraphs (BOS + dummy-space encoding, truncated
// to 512 tokens, every token after the first scored).
func TestStoriesNLL(t *testing.T) {
	if testing.Short() {
		t.Skip("scores 200 paragraphs")
	}
	data := sharedData(t)
	m, err := modelio.Load(filepath.Join(data, "models", "stories260K", "stories260K.bin"), modelio.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rm, err := reference.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(data, "corpora", "tinystories_val.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	var n int
	paragraphs := 0
	for _, p := range strings.Split(string(text), "\n\n") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		ids := m.Tokenizer.Encode(p, true, false)
		if len(ids) > 512 {
			ids = ids[:512]
		}
		s, k, err := rm.NLL(ids)
		if err != nil {
			t.Fatal(err)
		}
		sum += s
		n += k
		if paragraphs++; paragraphs == 200 {
			break
		}
	}
	mean := sum / float64(n)
	t.Logf("mean NLL %.4f nats/token over %d tokens", mean, n)
	if math.Abs(mean-1.439) > 0.005 {
		t.Errorf("mean NLL %.4f, want 1.439 ± 0.005", mean)
	}
}
