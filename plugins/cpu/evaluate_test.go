package cpu

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/ir/hf"
)

// TestEvaluateLM: the mean NLL equals the reference's over the same
// tokens, with and without a mask.
func TestEvaluateLM(t *testing.T) {
	f := loadStories(t)
	const n, l = 6, 40
	path, rows := f.sequences(t, n, l)
	var sum float64
	var count int
	for _, r := range rows {
		s, k, err := f.ref.NLL(r)
		if err != nil {
			t.Fatal(err)
		}
		sum, count = sum+s, count+k
	}
	// A mask that scores every third position (and never position 0).
	mask := make([]uint8, n*l)
	var msum float64
	var mcount int
	for i, r := range rows {
		nll, _ := refScores(t, f.ref, r)
		for p := 1; p < l; p++ {
			if (i+p)%3 == 0 {
				mask[i*l+p] = 1
				msum += nll[p-1]
				mcount++
			}
		}
	}
	mask[0] = 1 // position 0 is never a target, whatever the mask says
	maskPath := filepath.Join(t.TempDir(), "mask.npy")
	if err := npy.WriteUint8(maskPath, []int{n, l}, mask); err != nil {
		t.Fatal(err)
	}

	b := newBackend(t)
	id := load(t, b, f.dir)
	for _, c := range []struct {
		name   string
		seq    backend.Sequences
		loss   float64
		tokens int
	}{
		{"all", backend.Sequences{Path: path}, sum / float64(count), count},
		{"masked", backend.Sequences{Path: path, MaskPath: maskPath}, msum / float64(mcount), mcount},
	} {
		for _, bs := range []int{4, 0} {
			res, err := b.Evaluate(context.Background(), backend.EvalRequest{Model: id, LM: &c.seq, BatchSize: bs})
			if err != nil {
				t.Fatal(err)
			}
			if res.LM.Tokens != c.tokens || math.Abs(res.LM.Loss-c.loss) > 1e-4 {
				t.Errorf("%s, batch %d: loss %v over %d tokens, reference %v over %d", c.name, bs, res.LM.Loss, res.LM.Tokens, c.loss, c.tokens)
			}
		}
	}
}

