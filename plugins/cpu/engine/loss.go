package engine

import (
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/plugins/cpu/blas"
	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

// Objective chooses the training loss, per scored row:
//
//	α·s·KL(p_teacher^τ ‖ p_student^τ) + (1−α)·CE(target, p_student)
//
// with p^τ = softmax(logits/τ) and s = τ² when ScaleT2 is set (else 1).
type Objective struct {
	// KLWeight is α: 0 trains on next-token cross-entropy alone, 1 on the
	// teacher's distribution alone.
	KLWeight float64
	// Temperature τ softens both distributions in the KL term; 0 means 1.
	Temperature float64
	// ScaleT2 multiplies the KL term by τ², which keeps its gradient's
	// magnitude independent of τ.
	ScaleT2 bool
	// TopK, when positive, keeps only the teacher's k most likely tokens of
	// each row, renormalized over them (ties go to the lower id).
	TopK int
	// RouterAux, when positive, adds RouterAux times the routers'
	// load-balancing loss (LossResult.Aux) of a mixture-of-experts model.
	RouterAux float64
}

func (o Objective) temperature() float64 {
	if o.Temperature == 0 {
		return 1
	}
	return o.Temperature
}

// Targets says what each row of the batch is scored against.
type Targets struct {
	// IDs are the next-token ids, one per row (B·T); a negative id leaves
	// the row unscored (padding, the last position). Required when
	// cross-entropy has weight; nil scores every row for KL.
	IDs []int32
	// Weights optionally weighs rows, e.g. an SFT mask with 0 on prompt
	// tokens; nil weighs every row 1.
	Weights []float32
}

// LogitSource produces logits for rows of the batch being trained on, for
// example a teacher Engine that ran Forward on the same tokens, or
// precomputed logits.
type LogitSource interface {
	Vocab() int
	Logits(r0, r1 int, dst []float32) error
}

// LossResult is the objective over the scored rows of a batch; each term is
// a weighted mean, Σ wᵣ·termᵣ / Σ wᵣ.
type LossResult struct {
	// Loss is the objective itself.
	Loss float64
	// CE is the next-token cross-entropy (nats), when targets were given.
	CE float64
	// KL is the forward KL divergence to the teacher at temperature τ,
	// without the τ² factor, when a teacher was given.
	KL float64
	// Rows is the number of scored rows and Weight the sum of their weights.
	Rows   int
	Weight float64
	// Aux is the routers' load-balancing loss (routerAux), when the
	// objective weighs it; Loss includes RouterAux·Aux.
	Aux float64
}

// Loss evaluates the objective on the last Forward without gradients.
// teacher may be nil when the objective has no KL weight.
func (e *Engine) Loss(tg Targets, obj Objective, teacher LogitSource) (LossResult, error) {
	return e.loss(tg, obj, teacher, 0, false)
}

// LossGrad evaluates the objective and starts the backward pass through the
// classifier: it adds the gradient of scale·Loss to the classifier's and to
// the one at the final norm that Backward carries on from. Several calls
// after one Forward add up (a sum of objectives). Logits are produced
// LossChunk rows at a time, the teacher's in lockstep, so B·T·V floats are
// never held at once.
func (e *Engine) LossGrad(tg Targets, obj Objective, teacher LogitSource, scale float32) (LossResult, error) {
	if e.G == nil {
		return LossResult{}, fmt.Errorf("engine: LossGrad on an inference engine")
	}
	return e.loss(tg, obj, teacher, scale, true)
}

type lossRowSpec struct {
	invT     float32
	ce, kl   bool    // terms computed
	cCE, cKL float32 // gradient coefficients before the row weight
	topK     int
	vocab    int
	grad     bool
}

func (e *Engine) loss(tg Targets, obj Objective, teacher LogitSource, scale float32, grad bool) (LossResult, error) {
	if !e.ready {
		return LossResult{}, fmt.Errorf("engine: loss before Forward")
	}
	n, v, d := e.n, e.P.Config.Vocab, e.P.Config.Hidden
	alpha := obj.KLWeight
	tau := obj.temperature()
	switch {
	case alpha < 0 || alpha > 1 || math.IsNaN(alpha):
		return LossResult{}, fmt.Errorf("engine: KL weight %g outside [0, 1]", alpha)
	case !(tau > 0) || math.IsInf(tau, 0):
		return LossResult{}, fmt.Errorf("engine: temperature %g must be positive", tau)
	case obj.TopK < 0:
		return LossResult{}, fmt.Errorf("engine: negative teacher top-k %d", obj.TopK)
	case obj.RouterAux < 0 || math.IsNaN(obj.RouterAux) || math.IsInf(obj.RouterAux, 0):
		return LossResult{}, fmt.Errorf("engine: router auxiliary loss weight %g must be finite and not negative", obj.RouterAux)
	case alpha < 1 && tg.IDs == nil:
		return LossResult{}, fmt.Errorf("engine: cross-entropy has weight %g but no target ids were given", 1-alpha)
	case alpha > 0 && teacher == nil:
		return LossResult{}, fmt.Errorf("engine: KL has weight %g but no teacher was given", alpha)
	case tg.IDs != nil && len(tg.IDs) != n:
		return LossResult{}, fmt.Errorf("engine: %d target ids for %d rows", len(tg.IDs), n)
	case tg.Weights != nil && len(tg.Weights) != n:
		return LossResult{}, fmt.Errorf("engine: %d row weights for %d rows", len(tg.Weights), n)
	}
	if teacher != nil && teacher.Vocab() != v {
		return LossResult{}, fmt.Errorf("engine: teacher vocabulary %d differs from the student's %d", teacher.Vocab(), v)
	}
	for r, id := range tg.IDs {
		if int(id) >= v {
			return LossResult{}, fmt.Errorf("engine: target id %d of row %d outside vocabulary of %d", id, r, v)
		}
	}
	// Rows are scored when their weight is positive and they have a
	// target (if targets were given at all).
	weight := func(r int) float32 {
		if tg.IDs != nil && tg.IDs[r] < 0 {
			return 0
		}
		if tg.Weights != nil {
			w := tg.Weights[r]
			if !(w > 0) {
				return 0
			}
			return w
		}
		return 1
	}
	var total float64
	rows := 0
	for r := 0; r < n; r++ {
		if w := weight(r); w > 0 {
			total += float64(w)
			rows++
		}
	}
	res := LossResult{Rows: rows, Weight: total}
	if obj.RouterAux > 0 {
		res.Aux = e.routerAux(obj.RouterAux*float64(scale), grad)
		res.Loss = obj.RouterAux * res.Aux
	}
	var dW []float32
	if grad {
		dW = e.gradOf(e.P.classifier())
	}
	if rows == 0 {
		e.gradOK = e.gradOK || grad
		return res, nil
	}
	if math.IsInf(total, 0) || math.IsNaN(total) {
		return LossResult{}, fmt.Errorf("engine: row weights sum to %g", total)
	}
	s := 1.0
	if obj.ScaleT2 {
		s = tau * tau
	}
	spec := lossRowSpec{
		invT:  float32(1 / tau),
		ce:    tg.IDs != nil,
		kl:    teacher != nil,
		cCE:   float32(float64(scale) * (1 - alpha) / total),
		cKL:   float32(float64(scale) * alpha * s / tau / total),
		topK:  obj.TopK,
		vocab: v,
		grad:  grad,
	}
	if spec.topK >= v {
		spec.topK = 0
	}
	chunk := e.lossChunk()
	e.logitBuf = grow(e.logitBuf, chunk*v)
	logits := e.logitBuf
	var tlog []float32
	if teacher != nil {
		e.teacherBuf = grow(e.teacherBuf, chunk*v)
		tlog = e.teacherBuf
	}
	rowCE := make([]float64, n)
	rowKL := make([]float64, n)
	cls := e.P.classifier()
	softCapC := e.P.Config.FinalSoftCap
	for r0 := 0; r0 < n; r0 += chunk {
		r1 := min(n, r0+chunk)
		m := r1 - r0
		if err := e.Logits(r0, r1, logits); err != nil {
			return LossResult{}, err
		}
		if teacher != nil {
			if err := teacher.Logits(r0, r1, tlog[:m*v]); err != nil {
				return LossResult{}, fmt.Errorf("engine: teacher logits of rows [%d, %d): %w", r0, r1, err)
			}
		}
		parallel.For(e.threads, m, func(lo, hi int) {
			ws := newRowScratch(v, spec.topK)
			var capped []float32 // the row's capped logits, for the cap's derivative
			if grad && softCapC > 0 {
				capped = make([]float32, v)
			}
			for i := lo; i < hi; i++ {
				r := r0 + i
				z := logits[i*v : (i+1)*v]
				w := weight(r)
				if w == 0 {
					if grad {
						clear(z)
					}
					continue
				}
				var zt []float32
				if teacher != nil {
					zt = tlog[i*v : (i+1)*v]
				}
				target := -1
				if tg.IDs != nil {
					target = int(tg.IDs[r])
				}
				if capped != nil {
					copy(capped, z)
				}
				rowCE[r], rowKL[r] = lossRow(&spec, ws, z, zt, target, w)
				if capped != nil {
					softCapGrad(z, capped, softCapC)
				}
			}
		})
		if grad {
			blas.SgemmThreads(e.threads, false, false, m, d, v, 1, logits, v, cls, d, 1, e.dlnf[r0*d:], d)
			if dW != nil {
				blas.SgemmThreads(e.threads, true, false, v, d, m, 1, logits, v, e.lnf[r0*d:], d, 1, dW, d)
			}
		}
	}
	var ce, kl float64
	for r := 0; r < n; r++ {
		if w := float64(weight(r)); w > 0 {
			ce += w * rowCE[r]
			kl += w * rowKL[r]
		}
	}
	res.CE, res.KL = ce/total, kl/total
	if spec.ce {
		res.Loss += (1 - alpha) * res.CE
	}
	if spec.kl {
		res.Loss += alpha * s * res.KL
	}
	e.gradOK = e.gradOK || grad
	return res, nil
}

type rowScratch struct {
	e    []float32 // exponentials of the student row
	te   []float32 // exponentials of the teacher row (or its top k)
	heap topK
}

func newRowScratch(v, k int) *rowScratch {
	ws := &rowScratch{e: make([]float32, v), te: make([]float32, v)}
	if k > 0 {
		ws.heap = topK{idx: make([]int32, 0, k), val: make([]float32, 0, k)}
	}
	return ws
}

// lossRow scores one row of student logits z (and teacher logits zt when
// the KL term is on) and, for gradients, overwrites z with the gradient of
// the row's weighted contribution:
//
//	CE: ∂/∂z = p − onehot(target)
//	KL: ∂/∂z = (p^τ − q^τ)/τ   (q the teacher's, possibly top-k renormalized)
func lossRow(sp *lossRowSpec, ws *rowScratch, z, zt []float32, target int, w float32) (ce, kl float64) {
	m := blas.Smax(z)
	invT := sp.invT
	sameExp := invT == 1 // exp((z−m)/τ) is exp(z−m)

	// Teacher distribution q over its support (all ids or the top k), and
	// Σ q·(z−m)/τ, needed before z is overwritten.
	var st, ea, ez float64
	var ids []int32
	var te []float32
	if sp.kl {
		if sp.topK > 0 {
			ws.heap.reset()
			for i, x := range zt {
				ws.heap.offer(int32(i), x)
			}
			ids = ws.heap.idx
			te = ws.te[:len(ids)]
			mt := ws.heap.max()
			for j, id := range ids {
				a := (zt[id] - mt) * invT
				ev := blas.Expf(a)
				te[j] = ev
				st += float64(ev)
				ea += float64(ev) * float64(a)
				ez += float64(ev) * float64((z[id]-m)*invT)
			}
		} else {
			mt := blas.Smax(zt)
			te = ws.te[:len(zt)]
			st = blas.ExpShifted(te, zt, mt, invT)
			for i, ev := range te {
				ea += float64(ev) * float64((zt[i]-mt)*invT)
				ez += float64(ev) * float64((z[i]-m)*invT)
			}
		}
	}

	// Student partition functions at temperature 1 (CE) and τ (KL).
	var zTarget float32
	if sp.ce {
		zTarget = z[target] - m
	}
	var s1, sT float64
	e := ws.e[:len(z)]
	if sp.ce && sp.kl && !sameExp {
		s1 = blas.ExpShifted(e, z, m, 1)
		sT = blas.ExpShifted(z, z, m, invT) // z is not read again
	} else {
		t := invT
		if !sp.kl {
			t = 1
		}
		s1 = blas.ExpShifted(e, z, m, t)
		sT = s1
	}
	if sp.ce {
		ce = math.Log(s1) - float64(zTarget)
	}
	if sp.kl {
		// KL = Σ q log q − Σ q log p^τ, with log q = a − log st and
		// log p^τ = (z−m)/τ − log sT.
		kl = ea/st - math.Log(st) - ez/st + math.Log(sT)
	}
	if !sp.grad {
		return ce, kl
	}
	cCE, cKL := sp.cCE*w, sp.cKL*w
	if !sp.ce {
		cCE = 0
	}
	if !sp.kl {
		cKL = 0
	}
	switch {
	case sp.ce && sp.kl && !sameExp:
		a, b := cCE/float32(s1), cKL/float32(sT)
		for i := range z {
			z[i] = a*e[i] + b*z[i]
		}
	default:
		c := (cCE + cKL) / float32(s1)
		for i, ev := range e {
			z[i] = c * ev
		}
	}
	if sp.ce {
		z[target] -= cCE
	}
	if sp.kl {
		inv := cKL / float32(st)
		if ids != nil {
			for j, id := range ids {
				z[id] -= inv * te[j]
			}
		} else {
			for i, ev := range te {
				z[i] -= inv * ev
			}
		}
	}
	return ce, kl
}

// topK keeps the k largest values seen, as a min-heap on (value, -id) so
// that among equal values the lower id wins.
type topK struct {
	idx []int32
	val []float32
}

func (h *topK) reset() { h.idx, h.val = h.idx[:0], h.val[:0] }

// less orders the heap: the root is the entry to evict first.
func (h *topK) less(i, j int) bool {
	if h.val[i] != h.val[j] {
		return h.val[i] < h.val[j]
	}
	return h.idx[i] > h.idx[j]
}

func (h *topK) swap(i, j int) {
	h.idx[i], h.idx[j] = h.idx[j], h.idx[i]
	h.val[i], h.val[j] = h.val[j], h.val[i]
}

func (h *topK) offer(id int32, v float32) {
	if len(h.idx) < cap(h.idx) {
		h.idx = append(h.idx, id)
		h.val = append(h.val, v)
		for i := len(h.idx) - 1; i > 0; {
			p := (i - 1) / 2
			if !h.less(i, p) {
				break
			}
			h.swap(i, p)
			i = p
		}
		return
	}
	// Later ids never beat an equal value already held.
	if v <= h.val[0] {
		return
	}
	h.idx[0], h.val[0] = id, v
	for i := 0; ; {
		l, r, s := 2*i+1, 2*i+2, i
		if l < len(h.idx) && h.less(l, s) {
			s = l
		}
		if r < len(h.idx) && h.less(r, s) {
			s = r
		}
		if s == i {
			break
		}
		h.swap(i, s)
		i = s
	}
}

func (h *topK) max() float32 {
	m := h.val[0]
	for _, v := range h.val[1:] {
		m = max(m, v)
	}
	return m
}

// grow returns buf resized to n, reallocating only when it is too small.
func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}
