package conformance_test

import (
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/conformance"
	"github.com/whittle-ml/whittle/plugins/cpu"
)

// TestCPU runs the suite against the CPU backend, with a second CPU
// backend as the reference: the suite's own check that its golden model
// and tolerances accept a known-good backend (the mutations it must reject
// are exercised by the gotch backend's tests).
func TestCPU(t *testing.T) {
	open := func() (backend.Backend, error) { return cpu.New(cpu.Options{}) }
	conformance.Run(t, open, conformance.Options{Reference: open})
}
