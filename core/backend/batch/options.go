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
// continuation, the Count tokens after them. The model reads all tokens
// but the last (which is only predicted): at most maxSeq.
type Option struct {
	Tokens       []int32
	First, Count int
}

// NewOption joins context tokens and a continuation. Longer than maxSeq+1
// tokens (maxSeq ≤ 0: no limit), it keeps the last maxSeq+1, as
// lm-evaluation-harness does (lm_eval/models/huggingface.py,
// _loglikelihood_tokens: inp = (context_enc + continuation_enc)
// [-(max_length+1):][:-1]): the model reads maxSeq tokens and every
// continuation token is scored. The continuation must be at most maxSeq
// tokens.
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
	if maxSeq > 0 && len(all) > maxSeq+1 {
		if len(cont) > maxSeq {
			return Option{}, fmt.Errorf("continuation of %d tokens does not fit the model's %d positions", len(cont), maxSeq)
		}
		cut := len(all) - (maxSeq + 1)
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
		if it.ContinuationChars != nil {
			if len(it.ContinuationChars) != len(it.Contexts) {
				return nil, fmt.Errorf("choices[%d]: %d continuation_chars for %d options", i, len(it.ContinuationChars), len(it.Contexts))
			}
			for j, n := range it.ContinuationChars {
				if n < 1 {
					return nil, fmt.Errorf("choices[%d] option %d: continuation_chars = %d must be at least 1", i, j, n)
				}
			}
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
// of cols tokens (an option's tokens but its last), right-padded with token 0 (causal attention keeps the
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
		t := len(opts[batch[0]].Tokens) - 1
		n := len(batch) * t
		tokens, targets = grow(tokens, n), grow(targets, n)
		clear(tokens)
		for i := range targets {
			targets[i] = -1
		}
		for bi, oi := range batch {
			o := &opts[oi]
			copy(tokens[bi*t:], o.Tokens[:len(o.Tokens)-1])
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

// ChoiceResult picks, per item, the option of lowest summed NLL, of
// lowest NLL per continuation character and of lowest NLL per
// continuation token (the first on ties, as numpy's argmax). opts and sc
// are laid out as ChoiceOptions returns them.
//
// The character normalization is lm-evaluation-harness's acc_norm:
// lm_eval/api/task.py divides each choice's loglikelihood by
// completion_len = np.array([float(len(i)) for i in choices]), Python's
// len of the choice string, which counts code points (not UTF-8 bytes),
// without the target delimiter.
func ChoiceResult(items []backend.ChoiceItem, opts []Option, sc []Score) *backend.ChoiceResult {
	res := &backend.ChoiceResult{Items: len(items), Predictions: make([]int, len(items))}
	var correct, correctNorm, correctTok int
	k := 0
	for i, it := range items {
		chars := func(j int) float64 {
			if it.ContinuationChars == nil {
				return float64(opts[k+j].Count)
			}
			return float64(it.ContinuationChars[j])
		}
		best, bestNorm, bestTok := 0, 0, 0
		for j := range it.Contexts {
			nll := sc[k+j].NLL
			if nll < sc[k+best].NLL {
				best = j
			}
			if nll/chars(j) < sc[k+bestNorm].NLL/chars(bestNorm) {
				bestNorm = j
			}
			if nll/float64(opts[k+j].Count) < sc[k+bestTok].NLL/float64(opts[k+bestTok].Count) {
				bestTok = j
			}
		}
		res.Predictions[i] = best
		correct += b2i(best == it.Gold)
		correctNorm += b2i(bestNorm == it.Gold)
		correctTok += b2i(bestTok == it.Gold)
		k += len(it.Contexts)
	}
	if n := float64(len(items)); n > 0 {
		res.Accuracy = float64(correct) / n
		res.AccuracyNorm = float64(correctNorm) / n
		res.AccuracyNormTokens = float64(correctTok) / n
	}
	return res
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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
