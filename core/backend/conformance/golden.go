package conformance

import (
	"math"
	"slices"

	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
)

// golden is the ground truth every check compares a backend with: the
// independent float64 decoder, with the model's own weights widened.
type golden = decoder64.Model

func newGolden(m *ir.Model) (*golden, error) { return decoder64.Load(m) }

// logSoftmax of z/tau.
func logSoftmax(z []float64, tau float64) []float64 {
	mx := math.Inf(-1)
	for _, v := range z {
		mx = math.Max(mx, v/tau)
	}
	var s float64
	for _, v := range z {
		s += math.Exp(v/tau - mx)
	}
	lse := mx + math.Log(s)
	out := make([]float64, len(z))
	for i, v := range z {
		out[i] = v/tau - lse
	}
	return out
}

// objective is the training loss of backend.TrainRequest, per row:
// (1−α)·CE + α·s·KL(p_teacher^τ ‖ p_student^τ), teacher optionally cut to
// its top k and renormalized.
type objective struct {
	alpha, tau float64
	scaleT2    bool
	topK       int
	// routerAux weighs the routers' balancing loss (routerAux).
	routerAux float64
}

// rowTerms returns a row's cross-entropy and KL terms.
func (o objective) rowTerms(z, zt []float64, target int) (ce, kl float64) {
	ce = -logSoftmax(z, 1)[target]
	if zt == nil {
		return ce, 0
	}
	tau := o.tau
	if tau == 0 {
		tau = 1
	}
	lq := logSoftmax(z, tau)
	ids := make([]int, len(zt))
	for i := range ids {
		ids[i] = i
	}
	if o.topK > 0 && o.topK < len(zt) {
		slices.SortStableFunc(ids, func(a, b int) int {
			switch {
			case zt[a] > zt[b]:
				return -1
			case zt[a] < zt[b]:
				return 1
			}
			return 0
		})
		ids = ids[:o.topK]
	}
	sub := make([]float64, len(ids))
	for i, id := range ids {
		sub[i] = zt[id]
	}
	lp := logSoftmax(sub, tau)
	for i, id := range ids {
		kl += math.Exp(lp[i]) * (lp[i] - lq[id])
	}
	return ce, kl
}

// batchLoss is the objective's mean over the scored rows of sequences
// (targets −1 unscored) given the student's and teacher's logits.
func (o objective) batchLoss(z, zt [][][]float64, targets [][]int) (loss, ce, kl float64, rows int) {
	for s := range z {
		for t, tg := range targets[s] {
			if tg < 0 {
				continue
			}
			var tl []float64
			if zt != nil {
				tl = zt[s][t]
			}
			c, k := o.rowTerms(z[s][t], tl, tg)
			ce += c
			kl += k
			rows++
		}
	}
	if rows == 0 {
		return 0, 0, 0, 0
	}
	ce /= float64(rows)
	kl /= float64(rows)
	st := 1.0
	if o.scaleT2 {
		tau := o.tau
		if tau == 0 {
			tau = 1
		}
		st = tau * tau
	}
	if zt == nil {
		return ce, ce, 0, rows
	}
	return (1-o.alpha)*ce + o.alpha*st*kl, ce, kl, rows
}