// TestSkipLayersMatchDroppedModel: bypassing layers gives the LM loss and
// choice scores of the model with those layers removed by ir's DropLayers.
func TestSkipLayersMatchDroppedModel(t *testing.T) {
	f := loadStories(t)
	path, _ := f.sequences(t, 4, 48)
	items := choiceItems(f, 6)
	b := newBackend(t)
	id := load(t, b, f.dir)
	skips := [][]int{{2}, {0, 4}, {}}
	res, err := b.Evaluate(context.Background(), backend.EvalRequest{
		Model: id, LM: &backend.Sequences{Path: path}, Choices: items, SkipLayers: skips, BatchSize: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != len(skips) {
		t.Fatalf("%d skipped results for %d sweeps", len(res.Skipped), len(skips))
	}
	for i, skip := range skips {
		var want *backend.EvalResult
		if len(skip) == 0 {
			want = res
		} else {
			dm, err := f.m.DropLayers(skip)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "dropped")
			if err := hf.Save(dm, dir, hf.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			did := load(t, b, dir)
			if want, err = b.Evaluate(context.Background(), backend.EvalRequest{Model: did, LM: &backend.Sequences{Path: path}, Choices: items, BatchSize: 3}); err != nil {
				t.Fatal(err)
			}
		}
		got := res.Skipped[i]
		if len(got.Layers) != len(skip) {
			t.Errorf("sweep %d reports layers %v, want %v", i, got.Layers, skip)
		}
		if math.Abs(got.LM.Loss-want.LM.Loss) > 1e-6 || got.LM.Tokens != want.LM.Tokens {
			t.Errorf("skip %v: loss %v, dropped model %v", skip, got.LM.Loss, want.LM.Loss)
		}
		if len(skip) > 0 && math.Abs(got.LM.Loss-res.LM.Loss) < 1e-3 {
			t.Errorf("skip %v: loss %v barely differs from the full model's %v", skip, got.LM.Loss, res.LM.Loss)
		}
		for j, p := range got.Choices.Predictions {
			if p != want.Choices.Predictions[j] {
				t.Errorf("skip %v: item %d predicted %d, dropped model %d", skip, j, p, want.Choices.Predictions[j])
			}
		}
	}
	// The sweep leaves the model whole.
	again, err := b.Evaluate(context.Background(), backend.EvalRequest{Model: id, LM: &backend.Sequences{Path: path}, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if again.LM.Loss != res.LM.Loss {
		t.Errorf("loss after the sweep %v, before %v", again.LM.Loss, res.LM.Loss)
	}
	if _, err := b.Evaluate(context.Background(), backend.EvalRequest{Model: id, LM: &backend.Sequences{Path: path}, SkipLayers: [][]int{{5}}}); err == nil {
		t.Error("skipping layer 5 of 5 accepted")
	}
}

// choiceItems builds items whose options continue a paragraph's opening
// with the next tokens of it (gold) or of other paragraphs, of varying
// lengths; one context is longer than the model's 512 positions.
func choiceItems(f *storiesFixture, n int) []backend.ChoiceItem {
	r := rand.New(rand.NewPCG(7, 7))
	var items []backend.ChoiceItem
	for i := 0; i < n; i++ {
		p := f.paragraphs[i]
		cut := 5 + r.IntN(20)
		it := backend.ChoiceItem{Gold: r.IntN(3)}
		for j := 0; j < 3; j++ {
			src := f.paragraphs[(i+1+j)%len(f.paragraphs)]
			if j == it.Gold {
				src = p
			}
			k := 2 + r.IntN(6)
			off := min(cut, len(src)-k)
			it.Contexts = append(it.Contexts, p[:cut])
			it.Continuations = append(it.Continuations, src[off:off+k])
		}
		items = append(items, it)
	}
	var long []int
	for _, p := range f.paragraphs {
		long = append(long, p...)
		if len(long) > 600 {
			break
		}
	}
	items = append(items, backend.ChoiceItem{
		Contexts:      [][]int{long[:590], long[:590]},
		Continuations: [][]int{long[590:594], f.paragraphs[0][3:6]},
		Gold:          0,
	})
	return items
}

// TestChoices: each option's summed continuation NLL is the reference's,
// and the predictions and both accuracies follow from them.
func TestChoices(t *testing.T) {
	f := loadStories(t)
	items := choiceItems(f, 8)
	var wantPred []int
	var acc, accNorm float64
	for _, it := range items {
		best, bestNorm := 0, 0
		sums := make([]float64, len(it.Contexts))
		for j := range it.Contexts {
			seq := append(append([]int(nil), it.Contexts[j]...), it.Continuations[j]...)
			first := len(it.Contexts[j]) - 1
			if len(seq) > 512 {
				first -= len(seq) - 512
				seq = seq[len(seq)-512:]
			}
			nll, _ := refScores(t, f.ref, seq)
			for _, v := range nll[first:] {
				sums[j] += v
			}
			if sums[j] < sums[best] {
				best = j
			}
			if sums[j]/float64(len(it.Continuations[j])) < sums[bestNorm]/float64(len(it.Continuations[bestNorm])) {
				bestNorm = j
			}
		}
		wantPred = append(wantPred, best)
		if best == it.Gold {
			acc++
		}
		if bestNorm == it.Gold {
			accNorm++
		}
	}
	acc /= float64(len(items))
	accNorm /= float64(len(items))
	b := newBackend(t)
	id := load(t, b, f.dir)
	for _, bs := range []int{1, 4} {
		res, err := b.Evaluate(context.Background(), backend.EvalRequest{Model: id, Choices: items, BatchSize: bs})
		if err != nil {
			t.Fatal(err)
		}
		c := res.Choices
		if c.Items != len(items) || c.Accuracy != acc || c.AccuracyNorm != accNorm {
			t.Errorf("batch %d: %d items, accuracy %v / %v; reference %v / %v", bs, c.Items, c.Accuracy, c.AccuracyNorm, acc, accNorm)
		}
		for i, p := range c.Predictions {
			if p != wantPred[i] {
				t.Errorf("batch %d: item %d predicted %d, reference %d", bs, i, p, wantPred[i])
			}
		}
	}
	if acc == 0 || acc == 1 {
		t.Logf("reference accuracy %v: the items do not separate right from wrong", acc)
	}
	for _, bad := range []backend.ChoiceItem{
		{Contexts: [][]int{{1}}, Continuations: [][]int{{5}}, Gold: 1},
		{Contexts: [][]int{{1}, {1}}, Continuations: [][]int{{5}}},
		{Contexts: [][]int{{}}, Continuations: [][]int{{5}}},
		{Contexts: [][]int{{1}}, Continuations: [][]int{{}}},
		{Contexts: [][]int{{1}}, Continuations: [][]int{{512}}},
	} {
		if _, err := b.Evaluate(context.Background(), backend.EvalRequest{Model: id, Choices: []backend.ChoiceItem{bad}}); err == nil {
			t.Errorf("item %+v accepted", bad)
		}
	}
}

// TestLastWord: continuations that are the reference's own greedy output
// are reproduced, others are not, and the loss is the reference's.
func TestLastWord(t *testing.T) {
	f := loadStories(t)
	var items []backend.LastWordItem
	var want []bool
	var nllSum float64
	var tokens int
	for i := 0; i < 6; i++ {
		ctx := f.paragraphs[i][:10+i]
		var cont []int
		if i%2 == 0 {
			// Greedy continuation from the reference.
			s := f.ref.NewSession(0)
			var logits []float32
			for _, id := range ctx {
				logits, _ = s.Forward(id)
			}
			for k := 0; k < 3; k++ {
				best := 0
				for j, v := range logits {
					if v > logits[best] {
						best = j
					}
				}
				cont = append(cont, best)
				logits, _ = s.Forward(best)
			}
		} else {
			cont = f.paragraphs[i+10][4:7]
		}
		seq := append(append([]int(nil), ctx...), cont...)
		nll, arg := refScores(t, f.ref, seq)
		ok := true
		for k := range cont {
			p := len(ctx) - 1 + k
			nllSum += nll[p]
			ok = ok && arg[p] == seq[p+1]
		}
		tokens += len(cont)
		want = append(want, ok)
		items = append(items, backend.LastWordItem{Context: ctx, Continuation: cont})
	}
	var acc float64
	for _, ok := range want {
		if ok {
			acc++
		}
	}
	acc /= float64(len(want))
	if acc != 0.5 {
		t.Fatalf("reference accuracy %v, the test expects the greedy half only", acc)
	}
	b := newBackend(t)
	id := load(t, b, f.dir)
	res, err := b.Evaluate(context.Background(), backend.EvalRequest{Model: id, LastWord: items, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	lw := res.LastWord
	if lw.Items != len(items) || lw.Accuracy != acc || math.Abs(lw.Loss-nllSum/float64(tokens)) > 1e-4 {
		t.Errorf("last word: %d items, accuracy %v, loss %v; reference %v, %v", lw.Items, lw.Accuracy, lw.Loss, acc, nllSum/float64(tokens))
	}
}
