package backend

import (
	"context"
	"fmt"
	"math"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// Generate continues each prompt, sampling with llama2.c's sampler as the
// CPU backend does: one sampler, seeded with Seed, serves the prompts in
// order. A continuation ends after MaxTokens tokens (≤ 0: as many as the
// context allows), when the model's positions run out (prompt and
// continuation but the last token fit in MaxSeq), or at StopToken, which
// is not included.
//
// Each token reruns the whole sequence (no KV cache): generation is for
// inspecting models, not serving them.
func (b *Backend) Generate(ctx context.Context, req api.GenerateRequest) (*api.GenerateResult, error) {
	var res *api.GenerateResult
	err := b.do(ctx, func() error {
		var err error
		if res, err = b.generate(ctx, req); err != nil {
			return fmt.Errorf("gotch: generate: %w", err)
		}
		return nil
	})
	return res, err
}

func (b *Backend) generate(ctx context.Context, req api.GenerateRequest) (*api.GenerateResult, error) {
	m, err := b.model(req.Model)
	if err != nil {
		return nil, err
	}
	if !(req.Temperature >= 0) || math.IsInf(req.Temperature, 0) {
		return nil, fmt.Errorf("temperature %g must be finite and non-negative", req.Temperature)
	}
	cfg := &m.cfg
	for i, p := range req.Prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("prompt %d is empty (it needs at least BOS)", i)
		}
		if cfg.MaxSeq > 0 && len(p) > cfg.MaxSeq {
			return nil, fmt.Errorf("prompt %d has %d tokens, the model %d positions", i, len(p), cfg.MaxSeq)
		}
		for j, id := range p {
			if id < 0 || id >= cfg.Vocab {
				return nil, fmt.Errorf("prompt %d token %d is %d, outside vocabulary of %d", i, j, id, cfg.Vocab)
			}
		}
	}
	sampler := reference.NewSampler(req.Temperature, req.TopP, req.Seed)
	res := &api.GenerateResult{Tokens: make([][]int, len(req.Prompts))}
	for i, prompt := range req.Prompts {
		limit := req.MaxTokens
		if cfg.MaxSeq > 0 && (limit <= 0 || limit > cfg.MaxSeq-len(prompt)+1) {
			limit = cfg.MaxSeq - len(prompt) + 1
		}
		if limit <= 0 {
			return nil, fmt.Errorf("max_tokens %d must be positive for a model without a context length", req.MaxTokens)
		}
		seq := make([]int64, len(prompt), len(prompt)+limit)
		for j, id := range prompt {
			seq[j] = int64(id)
		}
		out := []int{}
		for len(out) < limit {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			z, err := b.lastLogits(m, seq)
			if err != nil {
				return nil, fmt.Errorf("prompt %d: %w", i, err)
			}
			next := sampler.Sample(z)
			if next == req.StopToken {
				break
			}
			out = append(out, next)
			seq = append(seq, int64(next))
		}
		res.Tokens[i] = out
	}
	return res, nil
}

// lastLogits returns the float32 logits following the last token of seq.
func (b *Backend) lastLogits(m *model, seq []int64) ([]float32, error) {
	s := torch.NewScope()
	defer s.Free()
	t := len(seq)
	x := s.To(s.FromInt64(seq, 1, int64(t)), b.dev)
	if err := s.Err(); err != nil {
		return nil, err
	}
	h, err := b.forward(s, m, x, 1, t, fwdOpts{})
	if err != nil {
		return nil, err
	}
	cdt := b.computeDType(m)
	z := logits(s, s.Narrow(h, 0, int64(t-1), 1), m.weight(s, m.classifier(), cdt), cdt)
	v := s.Float32s(z)
	return v, s.Err()
}
