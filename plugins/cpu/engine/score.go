package engine

import (
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/plugins/cpu/blas"
	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

// RowScores scores single rows of the last Forward: for each row r with
// targets[r] ≥ 0 it sets nll[r] = −log p(targets[r]) and, when argmax is
// not nil, argmax[r] to the most likely token (the lowest id among equal
// logits). Other rows get nll 0 and argmax −1. Only the scored rows' logits
// are computed, so scoring a few continuation tokens of long contexts
// costs little.
func (e *Engine) RowScores(targets []int32, nll []float64, argmax []int32) error {
	if !e.ready {
		return fmt.Errorf("engine: RowScores before Forward")
	}
	n, v, d := e.n, e.P.Config.Vocab, e.P.Config.Hidden
	if len(targets) != n || len(nll) != n || (argmax != nil && len(argmax) != n) {
		return fmt.Errorf("engine: RowScores needs %d targets and results, got %d, %d and %d", n, len(targets), len(nll), len(argmax))
	}
	var rows []int
	for r, id := range targets {
		nll[r] = 0
		if argmax != nil {
			argmax[r] = -1
		}
		if id < 0 {
			continue
		}
		if int(id) >= v {
			return fmt.Errorf("engine: target id %d of row %d outside vocabulary of %d", id, r, v)
		}
		rows = append(rows, r)
	}
	chunk := e.lossChunk()
	e.logitBuf = grow(e.logitBuf, chunk*v)
	e.gathered = grow(e.gathered, chunk*d)
	for c0 := 0; c0 < len(rows); c0 += chunk {
		part := rows[c0:min(len(rows), c0+chunk)]
		m := len(part)
		for i, r := range part {
			copy(e.gathered[i*d:(i+1)*d], e.lnf[r*d:(r+1)*d])
		}
		logits := e.logitBuf[:m*v]
		e.project(e.gathered, m, logits)
		parallel.For(e.threads, m, func(lo, hi int) {
			tmp := make([]float32, v)
			for i := lo; i < hi; i++ {
				r := part[i]
				z := logits[i*v : (i+1)*v]
				mx := blas.Smax(z)
				s := blas.ExpShifted(tmp, z, mx, 1)
				nll[r] = math.Log(s) - float64(z[targets[r]]-mx)
				if argmax != nil {
					for j, x := range z {
						if x == mx {
							argmax[r] = int32(j)
							break
						}
					}
				}
			}
		})
	}
	return nil
}
