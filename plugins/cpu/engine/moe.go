package engine

import (
	"math"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/blas"
	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

// A mixture-of-experts MLP (ir/graph's MoEAttrs) over the MLP norm's
// output x [N, hidden]:
//
//	p = softmax(x·Routerᵀ)                       over all experts
//	S = the TopK largest p (ties: lower expert index), by p descending
//	w_k = p_k / Σ_S p  (NormTopK)  or  p_k
//	out = Σ_k w_k·expert_k(x) + σ(x·SharedExpertGateᵀ)·shared(x)
//
// with experts gated MLPs of the config's activation. Tokens are grouped
// per expert: the rows routed to expert e are gathered into one block, its
// three GEMMs run on that block, and the weighted outputs are added back
// row by row in slot order, so no expert sees a token it was not chosen
// for and every sum has a fixed order whatever the thread count.

// moeActs is a MoE layer's forward state. Grouped arrays hold the routed
// (token, slot) pairs expert by expert, each expert's pairs in row order.
type moeActs struct {
	probs []float32 // [N, E] router probabilities
	sel   []int32   // [N, K] chosen experts, by probability descending
	wts   []float32 // [N, K] routing weights
	off   []int     // [E+1] where each expert's pairs start
	pos   []int32   // [N·K] grouped position of pair (row, slot)
	rows  []int32   // [N·K] row of each grouped position
	xg    []float32 // [N·K, hidden] gathered inputs
	// gate, up, act [N·K, expert_mlp] and the unweighted expert outputs yg
	// [N·K, hidden].
	gate, up, act, yg []float32
	// The shared expert: its gate, up, act [N, shared], its output before
	// the sigmoid gate [N, hidden] and the gate σ [N].
	sgate, sup, sact, sout, sg []float32
}

// newMoEActs allocates MoE buffers for n rows of width d: e experts, k
// per token, m neurons each, s shared neurons.
func newMoEActs(n, d, e, k, m, s int) *moeActs {
	nk := n * k
	a := &moeActs{
		probs: make([]float32, n*e), sel: make([]int32, nk), wts: make([]float32, nk),
		off: make([]int, e+1), pos: make([]int32, nk), rows: make([]int32, nk),
		xg: make([]float32, nk*d), gate: make([]float32, nk*m), up: make([]float32, nk*m),
		act: make([]float32, nk*m), yg: make([]float32, nk*d),
	}
	if s > 0 {
		a.sgate, a.sup, a.sact = make([]float32, n*s), make([]float32, n*s), make([]float32, n*s)
		a.sout, a.sg = make([]float32, n*d), make([]float32, n)
	}
	return a
}

// moeSizes are the widest MoE buffers any layer needs: experts, experts
// per token, expert and shared widths.
func moeSizes(cfg *ir.Config) (e, k, m, s int) {
	for _, lc := range cfg.Layers {
		if lc.MoE() {
			e, k, m, s = max(e, lc.Experts), cfg.ExpertsPerToken, max(m, lc.ExpertMLP), max(s, lc.SharedMLP)
		}
	}
	return
}

// routeSums are a MoE layer's routing totals over the batch, which the
// balancing loss reads (inference engines share one layer's buffers).
type routeSums struct {
	count []float64 // pairs routed to each expert
	prob  []float64 // Σ over rows of each expert's probability
}

// route computes the router probabilities, each row's experts and
// weights, and groups the pairs per expert.
func (e *Engine) route(l int, p *Layer, a *moeActs, x []float32) {
	cfg := &e.P.Config
	n, d, ne, k := e.n, cfg.Hidden, p.Experts, cfg.ExpertsPerToken
	probs := a.probs[:n*ne]
	e.linear(probs, x, p.Router, n, ne, d, 0)
	parallel.For(e.threads, n, func(lo, hi int) {
		pr := make([]float64, ne)
		for r := lo; r < hi; r++ {
			row := probs[r*ne : (r+1)*ne]
			m := math.Inf(-1)
			for _, v := range row {
				m = math.Max(m, float64(v))
			}
			var sum float64
			for i, v := range row {
				pr[i] = math.Exp(float64(v) - m)
				sum += pr[i]
			}
			for i := range pr {
				pr[i] /= sum
				row[i] = float32(pr[i])
			}
			sel, w := a.sel[r*k:(r+1)*k], a.wts[r*k:(r+1)*k]
			topExperts(pr, sel)
			var tot float64
			for _, id := range sel {
				tot += pr[id]
			}
			for j, id := range sel {
				v := pr[id]
				if cfg.NormTopK {
					v /= tot
				}
				w[j] = float32(v)
			}
		}
	})
	// Counting sort of the pairs by expert, rows in order within each.
	off := a.off[:ne+1]
	clear(off)
	for _, id := range a.sel[:n*k] {
		off[id+1]++
	}
	for i := 1; i <= ne; i++ {
		off[i] += off[i-1]
	}
	next := append([]int(nil), off[:ne]...)
	for i, id := range a.sel[:n*k] {
		j := next[id]
		next[id]++
		a.pos[i] = int32(j)
		a.rows[j] = int32(i / k)
	}
	if e.routed == nil {
		e.routed = make([]routeSums, len(e.P.Layers))
	}
	rs := &e.routed[l]
	rs.count, rs.prob = make([]float64, ne), make([]float64, ne)
	for i := range rs.count {
		rs.count[i] = float64(off[i+1] - off[i])
	}
	// Column sums in row order: independent of the thread count.
	for r := 0; r < n; r++ {
		for i, v := range probs[r*ne : (r+1)*ne] {
			rs.prob[i] += float64(v)
		}
	}
}

// topExperts writes the indices of the len(sel) largest probabilities
// into sel, largest first; of equal probabilities the lower index wins.
func topExperts(p []float64, sel []int32) {
	for j := range sel {
		best := -1
		for i, v := range p {
			taken := false
			for _, s := range sel[:j] {
				if int(s) == i {
					taken = true
					break
				}
			}
			if !taken && (best < 0 || v > p[best]) {
				best = i
			}
		}
		sel[j] = int32(best)
	}
}

// expert returns expert i's slice of a stacked [experts, …] tensor.
func expert(w []float32, i, size int) []float32 { return w[i*size : (i+1)*size] }

// gluForward writes act = act(gate)·up for n rows of m.
func (e *Engine) gluForward(act, gate, up []float32, n, m int) {
	if e.P.Config.Activation() == ir.ActGELUTanh {
		geluGLU(e.threads, act, gate, up, n, m)
		return
	}
	parallel.For(e.threads, n, func(lo, hi int) {
		en := make([]float32, m)
		for r := lo; r < hi; r++ {
			g, u, h := gate[r*m:(r+1)*m], up[r*m:(r+1)*m], act[r*m:(r+1)*m]
			blas.ExpShifted(en, g, 0, -1) // e^−g, vectorized
			for i, gv := range g {
				h[i] = gv / (1 + en[i]) * u[i]
			}
		}
	})
}

// gluBackward sets dgate and dup from dact, the gradient at
// act = act(gate)·up, for n rows of m.
func (e *Engine) gluBackward(dgate, dup, dact, gate, up []float32, n, m int) {
	if e.P.Config.Activation() == ir.ActGELUTanh {
		geluGLUBackward(e.threads, dgate, dup, dact, gate, up, n, m)
		return
	}
	siluGLUBackward(e.threads, dgate, dup, dact, gate, up, n, m)
}

// moeForward sets y = beta·y + the MoE layer's output for the MLP norm's
// output x.
func (e *Engine) moeForward(l int, p *Layer, a *moeActs, x, y []float32, beta float32) {
	cfg := &e.P.Config
	n, d, ne, k, m := e.n, cfg.Hidden, p.Experts, cfg.ExpertsPerToken, p.ExpertMLP
	e.route(l, p, a, x)
	nk := n * k
	// Gather the rows of each expert's block.
	parallel.For(e.threads, nk, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			r := int(a.rows[j])
			copy(a.xg[j*d:(j+1)*d], x[r*d:(r+1)*d])
		}
	})
	for i := 0; i < ne; i++ {
		j0, j1 := a.off[i], a.off[i+1]
		if j0 == j1 {
			continue
		}
		c := j1 - j0
		xg := a.xg[j0*d : j1*d]
		g, u, h := a.gate[j0*m:j1*m], a.up[j0*m:j1*m], a.act[j0*m:j1*m]
		e.linear(g, xg, expert(p.ExpertGate, i, m*d), c, m, d, 0)
		e.linear(u, xg, expert(p.ExpertUp, i, m*d), c, m, d, 0)
		e.gluForward(h, g, u, c, m)
		e.linear(a.yg[j0*d:j1*d], h, expert(p.ExpertDown, i, d*m), c, d, m, 0)
	}
	if p.SharedDown != nil {
		s := p.SharedMLP
		e.linear(a.sgate[:n*s], x, p.SharedGate, n, s, d, 0)
		e.linear(a.sup[:n*s], x, p.SharedUp, n, s, d, 0)
		e.gluForward(a.sact[:n*s], a.sgate[:n*s], a.sup[:n*s], n, s)
		e.linear(a.sout, a.sact[:n*s], p.SharedDown, n, d, s, 0)
		parallel.For(e.threads, n, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				var z float64
				for i, v := range x[r*d : (r+1)*d] {
					z += float64(v) * float64(p.SharedExpertGate[i])
				}
				a.sg[r] = float32(1 / (1 + math.Exp(-z)))
			}
		})
	}
	// Scatter: each row adds its slots in order, then the shared expert.
	parallel.For(e.threads, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			yr := y[r*d : (r+1)*d]
			if beta == 0 {
				clear(yr)
			}
			for s := 0; s < k; s++ {
				j := int(a.pos[r*k+s])
				w := a.wts[r*k+s]
				for i, v := range a.yg[j*d : (j+1)*d] {
					yr[i] += w * v
				}
			}
			if p.SharedDown != nil {
				g := a.sg[r]
				for i, v := range a.sout[r*d : (r+1)*d] {
					yr[i] += g * v
				}
			}
		}
	})
}

