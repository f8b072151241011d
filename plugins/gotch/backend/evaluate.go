package backend

import (
	"context"
	"fmt"
	"slices"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/batch"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// Evaluate computes LM loss, multiple-choice and last-word scores, and
// repeats LM and multiple-choice scoring for each SkipLayers entry.
//
// As in the CPU backend: a choice option or last-word item longer than the
// model's context keeps its last MaxSeq+1 tokens as lm-evaluation-harness
// does (see batch.NewOption), and options are scored in batches of BatchSize sequences, longest
// first, right-padded.
func (b *Backend) Evaluate(ctx context.Context, req api.EvalRequest) (*api.EvalResult, error) {
	var res *api.EvalResult
	err := b.do(ctx, func() error {
		var err error
		res, err = b.evaluate(ctx, req)
		if err != nil {
			return fmt.Errorf("gotch: evaluate: %w", err)
		}
		return nil
	})
	return res, err
}

func (b *Backend) evaluate(ctx context.Context, req api.EvalRequest) (*api.EvalResult, error) {
	m, err := b.model(req.Model)
	if err != nil {
		return nil, err
	}
	if req.LM == nil && len(req.Choices) == 0 && len(req.LastWord) == 0 {
		return nil, fmt.Errorf("nothing to evaluate (no lm, choices or last_word)")
	}
	bs, err := batchSize(req.BatchSize)
	if err != nil {
		return nil, err
	}
	cfg := &m.cfg
	var lm *batch.Sequences
	if req.LM != nil {
		if lm, err = batch.Open(*req.LM, cfg.Vocab, cfg.MaxSeq); err != nil {
			return nil, err
		}
		defer lm.Close()
	}
	choices, err := batch.ChoiceOptions(req.Choices, cfg.Vocab, cfg.MaxSeq)
	if err != nil {
		return nil, err
	}
	lastWord, err := batch.LastWordOptions(req.LastWord, cfg.Vocab, cfg.MaxSeq)
	if err != nil {
		return nil, err
	}
	skipSets := make([]map[int]bool, len(req.SkipLayers))
	for i, skip := range req.SkipLayers {
		set := map[int]bool{}
		for _, l := range skip {
			if l < 0 || l >= len(cfg.Layers) {
				return nil, fmt.Errorf("skip_layers[%d]: layer %d outside the model's %d", i, l, len(cfg.Layers))
			}
			set[l] = true
		}
		skipSets[i] = set
	}
	run := func(skip map[int]bool) (*api.LMResult, *api.ChoiceResult, error) {
		var lr *api.LMResult
		var cr *api.ChoiceResult
		if lm != nil {
			p, err := b.lmPass(ctx, m, nil, lm, bs, fwdOpts{skip: skip})
			if err != nil {
				return nil, nil, err
			}
			lr = &api.LMResult{Loss: p.ce, Tokens: p.tokens}
		}
		if len(choices) > 0 {
			sc, err := b.scoreOptions(ctx, m, choices, bs, skip)
			if err != nil {
				return nil, nil, err
			}
			cr = batch.ChoiceResult(req.Choices, choices, sc)
		}
		return lr, cr, nil
	}
	res := &api.EvalResult{}
	if res.LM, res.Choices, err = run(nil); err != nil {
		return nil, err
	}
	if len(lastWord) > 0 {
		sc, err := b.scoreOptions(ctx, m, lastWord, bs, nil)
		if err != nil {
			return nil, err
		}
		res.LastWord = batch.LastWordResult(lastWord, sc)
	}
	for i, skip := range req.SkipLayers {
		sr := api.SkippedResult{Layers: slices.Clone(skip)}
		if sr.LM, sr.Choices, err = run(skipSets[i]); err != nil {
			return nil, fmt.Errorf("skip_layers[%d] %v: %w", i, skip, err)
		}
		res.Skipped = append(res.Skipped, sr)
	}
	return res, nil
}

// lmStats are a pass over a token dataset.
type lmStats struct {
	ce, kl float64 // mean per scored token
	tokens int
}

// lmPass scores next-token cross-entropy (and, with a teacher, the forward
// KL from it at temperature 1 over the full vocabulary) on every target
// of the dataset.
func (b *Backend) lmPass(ctx context.Context, m, teacher *model, d *batch.Sequences, bs int, o fwdOpts) (lmStats, error) {
	var st lmStats
	var ce, kl float64
	for start := 0; start < d.Rows; start += bs {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		n := min(bs, d.Rows-start)
		tokens, ids, err := readBatch(d, start, n)
		if err != nil {
			return st, err
		}
		s := torch.NewScope()
		out, err := b.scoreBatch(s, m, teacher, tokens, ids, n, d.Cols, o, objective{}, false)
		s.Free()
		if err != nil {
			return st, fmt.Errorf("%s rows %d–%d: %w", d.Path, start, start+n-1, err)
		}
		ce += out.ce * float64(out.scored)
		kl += out.kl * float64(out.scored)
		st.tokens += out.scored
	}
	if st.tokens == 0 {
		return st, fmt.Errorf("%s: no position is scored (all masked?)", d.Path)
	}
	st.ce, st.kl = ce/float64(st.tokens), kl/float64(st.tokens)
	return st, nil
}

// scoreBatch runs a forward pass without gradients over n sequences of t
// tokens (and the teacher's, if any) and scores ids.
func (b *Backend) scoreBatch(s *torch.Scope, m, teacher *model, tokens []int64, ids []int32, n, t int, o fwdOpts, obj objective, rows bool) (lossOut, error) {
	x := s.To(s.FromInt64(tokens, int64(n), int64(t)), b.dev)
	if err := s.Err(); err != nil {
		return lossOut{}, err
	}
	h, err := b.forward(s, m, x, n, t, o)
	if err != nil {
		return lossOut{}, err
	}
	in := lossIn{student: m, h: h, ids: ids, obj: obj, rows: rows}
	if teacher != nil {
		if in.th, err = b.forward(s, teacher, x, n, t, fwdOpts{}); err != nil {
			return lossOut{}, fmt.Errorf("teacher: %w", err)
		}
		in.teacher = teacher
	}
	return b.loss(s, in)
}

// scoreOptions scores choice or last-word options (see
// batch.ScoreOptions), with the layers in skip bypassed.
func (b *Backend) scoreOptions(ctx context.Context, m *model, opts []batch.Option, bs int, skip map[int]bool) ([]batch.Score, error) {
	return batch.ScoreOptions(ctx, opts, bs, func(tokens, targets []int32, rows, cols int) ([]float64, []int64, error) {
		s := torch.NewScope()
		defer s.Free()
		res, err := b.scoreBatch(s, m, nil, int64s(tokens), targets, rows, cols, fwdOpts{skip: skip}, objective{}, true)
		if err != nil {
			return nil, nil, err
		}
		return res.rowNLL, res.rowArgmax, nil
	})
}
