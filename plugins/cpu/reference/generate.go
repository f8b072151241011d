package reference

import (
	"context"
	"fmt"

	"github.com/whittle-ml/whittle/ir/tokenizer"
)

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
