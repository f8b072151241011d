package backend

import (
	"context"
	"fmt"
	"math"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/batch"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// Stats collects the Minitron activation statistics and Block Influence
// over every position of every sequence (the mask, which marks targets,
// does not apply). Per-sequence means and the sums over sequences are
// taken in float64 on the device, so BatchSize changes nothing but
// rounding.
func (b *Backend) Stats(ctx context.Context, req api.StatsRequest) (*api.StatsResult, error) {
	var res *api.StatsResult
	err := b.do(ctx, func() error {
		var err error
		if res, err = b.stats(ctx, req); err != nil {
			return fmt.Errorf("gotch: stats: %w", err)
		}
		return nil
	})
	return res, err
}

func (b *Backend) stats(ctx context.Context, req api.StatsRequest) (*api.StatsResult, error) {
	m, err := b.model(req.Model)
	if err != nil {
		return nil, err
	}
	if !req.Activations && !req.BlockInfluence {
		return nil, fmt.Errorf("neither activations nor block influence requested")
	}
	bs, err := batchSize(req.BatchSize)
	if err != nil {
		return nil, err
	}
	cfg := &m.cfg
	d, err := batch.Open(req.Data, cfg.Vocab, cfg.MaxSeq)
	if err != nil {
		return nil, err
	}
	defer d.Close()

	acc, err := b.newStatsAcc(cfg, req.Activations, req.BlockInfluence)
	if err != nil {
		return nil, err
	}
	defer acc.free()
	hook := acc.add
	for start := 0; start < d.Rows; start += bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(bs, d.Rows-start)
		tokens, _, err := readBatch(d, start, n)
		if err != nil {
			return nil, err
		}
		s := torch.NewScope()
		x := s.To(s.FromInt64(tokens, int64(n), int64(d.Cols)), b.dev)
		if err = s.Err(); err == nil {
			_, err = b.forward(s, m, x, n, d.Cols, fwdOpts{hook: hook})
		}
		s.Free()
		if err != nil {
			return nil, fmt.Errorf("%s rows %d–%d: %w", d.Path, start, start+n-1, err)
		}
	}

	res, err := acc.result()
	if err != nil {
		return nil, err
	}
	res.Sequences, res.Tokens = d.Rows, d.Rows*d.Cols
	for l := range res.BlockInfluence {
		res.BlockInfluence[l] = 1 - res.BlockInfluence[l]/float64(res.Tokens)
	}
	return res, nil
}

// statsAcc accumulates, on the device in float64, Σ_b (mean_s |a[b,s,c]|)²
// per channel of each activation and Σ cos(x_in, x_out) per layer. The
// per-sequence means and cosines are taken in float64 on the CPU (to
// agree with the CPU backend to float64 rounding) and in float32 on a GPU.
type statsAcc struct {
	b                       *Backend
	cfg                     *ir.Config
	acts, bi                bool
	wide                    torch.DType
	s                       *torch.Scope
	mlp, head, norm1, norm2 []torch.Tensor
	cos                     []torch.Tensor
}

func (b *Backend) newStatsAcc(cfg *ir.Config, acts, bi bool) (*statsAcc, error) {
	a := &statsAcc{b: b, cfg: cfg, acts: acts, bi: bi, s: torch.NewScope(), wide: torch.Float64}
	if b.dev.IsCUDA() {
		a.wide = torch.Float32
	}
	nl := len(cfg.Layers)
	a.mlp, a.head, a.norm1, a.norm2, a.cos = make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl)
	for l, lc := range cfg.Layers {
		if acts {
			a.mlp[l] = a.s.Zeros([]int64{int64(lc.MLP)}, torch.Float64, b.dev)
			a.head[l] = a.s.Zeros([]int64{int64(lc.Heads * lc.HeadDim)}, torch.Float64, b.dev)
			a.norm1[l] = a.s.Zeros([]int64{int64(cfg.Hidden)}, torch.Float64, b.dev)
			a.norm2[l] = a.s.Zeros([]int64{int64(cfg.Hidden)}, torch.Float64, b.dev)
		}
		if bi {
			a.cos[l] = a.s.Zeros([]int64{}, torch.Float64, b.dev)
		}
	}
	if err := a.s.Err(); err != nil {
		a.free()
		return nil, err
	}
	return a, nil
}

func (a *statsAcc) free() { a.s.Free() }

// add is a forward hook.
func (a *statsAcc) add(l int, x *acts) error {
	s := torch.NewScope()
	defer s.Free()
	absMeanSq := func(dst, v torch.Tensor) {
		mean := s.ToDType(s.Mean(s.ToDType(s.Abs(v), a.wide), false, 1), torch.Float64)
		s.AddInPlace(dst, s.Sum(s.Square(mean), false, 0))
	}
	if a.acts {
		absMeanSq(a.mlp[l], x.MLPAct)
		absMeanSq(a.head[l], x.AttnOut)
		absMeanSq(a.norm1[l], x.AttnNormOut)
		absMeanSq(a.norm2[l], x.MLPNormOut)
	}
	if a.bi {
		eps := 1e-150 // only a zero vector meets it: its cosine is 0
		if a.wide == torch.Float32 {
			eps = 1e-8
		}
		c := s.CosineSimilarity(s.ToDType(x.Input, a.wide), s.ToDType(x.Output, a.wide), -1, eps)
		s.AddInPlace(a.cos[l], s.Sum(s.ToDType(c, torch.Float64), false))
	}
	return s.Err()
}

// result copies the sums to the host and applies minitron.md's square
// roots and norms; BlockInfluence holds the summed cosines.
func (a *statsAcc) result() (*api.StatsResult, error) {
	cfg := a.cfg
	res := &api.StatsResult{}
	host := func(t torch.Tensor) []float64 {
		s := torch.NewScope()
		defer s.Free()
		v := s.Float64s(t)
		a.s.Fail(s.Err())
		return v
	}
	if a.acts {
		res.Hidden = make([]float64, cfg.Hidden)
		for l, lc := range cfg.Layers {
			res.MLP = append(res.MLP, sqrtAll(host(a.mlp[l])))
			ch := sqrtAll(host(a.head[l]))
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
			n1, n2 := host(a.norm1[l]), host(a.norm2[l])
			for c := range res.Hidden {
				res.Hidden[c] += math.Sqrt(n1[c]) + math.Sqrt(n2[c])
			}
		}
	}
	if a.bi {
		res.BlockInfluence = make([]float64, len(cfg.Layers))
		for l := range cfg.Layers {
			res.BlockInfluence[l] = host(a.cos[l])[0]
		}
	}
	return res, a.s.Err()
}

func sqrtAll(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Sqrt(x)
	}
	return out
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