// moeScratch is the MoE backward's working memory.
type moeScratch struct {
	dyg, dxg            []float32 // [N·K, hidden]
	dact, dgate, dup    []float32 // [N·K, expert_mlp]
	dw                  []float32 // [N, K]
	dz                  []float32 // [N, E]
	dsout               []float32 // [N, hidden]
	dsact, dsgate, dsup []float32 // [N, shared]
	dsg                 []float32 // [N]
	n, k, e, m, shared  int       // the sizes allocated
}

// size makes room for n rows of width d, e experts, k per token, m
// neurons each and sh shared ones, keeping buffers that are large enough.
func (s *moeScratch) size(n, d, e, k, m, sh int) {
	if s.n == n && s.k == k && s.e >= e && s.m >= m && s.shared >= sh {
		return
	}
	e, m, sh = max(e, s.e), max(m, s.m), max(sh, s.shared)
	nk := n * k
	*s = moeScratch{
		dyg: make([]float32, nk*d), dxg: make([]float32, nk*d),
		dact: make([]float32, nk*m), dgate: make([]float32, nk*m), dup: make([]float32, nk*m),
		dw: make([]float32, nk), dz: make([]float32, n*e), dsout: make([]float32, n*d),
		dsact: make([]float32, n*sh), dsgate: make([]float32, n*sh), dsup: make([]float32, n*sh),
		dsg: make([]float32, n),
		n:   n, k: k, e: e, m: m, shared: sh,
	}
}

