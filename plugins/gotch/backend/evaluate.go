package backend

import (
	"context"
	"fmt"
	"slices"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// Evaluate computes LM loss, multiple-choice and last-word scores, and
// repeats LM and multiple-choice scoring for each SkipLayers entry.
//
// As in the CPU backend: a choice option or last-word item longer than the
// model's context keeps its last MaxSeq tokens (the continuation must
// fit), and options are scored in batches of BatchSize sequences, longest
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
	var lm *sequences
	if req.LM != nil {
		if lm, err = openSequences(*req.LM, cfg.Vocab, cfg.MaxSeq); err != nil {
			return nil, err
		}
		defer lm.close()
	}
	choices, err := choiceOptions(req.Choices, cfg.Vocab, cfg.MaxSeq)
	if err != nil {
		return nil, err
	}
	lastWord, err := lastWordOptions(req.LastWord, cfg.Vocab, cfg.MaxSeq)
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
			cr = choiceResult(req.Choices, choices, sc)
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
		res.LastWord = lastWordResult(lastWord, sc)
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
func (b *Backend) lmPass(ctx context.Context, m, teacher *model, d *sequences, bs int, o fwdOpts) (lmStats, error) {
	var st lmStats
	var ce, kl float64
	for start := 0; start < d.rows; start += bs {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		n := min(bs, d.rows-start)
		tokens, ids, err := d.batch(start, n)
		if err != nil {
			return st, err
		}
		s := torch.NewScope()
		out, err := b.scoreBatch(s, m, teacher, tokens, ids, n, d.cols, o, objective{}, false)
		s.Free()
		if err != nil {
			return st, fmt.Errorf("%s rows %d–%d: %w", d.path, start, start+n-1, err)
		}
		ce += out.ce * float64(out.scored)
		kl += out.kl * float64(out.scored)
		st.tokens += out.scored
	}
	if st.tokens == 0 {
		return st, fmt.Errorf("%s: no position is scored (all masked?)", d.path)
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

// option is one scored sequence: tokens whose positions from first on
// predict the count tokens after them.
type option struct {
	tokens       []int64
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
	all := make([]int64, 0, len(ctxTokens)+len(cont))
	for _, part := range [][]int{ctxTokens, cont} {
		for _, id := range part {
			if id < 0 || id >= vocab {
				return option{}, fmt.Errorf("token %d outside vocabulary of %d", id, vocab)
			}
			all = append(all, int64(id))
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

func choiceOptions(items []api.ChoiceItem, vocab, maxSeq int) ([]option, error) {
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

func lastWordOptions(items []api.LastWordItem, vocab, maxSeq int) ([]option, error) {
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
// batch's sequences have similar lengths, right-padded (causal attention
// keeps padding from affecting the positions before it).
func (b *Backend) scoreOptions(ctx context.Context, m *model, opts []option, bs int, skip map[int]bool) ([]optionScore, error) {
	order := make([]int, len(opts))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, c int) int { return len(opts[c].tokens) - len(opts[a].tokens) })
	out := make([]optionScore, len(opts))
	for start := 0; start < len(order); start += bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch := order[start:min(len(order), start+bs)]
		t := len(opts[batch[0]].tokens)
		tokens := make([]int64, len(batch)*t)
		targets := make([]int32, len(batch)*t)
		for i := range targets {
			targets[i] = -1
		}
		for bi, oi := range batch {
			o := &opts[oi]
			copy(tokens[bi*t:], o.tokens)
			for k := 0; k < o.count; k++ {
				p := o.first + k
				targets[bi*t+p] = int32(o.tokens[p+1])
			}
		}
		s := torch.NewScope()
		res, err := b.scoreBatch(s, m, nil, tokens, targets, len(batch), t, fwdOpts{skip: skip}, objective{}, true)
		s.Free()
		if err != nil {
			return nil, err
		}
		for bi, oi := range batch {
			o := &opts[oi]
			sc := optionScore{greedy: true}
			for k := 0; k < o.count; k++ {
				r := bi*t + o.first + k
				sc.nll += res.rowNLL[r]
				if res.rowArgmax[r] != int64(targets[r]) {
					sc.greedy = false
				}
			}
			out[oi] = sc
		}
	}
	return out, nil
}

// choiceResult picks, per item, the option of lowest summed NLL and of
// lowest NLL per continuation token (the first on ties).
func choiceResult(items []api.ChoiceItem, opts []option, sc []optionScore) *api.ChoiceResult {
	res := &api.ChoiceResult{Items: len(items), Predictions: make([]int, len(items))}
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

func lastWordResult(opts []option, sc []optionScore) *api.LastWordResult {
	res := &api.LastWordResult{Items: len(opts)}
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
