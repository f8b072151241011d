package backend

import (
	"os"
	"testing"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/conformance"
	"github.com/whittle-ml/whittle/plugins/cpu"
)

// TestConformance runs the backend conformance suite, with the CPU backend
// as the reference. WHITTLE_GOTCH_DEVICE picks the device (default cpu)
// and WHITTLE_GOTCH_PRECISION the precision ("fp32" by default; "bf16"
// loosens the tolerances to bfloat16's).
func TestConformance(t *testing.T) {
	dev := os.Getenv("WHITTLE_GOTCH_DEVICE")
	if dev == "" {
		dev = "cpu"
	}
	prec := os.Getenv("WHITTLE_GOTCH_PRECISION")
	if prec == "" {
		prec = "fp32"
	}
	opts := conformance.Options{
		Reference: func() (api.Backend, error) { return cpu.New(cpu.Options{}) },
	}
	if prec == "bf16" {
		opts.Tol = conformance.BF16Tolerances()
	}
	conformance.Run(t, func() (api.Backend, error) {
		return New(Options{Device: dev, Precision: prec})
	}, opts)
}
