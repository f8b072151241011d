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
	// Mixture-of-experts layers: expert [experts, expert_mlp] like mlp
	// per expert, prob and out [experts] the sums of router probabilities
	// and of weighted output norms, tokens the routed token counts,
	// shared like mlp for the shared expert.
	expert, prob, out, shared []torch.Tensor
	tokens                    [][]int
}

func (b *Backend) newStatsAcc(cfg *ir.Config, acts, bi bool) (*statsAcc, error) {
	a := &statsAcc{b: b, cfg: cfg, acts: acts, bi: bi, s: torch.NewScope(), wide: torch.Float64}
	if b.dev.IsCUDA() {
		a.wide = torch.Float32
	}
	nl := len(cfg.Layers)
	a.mlp, a.head, a.norm1, a.norm2, a.cos = make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl)
	a.expert, a.prob, a.out, a.shared, a.tokens = make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([]torch.Tensor, nl), make([][]int, nl)
	for l, lc := range cfg.Layers {
		if acts && lc.MoE() {
			e := int64(lc.Experts)
			a.expert[l] = a.s.Zeros([]int64{e, int64(lc.ExpertMLP)}, torch.Float64, b.dev)
			a.prob[l] = a.s.Zeros([]int64{e}, torch.Float64, b.dev)
			a.out[l] = a.s.Zeros([]int64{e}, torch.Float64, b.dev)
			a.tokens[l] = make([]int, lc.Experts)
			if lc.SharedMLP > 0 {
				a.shared[l] = a.s.Zeros([]int64{int64(lc.SharedMLP)}, torch.Float64, b.dev)
			}
		} else if acts {
			a.mlp[l] = a.s.Zeros([]int64{int64(lc.MLP)}, torch.Float64, b.dev)
		}
		if acts {
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
	if a.acts && x.MoE != nil {
		a.addMoE(s, l, x)
		if x.MoE.sharedAct.Defined() {
			shape := x.Input.Shape()
			absMeanSq(a.shared[l], s.View(x.MoE.sharedAct, shape[0], shape[1], -1))
		}
	} else if a.acts {
		absMeanSq(a.mlp[l], x.MLPAct)
	}
	if a.acts {
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

// addMoE accumulates a mixture-of-experts layer's statistics: for each
// expert the per-sequence means of |activation| over the sequence's
// tokens routed to it (sequences with none add nothing), the router
// probabilities, the norms of the weighted outputs and the token counts.
func (a *statsAcc) addMoE(s *torch.Scope, l int, x *acts) {
	mo := x.MoE
	r := mo.route
	shape := x.Input.Shape()
	nb, T := shape[0], shape[1]
	E := int64(r.experts)
	// Assignment i of expert e, token n, goes to bucket (n/T)·E + e.
	bucket, expert := make([]int64, len(r.rows)), make([]int64, len(r.rows))
	counts := make([]float64, nb*E)
	for e := range r.experts {
		a.tokens[l][e] += r.count(e)
		for i := r.off[e]; i < r.off[e+1]; i++ {
			bucket[i], expert[i] = r.rows[i]/T*E+int64(e), int64(e)
			counts[bucket[i]]++
		}
	}
	for i := range counts {
		counts[i] = max(counts[i], 1) // empty buckets hold zero sums
	}
	dev := a.b.dev
	idx := func(v []int64) torch.Tensor { return s.To(s.FromInt64(v, int64(len(v))), dev) }
	F := mo.act.Shape()[1]
	sums := s.IndexAdd(s.Zeros([]int64{nb * E, F}, a.wide, dev), 0, idx(bucket), s.ToDType(s.Abs(mo.act), a.wide))
	cnt := s.To(s.ToDType(s.FromFloat32(float32s(counts), nb*E, 1), a.wide), dev)
	mean := s.ToDType(s.View(s.Div(sums, cnt), nb, E, F), torch.Float64)
	s.AddInPlace(a.expert[l], s.Sum(s.Square(mean), false, 0))
	s.AddInPlace(a.prob[l], s.Sum(s.ToDType(mo.probs, torch.Float64), false, 0))
	norms := s.Sqrt(s.Sum(s.Square(s.ToDType(mo.out, a.wide)), false, -1))
	s.AddInPlace(a.out[l], s.ToDType(s.IndexAdd(s.Zeros([]int64{E}, a.wide, dev), 0, idx(expert), norms), torch.Float64))
}

func float32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
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
		if hasMoE(cfg) {
			nl := len(cfg.Layers)
			res.ExpertMLP, res.ExpertProb, res.ExpertOutput, res.ExpertTokens, res.SharedMLP = make([][][]float64, nl), make([][]float64, nl), make([][]float64, nl), make([][]int, nl), make([][]float64, nl)
		}
		for l, lc := range cfg.Layers {
			if lc.MoE() {
				res.MLP = append(res.MLP, nil)
				flat := sqrtAll(host(a.expert[l]))
				for e := range lc.Experts {
					res.ExpertMLP[l] = append(res.ExpertMLP[l], flat[e*lc.ExpertMLP:(e+1)*lc.ExpertMLP])
				}
				res.ExpertProb[l], res.ExpertOutput[l], res.ExpertTokens[l] = host(a.prob[l]), host(a.out[l]), a.tokens[l]
				if a.shared[l].Defined() {
					res.SharedMLP[l] = sqrtAll(host(a.shared[l]))
				}
			} else {
				res.MLP = append(res.MLP, sqrtAll(host(a.mlp[l])))
			}
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
