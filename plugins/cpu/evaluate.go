package cpu

import (
	"context"
	"fmt"
	"slices"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/batch"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
)

// Evaluate computes LM loss, multiple-choice and last-word scores, and
// repeats LM and multiple-choice scoring for each SkipLayers entry.
//
// A choice option or last-word item longer than the model's context keeps
// its last MaxSeq+1 tokens as lm-evaluation-harness does (see
// batch.NewOption; the continuation must be at most MaxSeq tokens).
// Options are scored
// in batches of BatchSize sequences, right-padded to the longest one.
func (b *Backend) Evaluate(ctx context.Context, req backend.EvalRequest) (*backend.EvalResult, error) {
	if err := b.lock(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	m, err := b.model(req.Model)
	if err != nil {
		return nil, err
	}
	if req.LM == nil && len(req.Choices) == 0 && len(req.LastWord) == 0 {
		return nil, fmt.Errorf("cpu: evaluate: nothing to evaluate (no lm, choices or last_word)")
	}
	bs, err := batchSize(req.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("cpu: evaluate: %w", err)
	}
	cfg := &m.params.Config
	var lm *batch.Sequences
	if req.LM != nil {
		if lm, err = batch.Open(*req.LM, cfg.Vocab, cfg.MaxSeq); err != nil {
			return nil, fmt.Errorf("cpu: evaluate: %w", err)
		}
		defer lm.Close()
	}
	choices, err := batch.ChoiceOptions(req.Choices, cfg.Vocab, cfg.MaxSeq)
	if err != nil {
		return nil, fmt.Errorf("cpu: evaluate: %w", err)
	}
	lastWord, err := batch.LastWordOptions(req.LastWord, cfg.Vocab, cfg.MaxSeq)
	if err != nil {
		return nil, fmt.Errorf("cpu: evaluate: %w", err)
	}
	e, err := m.engine(b.threads)
	if err != nil {
		return nil, err
	}
	defer e.SetSkip(nil)

	res := &backend.EvalResult{}
	run := func() (*backend.LMResult, *backend.ChoiceResult, error) {
		var lr *backend.LMResult
		var cr *backend.ChoiceResult
		if lm != nil {
			p, err := lmPass(ctx, e, nil, lm, bs)
			if err != nil {
				return nil, nil, err
			}
			lr = &backend.LMResult{Loss: p.ce, Tokens: p.tokens}
		}
		if len(choices) > 0 {
			sc, err := scoreOptions(ctx, e, choices, bs, false)
			if err != nil {
				return nil, nil, err
			}
			cr = batch.ChoiceResult(req.Choices, choices, sc)
		}
		return lr, cr, nil
	}
	if res.LM, res.Choices, err = run(); err != nil {
		return nil, fmt.Errorf("cpu: evaluate: %w", err)
	}
	if len(lastWord) > 0 {
		sc, err := scoreOptions(ctx, e, lastWord, bs, true)
		if err != nil {
			return nil, fmt.Errorf("cpu: evaluate: %w", err)
		}
		res.LastWord = batch.LastWordResult(lastWord, sc)
	}
	for i, skip := range req.SkipLayers {
		if err := e.SetSkip(skip); err != nil {
			return nil, fmt.Errorf("cpu: evaluate: skip_layers[%d]: %w", i, err)
		}
		sr := backend.SkippedResult{Layers: slices.Clone(skip)}
		if sr.LM, sr.Choices, err = run(); err != nil {
			return nil, fmt.Errorf("cpu: evaluate: skip_layers[%d] %v: %w", i, skip, err)
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
func lmPass(ctx context.Context, e, teacher *engine.Engine, d *batch.Sequences, bs int) (lmStats, error) {
	var ce, kl float64
	var st lmStats
	var tokens, ids []int32
	var src engine.LogitSource
	if teacher != nil {
		src = teacher
	}
	for start := 0; start < d.Rows; start += bs {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		n := min(bs, d.Rows-start)
		var err error
		if tokens, ids, err = d.Batch(start, n, tokens, ids); err != nil {
			return st, err
		}
		if err := e.Forward(tokens, n, d.Cols); err != nil {
			return st, fmt.Errorf("%s rows %d–%d: %w", d.Path, start, start+n-1, err)
		}
		if teacher != nil {
			if err := teacher.Forward(tokens, n, d.Cols); err != nil {
				return st, fmt.Errorf("%s rows %d–%d: teacher: %w", d.Path, start, start+n-1, err)
			}
		}
		r, err := e.Loss(engine.Targets{IDs: ids}, engine.Objective{}, src)
		if err != nil {
			return st, fmt.Errorf("%s rows %d–%d: %w", d.Path, start, start+n-1, err)
		}
		ce += r.CE * r.Weight
		kl += r.KL * r.Weight
		st.tokens += r.Rows
	}
	if st.tokens == 0 {
		return st, fmt.Errorf("%s: no position is scored (all masked?)", d.Path)
	}
	st.ce, st.kl = ce/float64(st.tokens), kl/float64(st.tokens)
	return st, nil
}

// scoreOptions scores choice or last-word options (see batch.ScoreOptions),
// checking greedy decoding when greedy is set.
func scoreOptions(ctx context.Context, e *engine.Engine, opts []batch.Option, bs int, greedy bool) ([]batch.Score, error) {
	var nll []float64
	var arg []int32
	return batch.ScoreOptions(ctx, opts, bs, func(tokens, targets []int32, rows, cols int) ([]float64, []int32, error) {
		if err := e.Forward(tokens, rows, cols); err != nil {
			return nil, nil, err
		}
		n := rows * cols
		if cap(nll) < n {
			nll, arg = make([]float64, n), make([]int32, n)
		}
		nll, arg = nll[:n], arg[:n]
		var argOut []int32
		if greedy {
			argOut = arg
		}
		if err := e.RowScores(targets, nll, argOut); err != nil {
			return nil, nil, err
		}
		return nll, argOut, nil
	})
}
