package engine

import (
	"math"
	"sync"

	"github.com/whittle-ml/whittle/plugins/cpu/blas"
	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

// rmsnormForward writes out[r] = w ⊙ x[r] / rms(x[r]) and keeps 1/rms.
func rmsnormForward(threads int, out, rstd, x, w []float32, n, d int, eps float64) {
	parallel.For(threads, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr := x[r*d : (r+1)*d]
			var ss float64
			for _, v := range xr {
				ss += float64(v) * float64(v)
			}
			inv := float32(1 / math.Sqrt(ss/float64(d)+eps))
			rstd[r] = inv
			o := out[r*d : (r+1)*d]
			for i, v := range xr {
				o[i] = w[i] * (inv * v)
			}
		}
	})
}

// rmsnormBackward adds the input gradient of y = w ⊙ x·r (r = 1/rms(x))
// to dx (when not nil) and the weight gradient to dw (when not nil):
//
//	dx += r·(w ⊙ dy) − r³/d · x · Σ_j w_j dy_j x_j
//	dw += Σ_rows dy ⊙ x · r
func rmsnormBackward(threads int, dx, dw, dy, x, rstd, w []float32, n, d int) {
	if dx != nil {
		rmsnormInputGrad(threads, dx, dy, x, rstd, w, n, d)
	}
	if dw != nil {
		columnSums(threads, dw, n, d, func(r int, acc []float64, c0 int) {
			dyr, xr := dy[r*d+c0:], x[r*d+c0:]
			inv := float64(rstd[r])
			for i := range acc {
				acc[i] += float64(dyr[i]) * float64(xr[i]) * inv
			}
		})
	}
}

func rmsnormInputGrad(threads int, dx, dy, x, rstd, w []float32, n, d int) {
	parallel.For(threads, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			dyr, xr, dxr := dy[r*d:(r+1)*d], x[r*d:(r+1)*d], dx[r*d:(r+1)*d]
			var dot float64
			for i, g := range dyr {
				dot += float64(w[i]) * float64(g) * float64(xr[i])
			}
			inv := rstd[r]
			c := float32(float64(inv) * float64(inv) * float64(inv) * dot / float64(d))
			for i, g := range dyr {
				dxr[i] += inv*w[i]*g - c*xr[i]
			}
		}
	})
}

// columnSums adds to dst[c] a sum over rows 0..n-1 computed by add, which
// accumulates row r's contribution to columns [c0, c0+len(acc)) into acc.
// Goroutines own disjoint column ranges and walk the rows in order, so the
// result does not depend on the thread count.
func columnSums(threads int, dst []float32, n, d int, add func(r int, acc []float64, c0 int)) {
	const block = 64
	blocks := (d + block - 1) / block
	parallel.For(threads, blocks, func(lo, hi int) {
		var acc [block]float64
		for bi := lo; bi < hi; bi++ {
			c0 := bi * block
			a := acc[:min(block, d-c0)]
			clear(a)
			for r := 0; r < n; r++ {
				add(r, a, c0)
			}
			for i, v := range a {
				dst[c0+i] += float32(v)
			}
		}
	})
}

// ropeRow rotates each head's dimension pairs (i, i+hd/2) of one row by the
// position's angles (Hugging Face's half order); inverse rotates back,
// which is also the backward of the forward rotation.
func ropeRow(v []float32, hd int, cos, sin []float32, inverse bool) {
	half := hd / 2
	for h := 0; h+hd <= len(v); h += hd {
		x := v[h : h+hd : h+hd]
		lo, hi := x[:half], x[half:]
		for i, c := range cos[:half] {
			s := sin[i]
			if inverse {
				s = -s
			}
			a, b := lo[i], hi[i]
			lo[i] = a*c - b*s
			hi[i] = a*s + b*c
		}
	}
}

// softCap replaces each x by c·tanh(x/c) (Gemma 2's soft capping).
func softCap(x []float32, c float64) {
	for i, v := range x {
		x[i] = float32(c * math.Tanh(float64(v)/c))
	}
}

// softCapGrad turns dy, the gradient at capped values y = c·tanh(x/c),
// into the gradient at x: dy·(1 − (y/c)²).
func softCapGrad(dy, y []float32, c float64) {
	for i, v := range y {
		th := float64(v) / c
		dy[i] *= float32(1 - th*th)
	}
}

// GELU's tanh approximation (PyTorch's gelu(approximate="tanh")):
// gelu(x) = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
const (
	geluC = 0.7978845608028654 // √(2/π)
	geluA = 0.044715
)

