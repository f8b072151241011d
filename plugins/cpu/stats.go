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
}

func newStatsAcc(cfg *ir.Config, acts, bi bool, threads int) *statsAcc {
	s := &statsAcc{cfg: cfg, acts: acts, bi: bi, threads: threads}
	nl := len(cfg.Layers)
	if acts {
		for _, lc := range cfg.Layers {
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

// result applies the square roots and norms of minitron.md.
func (s *statsAcc) result() *backend.StatsResult {
	res := &backend.StatsResult{}
	if s.acts {
		res.Hidden = make([]float64, s.cfg.Hidden)
		for l, lc := range s.cfg.Layers {
			res.MLP = append(res.MLP, sqrtAll(s.mlp[l]))
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