// moeBackward turns dy, the gradient at the MoE output, into the gradient
// at its input x (set into dx) and adds the layer's parameter gradients.
// aux, when not nil, is added to the gradient at every row's router
// probabilities (the load-balancing loss's, per expert).
func (e *Engine) moeBackward(p *Layer, a *moeActs, x, dy, dx []float32, aux []float64) {
	cfg := &e.P.Config
	n, d, ne, k, m := e.n, cfg.Hidden, p.Experts, cfg.ExpertsPerToken, p.ExpertMLP
	th := e.threads
	s := &e.moeScratch
	s.size(n, d, ne, k, m, p.SharedMLP)

	// Routed experts: dyg = w·dy per pair, dw = dy·yg.
	parallel.For(th, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			dr := dy[r*d : (r+1)*d]
			for sl := 0; sl < k; sl++ {
				j := int(a.pos[r*k+sl])
				w := a.wts[r*k+sl]
				var dot float64
				for i, v := range a.yg[j*d : (j+1)*d] {
					dot += float64(v) * float64(dr[i])
				}
				s.dw[r*k+sl] = float32(dot)
				dd := s.dyg[j*d : (j+1)*d]
				for i, v := range dr {
					dd[i] = w * v
				}
			}
		}
	})
	gG, gU, gD := e.gradOf(p.ExpertGate), e.gradOf(p.ExpertUp), e.gradOf(p.ExpertDown)
	for i := 0; i < ne; i++ {
		j0, j1 := a.off[i], a.off[i+1]
		if j0 == j1 {
			continue
		}
		c := j1 - j0
		dyg, xg := s.dyg[j0*d:j1*d], a.xg[j0*d:j1*d]
		dact, dg, du := s.dact[j0*m:j1*m], s.dgate[j0*m:j1*m], s.dup[j0*m:j1*m]
		blas.SgemmThreads(th, false, false, c, m, d, 1, dyg, d, expert(p.ExpertDown, i, d*m), m, 0, dact, m)
		if gD != nil {
			blas.SgemmThreads(th, true, false, d, m, c, 1, dyg, d, a.act[j0*m:j1*m], m, 1, expert(gD, i, d*m), m)
		}
		e.gluBackward(dg, du, dact, a.gate[j0*m:j1*m], a.up[j0*m:j1*m], c, m)
		dxg := s.dxg[j0*d : j1*d]
		blas.SgemmThreads(th, false, false, c, d, m, 1, dg, m, expert(p.ExpertGate, i, m*d), d, 0, dxg, d)
		blas.SgemmThreads(th, false, false, c, d, m, 1, du, m, expert(p.ExpertUp, i, m*d), d, 1, dxg, d)
		if gG != nil {
			blas.SgemmThreads(th, true, false, m, d, c, 1, dg, m, xg, d, 1, expert(gG, i, m*d), d)
		}
		if gU != nil {
			blas.SgemmThreads(th, true, false, m, d, c, 1, du, m, xg, d, 1, expert(gU, i, m*d), d)
		}
	}

	// Router: back through the renormalization and the softmax (the
	// selection is fixed), plus the balancing loss's gradient.
	dz := s.dz[:n*ne]
	parallel.For(th, n, func(lo, hi int) {
		dp := make([]float64, ne)
		for r := lo; r < hi; r++ {
			for i := range dp {
				dp[i] = 0
				if aux != nil {
					dp[i] = aux[i]
				}
			}
			sel, w, dw := a.sel[r*k:(r+1)*k], a.wts[r*k:(r+1)*k], s.dw[r*k:(r+1)*k]
			pr := a.probs[r*ne : (r+1)*ne]
			if cfg.NormTopK {
				// w_k = p_k/T, T = Σ_S p: dp_k = (dw_k − Σ_j dw_j·w_j)/T.
				var tot, c float64
				for j, id := range sel {
					tot += float64(pr[id])
					c += float64(dw[j]) * float64(w[j])
				}
				for j, id := range sel {
					dp[id] += (float64(dw[j]) - c) / tot
				}
			} else {
				for j, id := range sel {
					dp[id] += float64(dw[j])
				}
			}
			var c float64
			for i, v := range pr {
				c += float64(v) * dp[i]
			}
			for i, v := range pr {
				dz[r*ne+i] = float32(float64(v) * (dp[i] - c))
			}
		}
	})
	e.weightGrad(p.Router, dz, x, n, ne, d)
	blas.SgemmThreads(th, false, false, n, d, ne, 1, dz, ne, p.Router, d, 0, dx, d)

	// Scatter the routed experts' input gradients, slots in order.
	parallel.For(th, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			dr := dx[r*d : (r+1)*d]
			for sl := 0; sl < k; sl++ {
				j := int(a.pos[r*k+sl])
				for i, v := range s.dxg[j*d : (j+1)*d] {
					dr[i] += v
				}
			}
		}
	})

	if p.SharedDown == nil {
		return
	}
	// Shared expert: y += σ(z)·sout, z = x·gᵀ.
	sh := p.SharedMLP
	dsout, dsg := s.dsout[:n*d], s.dsg[:n]
	parallel.For(th, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			dr, so := dy[r*d:(r+1)*d], a.sout[r*d:(r+1)*d]
			g := a.sg[r]
			var dot float64
			for i, v := range dr {
				dot += float64(v) * float64(so[i])
				dsout[r*d+i] = g * v
			}
			dsg[r] = float32(dot * float64(g) * (1 - float64(g)))
		}
	})
	if gs := e.gradOf(p.SharedExpertGate); gs != nil {
		columnSums(th, gs, n, d, func(r int, acc []float64, c0 int) {
			z := float64(dsg[r])
			for i, v := range x[r*d+c0 : r*d+c0+len(acc)] {
				acc[i] += z * float64(v)
			}
		})
	}
	dsact, dsgate, dsup := s.dsact[:n*sh], s.dsgate[:n*sh], s.dsup[:n*sh]
	blas.SgemmThreads(th, false, false, n, sh, d, 1, dsout, d, p.SharedDown, sh, 0, dsact, sh)
	e.weightGrad(p.SharedDown, dsout, a.sact[:n*sh], n, d, sh)
	e.gluBackward(dsgate, dsup, dsact, a.sgate[:n*sh], a.sup[:n*sh], n, sh)
	blas.SgemmThreads(th, false, false, n, d, sh, 1, dsgate, sh, p.SharedGate, d, 1, dx, d)
	blas.SgemmThreads(th, false, false, n, d, sh, 1, dsup, sh, p.SharedUp, d, 1, dx, d)
	e.weightGrad(p.SharedGate, dsgate, x, n, sh, d)
	e.weightGrad(p.SharedUp, dsup, x, n, sh, d)
	parallel.For(th, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			z := dsg[r]
			dr := dx[r*d : (r+1)*d]
			for i, w := range p.SharedExpertGate {
				dr[i] += z * w
			}
		}
	})
}

