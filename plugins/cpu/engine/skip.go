package engine

import "fmt"

// SetSkip makes later Forward calls bypass the given layers: the residual
// stream passes through them unchanged, as if they were removed from the
// model (depth-importance sweeps). Backward treats them as the identity.
// Nil or empty runs every layer again.
func (e *Engine) SetSkip(layers []int) error {
	nl := len(e.P.Layers)
	skip := make([]bool, nl)
	for _, l := range layers {
		if l < 0 || l >= nl {
			return fmt.Errorf("engine: skipped layer %d outside [0, %d)", l, nl)
		}
		if skip[l] {
			return fmt.Errorf("engine: skipped layer %d listed twice", l)
		}
		skip[l] = true
	}
	e.ready, e.gradOK = false, false
	if len(layers) == 0 {
		e.skip = nil
	} else {
		e.skip = skip
	}
	return nil
}

// Skipped lists the layers Forward bypasses, in increasing order.
func (e *Engine) Skipped() []int {
	var out []int
	for l, s := range e.skip {
		if s {
			out = append(out, l)
		}
	}
	return out
}

func (e *Engine) skipped(l int) bool { return e.skip != nil && e.skip[l] }
