package batch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
)

func TestNewOption(t *testing.T) {
	for _, c := range []struct {
		name      string
		ctx, cont []int
		maxSeq    int
		want      Option
		err       string
	}{
		{"fits", []int{1, 2, 3}, []int{4, 5}, 0, Option{Tokens: []int32{1, 2, 3, 4, 5}, First: 2, Count: 2}, ""},
		// lm-evaluation-harness keeps (ctx+cont)[-(maxSeq+1):] and feeds all
		// but the last token: maxSeq+1 tokens fit.
		{"exactly the context", []int{1, 2, 3}, []int{4, 5}, 4, Option{Tokens: []int32{1, 2, 3, 4, 5}, First: 2, Count: 2}, ""},
		{"keeps the last tokens", []int{1, 2, 3}, []int{4, 5}, 3, Option{Tokens: []int32{2, 3, 4, 5}, First: 1, Count: 2}, ""},
		{"continuation of maxSeq tokens", []int{1, 2, 3}, []int{4, 5}, 2, Option{Tokens: []int32{3, 4, 5}, First: 0, Count: 2}, ""},
		{"continuation too long", []int{1, 2, 3}, []int{4, 5}, 1, Option{}, "continuation of 2 tokens does not fit the model's 1 positions"},
		{"empty context", nil, []int{4}, 0, Option{}, "empty context"},
		{"empty continuation", []int{1}, nil, 0, Option{}, "empty continuation"},
		{"negative token", []int{1, -1}, []int{4}, 0, Option{}, "token -1 outside vocabulary of 10"},
		{"token past the vocabulary", []int{1}, []int{10}, 0, Option{}, "token 10 outside vocabulary of 10"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := NewOption(c.ctx, c.cont, 10, c.maxSeq)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Tokens, c.want.Tokens) || got.First != c.want.First || got.Count != c.want.Count {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestItemErrors(t *testing.T) {
	ok := [][]int{{1}, {1}}
	for _, c := range []struct {
		name  string
		items []backend.ChoiceItem
		want  string
	}{
		{"no options", []backend.ChoiceItem{{Contexts: ok, Continuations: ok}, {}}, "choices[1]: 0 contexts and 0 continuations"},
		{"uneven", []backend.ChoiceItem{{Contexts: ok, Continuations: ok[:1]}}, "choices[0]: 2 contexts and 1 continuations"},
		{"gold past the options", []backend.ChoiceItem{{Contexts: ok, Continuations: ok, Gold: 2}}, "choices[0]: gold 2 outside the 2 options"},
		{"negative gold", []backend.ChoiceItem{{Contexts: ok, Continuations: ok, Gold: -1}}, "gold -1"},
		{"bad option", []backend.ChoiceItem{{Contexts: ok, Continuations: [][]int{{1}, {}}}}, "choices[0] option 1: empty continuation"},
		{"chars per option", []backend.ChoiceItem{{Contexts: ok, Continuations: ok, ContinuationChars: []int{3}}}, "choices[0]: 1 continuation_chars for 2 options"},
		{"zero chars", []backend.ChoiceItem{{Contexts: ok, Continuations: ok, ContinuationChars: []int{3, 0}}}, "choices[0] option 1: continuation_chars = 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ChoiceOptions(c.items, 10, 0); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
	_, err := LastWordOptions([]backend.LastWordItem{{Context: []int{1}, Continuation: []int{2}}, {Context: []int{1}, Continuation: []int{12}}}, 10, 0)
	if err == nil || !strings.Contains(err.Error(), "last_word[1]: token 12 outside vocabulary") {
		t.Errorf("last-word error %v", err)
	}
}

func TestChoiceOptionsLayout(t *testing.T) {
	items := []backend.ChoiceItem{
		{Contexts: [][]int{{1, 2}, {1, 3}}, Continuations: [][]int{{4}, {5, 6}}},
		{Contexts: [][]int{{7}}, Continuations: [][]int{{8, 9}}},
	}
	opts, err := ChoiceOptions(items, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Option{
		{Tokens: []int32{1, 2, 4}, First: 1, Count: 1},
		{Tokens: []int32{1, 3, 5, 6}, First: 1, Count: 2},
		{Tokens: []int32{7, 8, 9}, First: 0, Count: 2},
	}
	if !slices.EqualFunc(opts, want, func(a, b Option) bool {
		return slices.Equal(a.Tokens, b.Tokens) && a.First == b.First && a.Count == b.Count
	}) {
		t.Errorf("options %+v, want %+v", opts, want)
	}
}

// fakeRun records the batches it is given and scores each target position
// with the target's id as its NLL (1000 elsewhere, so that a sum over a
// wrong position shows), its argmax the target except at the positions in
// miss.
type fakeRun struct {
	tokens, targets [][]int32
	shapes          [][2]int
	miss            map[int32]bool // targets greedy decoding gets wrong
	noArgmax        bool
}

func (f *fakeRun) run(tokens, targets []int32, rows, cols int) ([]float64, []int64, error) {
	f.tokens = append(f.tokens, slices.Clone(tokens))
	f.targets = append(f.targets, slices.Clone(targets))
	f.shapes = append(f.shapes, [2]int{rows, cols})
	nll := make([]float64, len(targets))
	arg := make([]int64, len(targets))
	for i, id := range targets {
		nll[i], arg[i] = 1000, 0
		if id >= 0 {
			nll[i], arg[i] = float64(id), int64(id)
			if f.miss[id] {
				arg[i] = int64(id) + 1
			}
		}
	}
	if f.noArgmax {
		arg = nil
	}
	return nll, arg, nil
}

func TestScoreOptions(t *testing.T) {
	opts := []Option{
		{Tokens: []int32{1, 2, 3}, First: 1, Count: 1},       // scores 3
		{Tokens: []int32{4, 5, 6, 7}, First: 1, Count: 2},    // scores 6, 7
		{Tokens: []int32{8, 9}, First: 0, Count: 1},          // scores 9
		{Tokens: []int32{1, 2, 3, 4, 5}, First: 0, Count: 4}, // scores 2, 3, 4, 5
	}
	f := &fakeRun{miss: map[int32]bool{7: true}}
	sc, err := ScoreOptions(context.Background(), opts, 2, f.run)
	if err != nil {
		t.Fatal(err)
	}
	want := []Score{{3, true}, {13, false}, {9, true}, {14, true}}
	if !slices.Equal(sc, want) {
		t.Errorf("scores %v, want %v", sc, want)
	}
	// Longest first, two to a batch, each option without its last token
	// (only a target), right-padded with token 0 and target −1.
	wantShapes := [][2]int{{2, 4}, {2, 2}}
	wantTokens := [][]int32{
		{1, 2, 3, 4, 4, 5, 6, 0},
		{1, 2, 8, 0},
	}
	wantTargets := [][]int32{
		{2, 3, 4, 5, -1, 6, 7, -1},
		{-1, 3, 9, -1},
	}
	if !slices.Equal(f.shapes, wantShapes) {
		t.Fatalf("batches of %v, want %v", f.shapes, wantShapes)
	}
	for i := range wantTokens {
		if !slices.Equal(f.tokens[i], wantTokens[i]) || !slices.Equal(f.targets[i], wantTargets[i]) {
			t.Errorf("batch %d: tokens %v, targets %v; want %v, %v", i, f.tokens[i], f.targets[i], wantTokens[i], wantTargets[i])
		}
	}

	// Without argmax, no option counts as reproduced; one per batch gives
	// the same sums.
	f = &fakeRun{noArgmax: true}
	sc, err = ScoreOptions(context.Background(), opts, 1, f.run)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Score{{3, false}, {13, false}, {9, false}, {14, false}}; !slices.Equal(sc, want) || len(f.shapes) != 4 {
		t.Errorf("without argmax: %v in %d batches, want %v in 4", sc, len(f.shapes), want)
	}

	// int32 argmax works the same.
	sc, err = ScoreOptions(context.Background(), opts[:1], 8, func(tokens, targets []int32, rows, cols int) ([]float64, []int32, error) {
		return []float64{0, 0.5}, []int32{0, 3}, nil
	})
	if err != nil || !slices.Equal(sc, []Score{{0.5, true}}) {
		t.Errorf("int32 argmax: %v, %v", sc, err)
	}
}

func TestScoreOptionsErrors(t *testing.T) {
	opts := []Option{{Tokens: []int32{1, 2, 3}, First: 1, Count: 1}}
	boom := errors.New("boom")
	for _, c := range []struct {
		name string
		ctx  func() context.Context
		bs   int
		run  func(tokens, targets []int32, rows, cols int) ([]float64, []int64, error)
		want error
		msg  string
	}{
		{"run fails", context.Background, 1, func([]int32, []int32, int, int) ([]float64, []int64, error) { return nil, nil, boom }, boom, ""},
		{"short result", context.Background, 1, func([]int32, []int32, int, int) ([]float64, []int64, error) { return []float64{1}, nil, nil }, nil, "returned 1 NLLs"},
		{"short argmax", context.Background, 1, func([]int32, []int32, int, int) ([]float64, []int64, error) {
			return []float64{1, 2}, []int64{1}, nil
		}, nil, "1 argmax"},
		{"cancelled", func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, 1, nil, context.Canceled, ""},
		{"batch size 0", context.Background, 0, nil, nil, "batch size 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ScoreOptions(c.ctx(), opts, c.bs, c.run)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || (c.msg != "" && !strings.Contains(err.Error(), c.msg)) {
				t.Errorf("error %v, want %v %q", err, c.want, c.msg)
			}
		})
	}
}

// TestChoiceResult checks the three accuracies against values worked out
// by hand with lm-evaluation-harness's rules: acc = argmax of the summed
// loglikelihood, acc_norm = argmax of loglikelihood / len(choice), both
// taking the first option on ties (numpy's argmax).
func TestChoiceResult(t *testing.T) {
	type option struct {
		nll           float64
		tokens, chars int
	}
	for _, c := range []struct {
		name                 string
		gold                 int
		opts                 []option
		noChars              bool
		pred, norm, normToks int // by hand: the chosen options
	}{
		// Sums 6 vs 5 → option 1; per token 6 vs 2.5 → 1; per character
		// 0.6 vs 1.0 → 0 (the long choice wins once length counts).
		{"characters differ from tokens", 0, []option{{6, 1, 10}, {5, 2, 5}}, false, 1, 0, 1},
		// Per token 2 vs 1.5 → 1; per character 0.5 vs 0.5: a tie → 0.
		{"tie goes to the first", 1, []option{{4, 2, 8}, {3, 2, 6}}, false, 1, 0, 1},
		// Sums 9, 8, 12 → 1; per character 3, 4, 2 → 2; per token 3, 8, 4 → 0.
		{"three options", 2, []option{{9, 3, 3}, {8, 1, 2}, {12, 3, 6}}, false, 1, 2, 0},
		// Without character counts the token counts stand in.
		{"no character counts", 0, []option{{6, 1, 10}, {5, 2, 5}}, true, 1, 1, 1},
		{"one option", 0, []option{{7, 2, 3}}, false, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			it := backend.ChoiceItem{Contexts: make([][]int, len(c.opts)), Gold: c.gold}
			var opts []Option
			var sc []Score
			for _, o := range c.opts {
				opts = append(opts, Option{Count: o.tokens})
				sc = append(sc, Score{NLL: o.nll})
				if !c.noChars {
					it.ContinuationChars = append(it.ContinuationChars, o.chars)
				}
			}
			res := ChoiceResult([]backend.ChoiceItem{it}, opts, sc)
			acc := func(p int) float64 {
				if p == c.gold {
					return 1
				}
				return 0
			}
			if res.Items != 1 || !slices.Equal(res.Predictions, []int{c.pred}) || res.Accuracy != acc(c.pred) ||
				res.AccuracyNorm != acc(c.norm) || res.AccuracyNormTokens != acc(c.normToks) {
				t.Errorf("got %+v; want prediction %d, accuracy %g, normalized %g, per token %g", res, c.pred, acc(c.pred), acc(c.norm), acc(c.normToks))
			}
		})
	}

	// Items are laid out one after another and averaged.
	items := []backend.ChoiceItem{
		{Contexts: make([][]int, 2), Gold: 0, ContinuationChars: []int{10, 5}},
		{Contexts: make([][]int, 1), Gold: 0, ContinuationChars: []int{1}},
		{Contexts: make([][]int, 2), Gold: 1, ContinuationChars: []int{1, 1}},
	}
	opts := []Option{{Count: 1}, {Count: 2}, {Count: 1}, {Count: 1}, {Count: 1}}
	sc := []Score{{NLL: 6}, {NLL: 5}, {NLL: 1}, {NLL: 2}, {NLL: 3}}
	res := ChoiceResult(items, opts, sc)
	if res.Items != 3 || res.Accuracy != 1.0/3 || res.AccuracyNorm != 2.0/3 || res.AccuracyNormTokens != 1.0/3 || !slices.Equal(res.Predictions, []int{1, 0, 0}) {
		t.Errorf("got %+v; want 3 items, accuracy 1/3, normalized 2/3, per token 1/3, predictions [1 0 0]", res)
	}
	if res := ChoiceResult(nil, nil, nil); res.Items != 0 || res.Accuracy != 0 || res.AccuracyNorm != 0 || res.AccuracyNormTokens != 0 {
		t.Errorf("no items: %+v", res)
	}
}

func TestLastWordResult(t *testing.T) {
	res := LastWordResult([]Option{{Count: 1}, {Count: 3}}, []Score{{NLL: 2, Greedy: true}, {NLL: 6}})
	if res.Items != 2 || res.Accuracy != 0.5 || res.Loss != 2 {
		t.Errorf("got %+v; want 2 items, accuracy 0.5, loss 8/4 = 2", res)
	}
	if res := LastWordResult(nil, nil); res.Items != 0 || res.Accuracy != 0 || res.Loss != 0 {
		t.Errorf("no items: %+v", res)
	}
}

// FuzzNewOption checks that an option, however its tokens are cut to the
// context, ends with the whole continuation, scored from the position
// before it.
func FuzzNewOption(f *testing.F) {
	f.Add([]byte{1, 2, 3}, []byte{4, 5}, uint8(4))
	f.Add([]byte{1}, []byte{2}, uint8(0))
	f.Add([]byte{}, []byte{2}, uint8(1))
	f.Add([]byte{1, 2}, []byte{3, 4, 250}, uint8(3))
	f.Fuzz(func(t *testing.T, ctxB, contB []byte, maxSeq uint8) {
		const vocab = 200
		ints := func(b []byte) []int {
			out := make([]int, len(b))
			for i, x := range b {
				out[i] = int(x)
			}
			return out
		}
		ctx, cont := ints(ctxB), ints(contB)
		o, err := NewOption(ctx, cont, vocab, int(maxSeq))
		if err != nil {
			return
		}
		n := len(o.Tokens)
		if len(ctx) == 0 || len(cont) == 0 || (maxSeq > 0 && n > int(maxSeq)+1) || n > len(ctx)+len(cont) {
			t.Fatalf("option %+v from %d+%d tokens within %d", o, len(ctx), len(cont), maxSeq)
		}
		if o.Count != len(cont) || o.First < 0 || o.First+o.Count != n-1 {
			t.Fatalf("first %d, count %d of %d tokens for a continuation of %d", o.First, o.Count, n, len(cont))
		}
		all := append(slices.Clone(ctx), cont...)
		for i, id := range o.Tokens {
			if int(id) != all[len(all)-n+i] || all[len(all)-n+i] >= vocab {
				t.Fatalf("tokens %v are not the end of %v", o.Tokens, all)
			}
		}
	})
}