// routerAux is the load-balancing loss of Hugging Face's Mixtral
// (load_balancing_loss_func, no attention mask): the router probabilities
// of all MoE layers are concatenated as rows, and over those M rows
//
//	aux = E · Σ_e f_e · P_e,
//
// f_e the fraction of rows that route to expert e (HF sums the one-hot
// masks of the K slots, so Σ_e f_e = K) and P_e the mean probability of
// e. Every row of the batch counts, scored or not, as in HF. Layers are
// concatenated only when they have the same number of experts (HF's
// torch.cat needs it); layers of different counts (after non-uniform
// pruning) form separate groups whose losses add. With grad, the gradient
// of c·aux with respect to each probability, c·E·count_e/M² (f_e counts
// as a constant), is added to the layers' aux for Backward.
func (e *Engine) routerAux(c float64, grad bool) float64 {
	cfg := &e.P.Config
	groups := map[int][]int{} // experts → layers
	var order []int
	for l, lc := range cfg.Layers {
		if !lc.MoE() || e.skipped(l) {
			continue
		}
		if _, ok := groups[lc.Experts]; !ok {
			order = append(order, lc.Experts)
		}
		groups[lc.Experts] = append(groups[lc.Experts], l)
	}
	n := e.n
	var total float64
	for _, ne := range order {
		layers := groups[ne]
		count := make([]float64, ne)
		prob := make([]float64, ne)
		for _, l := range layers {
			for i := 0; i < ne; i++ {
				count[i] += e.routed[l].count[i]
				prob[i] += e.routed[l].prob[i]
			}
		}
		m := float64(len(layers) * n)
		var aux float64
		for i := range count {
			aux += count[i] / m * prob[i] / m
		}
		total += float64(ne) * aux
		if !grad {
			continue
		}
		if e.aux == nil {
			e.aux = make([][]float64, len(cfg.Layers))
		}
		for _, l := range layers {
			if e.aux[l] == nil {
				e.aux[l] = make([]float64, ne)
			}
			for i := range count {
				e.aux[l][i] += c * float64(ne) * count[i] / (m * m)
			}
		}
	}
	return total
}

// auxGrad is layer l's share of the balancing loss's gradient, or nil.
func (e *Engine) auxGrad(l int) []float64 {
	if e.aux == nil {
		return nil
	}
	return e.aux[l]
}
