package cpu

import (
	"context"
	"fmt"
	"slices"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
)

// Evaluate computes LM loss, multiple-choice and last-word scores, and
// repeats LM and multiple-choice scoring for each SkipLayers entry.
//
// A choice option or last-word item longer than the model's context keeps
// its last MaxSeq tokens (the continuation must fit). Options are scored
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
	var lm *sequences
	if req.LM != nil {
		if lm, err = openSequences(*req.LM, cfg.Vocab, cfg.MaxSeq); err != nil {
			return nil, fmt.Errorf("cpu: evaluate: %w", err)
		}
		defer lm.close()
	}
	choices, err := choiceOptions(req.Choices, cfg.Vocab, cfg.MaxSeq)
	if err != nil {
		return nil, fmt.Errorf("cpu: evaluate: %w", err)
	}
	lastWord, err := lastWordOptions(req.LastWord, cfg.Vocab, cfg.MaxSeq)
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
			cr = choiceResult(req.Choices, choices, sc)
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
		res.LastWord = lastWordResult(lastWord, sc)
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
func lmPass(ctx context.Context, e, teacher *engine.Engine, d *sequences, bs int) (lmStats, error) {
	var ce, kl float64
	var st lmStats
	var tokens, ids []int32
	var src engine.LogitSource
	if teacher != nil {
		src = teacher
	}
	for start := 0; start < d.rows; start += bs {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		n := min(bs, d.rows-start)
		var err error
		if tokens, ids, err = d.batch(start, n, tokens, ids); err != nil {
			return st, err
		}
		if err := e.Forward(tokens, n, d.cols); err != nil {
			return st, fmt.Errorf("%s rows %d–%d: %w", d.path, start, start+n-1, err)
		}
		if teacher != nil {
			if err := teacher.Forward(tokens, n, d.cols); err != nil {
				return st, fmt.Errorf("%s rows %d–%d: teacher: %w", d.path, start, start+n-1, err)
			}
		}
		r, err := e.Loss(engine.Targets{IDs: ids}, engine.Objective{}, src)
		if err != nil {
			return st, fmt.Errorf("%s rows %d–%d: %w", d.path, start, start+n-1, err)
		}
		ce += r.CE * r.Weight
		kl += r.KL * r.Weight
		st.tokens += r.Rows
	}
	if st.tokens == 0 {
		return st, fmt.Errorf("%s: no position is scored (all masked?)", d.path)
	}
	st.ce, st.kl = ce/float64(st.tokens), kl/float64(st.tokens)
	return st, nil
}

// option is one scored sequence: tokens whose positions from first on
// predict the tokens after them, count of them.
type option struct {
	tokens       []int32
	first, count int
}

// newOption joins a context and a continuation, keeping the last maxSeq
// tokens.
func newOption(ctxTokens, cont []int, vocab, maxSeq int) (option, error) {
	if len(ctxTokens) == 0 {
		return option{}, fmt.Errorf("empty context (it needs at least BOS)")
	}
	if len(cont) == 0 {
		return option{}, fmt.Errorf("empty continuation")
	}
	all := make([]int32, 0, len(ctxTokens)+len(cont))
	for _, part := range [][]int{ctxTokens, cont} {
		for _, id := range part {
			if id < 0 || id >= vocab {
				return option{}, fmt.Errorf("token %d outside vocabulary of %d", id, vocab)
			}
			all = append(all, int32(id))
		}
	}
	first := len(ctxTokens) - 1
	if maxSeq > 0 && len(all) > maxSeq {
		if len(cont) >= maxSeq {
			return option{}, fmt.Errorf("continuation of %d tokens does not fit the model's %d positions after a context token", len(cont), maxSeq)
		}
		cut := len(all) - maxSeq
		all, first = all[cut:], first-cut
	}
	return option{tokens: all, first: first, count: len(cont)}, nil
}