// geluGLU writes h = gelu(g)·u for n rows of m (GeGLU), in float64 per
// element.
func geluGLU(threads int, h, g, u []float32, n, m int) {
	parallel.For(threads, n, func(lo, hi int) {
		for i := lo * m; i < hi*m; i++ {
			x := float64(g[i])
			th := math.Tanh(geluC * (x + geluA*x*x*x))
			h[i] = float32(0.5*x*(1+th)) * u[i]
		}
	})
}

// geluGLUBackward sets dg and du from da, the gradient at h = gelu(g)·u:
//
//	du = da·gelu(g),  dg = da·u·gelu'(g),
//	gelu'(x) = ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²),  t = tanh(…).
func geluGLUBackward(threads int, dg, du, da, g, u []float32, n, m int) {
	parallel.For(threads, n, func(lo, hi int) {
		for i := lo * m; i < hi*m; i++ {
			x := float64(g[i])
			th := math.Tanh(geluC * (x + geluA*x*x*x))
			gelu := 0.5 * x * (1 + th)
			dgelu := 0.5*(1+th) + 0.5*x*(1-th*th)*geluC*(1+3*geluA*x*x)
			du[i] = da[i] * float32(gelu)
			dg[i] = float32(float64(da[i]) * float64(u[i]) * dgelu)
		}
	})
}

// windowStart is the first key query i attends to under a sliding window
// of w positions (0: global attention).
func windowStart(i, w int) int {
	if w <= 0 {
		return 0
	}
	return max(0, i-w+1)
}

// windowEnd is one past the last query that sees a key below k1 under a
// sliding window of w positions, at most t.
func windowEnd(k1, w, t int) int {
	if w <= 0 {
		return t
	}
	return min(t, k1+w-1)
}

// attnBlock is the row block of the causal attention products: a block of
// query rows only needs the keys up to its last row.
const attnBlock = 64

// attentionForward computes, for every sequence and head, the causal (and
// windowed) softmax of the scaled, possibly soft-capped Q·Kᵀ (kept in a.att
// when the engine keeps probabilities, else in a per-worker buffer) and its
// product with V (into a.ao); blocks of keys that a sliding window masks
// for a whole block of queries are skipped. Query head h reads KV head
// h/(Heads/KVHeads).
func (e *Engine) attentionForward(p *Layer, a *layerActs) {
	bsz, t := e.b, e.t
	hd := p.HeadDim
	qd, kvd := p.Heads*hd, p.KVHeads*hd
	var next sync.Mutex
	worker := 0
	parallel.For(e.threads, bsz*p.Heads, func(lo, hi int) {
		var buf []float32
		if !e.keepProbs {
			next.Lock()
			buf = e.scratch.probs[worker]
			worker++
			next.Unlock()
		}
		for task := lo; task < hi; task++ {
			b, h := task/p.Heads, task%p.Heads
			qoff, koff := b*t*qd+h*hd, b*t*kvd+(h/p.GroupSize())*hd
			pr := e.attnProbs(p, a, b, h, buf, true)
			for r0 := 0; r0 < t; r0 += attnBlock {
				r1 := min(t, r0+attnBlock)
				k0 := windowStart(r0, p.Window) // keys before k0 are masked for the whole block
				blas.SgemmThreads(1, false, false, r1-r0, hd, r1-k0, 1, pr[r0*t+k0:], t, a.v[koff+k0*kvd:], kvd, 0, a.ao[qoff+r0*qd:], qd)
			}
		}
	})
}

// attnProbs returns the causal attention probabilities [T, T] of sequence
// b, query head h. When the engine keeps them they live in a.att: the
// forward pass (fresh) computes them there and the backward reads them
// back. Otherwise they are computed into buf on every call; the
// computation is the same, so recomputed probabilities equal the
// forward's bit for bit.
func (e *Engine) attnProbs(p *Layer, a *layerActs, b, h int, buf []float32, fresh bool) []float32 {
	t := e.t
	task := b*p.Heads + h
	pr := buf
	if e.keepProbs {
		pr = a.att[task*t*t : (task+1)*t*t]
		if !fresh {
			return pr
		}
	}
	e.attnScores(p, a, b, h, pr)
	c := e.P.Config.AttnSoftCap
	for i := 0; i < t; i++ {
		row, lo := pr[i*t:(i+1)*t], windowStart(i, p.Window)
		if c > 0 {
			softCap(row[lo:i+1], c)
		}
		softmaxRange(row, lo, i)
	}
	return pr
}

