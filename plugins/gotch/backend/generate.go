package backend

import (
	"context"
	"fmt"
	"math/bits"

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
// The prompt runs once, filling a KV cache; each further token runs alone
// against it.
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
	cfg := &m.cfg
	if err := req.Check(cfg.Vocab, cfg.MaxSeq); err != nil {
		return nil, err
	}
	sampler := reference.NewSampler(req.Temperature, req.TopP, req.Seed)
	res := &api.GenerateResult{Tokens: make([][]int, len(req.Prompts))}
	for i, prompt := range req.Prompts {
		limit, err := req.Limit(len(prompt), cfg.MaxSeq)
		if err != nil {
			return nil, err
		}
		out, err := b.decode(ctx, m, prompt, limit, req.StopToken, sampler)
		if err != nil {
			return nil, fmt.Errorf("prompt %d: %w", i, err)
		}
		res.Tokens[i] = out
	}
	return res, nil
}

// decode continues one prompt by up to limit tokens, stopping before
// stop.
func (b *Backend) decode(ctx context.Context, m *model, prompt []int, limit, stop int, sampler *reference.Sampler) ([]int, error) {
	// One RoPE table for the whole sequence, its length rounded up so
	// that prompts of similar lengths share it.
	total := len(prompt) + limit
	ropeLen := 1 << bits.Len(uint(total-1))
	if m.cfg.MaxSeq > 0 {
		ropeLen = max(min(ropeLen, m.cfg.MaxSeq), total)
	}
	cache := newKVCache(len(m.cfg.Layers), ropeLen)
	defer cache.free()
	feed := make([]int64, len(prompt))
	for j, id := range prompt {
		feed[j] = int64(id)
	}
	out := []int{}
	for len(out) < limit {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		z, err := b.lastLogits(m, feed, cache)
		if err != nil {
			return nil, err
		}
		next := sampler.Sample(z)
		if next == stop {
			break
		}
		out = append(out, next)
		feed = []int64{int64(next)}
	}
	return out, nil
}

// lastLogits runs ids after the cached positions and returns the float32
// logits following the last of them.
func (b *Backend) lastLogits(m *model, ids []int64, cache *kvCache) ([]float32, error) {
	s := torch.NewScope()
	defer s.Free()
	t := len(ids)
	x := s.To(s.FromInt64(ids, 1, int64(t)), b.dev)
	if err := s.Err(); err != nil {
		return nil, err
	}
	h, err := b.forward(s, m, x, 1, t, fwdOpts{cache: cache})
	if err != nil {
		return nil, err
	}
	cdt := b.computeDType(m)
	z := m.logits(s, s.Narrow(h, 0, int64(t-1), 1), m.weight(s, m.classifier(), cdt), cdt)
	v := s.Float32s(z)
	return v, s.Err()
}
