package engine

import (
	"math"
	"sort"

	"github.com/whittle-ml/whittle/ir"
)

// ref64 is an independent float64 implementation of the model and the
// losses, written as plainly as possible (no shared code with the engine),
// used for finite differences.
type ref64 struct {
	cfg ir.Config
	w   map[string][]float64
}

func newRef64(p *Params) *ref64 {
	r := &ref64{cfg: p.Config.Clone(), w: map[string][]float64{}}
	for _, t := range p.Tensors() {
		v := make([]float64, len(t.Data))
		for i, x := range t.Data {
			v[i] = float64(x)
		}
		r.w[t.Name] = v
	}
	if r.cfg.Tied {
		r.w[ir.NameClassifier] = r.w[ir.NameEmbed]
	}
	return r
}

func matvec64(w, x []float64, out int) []float64 {
	in := len(x)
	y := make([]float64, out)
	for i := range y {
		for j := 0; j < in; j++ {
			y[i] += w[i*in+j] * x[j]
		}
	}
	return y
}

func rmsnorm64(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	inv := 1 / math.Sqrt(ss/float64(len(x))+eps)
	out := make([]float64, len(x))
	for i := range x {
		out[i] = w[i] * x[i] * inv
	}
	return out
}

func rope64(v []float64, hd, pos int, inv []float64) {
	half := hd / 2
	for h := 0; h < len(v)/hd; h++ {
		for i := 0; i < half; i++ {
			a, b := v[h*hd+i], v[h*hd+i+half]
			c, s := math.Cos(float64(pos)*inv[i]), math.Sin(float64(pos)*inv[i])
			v[h*hd+i] = a*c - b*s
			v[h*hd+i+half] = a*s + b*c
		}
	}
}

// logits returns the [B·T][V] logits of a batch.
func (r *ref64) logits(tokens []int32, bsz, t int) [][]float64 {
	c := &r.cfg
	d := c.Hidden
	out := make([][]float64, 0, bsz*t)
	for b := 0; b < bsz; b++ {
		xs := make([][]float64, t)
		for p := 0; p < t; p++ {
			id := int(tokens[b*t+p])
			xs[p] = append([]float64(nil), r.w[ir.NameEmbed][id*d:(id+1)*d]...)
		}
		for l, lc := range c.Layers {
			w := func(role string) []float64 { return r.w[ir.LayerName(l, role)] }
			hd := lc.HeadDim
			inv := c.RopeInvFreq(hd)
			qs, ks, vs := make([][]float64, t), make([][]float64, t), make([][]float64, t)
			for p := 0; p < t; p++ {
				h := rmsnorm64(xs[p], w(ir.RoleAttnNorm), c.NormEps)
				qs[p] = matvec64(w(ir.RoleQ), h, lc.Heads*hd)
				ks[p] = matvec64(w(ir.RoleK), h, lc.KVHeads*hd)
				vs[p] = matvec64(w(ir.RoleV), h, lc.KVHeads*hd)
				rope64(qs[p], hd, p, inv)
				rope64(ks[p], hd, p, inv)
			}
			for p := 0; p < t; p++ {
				att := make([]float64, lc.Heads*hd)
				for h := 0; h < lc.Heads; h++ {
					g := h / (lc.Heads / lc.KVHeads)
					sc := make([]float64, p+1)
					m := math.Inf(-1)
					for j := 0; j <= p; j++ {
						for i := 0; i < hd; i++ {
							sc[j] += qs[p][h*hd+i] * ks[j][g*hd+i]
						}
						sc[j] /= math.Sqrt(float64(hd))
						m = math.Max(m, sc[j])
					}
					var sum float64
					for j := range sc {
						sc[j] = math.Exp(sc[j] - m)
						sum += sc[j]
					}
					for j := range sc {
						for i := 0; i < hd; i++ {
							att[h*hd+i] += sc[j] / sum * vs[j][g*hd+i]
						}
					}
				}
				o := matvec64(w(ir.RoleO), att, d)
				for i := range o {
					xs[p][i] += o[i]
				}
				h := rmsnorm64(xs[p], w(ir.RoleMLPNorm), c.NormEps)
				gt := matvec64(w(ir.RoleGate), h, lc.MLP)
				up := matvec64(w(ir.RoleUp), h, lc.MLP)
				for i := range gt {
					gt[i] = gt[i] / (1 + math.Exp(-gt[i])) * up[i]
				}
				o = matvec64(w(ir.RoleDown), gt, d)
				for i := range o {
					xs[p][i] += o[i]
				}
			}
		}
		for p := 0; p < t; p++ {
			h := rmsnorm64(xs[p], r.w[ir.NameFinalNorm], c.NormEps)
			out = append(out, matvec64(r.w[ir.NameClassifier], h, c.Vocab))
		}
	}
	return out
}

func logSoftmax64(z []float64, tau float64) []float64 {
	m := math.Inf(-1)
	for _, v := range z {
		m = math.Max(m, v/tau)
	}
	var s float64
	for _, v := range z {
		s += math.Exp(v/tau - m)
	}
	out := make([]float64, len(z))
	for i, v := range z {
		out[i] = v/tau - m - math.Log(s)
	}
	return out
}

// loss64 is the objective as documented on Objective and Targets.
func loss64(logits, teacher [][]float64, tg Targets, obj Objective) float64 {
	tau := obj.Temperature
	if tau == 0 {
		tau = 1
	}
	s := 1.0
	if obj.ScaleT2 {
		s = tau * tau
	}
	var num, den float64
	for r, z := range logits {
		w := 1.0
		if tg.Weights != nil {
			w = float64(tg.Weights[r])
		}
		if (tg.IDs != nil && tg.IDs[r] < 0) || w <= 0 {
			continue
		}
		den += w
		var row float64
		if obj.KLWeight < 1 {
			row += (1 - obj.KLWeight) * -logSoftmax64(z, 1)[tg.IDs[r]]
		}
		if obj.KLWeight > 0 {
			zt := teacher[r]
			ids := make([]int, len(zt))
			for i := range ids {
				ids[i] = i
			}
			if obj.TopK > 0 && obj.TopK < len(zt) {
				sort.SliceStable(ids, func(a, b int) bool { return zt[ids[a]] > zt[ids[b]] })
				ids = ids[:obj.TopK]
			}
			sub := make([]float64, len(ids))
			for j, id := range ids {
				sub[j] = zt[id]
			}
			lq := logSoftmax64(sub, tau)
			lp := logSoftmax64(z, tau)
			var kl float64
			for j, id := range ids {
				kl += math.Exp(lq[j]) * (lq[j] - lp[id])
			}
			row += obj.KLWeight * s * kl
		}
		num += w * row
	}
	return num / den
}