// attnScores writes the scaled scores Q·Kᵀ of sequence b, query head h
// into s [T, T], for the keys each block of queries may see (others are
// left as they were).
func (e *Engine) attnScores(p *Layer, a *layerActs, b, h int, s []float32) {
	t, hd := e.t, p.HeadDim
	qd, kvd := p.Heads*hd, p.KVHeads*hd
	scale := float32(e.P.Config.AttnScale(hd))
	qoff, koff := b*t*qd+h*hd, b*t*kvd+(h/p.GroupSize())*hd
	for r0 := 0; r0 < t; r0 += attnBlock {
		r1 := min(t, r0+attnBlock)
		k0 := windowStart(r0, p.Window)
		blas.SgemmThreads(1, false, true, r1-r0, r1-k0, hd, scale, a.q[qoff+r0*qd:], qd, a.k[koff+k0*kvd:], kvd, 0, s[r0*t+k0:], t)
	}
}

// softmaxRange turns row[lo..i] into probabilities and zeroes the rest.
func softmaxRange(row []float32, lo, i int) {
	s := row[lo : i+1]
	m := blas.Smax(s)
	blas.Sscal(float32(1/blas.ExpShifted(s, s, m, 1)), s)
	clear(row[:lo])
	clear(row[i+1:])
}

// attentionBackward turns the gradient at the attention output (dao) into
// gradients at Q, K and V (after RoPE). Work is split by (sequence, KV
// head) so the query heads sharing a KV head add into dK and dV one after
// another, in head order, on one goroutine.
func (e *Engine) attentionBackward(p *Layer, a *layerActs, dao, dq, dk, dv []float32) {
	bsz, t := e.b, e.t
	hd := p.HeadDim
	qd, kvd := p.Heads*hd, p.KVHeads*hd
	gs := p.GroupSize()
	scale := float32(e.P.Config.AttnScale(hd))
	c := e.P.Config.AttnSoftCap
	w := p.Window
	var next sync.Mutex
	worker := 0
	parallel.For(e.threads, bsz*p.KVHeads, func(lo, hi int) {
		next.Lock()
		dp := e.scratch.att[worker]
		var buf, raw []float32
		if !e.keepProbs {
			buf = e.scratch.probs[worker]
		}
		if c > 0 {
			raw = e.scratch.raw[worker]
		}
		worker++
		next.Unlock()
		for task := lo; task < hi; task++ {
			b, g := task/p.KVHeads, task%p.KVHeads
			koff := b*t*kvd + g*hd
			for j := 0; j < gs; j++ {
				h := g*gs + j
				qoff := b*t*qd + h*hd
				pr := e.attnProbs(p, a, b, h, buf, false)
				beta := float32(1)
				if j == 0 {
					beta = 0
				}
				for r0 := 0; r0 < t; r0 += attnBlock {
					r1 := min(t, r0+attnBlock)
					k0, q1 := windowStart(r0, w), windowEnd(r1, w, t)
					// dP = dO·Vᵀ for the causal block.
					blas.SgemmThreads(1, false, true, r1-r0, r1-k0, hd, 1, dao[qoff+r0*qd:], qd, a.v[koff+k0*kvd:], kvd, 0, dp[r0*t+k0:], t)
					// dV += Pᵀ·dO over the queries that see these keys.
					blas.SgemmThreads(1, true, false, r1-r0, hd, q1-r0, 1, pr[r0*t+r0:], t, dao[qoff+r0*qd:], qd, beta, dv[koff+r0*kvd:], kvd)
				}
				if c > 0 {
					// The cap's derivative needs the scores before it.
					e.attnScores(p, a, b, h, raw)
				}
				// Softmax backward: dS = P ⊙ (dP − rowsum(P ⊙ dP)), then
				// through the soft cap: dS·(1 − tanh²(S/c)).
				for i := 0; i < t; i++ {
					lo := windowStart(i, w)
					pi, di := pr[i*t+lo:i*t+i+1], dp[i*t:(i+1)*t]
					dl := di[lo:]
					var s float32
					for jj, pv := range pi {
						s += pv * dl[jj]
					}
					for jj, pv := range pi {
						dl[jj] = pv * (dl[jj] - s)
					}
					if c > 0 {
						for jj, x := range raw[i*t+lo : i*t+i+1] {
							th := math.Tanh(float64(x) / c)
							dl[jj] *= float32(1 - th*th)
						}
					}
					clear(di[:lo])
					clear(di[i+1:])
				}
				for r0 := 0; r0 < t; r0 += attnBlock {
					r1 := min(t, r0+attnBlock)
					k0, q1 := windowStart(r0, w), windowEnd(r1, w, t)
					blas.SgemmThreads(1, false, false, r1-r0, hd, r1-k0, scale, dp[r0*t+k0:], t, a.k[koff+k0*kvd:], kvd, 0, dq[qoff+r0*qd:], qd)
					blas.SgemmThreads(1, true, false, r1-r0, hd, q1-r0, scale, dp[r0*t+r0:], t, a.q[qoff+r0*qd:], qd, beta, dk[koff+r0*kvd:], kvd)
				}
			}
		}
	})
}