func choiceOptions(items []backend.ChoiceItem, vocab, maxSeq int) ([]option, error) {
	var out []option
	for i, it := range items {
		if len(it.Contexts) == 0 || len(it.Contexts) != len(it.Continuations) {
			return nil, fmt.Errorf("choices[%d]: %d contexts and %d continuations", i, len(it.Contexts), len(it.Continuations))
		}
		if it.Gold < 0 || it.Gold >= len(it.Contexts) {
			return nil, fmt.Errorf("choices[%d]: gold %d outside the %d options", i, it.Gold, len(it.Contexts))
		}
		for j := range it.Contexts {
			o, err := newOption(it.Contexts[j], it.Continuations[j], vocab, maxSeq)
			if err != nil {
				return nil, fmt.Errorf("choices[%d] option %d: %w", i, j, err)
			}
			out = append(out, o)
		}
	}
	return out, nil
}

func lastWordOptions(items []backend.LastWordItem, vocab, maxSeq int) ([]option, error) {
	var out []option
	for i, it := range items {
		o, err := newOption(it.Context, it.Continuation, vocab, maxSeq)
		if err != nil {
			return nil, fmt.Errorf("last_word[%d]: %w", i, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// optionScore is an option's summed continuation NLL and whether greedy
// decoding reproduces the continuation.
type optionScore struct {
	nll    float64
	greedy bool
}

// scoreOptions runs the options in batches, longest first so that a
// batch's sequences have similar lengths, right-padded with targets −1.
func scoreOptions(ctx context.Context, e *engine.Engine, opts []option, bs int, greedy bool) ([]optionScore, error) {
	order := make([]int, len(opts))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(opts[b].tokens) - len(opts[a].tokens) })
	out := make([]optionScore, len(opts))
	var tokens, targets []int32
	var nll []float64
	var arg []int32
	for start := 0; start < len(order); start += bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch := order[start:min(len(order), start+bs)]
		t := len(opts[batch[0]].tokens)
		n := len(batch) * t
		tokens, targets = growInt32(tokens, n), growInt32(targets, n)
		clear(tokens)
		for i := range targets {
			targets[i] = -1
		}
		for bi, oi := range batch {
			o := &opts[oi]
			copy(tokens[bi*t:], o.tokens)
			for k := 0; k < o.count; k++ {
				p := o.first + k
				targets[bi*t+p] = o.tokens[p+1]
			}
		}
		if err := e.Forward(tokens, len(batch), t); err != nil {
			return nil, err
		}
		if cap(nll) < n {
			nll, arg = make([]float64, n), make([]int32, n)
		}
		nll, arg = nll[:n], arg[:n]
		var argOut []int32
		if greedy {
			argOut = arg
		}
		if err := e.RowScores(targets, nll, argOut); err != nil {
			return nil, err
		}
		for bi, oi := range batch {
			o := &opts[oi]
			s := optionScore{greedy: greedy}
			for k := 0; k < o.count; k++ {
				r := bi*t + o.first + k
				s.nll += nll[r]
				if greedy && arg[r] != targets[r] {
					s.greedy = false
				}
			}
			out[oi] = s
		}
	}
	return out, nil
}

// choiceResult picks, per item, the option of lowest summed NLL and of
// lowest NLL per continuation token (the first on ties).
func choiceResult(items []backend.ChoiceItem, opts []option, sc []optionScore) *backend.ChoiceResult {
	res := &backend.ChoiceResult{Items: len(items), Predictions: make([]int, len(items))}
	var correct, correctNorm int
	k := 0
	for i, it := range items {
		best, bestNorm := 0, 0
		for j := range it.Contexts {
			s := sc[k+j]
			if s.nll < sc[k+best].nll {
				best = j
			}
			if s.nll/float64(opts[k+j].count) < sc[k+bestNorm].nll/float64(opts[k+bestNorm].count) {
				bestNorm = j
			}
		}
		res.Predictions[i] = best
		if best == it.Gold {
			correct++
		}
		if bestNorm == it.Gold {
			correctNorm++
		}
		k += len(it.Contexts)
	}
	if len(items) > 0 {
		res.Accuracy = float64(correct) / float64(len(items))
		res.AccuracyNorm = float64(correctNorm) / float64(len(items))
	}
	return res
}

func lastWordResult(opts []option, sc []optionScore) *backend.LastWordResult {
	res := &backend.LastWordResult{Items: len(opts)}
	var correct, tokens int
	var nll float64
	for i, s := range sc {
		if s.greedy {
			correct++
		}
		nll += s.nll
		tokens += opts[i].count
	}
	res.Accuracy = float64(correct) / float64(len(opts))
	res.Loss = nll / float64(tokens)
	return res
}
