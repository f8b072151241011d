package batch

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/whittle-ml/whittle/core/backend"
)

// Option is one scored sequence of a multiple-choice or last-word
// evaluation: the positions First … First+Count−1 of Tokens predict the
// continuation, the Count tokens after them.
type Option struct {
	Tokens       []int32
	First, Count int
}

// NewOption joins context tokens and a continuation, keeping the last maxSeq
// tokens (maxSeq ≤ 0: no limit); the continuation must fit after at least
// one context token.
func NewOption(ctxTokens, cont []int, vocab, maxSeq int) (Option, error) {
	if len(ctxTokens) == 0 {
		return Option{}, errors.New("empty context (it needs at least BOS)")
	}
	if len(cont) == 0 {
		return Option{}, errors.New("empty continuation")
	}
	all := make([]int32, 0, len(ctxTokens)+len(cont))
	for _, part := range [][]int{ctxTokens, cont} {
		for _, id := range part {
			if id < 0 || id >= vocab {
				return Option{}, fmt.Errorf("token %d outside vocabulary of %d", id, vocab)
			}
			all = append(all, int32(id))
		}
	}
	first := len(ctxTokens) - 1
	if maxSeq > 0 && len(all) > maxSeq {
		if len(cont) >= maxSeq {
			return Option{}, fmt.Errorf("continuation of %d tokens does not fit the model's %d positions after a context token", len(cont), maxSeq)
		}
		cut := len(all) - maxSeq
		all, first = all[cut:], first-cut
	}
	return Option{Tokens: all, First: first, Count: len(cont)}, nil
}

// ChoiceOptions checks multiple-choice items and returns their options,
// item after item, in the layout ChoiceResult expects.
func ChoiceOptions(items []backend.ChoiceItem, vocab, maxSeq int) ([]Option, error) {
	var out []Option
	for i, it := range items {
		if len(it.Contexts) == 0 || len(it.Contexts) != len(it.Continuations) {
			return nil, fmt.Errorf("choices[%d]: %d contexts and %d continuations", i, len(it.Contexts), len(it.Continuations))
		}
		if it.Gold < 0 || it.Gold >= len(it.Contexts) {
			return nil, fmt.Errorf("choices[%d]: gold %d outside the %d options", i, it.Gold, len(it.Contexts))
		}
		for j := range it.Contexts {
			o, err := NewOption(it.Contexts[j], it.Continuations[j], vocab, maxSeq)
			if err != nil {
				return nil, fmt.Errorf("choices[%d] option %d: %w", i, j, err)
			}
			out = append(out, o)
		}
	}
	return out, nil
}

// LastWordOptions checks last-word items and returns one option each.
func LastWordOptions(items []backend.LastWordItem, vocab, maxSeq int) ([]Option, error) {
	var out []Option
	for i, it := range items {
		o, err := NewOption(it.Context, it.Continuation, vocab, maxSeq)
		if err != nil {
			return nil, fmt.Errorf("last_word[%d]: %w", i, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// Score is an option's summed continuation NLL and whether greedy
// decoding reproduces its continuation.
type Score struct {
	NLL    float64
	Greedy bool
}

// ScoreOptions scores opts in batches of at most bs, longest first so that
// a batch's sequences have similar lengths. Each batch is rows sequences
// of cols tokens, right-padded with token 0 (causal attention keeps the
// padding from affecting the positions before it); targets holds, per
// position, the token it must predict, or −1 where nothing is scored.
//
// run does the forward pass and returns each position's NLL of its target
// and, to check greedy decoding, its argmax token (nil: Score.Greedy stays
// false), both rows×cols long. It must not keep tokens or targets, which
// are reused.
func ScoreOptions[A int32 | int64](ctx context.Context, opts []Option, bs int, run func(tokens, targets []int32, rows, cols int) (nll []float64, argmax []A, err error)) ([]Score, error) {
	if bs < 1 {
		return nil, fmt.Errorf("batch size %d must be at least 1", bs)
	}
	order := make([]int, len(opts))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(opts[b].Tokens) - len(opts[a].Tokens) })
	out := make([]Score, len(opts))
	var tokens, targets []int32
	for start := 0; start < len(order); start += bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch := order[start:min(len(order), start+bs)]
		t := len(opts[batch[0]].Tokens)
		n := len(batch) * t
		tokens, targets = grow(tokens, n), grow(targets, n)
		clear(tokens)
		for i := range targets {
			targets[i] = -1
		}
		for bi, oi := range batch {
			o := &opts[oi]
			copy(tokens[bi*t:], o.Tokens)
			for k := 0; k < o.Count; k++ {
				p := o.First + k
				targets[bi*t+p] = o.Tokens[p+1]
			}
		}
		nll, argmax, err := run(tokens, targets, len(batch), t)
		if err != nil {
			return nil, err
		}
		if len(nll) != n || (argmax != nil && len(argmax) != n) {
			return nil, fmt.Errorf("scoring %d×%d positions returned %d NLLs and %d argmax tokens", len(batch), t, len(nll), len(argmax))
		}
		for bi, oi := range batch {
			o := &opts[oi]
			s := Score{Greedy: argmax != nil}
			for k := 0; k < o.Count; k++ {
				r := bi*t + o.First + k
				s.NLL += nll[r]
				if argmax != nil && int64(argmax[r]) != int64(targets[r]) {
					s.Greedy = false
				}
			}
			out[oi] = s
		}
	}
	return out, nil
}

// ChoiceResult picks, per item, the option of lowest summed NLL and of
// lowest NLL per continuation token (the first on ties). opts and sc are
// laid out as ChoiceOptions returns them.
func ChoiceResult(items []backend.ChoiceItem, opts []Option, sc []Score) *backend.ChoiceResult {
	res := &backend.ChoiceResult{Items: len(items), Predictions: make([]int, len(items))}
	var correct, correctNorm int
	k := 0
	for i, it := range items {
		best, bestNorm := 0, 0
		for j := range it.Contexts {
			s := sc[k+j]
			if s.NLL < sc[k+best].NLL {
				best = j
			}
			if s.NLL/float64(opts[k+j].Count) < sc[k+bestNorm].NLL/float64(opts[k+bestNorm].Count) {
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

// LastWordResult is the share of options greedy decoding reproduces and
// the mean NLL per continuation token.
func LastWordResult(opts []Option, sc []Score) *backend.LastWordResult {
	res := &backend.LastWordResult{Items: len(opts)}
	if len(opts) == 0 {
		return res
	}
	var correct, tokens int
	var nll float64
	for i, s := range sc {
		if s.Greedy {
			correct++
		}
		nll += s.NLL
		tokens += opts[i].Count
	}
	res.Accuracy = float64(correct) / float64(len(opts))
	res.Loss = nll / float64(tokens)
	return res
}
