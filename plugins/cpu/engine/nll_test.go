package engine

import (
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir/modelio"
)

// TestStoriesNLLBatched scores stories260K on TinyStories under the
// issue's protocol, with the batched engine: split the validation text on
// blank lines, keep the first 200 non-empty paragraphs (stripped), encode
// each with BOS and the llama2.c dummy-space prefix, truncate to 512
// tokens, and average the NLL of every token after the first over all
// paragraphs. An independent implementation's figure is 1.439 nats/token.
//
// Paragraphs of different lengths share a batch padded at the end; the
// padding rows are unscored and, attention being causal, cannot change the
// scored ones.
func TestStoriesNLLBatched(t *testing.T) {
	if testing.Short() {
		t.Skip("scores 200 paragraphs")
	}
	m, err := modelio.Load(sharedData(t, "models/stories260K/stories260K.bin"), modelio.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Tokenizer == nil {
		t.Fatal("stories260K.bin loaded without its tokenizer")
	}
	text, err := os.ReadFile(sharedData(t, "corpora/tinystories_val.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var seqs [][]int32
	for _, p := range strings.Split(string(text), "\n\n") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		ids := m.Tokenizer.Encode(p, true, false)
		if len(ids) > 512 {
			ids = ids[:512]
		}
		s := make([]int32, len(ids))
		for i, id := range ids {
			s[i] = int32(id)
		}
		seqs = append(seqs, s)
		if len(seqs) == 200 {
			break
		}
	}
	if len(seqs) != 200 {
		t.Fatalf("found %d paragraphs, want 200", len(seqs))
	}
	p, err := FromIR(m)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(p, Options{Threads: 2, Inference: true})
	if err != nil {
		t.Fatal(err)
	}
	// Similar lengths batch together to keep padding small.
	slices.SortStableFunc(seqs, func(a, b []int32) int { return len(b) - len(a) })
	const perBatch = 16
	var sum float64
	var scored int
	for i := 0; i < len(seqs); i += perBatch {
		group := seqs[i:min(len(seqs), i+perBatch)]
		b, tt := len(group), len(group[0])
		tokens := make([]int32, b*tt)
		ids := make([]int32, b*tt)
		for s, seq := range group {
			for pos := range tt {
				r := s*tt + pos
				ids[r] = -1
				if pos < len(seq) {
					tokens[r] = seq[pos]
				}
				if pos+1 < len(seq) {
					ids[r] = seq[pos+1]
				}
			}
		}
		if err := e.Forward(tokens, b, tt); err != nil {
			t.Fatal(err)
		}
		res, err := e.Loss(Targets{IDs: ids}, Objective{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sum += res.CE * res.Weight
		scored += res.Rows
	}
	want := 0
	for _, s := range seqs {
		want += len(s) - 1
	}
	if scored != want {
		t.Fatalf("scored %d tokens, the protocol scores %d", scored, want)
	}
	mean := sum / float64(scored)
	t.Logf("mean NLL %.4f nats/token over %d tokens", mean, scored)
	if math.Abs(mean-1.439) > 0.005 {
		t.Errorf("mean NLL %.4f, want 1.439 ± 0.005", mean)
	}
}
