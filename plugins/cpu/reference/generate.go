package reference

import (
	"context"
	"fmt"
	"sort"

	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// Sampler picks the next token the way llama2.c's run.c does (greedy at
// temperature 0, else temperature softmax with optional nucleus cut and
// its xorshift generator), so the same seed gives the same text there and
// here.
type Sampler struct {
	Temperature float64
	TopP        float64
	state       uint64
	probs       []float32
}

// NewSampler seeds a sampler; seed 0 is replaced by 1 (xorshift needs a
// non-zero state).
func NewSampler(temperature, topP float64, seed uint64) *Sampler {
	if seed == 0 {
		seed = 1
	}
	return &Sampler{Temperature: temperature, TopP: topP, state: seed}
}

func (s *Sampler) randomU32() uint32 {
	s.state ^= s.state >> 12
	s.state ^= s.state << 25
	s.state ^= s.state >> 27
	return uint32((s.state * 0x2545F4914F6CDD1D) >> 32)
}

func (s *Sampler) randomF32() float32 { return float32(s.randomU32()>>8) / 16777216.0 }

// Sample returns the next token id for the given logits.
func (s *Sampler) Sample(logits []float32) int {
	if s.Temperature == 0 {
		return argmax(logits)
	}
	if cap(s.probs) < len(logits) {
		s.probs = make([]float32, len(logits))
	}
	p := s.probs[:len(logits)]
	for i, v := range logits {
		p[i] = v / float32(s.Temperature)
	}
	softmax(p)
	coin := s.randomF32()
	if s.TopP <= 0 || s.TopP >= 1 {
		var cdf float32
		for i, v := range p {
			cdf += v
			if coin < cdf {
				return i
			}
		}
		return len(p) - 1
	}
	return sampleTopP(p, float32(s.TopP), coin)
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func sampleTopP(p []float32, topP, coin float32) int {
	cutoff := (1 - topP) / float32(len(p)-1)
	idx := make([]int, 0, len(p))
	for i, v := range p {
		if v >= cutoff {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] > p[idx[b]] })
	var cum float32
	last := len(idx) - 1
	for i, id := range idx {
		cum += p[id]
		if cum > topP {
			last = i
			break
		}
	}
	r := coin * cum
	var cdf float32
	for _, id := range idx[:last+1] {
		cdf += p[id]
		if r < cdf {
			return id
		}
	}
	return idx[last]
}

// Generate runs llama2.c's generation loop: encode the prompt with BOS,
// feed it, then sample until steps positions are consumed or BOS appears,
// passing each printable piece to emit, and a final newline.
func (m *Model) Generate(ctx context.Context, tok *tokenizer.Tokenizer, prompt string, steps int, s *Sampler, emit func(string) error) error {
	if tok.Size() != m.Config.Vocab {
		return fmt.Errorf("tokenizer has %d pieces, model vocabulary is %d", tok.Size(), m.Config.Vocab)
	}
	tokens := tok.Encode(prompt, true, false)
	if len(tokens) == 0 {
		return fmt.Errorf("prompt encodes to no tokens")
	}
	if steps <= 0 || steps > m.Config.MaxSeq {
		steps = m.Config.MaxSeq
	}
	sess := m.NewSession(steps)
	token := tokens[0]
	for pos := 0; pos < steps; pos++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		logits, err := sess.Forward(token)
		if err != nil {
			return err
		}
		var next int
		if pos < len(tokens)-1 {
			next = tokens[pos+1]
		} else {
			next = s.Sample(logits)
		}
		if next == tok.BOS {
			break
		}
		if piece := tok.DecodeToken(token, next); printable(piece) {
			if err := emit(piece); err != nil {
				return err
			}
		}
		token = next
	}
	return emit("\n")
}

// printable drops lone bytes that are neither printable ASCII nor
// whitespace, as run.c's safe_printf does in the C locale.
func printable(piece string) bool {
	if len(piece) != 1 {
		return piece != ""
	}
	b := piece[0]
	return (b >= 0x20 && b <= 0x7e) || b == ' ' || (b >= '\t' && b <= '\r')
}
