package engine

import (
	"fmt"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/blas"
	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

// ZeroGrad clears the accumulated gradients, an attached LoRA's included.
func (e *Engine) ZeroGrad() {
	if e.G != nil {
		clear(e.G.flat)
	}
	if e.lora != nil && e.lora.gOK {
		clear(e.lora.l.grad)
	}
}

// Backward propagates the gradient LossGrad left at the final norm through
// the decoder and adds every trainable parameter's gradient into G, so
// several micro-batches accumulate until ZeroGrad. Layers below the lowest
// trainable parameter are not visited.
func (e *Engine) Backward() error {
	if e.G == nil {
		return fmt.Errorf("engine: Backward on an inference engine")
	}
	if !e.gradOK {
		return fmt.Errorf("engine: Backward needs LossGrad after the last Forward")
	}
	e.gradOK = false
	defer clear(e.dlnf) // consumed: a later LossGrad starts from zero
	defer func() { e.aux = nil }()
	cfg := &e.P.Config
	n, d, nl := e.n, cfg.Hidden, len(cfg.Layers)
	lowest := e.lowestTrainable()
	dres := e.scratch.dres
	clear(dres)
	rmsnormBackward(e.threads, dres, e.gradOf(e.P.FinalNorm), e.dlnf, e.resid[nl], e.rstdf, e.normW(e.P.FinalNorm), n, d)
	for l := nl - 1; l >= 0 && l >= lowest; l-- {
		if e.skipped(l) {
			continue // the identity passes dres through
		}
		e.layerBackward(l, l > lowest)
	}
	if lowest < 0 {
		g := e.gradOf(e.P.Embed)
		// Each goroutine owns a band of columns and walks the rows in
		// order, so repeated tokens add up in a fixed order.
		const band = 64
		sc := e.embedScale()
		parallel.For(e.threads, (d+band-1)/band, func(lo, hi int) {
			c0, c1 := lo*band, min(d, hi*band)
			for r, id := range e.tokens[:n] {
				dst := g[int(id)*d+c0 : int(id)*d+c1]
				src := dres[r*d+c0 : r*d+c1]
				if sc != 1 {
					for i, v := range src {
						dst[i] += sc * v
					}
					continue
				}
				for i, v := range src {
					dst[i] += v
				}
			}
		})
	}
	return nil
}

// lowestTrainable is the lowest layer holding a trainable parameter (a
// LoRA adapter's included), or -1 when the embedding lookup needs its
// gradient.
func (e *Engine) lowestTrainable() int {
	cfg := &e.P.Config
	if e.gradOf(e.P.Embed) != nil {
		return -1
	}
	lowest := e.loraLowest()
	for l := range cfg.Layers[:lowest] {
		for _, name := range cfg.LayerTensors(l).All() {
			if !e.Frozen(name) {
				return l
			}
		}
	}
	return lowest
}

// layerBackward turns dres, the gradient at layer l's output, into the
// gradient at its input (when needInput) and adds the layer's parameter
// gradients.
func (e *Engine) layerBackward(l int, needInput bool) {
	p := &e.P.Layers[l]
	a := &e.acts[l]
	s := &e.scratch
	n, d := e.n, e.P.Config.Hidden
	hd, m := p.HeadDim, p.MLP
	qd, kvd := p.Heads*hd, p.KVHeads*hd
	th := e.threads
	dres := s.dres

	// MLP: out = mid + act·Wdownᵀ (post-normed with PostNorms),
	// act = silu(gate)·up or gelu(gate)·up, or a mixture of experts.
	dmo := dres // gradient at the MLP's output
	if p.MLPPostNorm != nil {
		dmo = s.dpost
		clear(dmo)
		rmsnormBackward(th, dmo, e.gradOf(p.MLPPostNorm), dres, a.dout, a.rstdpm, e.normW(p.MLPPostNorm), n, d)
	}
	dln := s.dln
	if p.MoE() {
		e.moeBackward(p, a.moe, a.ln2, dmo, dln, e.auxGrad(l))
	} else {
		dact, dgate, dup := s.dact[:n*m], s.dgate[:n*m], s.dup[:n*m]
		blas.SgemmThreads(th, false, false, n, m, d, 1, dmo, d, p.Down, m, 0, dact, m)
		e.weightGrad(p.Down, dmo, a.act, n, d, m)
		e.loraBackward(l, ir.RoleDown, dmo, a.act, dact, n)
		e.gluBackward(dgate, dup, dact, a.gate, a.up, n, m)
		blas.SgemmThreads(th, false, false, n, d, m, 1, dgate, m, p.Gate, d, 0, dln, d)
		blas.SgemmThreads(th, false, false, n, d, m, 1, dup, m, p.Up, d, 1, dln, d)
		e.weightGrad(p.Gate, dgate, a.ln2, n, m, d)
		e.weightGrad(p.Up, dup, a.ln2, n, m, d)
		e.loraBackward(l, ir.RoleGate, dgate, a.ln2, dln, n)
		e.loraBackward(l, ir.RoleUp, dup, a.ln2, dln, n)
	}
	rmsnormBackward(th, dres, e.gradOf(p.MLPNorm), dln, a.mid, a.rstd2, e.normW(p.MLPNorm), n, d)

	// Attention: mid = x + ao·Woᵀ (post-normed with PostNorms).
	dattn := dres // gradient at o_proj's output
	if p.AttnPostNorm != nil {
		dattn = s.dpost
		clear(dattn)
		rmsnormBackward(th, dattn, e.gradOf(p.AttnPostNorm), dres, a.oout, a.rstdpa, e.normW(p.AttnPostNorm), n, d)
	}
	dao, dq, dk, dv := s.dao[:n*qd], s.dq[:n*qd], s.dk[:n*kvd], s.dv[:n*kvd]
	blas.SgemmThreads(th, false, false, n, qd, d, 1, dattn, d, p.O, qd, 0, dao, qd)
	e.weightGrad(p.O, dattn, a.ao, n, d, qd)
	e.loraBackward(l, ir.RoleO, dattn, a.ao, dao, n)
	e.attentionBackward(p, a, dao, dq, dk, dv)
	tab := e.rope[l]
	parallel.For(th, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			pos := r % e.t
			c, sn := tab[pos*hd:pos*hd+hd/2], tab[pos*hd+hd/2:(pos+1)*hd]
			ropeRow(dq[r*qd:(r+1)*qd], hd, c, sn, true)
			ropeRow(dk[r*kvd:(r+1)*kvd], hd, c, sn, true)
		}
	})
	if p.QNorm != nil {
		// Back through the per-head norms to the projections' outputs.
		dqn, dkn := s.dqn[:n*qd], s.dkn[:n*kvd]
		clear(dqn)
		clear(dkn)
		rmsnormBackward(th, dqn, e.gradOf(p.QNorm), dq, a.qraw, a.rstdq, e.normW(p.QNorm), n*p.Heads, hd)
		rmsnormBackward(th, dkn, e.gradOf(p.KNorm), dk, a.kraw, a.rstdk, e.normW(p.KNorm), n*p.KVHeads, hd)
		dq, dk = dqn, dkn
	}
	e.biasGrad(p.QBias, dq, n)
	e.biasGrad(p.KBias, dk, n)
	e.biasGrad(p.VBias, dv, n)
	e.weightGrad(p.Q, dq, a.ln1, n, qd, d)
	e.weightGrad(p.K, dk, a.ln1, n, kvd, d)
	e.weightGrad(p.V, dv, a.ln1, n, kvd, d)
	gNorm := e.gradOf(p.AttnNorm)
	if !needInput && gNorm == nil {
		e.loraBackward(l, ir.RoleQ, dq, a.ln1, nil, n)
		e.loraBackward(l, ir.RoleK, dk, a.ln1, nil, n)
		e.loraBackward(l, ir.RoleV, dv, a.ln1, nil, n)
		return
	}
	blas.SgemmThreads(th, false, false, n, d, qd, 1, dq, qd, p.Q, d, 0, dln, d)
	blas.SgemmThreads(th, false, false, n, d, kvd, 1, dk, kvd, p.K, d, 1, dln, d)
	blas.SgemmThreads(th, false, false, n, d, kvd, 1, dv, kvd, p.V, d, 1, dln, d)
	e.loraBackward(l, ir.RoleQ, dq, a.ln1, dln, n)
	e.loraBackward(l, ir.RoleK, dk, a.ln1, dln, n)
	e.loraBackward(l, ir.RoleV, dv, a.ln1, dln, n)
	if needInput {
		rmsnormBackward(th, dres, gNorm, dln, e.resid[l], a.rstd1, e.normW(p.AttnNorm), n, d)
	} else {
		rmsnormBackward(th, nil, gNorm, dln, e.resid[l], a.rstd1, e.normW(p.AttnNorm), n, d)
	}
}

