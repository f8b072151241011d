package cpu

import (
	"context"
	"fmt"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

// Generate continues each prompt with the reference forward pass and
// llama2.c's sampler. One sampler, seeded with Seed, serves the prompts
// in order, so a single prompt samples exactly as run.c does with that
// seed. A continuation ends after MaxTokens tokens (≤ 0: as many as the
// context allows), when the model's positions run out (prompt and
// continuation but the last token fit in MaxSeq), or at StopToken, which
// is not included.
func (b *Backend) Generate(ctx context.Context, req backend.GenerateRequest) (*backend.GenerateResult, error) {
	if err := b.lock(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	m, err := b.model(req.Model)
	if err != nil {
		return nil, err
	}
	cfg := &m.params.Config
	if err := req.Check(cfg.Vocab, cfg.MaxSeq); err != nil {
		return nil, fmt.Errorf("cpu: generate: %w", err)
	}
	if m.ref == nil {
		im, err := m.params.ToIR(ir.F32)
		if err != nil {
			return nil, fmt.Errorf("cpu: generate: %w", err)
		}
		if m.ref, err = reference.Load(im); err != nil {
			return nil, fmt.Errorf("cpu: generate: %w", err)
		}
	}
	sampler := reference.NewSampler(req.Temperature, req.TopP, req.Seed)
	res := &backend.GenerateResult{Tokens: make([][]int, len(req.Prompts))}
	for i, prompt := range req.Prompts {
		limit, err := req.Limit(len(prompt), cfg.MaxSeq)
		if err != nil {
			return nil, fmt.Errorf("cpu: generate: %w", err)
		}
		sess := m.ref.NewSession(len(prompt) + limit - 1)
		out := []int{}
		var logits []float32
		for _, id := range prompt {
			if logits, err = sess.Forward(id); err != nil {
				return nil, fmt.Errorf("cpu: generate: prompt %d: %w", i, err)
			}
		}
		for len(out) < limit {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			next := sampler.Sample(logits)
			if next == req.StopToken {
				break
			}
			out = append(out, next)
			if len(out) == limit {
				break
			}
			if logits, err = sess.Forward(next); err != nil {
				return nil, fmt.Errorf("cpu: generate: prompt %d: %w", i, err)
			}
		}
		res.Tokens[i] = out
	}
	return res, nil
}
