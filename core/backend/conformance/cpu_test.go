package conformance_test

import (
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/conformance"
	"github.com/whittle-ml/whittle/plugins/cpu"
)

func TestCPU(t *testing.T) {
	conformance.Run(t, func() (backend.Backend, error) { return cpu.New(cpu.Options{}) }, conformance.Options{})
}