// siluGLUBackward sets dgate and dup from dact, the gradient at
// act = silu(gate)·up, for n rows of m.
func siluGLUBackward(threads int, dgate, dup, dact, gate, up []float32, n, m int) {
	parallel.For(threads, n, func(lo, hi int) {
		en := make([]float32, m)
		for r := lo; r < hi; r++ {
			o := r * m
			g, u := gate[o:o+m], up[o:o+m]
			da, dg, du := dact[o:o+m], dgate[o:o+m], dup[o:o+m]
			blas.ExpShifted(en, g, 0, -1)
			for i, gv := range g {
				// silu(g) = g·σ(g), silu'(g) = σ(g)·(1 + g·(1 − σ(g))).
				sg := 1 / (1 + en[i])
				du[i] = da[i] * gv * sg
				dg[i] = da[i] * u[i] * sg * (1 + gv*(1-sg))
			}
		}
	})
}

// biasGrad adds the column sums of dy [n, len(b)] to b's gradient, unless
// b is absent or frozen.
func (e *Engine) biasGrad(b, dy []float32, n int) {
	if b == nil {
		return
	}
	g := e.gradOf(b)
	if g == nil {
		return
	}
	w := len(b)
	columnSums(e.threads, g, n, w, func(r int, acc []float64, c0 int) {
		for i, v := range dy[r*w+c0 : r*w+c0+len(acc)] {
			acc[i] += float64(v)
		}
	})
}

// weightGrad adds dyᵀ·x to the gradient of W [out, in] for dy [n, out]
// and x [n, in], unless W is frozen.
func (e *Engine) weightGrad(w, dy, x []float32, n, out, in int) {
	g := e.gradOf(w)
	if g == nil {
		return
	}
	blas.SgemmThreads(e.threads, true, false, out, in, n, 1, dy, out, x, in, 1, g, in)
}
