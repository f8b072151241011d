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

// attnBlock is the row block of the causal attention products: a block of
// query rows only needs the keys up to its last row.
const attnBlock = 64

// attentionForward computes, for every sequence and head, the causal
// softmax of Q·Kᵀ/sqrt(head_dim) (kept in a.att when the engine keeps
// probabilities, else in a per-worker buffer) and its product with V (into
// a.ao). Query head h reads KV head h/(Heads/KVHeads).
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
				blas.SgemmThreads(1, false, false, r1-r0, hd, r1, 1, pr[r0*t:], t, a.v[koff:], kvd, 0, a.ao[qoff+r0*qd:], qd)
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
	t, hd := e.t, p.HeadDim
	qd, kvd := p.Heads*hd, p.KVHeads*hd
	task := b*p.Heads + h
	pr := buf
	if e.keepProbs {
		pr = a.att[task*t*t : (task+1)*t*t]
		if !fresh {
			return pr
		}
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	qoff, koff := b*t*qd+h*hd, b*t*kvd+(h/p.GroupSize())*hd
	for r0 := 0; r0 < t; r0 += attnBlock {
		r1 := min(t, r0+attnBlock)
		blas.SgemmThreads(1, false, true, r1-r0, r1, hd, scale, a.q[qoff+r0*qd:], qd, a.k[koff:], kvd, 0, pr[r0*t:], t)
	}
	for i := 0; i < t; i++ {
		softmaxCausal(pr[i*t:(i+1)*t], i)
	}
	return pr
}

// softmaxCausal turns row[0..i] into probabilities and zeroes the rest.
func softmaxCausal(row []float32, i int) {
	s := row[:i+1]
	m := blas.Smax(s)
	blas.Sscal(float32(1/blas.ExpShifted(s, s, m, 1)), s)
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
	scale := float32(1 / math.Sqrt(float64(hd)))
	var next sync.Mutex
	worker := 0
	parallel.For(e.threads, bsz*p.KVHeads, func(lo, hi int) {
		next.Lock()
		dp := e.scratch.att[worker]
		var buf []float32
		if !e.keepProbs {
			buf = e.scratch.probs[worker]
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
					// dP = dO·Vᵀ for the causal block.
					blas.SgemmThreads(1, false, true, r1-r0, r1, hd, 1, dao[qoff+r0*qd:], qd, a.v[koff:], kvd, 0, dp[r0*t:], t)
					// dV += Pᵀ·dO over the queries that see these keys.
					blas.SgemmThreads(1, true, false, r1-r0, hd, t-r0, 1, pr[r0*t+r0:], t, dao[qoff+r0*qd:], qd, beta, dv[koff+r0*kvd:], kvd)
				}
				// Softmax backward: dS = P ⊙ (dP − rowsum(P ⊙ dP)).
				for i := 0; i < t; i++ {
					pi, di := pr[i*t:i*t+i+1], dp[i*t:(i+1)*t]
					var s float32
					for jj, pv := range pi {
						s += pv * di[jj]
					}
					for jj, pv := range pi {
						di[jj] = pv * (di[jj] - s)
					}
					clear(di[i+1:])
				}
				for r0 := 0; r0 < t; r0 += attnBlock {
					r1 := min(t, r0+attnBlock)
					blas.SgemmThreads(1, false, false, r1-r0, hd, r1, scale, dp[r0*t:], t, a.k[koff:], kvd, 0, dq[qoff+r0*qd:], qd)
					blas.SgemmThreads(1, true, false, r1-r0, hd, t-r0, scale, dp[r0*t+r0:], t, a.q[qoff+r0*qd:], qd, beta, dk[koff+r0*kvd:], kvd)
				}
			}
		}
	})
}
