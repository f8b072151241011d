package cpu

import (
	"context"
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/batch"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

// Stats collects the Minitron activation statistics and Block Influence
// over every position of every sequence (the mask, which marks targets,
// does not apply: every position is an input the model sees). Sequences
// are aggregated one by one in file order in float64, so BatchSize changes
// the result only through the engine's own float32 rounding.
func (b *Backend) Stats(ctx context.Context, req backend.StatsRequest) (*backend.StatsResult, error) {
	if err := b.lock(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	m, err := b.model(req.Model)
	if err != nil {
		return nil, err
	}
	if !req.Activations && !req.BlockInfluence {
		return nil, fmt.Errorf("cpu: stats: neither activations nor block influence requested")
	}
	bs, err := batchSize(req.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("cpu: stats: %w", err)
	}
	cfg := &m.params.Config
	d, err := batch.Open(req.Data, cfg.Vocab, cfg.MaxSeq)
	if err != nil {
		return nil, fmt.Errorf("cpu: stats: %w", err)
	}
	defer d.Close()
	e, err := m.engine(b.threads)
	if err != nil {
		return nil, err
	}
	acc := newStatsAcc(cfg, req.Activations, req.BlockInfluence, b.threads)
	var cur int // sequences in the batch being run
	m.hook = func(l int, a *engine.Activations) error {
		acc.add(l, a, cur, d.Cols)
		return nil
	}
	defer func() { m.hook = nil }()
	var tokens, ids []int32
	for start := 0; start < d.Rows; start += bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cur = min(bs, d.Rows-start)
		if tokens, ids, err = d.Batch(start, cur, tokens, ids); err != nil {
			return nil, fmt.Errorf("cpu: stats: %w", err)
		}
		if err := e.Forward(tokens, cur, d.Cols); err != nil {
			return nil, fmt.Errorf("cpu: stats: %s rows %d–%d: %w", d.Path, start, start+cur-1, err)
		}
	}
	res := acc.result()
	res.Sequences, res.Tokens = d.Rows, d.Rows*d.Cols
	return res, nil
}

// statsAcc accumulates Σ_b ((1/S) Σ_s |a[b,s,c]|)² per channel of each
// activation, and Σ cos(x_in, x_out) per layer.
type statsAcc struct {
	cfg        *ir.Config
	acts, bi   bool
	threads    int
	mlp, head  [][]float64
	norm1      [][]float64 // per layer: attention input norm's output
	norm2      [][]float64 // per layer: MLP input norm's output
	cosSum     []float64
	cosTokens  []int
	cosScratch []float64

	// Mixture-of-experts layers (nil entries for dense ones): per expert,
	// Σ_b (mean over b's tokens routed to e of |act|)² per neuron, the
	// probability mass, the weighted output norms and the token counts;
	// the shared expert's neurons as mlp.
	expertMLP    [][][]float64
	expertProb   [][]float64
	expertOutput [][]float64
	expertTokens [][]int
	sharedMLP    [][]float64
}

func newStatsAcc(cfg *ir.Config, acts, bi bool, threads int) *statsAcc {
	s := &statsAcc{cfg: cfg, acts: acts, bi: bi, threads: threads}
	nl := len(cfg.Layers)
	if acts {
		moe := false
		for _, lc := range cfg.Layers {
			moe = moe || lc.MoE()
		}
		if moe {
			s.expertMLP = make([][][]float64, nl)
			s.expertProb, s.expertOutput = make([][]float64, nl), make([][]float64, nl)
			s.expertTokens, s.sharedMLP = make([][]int, nl), make([][]float64, nl)
		}
		for l, lc := range cfg.Layers {
			if lc.MoE() {
				s.expertMLP[l] = make([][]float64, lc.Experts)
				for e := range s.expertMLP[l] {
					s.expertMLP[l][e] = make([]float64, lc.ExpertMLP)
				}
				s.expertProb[l], s.expertOutput[l] = make([]float64, lc.Experts), make([]float64, lc.Experts)
				s.expertTokens[l] = make([]int, lc.Experts)
				if lc.SharedMLP > 0 {
					s.sharedMLP[l] = make([]float64, lc.SharedMLP)
				}
			}
			s.mlp = append(s.mlp, make([]float64, lc.MLP))
			s.head = append(s.head, make([]float64, lc.Heads*lc.HeadDim))
			s.norm1 = append(s.norm1, make([]float64, cfg.Hidden))
			s.norm2 = append(s.norm2, make([]float64, cfg.Hidden))
		}
	}
	if bi {
		s.cosSum = make([]float64, nl)
		s.cosTokens = make([]int, nl)
	}
	return s
}

// add takes layer l's activations of b sequences of t tokens.
func (s *statsAcc) add(l int, a *engine.Activations, b, t int) {
	if s.acts {
		absMeanSq(s.threads, s.mlp[l], a.MLPAct, b, t)
		if a.MoE != nil {
			s.addMoE(l, a.MoE, b, t)
		}
		absMeanSq(s.threads, s.head[l], a.AttnOut, b, t)
		absMeanSq(s.threads, s.norm1[l], a.AttnNormOut, b, t)
		absMeanSq(s.threads, s.norm2[l], a.MLPNormOut, b, t)
	}
	if s.bi {
		n, d := b*t, s.cfg.Hidden
		if cap(s.cosScratch) < n {
			s.cosScratch = make([]float64, n)
		}
		cs := s.cosScratch[:n]
		parallel.For(s.threads, n, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				cs[r] = cosine(a.Input[r*d:(r+1)*d], a.Output[r*d:(r+1)*d])
			}
		})
		for _, c := range cs {
			s.cosSum[l] += c
		}
		s.cosTokens[l] += n
	}
}

