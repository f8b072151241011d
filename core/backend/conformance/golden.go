package conformance

import (
	"fmt"
	"math"
	"slices"

	"github.com/whittle-ml/whittle/ir"
)

// golden is an independent float64 implementation of the decoder, written
// for clarity one position at a time: the ground truth every check compares
// a backend with. Weights are the model's own values widened to float64.
type golden struct {
	cfg ir.Config
	w   map[string][]float64
	inv [][]float64 // per layer: RoPE inverse frequencies
}

func newGolden(m *ir.Model) (*golden, error) {
	g := &golden{cfg: m.Config.Clone(), w: map[string][]float64{}}
	for _, name := range m.TensorNames() {
		t, err := m.Tensor(name)
		if err != nil {
			return nil, err
		}
		v, err := t.Float32()
		if err != nil {
			return nil, fmt.Errorf("golden: tensor %s: %w", name, err)
		}
		w := make([]float64, len(v))
		for i, x := range v {
			w[i] = float64(x)
		}
		g.w[name] = w
	}
	for _, lc := range g.cfg.Layers {
		g.inv = append(g.inv, g.cfg.RopeInvFreq(lc.HeadDim))
	}
	return g, nil
}

// clone copies the weights (for finite differences that perturb them).
func (g *golden) clone() *golden {
	c := &golden{cfg: g.cfg, w: map[string][]float64{}, inv: g.inv}
	for k, v := range g.w {
		c.w[k] = slices.Clone(v)
	}
	return c
}

func (g *golden) classifier() []float64 {
	if g.cfg.Tied {
		return g.w[ir.NameEmbed]
	}
	return g.w[ir.NameClassifier]
}

// layerActs are one layer's activations, per position.
type layerActs struct {
	in, attnNormOut, attnOut, mlpNormOut, mlpAct, out [][]float64
}

// forward returns the logits after every position of tokens; with acts
// non-nil it also records each computed layer's activations.
func (g *golden) forward(tokens []int, skip map[int]bool, acts []layerActs) [][]float64 {
	cfg := &g.cfg
	d := cfg.Hidden
	T := len(tokens)
	emb := g.w[ir.NameEmbed]
	x := make([][]float64, T)
	for t, id := range tokens {
		x[t] = slices.Clone(emb[id*d : (id+1)*d])
	}
	for l, lc := range cfg.Layers {
		if skip[l] {
			continue
		}
		name := func(role string) string { return ir.LayerName(l, role) }
		hd, H, KV := lc.HeadDim, lc.Heads, lc.KVHeads
		var rec *layerActs
		if acts != nil {
			rec = &acts[l]
			rec.in = cloneRows(x)
		}
		h := make([][]float64, T)
		q := make([][]float64, T)
		k := make([][]float64, T)
		v := make([][]float64, T)
		for t := range x {
			h[t] = rmsNorm(x[t], g.w[name(ir.RoleAttnNorm)], cfg.NormEps)
			q[t] = matVec(g.w[name(ir.RoleQ)], h[t], H*hd)
			k[t] = matVec(g.w[name(ir.RoleK)], h[t], KV*hd)
			v[t] = matVec(g.w[name(ir.RoleV)], h[t], KV*hd)
			rope(q[t], hd, t, g.inv[l])
			rope(k[t], hd, t, g.inv[l])
		}
		a := make([][]float64, T)
		scale := 1 / math.Sqrt(float64(hd))
		group := H / KV
		for t := range x {
			a[t] = make([]float64, H*hd)
			for hh := 0; hh < H; hh++ {
				kvh := hh / group
				qv := q[t][hh*hd : (hh+1)*hd]
				sc := make([]float64, t+1)
				mx := math.Inf(-1)
				for j := 0; j <= t; j++ {
					sc[j] = dot(qv, k[j][kvh*hd:(kvh+1)*hd]) * scale
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				out := a[t][hh*hd : (hh+1)*hd]
				for j := range sc {
					p := sc[j] / sum
					for i := range out {
						out[i] += p * v[j][kvh*hd+i]
					}
				}
			}
		}
		h2 := make([][]float64, T)
		mact := make([][]float64, T)
		for t := range x {
			o := matVec(g.w[name(ir.RoleO)], a[t], d)
			for i := range x[t] {
				x[t][i] += o[i]
			}
			h2[t] = rmsNorm(x[t], g.w[name(ir.RoleMLPNorm)], cfg.NormEps)
			gate := matVec(g.w[name(ir.RoleGate)], h2[t], lc.MLP)
			up := matVec(g.w[name(ir.RoleUp)], h2[t], lc.MLP)
			mact[t] = make([]float64, lc.MLP)
			for i := range gate {
				mact[t][i] = gate[i] / (1 + math.Exp(-gate[i])) * up[i]
			}
			dn := matVec(g.w[name(ir.RoleDown)], mact[t], d)
			for i := range x[t] {
				x[t][i] += dn[i]
			}
		}
		if rec != nil {
			rec.attnNormOut, rec.attnOut, rec.mlpNormOut, rec.mlpAct = h, a, h2, mact
			rec.out = cloneRows(x)
		}
	}
	cls := g.classifier()
	logits := make([][]float64, T)
	for t := range x {
		logits[t] = matVec(cls, rmsNorm(x[t], g.w[ir.NameFinalNorm], cfg.NormEps), cfg.Vocab)
	}
	return logits
}

func cloneRows(x [][]float64) [][]float64 {
	out := make([][]float64, len(x))
	for i, r := range x {
		out[i] = slices.Clone(r)
	}
	return out
}

func rmsNorm(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = v * r * w[i]
	}
	return out
}

// matVec is W·x for W [rows, len(x)] row-major.
func matVec(w, x []float64, rows int) []float64 {
	n := len(x)
	out := make([]float64, rows)
	for r := range out {
		out[r] = dot(w[r*n:(r+1)*n], x)
	}
	return out
}

func dot(a, b []float64) float64 {
	var s float64
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

// rope rotates each head of v in Hugging Face's half order: dimension i
// pairs with i + hd/2.
func rope(v []float64, hd, pos int, inv []float64) {
	half := hd / 2
	for h := 0; h < len(v)/hd; h++ {
		x := v[h*hd : (h+1)*hd]
		for i := 0; i < half; i++ {
			c, s := math.Cos(float64(pos)*inv[i]), math.Sin(float64(pos)*inv[i])
			a, b := x[i], x[i+half]
			x[i], x[i+half] = a*c-b*s, b*c+a*s
		}
	}
}

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
