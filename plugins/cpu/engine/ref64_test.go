package engine

import (
	"math"
	"sort"

	"github.com/whittle-ml/whittle/internal/decoder64"
)

// ref64 is the independent float64 decoder (package decoder64) with the
// weights of engine parameters, used for finite differences; the losses
// below are written as plainly as possible, sharing no code with the
// engine.
type ref64 struct{ *decoder64.Model }

func newRef64(p *Params) *ref64 {
	w := map[string][]float64{}
	for _, t := range p.Tensors() {
		v := make([]float64, len(t.Data))
		for i, x := range t.Data {
			v[i] = float64(x)
		}
		w[t.Name] = v
	}
	return &ref64{decoder64.New(p.Config, w)}
}

// logits returns the [B·T][V] logits of a batch.
func (r *ref64) logits(tokens []int32, bsz, t int) [][]float64 {
	out := make([][]float64, 0, bsz*t)
	for b := 0; b < bsz; b++ {
		row := make([]int, t)
		for p := range row {
			row[p] = int(tokens[b*t+p])
		}
		out = append(out, r.Forward(row, nil, nil)...)
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