// addMoE takes a mixture-of-experts layer's routing and expert
// activations of b sequences of t tokens. Each expert's pairs are grouped
// in row order, so a sequence's tokens routed to e are a contiguous run
// of e's block; experts are independent and summed in a fixed order.
func (s *statsAcc) addMoE(l int, m *engine.MoEActivations, b, t int) {
	d := s.cfg.Hidden
	n := b * t
	if sh := s.sharedMLP[l]; sh != nil {
		absMeanSq(s.threads, sh, m.SharedAct, b, t)
	}
	for r := 0; r < n; r++ {
		for e, p := range m.Probs[r*m.Experts : (r+1)*m.Experts] {
			s.expertProb[l][e] += float64(p)
		}
	}
	width := len(s.expertMLP[l][0])
	parallel.For(s.threads, m.Experts, func(lo, hi int) {
		sum := make([]float64, width)
		for e := lo; e < hi; e++ {
			acc := s.expertMLP[l][e]
			j0, j1 := m.Offsets[e], m.Offsets[e+1]
			s.expertTokens[l][e] += j1 - j0
			for j := j0; j < j1; {
				// One sequence's run.
				seq := int(m.Rows[j]) / t
				k := j
				clear(sum)
				for ; k < j1 && int(m.Rows[k])/t == seq; k++ {
					for i, v := range m.Act[k*width : (k+1)*width] {
						sum[i] += math.Abs(float64(v))
					}
					// ‖w·y‖ = w·‖y‖ with w ≥ 0.
					w := m.PairWeight(k)
					var ss float64
					for _, v := range m.Out[k*d : (k+1)*d] {
						ss += float64(v) * float64(v)
					}
					s.expertOutput[l][e] += float64(w) * math.Sqrt(ss)
				}
				cnt := float64(k - j)
				for i, v := range sum {
					acc[i] += (v / cnt) * (v / cnt)
				}
				j = k
			}
		}
	})
}

// result applies the square roots and norms of minitron.md.
func (s *statsAcc) result() *backend.StatsResult {
	res := &backend.StatsResult{}
	if s.acts {
		res.Hidden = make([]float64, s.cfg.Hidden)
		if s.expertMLP != nil {
			res.ExpertMLP, res.SharedMLP = make([][][]float64, len(s.cfg.Layers)), make([][]float64, len(s.cfg.Layers))
			res.ExpertProb, res.ExpertOutput, res.ExpertTokens = s.expertProb, s.expertOutput, s.expertTokens
		}
		for l, lc := range s.cfg.Layers {
			if lc.MoE() {
				res.MLP = append(res.MLP, nil)
				for _, acc := range s.expertMLP[l] {
					res.ExpertMLP[l] = append(res.ExpertMLP[l], sqrtAll(acc))
				}
				if s.sharedMLP[l] != nil {
					res.SharedMLP[l] = sqrtAll(s.sharedMLP[l])
				}
			} else {
				res.MLP = append(res.MLP, sqrtAll(s.mlp[l]))
			}
			ch := sqrtAll(s.head[l])
			res.HeadChannels = append(res.HeadChannels, ch)
			heads := make([]float64, lc.Heads)
			for h := range heads {
				var ss float64
				for _, v := range ch[h*lc.HeadDim : (h+1)*lc.HeadDim] {
					ss += v * v
				}
				heads[h] = math.Sqrt(ss)
			}
			res.Heads = append(res.Heads, heads)
			// Each norm's output is aggregated on its own, then summed.
			for c := range res.Hidden {
				res.Hidden[c] += math.Sqrt(s.norm1[l][c]) + math.Sqrt(s.norm2[l][c])
			}
		}
	}
	if s.bi {
		res.BlockInfluence = make([]float64, len(s.cosSum))
		for l, c := range s.cosSum {
			res.BlockInfluence[l] = 1 - c/float64(s.cosTokens[l])
		}
	}
	return res
}

func sqrtAll(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Sqrt(x)
	}
	return out
}

// absMeanSq adds Σ_b (mean_s |x[b,s,c]|)² to acc[c] for x [b·t, len(acc)].
// Goroutines own disjoint column blocks and visit sequences in order, so
// the sums do not depend on the thread count.
func absMeanSq(threads int, acc []float64, x []float32, b, t int) {
	w := len(acc)
	const block = 64
	parallel.For(threads, (w+block-1)/block, func(lo, hi int) {
		var sum [block]float64
		for bi := lo; bi < hi; bi++ {
			c0, c1 := bi*block, min(w, (bi+1)*block)
			s := sum[:c1-c0]
			for seq := 0; seq < b; seq++ {
				clear(s)
				for r := seq * t; r < (seq+1)*t; r++ {
					for j, v := range x[r*w+c0 : r*w+c1] {
						s[j] += math.Abs(float64(v))
					}
				}
				for j, v := range s {
					mean := v / float64(t)
					acc[c0+j] += mean * mean
				}
			}
		}
	})
}

// cosine is the cosine similarity of x and y in float64; 0 when either is
// the zero vector.
func cosine(x, y []float32) float64 {
	var xy, xx, yy float64
	for i, a := range x {
		b := float64(y[i])
		xy += float64(a) * b
		xx += float64(a) * float64(a)
		yy += b * b
	}
	if xx == 0 || yy == 0 {
		return 0
	}
	return xy / math.Sqrt(xx*yy)
}
