package reference_test

import (
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
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

// TestFamiliesMatchDecoder64 runs the KV-cache decoder one token at a
// time on a random model of every family's config and compares each
// position's logits with decoder64's float64 forward pass over the whole
// prefix, to 1e-4 of max(1, |logit|). Twelve positions outrun the
// families' sliding windows (4 and 5), so cached keys fall out of them.
// The mixture-of-experts families are included.
func TestFamiliesMatchDecoder64(t *testing.T) {
	fams := irtest.Families()
	maps.Copy(fams, irtest.MoEFamilies())
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		cfg := fams[name]
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, 22))
			m := irtest.RandomModel(t, cfg, rng)
			rm, err := reference.Load(m)
			if err != nil {
				t.Fatal(err)
			}
			g, err := decoder64.Load(m)
			if err != nil {
				t.Fatal(err)
			}
			tokens := make([]int, 12)
			for i := range tokens {
				tokens[i] = rng.IntN(cfg.Vocab)
			}
			want := g.Forward(tokens, nil, nil)
			s := rm.NewSession(len(tokens))
			var worst float64
			for p, id := range tokens {
				got, err := s.Forward(id)
				if err != nil {
					t.Fatal(err)
				}
				for i, z := range want[p] {
					d := math.Abs(float64(got[i])-z) / math.Max(1, math.Abs(z))
					worst = max(worst, d)
					if !(d <= 1e-4) {
						t.Fatalf("position %d logit %d: %g, decoder64 %g", p, i, got[i], z)
					}
				}
			}
			t.Logf("worst relative difference %.2g", worst)

			// The windows matter here: without them the last
			// position's logits are others.
			if slices.ContainsFunc(cfg.Layers, func(l ir.LayerConfig) bool { return l.Window > 0 }) {
				global := g.Clone()
				for i := range global.Config.Layers {
					global.Config.Layers[i].Window = 0
				}
				last := len(tokens) - 1
				var moved float64
				for i, z := range global.Forward(tokens, nil, nil)[last] {
					moved = max(moved, math.Abs(z-want[last][i]))
				}
				if !(moved > 1e-2) {
					t.Errorf("removing the sliding windows moves the last logits by %.2g only", moved)
				}
			}
		})
	}
}
