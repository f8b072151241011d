package bench

import (
	"math"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

// Stats are the Minitron activation statistics the importance workload
// accumulates per layer, as the peer does: for an activation a[b, s, c],
// acc[c] += Σ_b ((1/S) Σ_s |a[b,s,c]|)².
type Stats struct {
	// Emb sums both input norms' outputs of the layer [hidden].
	Emb [][]float64
	// Head is over the attention output, the input of o_proj [heads·head_dim].
	Head [][]float64
	// Neuron is over silu(gate)·up, the input of down_proj [mlp].
	Neuron [][]float64
	// Expert is, in a mixture-of-experts layer, each expert's neurons
	// [experts][expert_mlp], a sequence's mean over its tokens routed to
	// the expert.
	Expert [][][]float64
}

// NewStats allocates zeroed accumulators for cfg.
func NewStats(cfg *ir.Config) *Stats {
	s := &Stats{}
	for _, lc := range cfg.Layers {
		s.Emb = append(s.Emb, make([]float64, cfg.Hidden))
		s.Head = append(s.Head, make([]float64, lc.Heads*lc.HeadDim))
		s.Neuron = append(s.Neuron, make([]float64, lc.MLP))
		var ex [][]float64
		for range lc.Experts {
			ex = append(ex, make([]float64, lc.ExpertMLP))
		}
		s.Expert = append(s.Expert, ex)
	}
	return s
}

// Add accumulates layer l's activations of a batch of b sequences of t
// tokens.
func (s *Stats) Add(l int, a *engine.Activations, b, t, threads int) {
	accumulate(s.Emb[l], a.AttnNormOut, b, t, threads)
	accumulate(s.Head[l], a.AttnOut, b, t, threads)
	accumulate(s.Emb[l], a.MLPNormOut, b, t, threads)
	accumulate(s.Neuron[l], a.MLPAct, b, t, threads)
	if m := a.MoE; m != nil {
		// Experts on their own goroutines; within one, the grouped rows
		// are in row order, so each sequence is a contiguous run.
		parallel.For(threads, m.Experts, func(lo, hi int) {
			for e := lo; e < hi; e++ {
				acc := s.Expert[l][e]
				w := len(acc)
				sum := make([]float64, w)
				for j := m.Offsets[e]; j < m.Offsets[e+1]; {
					seq, k := int(m.Rows[j])/t, j
					clear(sum)
					for ; k < m.Offsets[e+1] && int(m.Rows[k])/t == seq; k++ {
						for i, v := range m.Act[k*w : (k+1)*w] {
							sum[i] += math.Abs(float64(v))
						}
					}
					for i, v := range sum {
						mean := v / float64(k-j)
						acc[i] += mean * mean
					}
					j = k
				}
			}
		})
	}
}

// accumulate adds Σ_b (mean_s |x[b,s,c]|)² to acc[c] for x [b·t, len(acc)].
// Goroutines take whole sequences (contiguous rows) and leave each one's
// means in a buffer that is then added in sequence order, so the sums do
// not depend on the thread count.
func accumulate(acc []float64, x []float32, b, t, threads int) {
	w := len(acc)
	means := make([]float64, b*w)
	parallel.For(threads, b, func(lo, hi int) {
		for seq := lo; seq < hi; seq++ {
			s := means[seq*w : (seq+1)*w]
			for r := seq * t; r < (seq+1)*t; r++ {
				row := x[r*w : (r+1)*w]
				s := s[:len(row)]
				for j, v := range row {
					// math.Abs is a mask, not a branch on random signs.
					s[j] += math.Abs(float64(v))
				}
			}
		}
	})
	for seq := range b {
		for j, v := range means[seq*w : (seq+1)*w] {
			m := v / float64(t)
			acc[j] += m * m
		}
	}
}
