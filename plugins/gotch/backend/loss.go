package backend

import (
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// objective is the per-row training loss
//
//	α·s·KL(p_teacher^τ ‖ p_student^τ) + (1−α)·CE(target, p_student)
//
// with p^τ = softmax(logits/τ), s = τ² when scaleT2 is set, and the
// teacher's distribution optionally cut to its topK most likely tokens and
// renormalized over them. Rows without a target (id < 0) are not scored.
type objective struct {
	alpha   float64
	tau     float64
	scaleT2 bool
	topK    int
	// routerAux weighs the routers' load-balancing loss (routerAux.loss),
	// added to the objective of a mixture-of-experts model.
	routerAux float64
}

// lossIn is a batch to score: the student's final hidden states h
// [N, D] (float32, differentiable when training), the target of each row,
// and for KL the teacher's final hidden states [N, Dt].
type lossIn struct {
	student *model
	h       torch.Tensor
	ids     []int32
	teacher *model
	th      torch.Tensor
	obj     objective
	// grad: backpropagate scale·Loss into the student's weights.
	grad  bool
	scale float64
	// rows: also return each scored row's NLL and argmax (in row order).
	rows bool
	// aux: the routers' load-balancing loss (a float32 scalar,
	// differentiable when training), weighed by obj.routerAux; undefined
	// when not asked for.
	aux torch.Tensor
}

// lossOut is the objective's weighted means over the scored rows.
type lossOut struct {
	// loss includes routerAux·aux.
	loss, ce, kl, aux float64
	scored            int
	// rowNLL and rowArgmax, when asked for, are indexed like ids (0 and
	// −1 on unscored rows).
	rowNLL    []float64
	rowArgmax []int64
}

// loss scores the rows a chunk at a time. With grad it forms, per chunk,
// the gradient of the loss with respect to the logits directly
// (softmax − one-hot for cross-entropy, (q^τ − p^τ)/τ for KL, times the
// final soft cap's derivative when the family caps logits), multiplies
// it back through the classifier into a gradient for h and one for the
// classifier weight, and finally runs autograd from h with the
// former, so no chunk's logits outlive the chunk.
func (b *Backend) loss(s *torch.Scope, in lossIn) (lossOut, error) {
	var out lossOut
	n := len(in.ids)
	cls := in.student.classifier()
	v := int64(in.student.cfg.Vocab)
	var sel []int64
	for r, id := range in.ids {
		if id >= 0 {
			if int64(id) >= v {
				return out, fmt.Errorf("target %d of row %d outside vocabulary of %d", id, r, v)
			}
			sel = append(sel, int64(r))
		}
	}
	out.scored = len(sel)
	if in.rows {
		out.rowNLL = make([]float64, n)
		out.rowArgmax = make([]int64, n)
		for i := range out.rowArgmax {
			out.rowArgmax[i] = -1
		}
	}
	if len(sel) == 0 {
		return b.auxOnly(s, in, out)
	}
	total := float64(len(sel))
	tau := in.obj.tau
	if tau == 0 {
		tau = 1
	}
	alpha := in.obj.alpha
	kl := in.teacher != nil
	st := 1.0
	if in.obj.scaleT2 {
		st = tau * tau
	}
	topK := int64(in.obj.topK)
	if topK >= v {
		topK = 0
	}
	cCE := in.scale * (1 - alpha) / total
	cKL := in.scale * alpha * st / tau / total

	cdt := b.computeDType(in.student)
	idx := s.To(s.FromInt64(sel, int64(len(sel))), b.dev)
	tgtAll := make([]int64, len(sel))
	for i, r := range sel {
		tgtAll[i] = int64(in.ids[r])
	}
	tgt := s.View(s.To(s.FromInt64(tgtAll, int64(len(sel))), b.dev), int64(len(sel)), 1)

	// Rows to score, cut from autograd: the chunks run without gradients.
	hsel := s.IndexSelect(in.h, 0, idx)
	prev := torch.SetGradEnabled(false)
	defer torch.SetGradEnabled(prev)
	hd := s.Detach(hsel)
	w := in.student.weight(s, cls, cdt)
	var th, tw torch.Tensor
	if kl {
		th = s.IndexSelect(in.th, 0, idx)
		tw = in.teacher.weight(s, in.teacher.classifier(), b.computeDType(in.teacher))
	}
	wantW := in.grad && b.trainable(in.student, cls)
	var dW torch.Tensor
	var dh []torch.Tensor
	ceSum := s.Zeros([]int64{}, torch.Float64, b.dev)
	klSum := s.Zeros([]int64{}, torch.Float64, b.dev)
	var rowNLL, rowArg []torch.Tensor

	chunk := int64(b.lossChunk)
	if chunk <= 0 {
		chunk = max(256, (32<<20)/v)
	}
	R := int64(len(sel))
	for r0 := int64(0); r0 < R; r0 += chunk {
		m := min(chunk, R-r0)
		cs := torch.NewScope()
		hc := cs.Narrow(hd, 0, r0, m)
		z := in.student.logits(cs, hc, w, cdt)
		tg := cs.Narrow(tgt, 0, r0, m)
		logp := cs.LogSoftmax(z, -1, torch.Float32)
		nll := cs.View(cs.Neg(cs.Gather(logp, 1, tg)), m)
		ceSum = s.Add(ceSum, cs.Sum(cs.ToDType(nll, torch.Float64), false))
		if in.rows {
			rowNLL = append(rowNLL, s.Adopt(cs.Keep(nll)))
			rowArg = append(rowArg, s.Adopt(cs.Keep(cs.Argmax(z, -1))))
		}
		var logq, pt, ptIdx torch.Tensor
		if kl {
			logq = logp
			if tau != 1 {
				logq = cs.LogSoftmax(cs.Scale(z, 1/tau), -1, torch.Float32)
			}
			zt := in.teacher.logits(cs, cs.Narrow(th, 0, r0, m), tw, b.computeDType(in.teacher))
			var klRows torch.Tensor
			if topK > 0 {
				vals, ids := cs.TopK(zt, topK, -1)
				logpt := cs.LogSoftmax(cs.Scale(vals, 1/tau), -1, torch.Float32)
				pt, ptIdx = cs.Exp(logpt), ids
				klRows = cs.Sum(cs.Mul(pt, cs.Sub(logpt, cs.Gather(logq, 1, ids))), false, -1)
			} else {
				logpt := cs.LogSoftmax(cs.Scale(zt, 1/tau), -1, torch.Float32)
				pt = cs.Exp(logpt)
				klRows = cs.Sum(cs.Mul(pt, cs.Sub(logpt, logq)), false, -1)
			}
			klSum = s.Add(klSum, cs.Sum(cs.ToDType(klRows, torch.Float64), false))
		}
		if in.grad {
			// d(loss)/dz: cCE·(softmax(z) − onehot) + cKL·(q^τ − p^τ).
			var g torch.Tensor
			if cCE != 0 {
				g = cs.Scale(cs.Exp(logp), cCE)
				g = cs.ScatterAdd(g, 1, tg, cs.Full([]int64{m, 1}, -cCE, torch.Float32, b.dev))
			}
			if kl && cKL != 0 {
				gk := cs.Scale(cs.Exp(logq), cKL)
				if ptIdx.Defined() {
					gk = cs.ScatterAdd(gk, 1, ptIdx, cs.Scale(pt, -cKL))
				} else {
					gk = cs.Sub(gk, cs.Scale(pt, cKL))
				}
				if g.Defined() {
					g = cs.Add(g, gk)
				} else {
					g = gk
				}
			}
			if !g.Defined() {
				g = cs.ZerosLike(z)
			}
			gc := cs.ToDType(in.student.softCapGrad(cs, z, g), cdt)
			dh = append(dh, s.Adopt(cs.Keep(cs.ToDType(cs.Matmul(gc, w), torch.Float32))))
			if wantW {
				part := cs.ToDType(cs.Matmul(cs.Transpose(gc, 0, 1), cs.ToDType(hc, cdt)), torch.Float32)
				if dW.Defined() {
					s.AddInPlace(dW, part)
				} else {
					dW = s.Adopt(cs.Keep(part))
				}
			}
		}
		err := cs.Err()
		cs.Free()
		if err != nil {
			return out, fmt.Errorf("loss rows %d–%d: %w", r0, r0+m-1, err)
		}
	}
	if in.grad {
		// Backward first: reading the sums below waits for the device, and
		// it should find the backward pass already queued.
		torch.SetGradEnabled(true)
		g := s.Cat(dh, 0)
		obj := s.Sum(s.Mul(hsel, g), false)
		if in.aux.Defined() {
			obj = s.Add(obj, s.Scale(in.aux, in.scale*in.obj.routerAux))
		}
		s.Backward(obj)
		if wantW {
			s.AccumulateGrad(in.student.w[cls], dW)
		}
		torch.SetGradEnabled(false)
	}
	out.ce = s.Item64(ceSum) / total
	if kl {
		out.kl = s.Item64(klSum) / total
		out.loss = (1-alpha)*out.ce + alpha*st*out.kl
	} else {
		out.loss = out.ce
	}
	if in.aux.Defined() {
		out.aux = s.Item64(in.aux)
		out.loss += in.obj.routerAux * out.aux
	}
	if in.rows {
		nll := s.Float32s(s.Cat(rowNLL, 0))
		arg := s.Int64s(s.Cat(rowArg, 0))
		for i, r := range sel {
			out.rowNLL[r] = float64(nll[i])
			out.rowArgmax[r] = arg[i]
		}
	}
	if err := s.Err(); err != nil {
		return out, err
	}
	if math.IsNaN(out.loss) || math.IsInf(out.loss, 0) {
		return out, fmt.Errorf("loss is %g", out.loss)
	}
	return out, nil
}

// auxOnly is the loss of a batch without scored rows: the routers'
// load-balancing loss alone, which every row feeds.
func (b *Backend) auxOnly(s *torch.Scope, in lossIn, out lossOut) (lossOut, error) {
	if !in.aux.Defined() {
		return out, nil
	}
	if in.grad {
		prev := torch.SetGradEnabled(true)
		s.Backward(s.Scale(in.aux, in.scale*in.obj.routerAux))
		torch.SetGradEnabled(prev)
	}
	out.aux = s.Item64(in.aux)
	out.loss = in.obj.routerAux * out.aux
	return out, s.Err()
}

// trainable reports whether autograd tracks the named weight.
func (b *Backend) trainable(m *model, name string) bool {
	t, ok := m.w[name]
	return ok && t.RequiresGrad()
}
