package cpu

import (
	"context"
	"fmt"
	"math"

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
	if !(req.Temperature >= 0) || math.IsInf(req.Temperature, 0) {
		return nil, fmt.Errorf("cpu: generate: temperature %g must be finite and non-negative", req.Temperature)
	}
	cfg := &m.params.Config
	for i, p := range req.Prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("cpu: generate: prompt %d is empty (it needs at least BOS)", i)
		}
		if cfg.MaxSeq > 0 && len(p) > cfg.MaxSeq {
			return nil, fmt.Errorf("cpu: generate: prompt %d has %d tokens, the model %d positions", i, len(p), cfg.MaxSeq)
		}
		for j, id := range p {
			if id < 0 || id >= cfg.Vocab {
				return nil, fmt.Errorf("cpu: generate: prompt %d token %d is %d, outside vocabulary of %d", i, j, id, cfg.Vocab)
			}
		}
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
		// The last generated token is never fed, hence the +1.
		limit := req.MaxTokens
		if cfg.MaxSeq > 0 && (limit <= 0 || limit > cfg.MaxSeq-len(prompt)+1) {
			limit = cfg.MaxSeq - len(prompt) + 1
		}
		if limit <= 0 {
			return nil, fmt.Errorf("cpu: generate: max_tokens %d must be positive for a model without a context length", req.MaxTokens)
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
