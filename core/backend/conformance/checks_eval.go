package conformance

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

func (s *suite) checkInfo(t *testing.T) {
	info, err := s.b.Info(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name == "" || info.Device == "" {
		t.Errorf("Info %+v lacks a name or device", info)
	}
	for _, c := range []string{backend.CapEvaluate, backend.CapStats, backend.CapTrain, backend.CapGenerate} {
		if !info.Has(c) {
			t.Errorf("Info.Capabilities %v lacks %q", info.Capabilities, c)
		}
	}
	if info.Has(backend.CapLoRA) && s.opts.NoLoRA {
		t.Errorf("Info claims %q but Options.NoLoRA is set", backend.CapLoRA)
	}
}

// checkLoadSave: a float32 save returns the loaded weights bit for bit,
// a bfloat16 save their rounding, whether loaded trainable or not.
func (s *suite) checkLoadSave(t *testing.T) {
	for _, f := range []*fixture{s.tiny, s.tied, s.stories} {
		if f == nil {
			continue
		}
		id := s.load(t, s.b, f, true)
		for _, dt := range []string{"", "bf16"} {
			dir := filepath.Join(t.TempDir(), "saved")
			if err := s.b.Save(s.ctx, backend.SaveRequest{Model: id, Dir: dir, DType: dt}); err != nil {
				t.Fatalf("%s: save %q: %v", f.name, dt, err)
			}
			got, err := hf.Load(dir)
			if err != nil {
				t.Fatalf("%s: reloading the saved model: %v", f.name, err)
			}
			if got.Config.Tied != f.m.Config.Tied || len(got.Config.Layers) != len(f.m.Config.Layers) || got.Config.Hidden != f.m.Config.Hidden {
				t.Errorf("%s: saved configuration %+v differs from %+v", f.name, got.Config, f.m.Config)
			}
			for _, name := range f.m.TensorNames() {
				want, _ := f.m.Tensor(name)
				if dt == "bf16" {
					want, _ = want.Convert(ir.BF16)
				}
				g, err := got.Tensor(name)
				if err != nil {
					t.Errorf("%s: saved model lacks %s: %v", f.name, name, err)
					continue
				}
				wb, _ := want.Bytes()
				gb, _ := g.Bytes()
				if g.DType != want.DType || string(wb) != string(gb) {
					t.Errorf("%s: saved %s (%v) differs from the loaded weights (%v)", f.name, name, g.DType, want.DType)
				}
			}
			got.Close()
		}
		if f == s.stories {
			// An inference-only load must evaluate too.
			s.load(t, s.b, f, false)
		}
	}
}

// goldenLM is the mean NLL over the targets of rows (position j+1 given
// positions ≤ j, where the mask, if any, is 1).
func goldenLM(g *golden, rows [][]int, mask [][]uint8, skip map[int]bool) (float64, int) {
	var nll float64
	n := 0
	for i, r := range rows {
		z := g.Forward(r, skip, nil)
		for j := 0; j+1 < len(r); j++ {
			if mask != nil && mask[i][j+1] == 0 {
				continue
			}
			nll -= logSoftmax(z[j], 1)[r[j+1]]
			n++
		}
	}
	return nll / float64(n), n
}

func (s *suite) checkLM(t *testing.T, f *fixture) {
	id := s.load(t, s.b, f, false)
	cases := []struct {
		name  string
		seq   backend.Sequences
		rows  [][]int
		mask  [][]uint8
		batch int
	}{
		{"plain", f.data, f.seqs, nil, 4},
		{"masked", f.masked, f.seqs, f.mask, 3},
		{"limit", backend.Sequences{Path: f.data.Path, MaskPath: f.masked.MaskPath, Limit: 3}, f.seqs[:3], f.mask[:3], 0},
	}
	for _, c := range cases {
		res, err := s.b.Evaluate(s.ctx, backend.EvalRequest{Model: id, LM: &c.seq, BatchSize: c.batch})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want, n := goldenLM(f.g, c.rows, c.mask, nil)
		if res.LM == nil {
			t.Fatalf("%s: no LM result", c.name)
		}
		s.expectLoss(t, c.name+" LM loss", res.LM.Loss, want)
		if res.LM.Tokens != n {
			t.Errorf("%s: %d tokens scored, want %d", c.name, res.LM.Tokens, n)
		}
	}
}

func skipLists(layers int) [][]int {
	if layers <= 2 {
		return [][]int{{0}, {1}}
	}
	return [][]int{{0}, {layers / 2, layers/2 + 1}, {layers - 1}}
}

func toSet(l []int) map[int]bool {
	m := map[int]bool{}
	for _, x := range l {
		m[x] = true
	}
	return m
}

func (s *suite) checkSkip(t *testing.T, f *fixture) {
	id := s.load(t, s.b, f, false)
	skips := skipLists(len(f.m.Config.Layers))
	res, err := s.b.Evaluate(s.ctx, backend.EvalRequest{Model: id, LM: &f.masked, SkipLayers: skips, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != len(skips) {
		t.Fatalf("%d skipped results for %d skip lists", len(res.Skipped), len(skips))
	}
	full, _ := goldenLM(f.g, f.seqs, f.mask, nil)
	s.expectLoss(t, "LM loss", res.LM.Loss, full)
	for i, sk := range skips {
		if !slices.Equal(res.Skipped[i].Layers, sk) {
			t.Errorf("skipped[%d].Layers = %v, want %v", i, res.Skipped[i].Layers, sk)
		}
		want, _ := goldenLM(f.g, f.seqs, f.mask, toSet(sk))
		if res.Skipped[i].LM == nil {
			t.Errorf("skipped[%d] has no LM result", i)
			continue
		}
		s.expectLoss(t, "LM loss without layers "+fmtLayers(sk), res.Skipped[i].LM.Loss, want)
	}
	// A layer outside the model is an error, not a silent no-op.
	if _, err := s.b.Evaluate(s.ctx, backend.EvalRequest{Model: id, LM: &f.data, SkipLayers: [][]int{{len(f.m.Config.Layers)}}}); err == nil {
		t.Error("skipping a layer past the last one was accepted")
	}
}

// goldenOption is the summed NLL of a continuation after its context
// (keeping the last MaxSeq tokens) and whether greedy decoding
// reproduces it.
func goldenOption(g *golden, ctxTok, cont []int, skip map[int]bool) (float64, bool) {
	// lm-evaluation-harness: inp = (context_enc + continuation_enc)
	// [-(max_length+1):][:-1], the continuation scored at the last
	// len(continuation_enc) positions.
	all := append(slices.Clone(ctxTok), cont...)
	if m := g.Config.MaxSeq; m > 0 && len(all) > m+1 {
		all = all[len(all)-(m+1):]
	}
	first := len(all) - 1 - len(cont)
	z := g.Forward(all[:len(all)-1], skip, nil)
	var nll float64
	greedy := true
	for k := range cont {
		p := first + k
		ls := logSoftmax(z[p], 1)
		nll -= ls[all[p+1]]
		best := 0
		for i, v := range z[p] {
			if v > z[p][best] {
				best = i
			}
		}
		greedy = greedy && best == all[p+1]
	}
	return nll, greedy
}

type goldenChoices struct {
	pred, predNorm []int
	margin         []float64 // relative gap between the best two summed NLLs
	acc, accNorm   float64
	accNormTokens  float64
}

func goldenChoice(g *golden, items []backend.ChoiceItem, skip map[int]bool) goldenChoices {
	var r goldenChoices
	var c, cn, ct int
	for _, it := range items {
		nll := make([]float64, len(it.Contexts))
		norm := make([]float64, len(it.Contexts))
		normTok := make([]float64, len(it.Contexts))
		for j := range it.Contexts {
			nll[j], _ = goldenOption(g, it.Contexts[j], it.Continuations[j], skip)
			// lm-evaluation-harness's acc_norm: per character of the choice.
			n := len(it.Continuations[j])
			if it.ContinuationChars != nil {
				n = it.ContinuationChars[j]
			}
			norm[j] = nll[j] / float64(n)
			normTok[j] = nll[j] / float64(len(it.Continuations[j]))
		}
		best, bn, bt := 0, 0, 0
		for j := range nll {
			if nll[j] < nll[best] {
				best = j
			}
			if norm[j] < norm[bn] {
				bn = j
			}
			if normTok[j] < normTok[bt] {
				bt = j
			}
		}
		gap := math.Inf(1)
		for j := range nll {
			if j != best {
				gap = math.Min(gap, (nll[j]-nll[best])/math.Max(math.Abs(nll[best]), 1))
			}
		}
		for j := range norm {
			if j != bn {
				gap = math.Min(gap, (norm[j]-norm[bn])/math.Max(math.Abs(norm[bn]), 1))
			}
			if j != bt {
				gap = math.Min(gap, (normTok[j]-normTok[bt])/math.Max(math.Abs(normTok[bt]), 1))
			}
		}
		r.pred, r.predNorm, r.margin = append(r.pred, best), append(r.predNorm, bn), append(r.margin, gap)
		if best == it.Gold {
			c++
		}
		if bn == it.Gold {
			cn++
		}
		if bt == it.Gold {
			ct++
		}
	}
	n := float64(len(items))
	r.acc, r.accNorm, r.accNormTokens = float64(c)/n, float64(cn)/n, float64(ct)/n
	return r
}

func (s *suite) expectChoices(t *testing.T, what string, got *backend.ChoiceResult, want goldenChoices, items []backend.ChoiceItem) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no choice result", what)
		return
	}
	if got.Items != len(items) || len(got.Predictions) != len(items) {
		t.Errorf("%s: %d items, %d predictions, want %d", what, got.Items, len(got.Predictions), len(items))
		return
	}
	ties := false
	for i := range items {
		if want.margin[i] < 10*s.tol.Loss {
			ties = true // too close to call at this precision
			continue
		}
		if got.Predictions[i] != want.pred[i] {
			t.Errorf("%s: item %d predicted option %d, want %d", what, i, got.Predictions[i], want.pred[i])
		}
	}
	if !ties && (got.Accuracy != want.acc || got.AccuracyNorm != want.accNorm || got.AccuracyNormTokens != want.accNormTokens) {
		t.Errorf("%s: accuracy %g / per character %g / per token %g, want %g / %g / %g", what,
			got.Accuracy, got.AccuracyNorm, got.AccuracyNormTokens, want.acc, want.accNorm, want.accNormTokens)
	}
}

func (s *suite) checkChoices(t *testing.T, f *fixture) {
	id := s.load(t, s.b, f, false)
	skips := skipLists(len(f.m.Config.Layers))[:1]
	res, err := s.b.Evaluate(s.ctx, backend.EvalRequest{Model: id, Choices: f.choices, LastWord: f.lastWord, SkipLayers: skips, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	s.expectChoices(t, "choices", res.Choices, goldenChoice(f.g, f.choices, nil), f.choices)
	if len(res.Skipped) != 1 {
		t.Fatalf("%d skipped results, want 1", len(res.Skipped))
	}
	s.expectChoices(t, "choices without layers "+fmtLayers(skips[0]), res.Skipped[0].Choices, goldenChoice(f.g, f.choices, toSet(skips[0])), f.choices)

	var nll float64
	var tokens, correct int
	for _, it := range f.lastWord {
		n, ok := goldenOption(f.g, it.Context, it.Continuation, nil)
		nll += n
		tokens += len(it.Continuation)
		if ok {
			correct++
		}
	}
	lw := res.LastWord
	if lw == nil {
		t.Fatal("no last-word result")
	}
	s.expectLoss(t, "last-word loss", lw.Loss, nll/float64(tokens))
	if lw.Items != len(f.lastWord) {
		t.Errorf("last-word items %d, want %d", lw.Items, len(f.lastWord))
	}
	if want := float64(correct) / float64(len(f.lastWord)); lw.Accuracy != want && s.tol.ExactTokens {
		t.Errorf("last-word accuracy %g, want %g", lw.Accuracy, want)
	}
}

// goldenStats aggregates the golden activations as minitron.md defines.
func goldenStats(g *golden, rows [][]int) *backend.StatsResult {
	cfg := &g.Config
	nl := len(cfg.Layers)
	res := &backend.StatsResult{Sequences: len(rows), Tokens: len(rows) * len(rows[0]), Hidden: make([]float64, cfg.Hidden), BlockInfluence: make([]float64, nl)}
	mlp, head := make([][]float64, nl), make([][]float64, nl)
	n1, n2 := make([][]float64, nl), make([][]float64, nl)
	for l, lc := range cfg.Layers {
		mlp[l], head[l] = make([]float64, lc.MLP), make([]float64, lc.Heads*lc.HeadDim)
		n1[l], n2[l] = make([]float64, cfg.Hidden), make([]float64, cfg.Hidden)
	}
	add := func(acc []float64, a [][]float64) {
		for c := range acc {
			var m float64
			for _, row := range a {
				m += math.Abs(row[c])
			}
			m /= float64(len(a))
			acc[c] += m * m
		}
	}
	var cos = make([]float64, nl)
	moe := newGoldenMoE(cfg)
	for _, r := range rows {
		acts := make([]decoder64.LayerActs, nl)
		g.Forward(r, nil, acts)
		for l := range acts {
			a := &acts[l]
			if moe != nil && cfg.Layers[l].MoE() {
				moe.add(l, a.MoE, add)
			}
			add(mlp[l], a.MLPAct)
			add(head[l], a.AttnOut)
			add(n1[l], a.AttnNormOut)
			add(n2[l], a.MLPNormOut)
			for t := range a.In {
				cos[l] += decoder64.Dot(a.In[t], a.Out[t]) / math.Sqrt(decoder64.Dot(a.In[t], a.In[t])*decoder64.Dot(a.Out[t], a.Out[t]))
			}
		}
	}
	sq := func(v []float64) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = math.Sqrt(x)
		}
		return out
	}
	if moe != nil {
		moe.result(res, sq)
	}
	for l, lc := range cfg.Layers {
		if lc.MoE() {
			res.MLP = append(res.MLP, nil)
		} else {
			res.MLP = append(res.MLP, sq(mlp[l]))
		}
		ch := sq(head[l])
		res.HeadChannels = append(res.HeadChannels, ch)
		heads := make([]float64, lc.Heads)
		for h := range heads {
			heads[h] = math.Sqrt(decoder64.Dot(ch[h*lc.HeadDim:(h+1)*lc.HeadDim], ch[h*lc.HeadDim:(h+1)*lc.HeadDim]))
		}
		res.Heads = append(res.Heads, heads)
		for c := range res.Hidden {
			res.Hidden[c] += math.Sqrt(n1[l][c]) + math.Sqrt(n2[l][c])
		}
		res.BlockInfluence[l] = 1 - cos[l]/float64(res.Tokens)
	}
	return res
}

// goldenMoE accumulates the mixture-of-experts statistics as
// backend.StatsResult documents them, over decoder64's routing.
type goldenMoE struct {
	cfg                  *ir.Config
	expertMLP            [][][]float64
	prob, output, shared [][]float64
	tokens               [][]int
}

func newGoldenMoE(cfg *ir.Config) *goldenMoE {
	if !hasMoE(*cfg) {
		return nil
	}
	nl := len(cfg.Layers)
	m := &goldenMoE{cfg: cfg, expertMLP: make([][][]float64, nl), prob: make([][]float64, nl), output: make([][]float64, nl),
		shared: make([][]float64, nl), tokens: make([][]int, nl)}
	for l, lc := range cfg.Layers {
		if !lc.MoE() {
			continue
		}
		m.expertMLP[l] = make([][]float64, lc.Experts)
		for e := range m.expertMLP[l] {
			m.expertMLP[l][e] = make([]float64, lc.ExpertMLP)
		}
		m.prob[l], m.output[l], m.tokens[l] = make([]float64, lc.Experts), make([]float64, lc.Experts), make([]int, lc.Experts)
		if lc.SharedMLP > 0 {
			m.shared[l] = make([]float64, lc.SharedMLP)
		}
	}
	return m
}

// add takes one sequence's routing records of layer l; agg aggregates a
// sequence's rows of one activation as for MLP.
func (m *goldenMoE) add(l int, seq []decoder64.MoEActs, agg func(acc []float64, rows [][]float64)) {
	var shared [][]float64
	for _, pos := range seq {
		for e, p := range pos.Probs {
			m.prob[l][e] += p
		}
		for k, e := range pos.Chosen {
			m.tokens[l][e]++
			m.output[l][e] += pos.Weights[k] * math.Sqrt(decoder64.Dot(pos.ExpertOut[e], pos.ExpertOut[e]))
		}
		shared = append(shared, pos.SharedAct)
	}
	for e, acc := range m.expertMLP[l] {
		var routed [][]float64
		for _, pos := range seq {
			if pos.ExpertAct[e] != nil {
				routed = append(routed, pos.ExpertAct[e])
			}
		}
		if len(routed) > 0 { // a sequence's mean over its tokens routed to e
			agg(acc, routed)
		}
	}
	if m.shared[l] != nil {
		agg(m.shared[l], shared)
	}
}

func (m *goldenMoE) result(res *backend.StatsResult, sq func([]float64) []float64) {
	nl := len(m.cfg.Layers)
	res.ExpertMLP, res.SharedMLP = make([][][]float64, nl), make([][]float64, nl)
	res.ExpertProb, res.ExpertOutput, res.ExpertTokens = m.prob, m.output, m.tokens
	for l := range m.expertMLP {
		for _, acc := range m.expertMLP[l] {
			res.ExpertMLP[l] = append(res.ExpertMLP[l], sq(acc))
		}
		if m.shared[l] != nil {
			res.SharedMLP[l] = sq(m.shared[l])
		}
	}
}

// expectMoEStats compares the mixture-of-experts statistics: nil for
// dense layers (all nil for a dense model), token counts exactly.
func expectMoEStats(t *testing.T, got, want *backend.StatsResult, tol float64) {
	t.Helper()
	if want.ExpertProb == nil {
		if got.ExpertMLP != nil || got.ExpertProb != nil || got.ExpertOutput != nil || got.ExpertTokens != nil || got.SharedMLP != nil {
			t.Error("expert statistics for a dense model")
		}
		return
	}
	if len(got.ExpertMLP) != len(want.ExpertMLP) || len(got.ExpertProb) != len(want.ExpertProb) || len(got.ExpertOutput) != len(want.ExpertOutput) ||
		len(got.ExpertTokens) != len(want.ExpertTokens) || len(got.SharedMLP) != len(want.SharedMLP) {
		t.Fatalf("expert statistics for %d/%d/%d/%d/%d layers, want %d", len(got.ExpertMLP), len(got.ExpertProb), len(got.ExpertOutput),
			len(got.ExpertTokens), len(got.SharedMLP), len(want.ExpertProb))
	}
	for l := range want.ExpertProb {
		if len(got.ExpertMLP[l]) != len(want.ExpertMLP[l]) {
			t.Fatalf("layer %d: %d experts' neurons, want %d", l, len(got.ExpertMLP[l]), len(want.ExpertMLP[l]))
		}
		for e := range want.ExpertMLP[l] {
			expectVec(t, "ExpertMLP["+itoa(l)+"]["+itoa(e)+"]", got.ExpertMLP[l][e], want.ExpertMLP[l][e], tol)
		}
		expectVec(t, "ExpertProb["+itoa(l)+"]", got.ExpertProb[l], want.ExpertProb[l], tol)
		expectVec(t, "ExpertOutput["+itoa(l)+"]", got.ExpertOutput[l], want.ExpertOutput[l], tol)
		expectVec(t, "SharedMLP["+itoa(l)+"]", got.SharedMLP[l], want.SharedMLP[l], tol)
		if !slices.Equal(got.ExpertTokens[l], want.ExpertTokens[l]) {
			t.Errorf("ExpertTokens[%d] = %v, want %v", l, got.ExpertTokens[l], want.ExpertTokens[l])
		}
	}
}

func (s *suite) checkStats(t *testing.T, f *fixture) {
	id := s.load(t, s.b, f, false)
	want := goldenStats(f.g, f.seqs)
	for _, bs := range []int{1, 4} {
		got, err := s.b.Stats(s.ctx, backend.StatsRequest{Model: id, Data: f.masked, BatchSize: bs, Activations: true, BlockInfluence: true})
		if err != nil {
			t.Fatal(err)
		}
		expectStats(t, got, want, s.tol.Stats)
	}
	// Block influence alone.
	got, err := s.b.Stats(s.ctx, backend.StatsRequest{Model: id, Data: f.data, BlockInfluence: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.MLP != nil || got.Hidden != nil {
		t.Error("activation statistics returned though only block influence was asked for")
	}
	expectVec(t, "block influence", got.BlockInfluence, want.BlockInfluence, s.tol.Stats)
}

func expectStats(t *testing.T, got, want *backend.StatsResult, tol float64) {
	t.Helper()
	if got.Sequences != want.Sequences || got.Tokens != want.Tokens {
		t.Errorf("%d sequences / %d tokens, want %d / %d", got.Sequences, got.Tokens, want.Sequences, want.Tokens)
	}
	if len(got.MLP) != len(want.MLP) || len(got.Heads) != len(want.Heads) || len(got.HeadChannels) != len(want.HeadChannels) {
		t.Fatalf("statistics for %d/%d/%d layers, want %d", len(got.MLP), len(got.Heads), len(got.HeadChannels), len(want.MLP))
	}
	for l := range want.MLP {
		expectVec(t, "MLP["+itoa(l)+"]", got.MLP[l], want.MLP[l], tol)
		expectVec(t, "HeadChannels["+itoa(l)+"]", got.HeadChannels[l], want.HeadChannels[l], tol)
		expectVec(t, "Heads["+itoa(l)+"]", got.Heads[l], want.Heads[l], tol)
	}
	expectVec(t, "Hidden", got.Hidden, want.Hidden, tol)
	expectMoEStats(t, got, want, tol)
	if len(got.BlockInfluence) != len(want.BlockInfluence) {
		t.Fatalf("%d block influences, want %d", len(got.BlockInfluence), len(want.BlockInfluence))
	}
	for l, w := range want.BlockInfluence {
		if math.Abs(got.BlockInfluence[l]-w) > tol*math.Max(1, math.Abs(w))*0.1 && math.Abs(got.BlockInfluence[l]-w) > 1e-6 {
			t.Errorf("BlockInfluence[%d] = %.9g, want %.9g", l, got.BlockInfluence[l], w)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// goldenGreedy continues prompt greedily for n tokens.
func goldenGreedy(g *golden, prompt []int, n int) []int {
	seq := slices.Clone(prompt)
	var out []int
	for len(out) < n {
		z := g.Forward(seq, nil, nil)
		last := z[len(z)-1]
		best := 0
		for i, v := range last {
			if v > last[best] {
				best = i
			}
		}
		out = append(out, best)
		seq = append(seq, best)
	}
	return out
}

func (s *suite) checkGenerate(t *testing.T, f *fixture) {
	id := s.load(t, s.b, f, false)
	if f.tok == nil {
		prompts := [][]int{{1, 5, 7}, {1}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}}
		res, err := s.b.Generate(s.ctx, backend.GenerateRequest{Model: id, Prompts: prompts, MaxTokens: 6, StopToken: -1})
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range prompts {
			// The model has 16 positions: prompt and continuation but the
			// last token fit.
			n := min(6, f.m.Config.MaxSeq-len(p)+1)
			want := goldenGreedy(f.g, p, n)
			if !slices.Equal(res.Tokens[i], want) {
				t.Errorf("prompt %d: greedy continuation %v, want %v", i, res.Tokens[i], want)
			}
		}
		// A stop token ends the continuation before itself.
		want := goldenGreedy(f.g, prompts[0], 6)
		res, err = s.b.Generate(s.ctx, backend.GenerateRequest{Model: id, Prompts: prompts[:1], MaxTokens: 6, StopToken: want[2]})
		if err != nil {
			t.Fatal(err)
		}
		cut := slices.Index(want, want[2])
		if !slices.Equal(res.Tokens[0], want[:cut]) {
			t.Errorf("with stop token %d: %v, want %v", want[2], res.Tokens[0], want[:cut])
		}
		return
	}
	// stories260K: llama2.c's run.c output, greedy from BOS, 200 tokens.
	exp, err := os.ReadFile(filepath.Join(f.shared, "models", "stories260K", "expected_greedy_200.txt"))
	if err != nil {
		t.Skipf("expected_greedy_200.txt: %v", err)
	}
	res, err := s.b.Generate(s.ctx, backend.GenerateRequest{Model: id, Prompts: [][]int{{f.tok.BOS}}, MaxTokens: 200, StopToken: f.tok.BOS})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	prev := f.tok.BOS
	for _, id := range res.Tokens[0] {
		if p := f.tok.DecodeToken(prev, id); printable(p) {
			sb.WriteString(p)
		}
		prev = id
	}
	got, want := sb.String(), strings.TrimSuffix(string(exp), "\n")
	if !s.tol.ExactTokens {
		n := min(len(want), 80)
		got, want = got[:min(len(got), n)], want[:n]
	}
	if got != want {
		t.Errorf("greedy generation from BOS:\n%q\nwant llama2.c's\n%q", got, want)
	}
}

// printable is run.c's safe_printf rule: a lone byte must be printable or
// whitespace.
func printable(piece string) bool {
	if len(piece) != 1 {
		return piece != ""
	}
	b := piece[0]
	return (b >= 0x20 && b <= 0x7e) || (b >= '\t' && b <= '\r')
}
