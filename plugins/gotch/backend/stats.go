package backend

import (
	"context"
	"fmt"
	"math"

	api "github.com/whittle-ml/whittle/core/backend"
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
	d, err := openSequences(req.Data, cfg.Vocab, cfg.MaxSeq)
	if err != nil {
		return nil, err
	}
	defer d.close()

	// Accumulators live on the device, in float64, for the whole pass.
	acc := torch.NewScope()
	defer acc.Free()
	nl := len(cfg.Layers)
	mlp, head, norm1, norm2 := make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl)
	cos := make([]torch.Tensor, nl)
	for l, lc := range cfg.Layers {
		if req.Activations {
			mlp[l] = acc.Zeros([]int64{int64(lc.MLP)}, torch.Float64, b.dev)
			head[l] = acc.Zeros([]int64{int64(lc.Heads * lc.HeadDim)}, torch.Float64, b.dev)
			norm1[l] = acc.Zeros([]int64{int64(cfg.Hidden)}, torch.Float64, b.dev)
			norm2[l] = acc.Zeros([]int64{int64(cfg.Hidden)}, torch.Float64, b.dev)
		}
		if req.BlockInfluence {
			cos[l] = acc.Zeros([]int64{}, torch.Float64, b.dev)
		}
	}
	if err := acc.Err(); err != nil {
		return nil, err
	}
	// absMeanSq adds Σ_b (mean_s |a[b,s,c]|)² into dst.
	absMeanSq := func(s *torch.Scope, dst, a torch.Tensor) {
		mean := s.Mean(s.ToDType(s.Abs(a), torch.Float64), false, 1)
		s.AddInPlace(dst, s.Sum(s.Square(mean), false, 0))
	}
	hook := func(l int, a *acts) error {
		s := torch.NewScope()
		defer s.Free()
		if req.Activations {
			absMeanSq(s, mlp[l], a.MLPAct)
			absMeanSq(s, head[l], a.AttnOut)
			absMeanSq(s, norm1[l], a.AttnNormOut)
			absMeanSq(s, norm2[l], a.MLPNormOut)
		}
		if req.BlockInfluence {
			c := s.CosineSimilarity(s.ToDType(a.Input, torch.Float64), s.ToDType(a.Output, torch.Float64), -1, 1e-150)
			s.AddInPlace(cos[l], s.Sum(c, false))
		}
		return s.Err()
	}
	for start := 0; start < d.rows; start += bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(bs, d.rows-start)
		tokens, _, err := d.batch(start, n)
		if err != nil {
			return nil, err
		}
		s := torch.NewScope()
		x := s.To(s.FromInt64(tokens, int64(n), int64(d.cols)), b.dev)
		if err := s.Err(); err == nil {
			_, err = b.forward(s, m, x, n, d.cols, fwdOpts{hook: hook})
		}
		err = firstErr(err, s.Err())
		s.Free()
		if err != nil {
			return nil, fmt.Errorf("%s rows %d–%d: %w", d.path, start, start+n-1, err)
		}
	}

	res := &api.StatsResult{Sequences: d.rows, Tokens: d.rows * d.cols}
	host := func(t torch.Tensor) []float64 {
		s := torch.NewScope()
		defer s.Free()
		v := s.Float64s(t)
		acc.Fail(s.Err())
		return v
	}
	if req.Activations {
		res.Hidden = make([]float64, cfg.Hidden)
		for l, lc := range cfg.Layers {
			res.MLP = append(res.MLP, sqrtAll(host(mlp[l])))
			ch := sqrtAll(host(head[l]))
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
			n1, n2 := host(norm1[l]), host(norm2[l])
			for c := range res.Hidden {
				res.Hidden[c] += math.Sqrt(n1[c]) + math.Sqrt(n2[c])
			}
		}
	}
	if req.BlockInfluence {
		res.BlockInfluence = make([]float64, nl)
		for l := range cfg.Layers {
			res.BlockInfluence[l] = 1 - host(cos[l])[0]/float64(res.Tokens)
		}
	}
	if err := acc.Err(); err != nil {
		return nil, err
	}
	return res, nil
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
