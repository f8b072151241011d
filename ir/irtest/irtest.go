// Package irtest holds what tests of the IR and its users share: models
// of a given architecture with random weights.
package irtest

import (
	"math/rand/v2"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// RandomModel is a model of cfg whose every tensor is drawn from N(0, 1)
// by rng (callers pass their own generator, so each test keeps its
// stream). It fails the test if the result does not validate.
func RandomModel(t testing.TB, cfg ir.Config, rng *rand.Rand) *ir.Model {
	t.Helper()
	names, shapes := cfg.ExpectedShapes()
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Source: "random"}
	for _, n := range names {
		size := 1
		for _, d := range shapes[n] {
			size *= d
		}
		v := make([]float32, size)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		m.Tensors[n] = ir.FromFloat32(ir.F32, shapes[n], v)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}
