package bench

import (
	"context"
	"os/exec"
	"strings"
)

// peaks are dense bf16 tensor-core peaks in TFLOP/s by card name, from
// NVIDIA's data sheets: MFU's denominator. More specific names come
// first ("H100 PCIe" before "H100").
var peaks = []struct {
	match  string
	tflops float64
}{
	{"H200", 989.4}, {"H100 PCIe", 756.5}, {"H100 NVL", 835.5}, {"H100", 989.4}, {"GH200", 989.4},
	{"A100", 312}, {"L40S", 362.05}, {"L4", 121}, {"A10", 125},
}

// PeakTFLOPS is the dense bf16 peak of the accelerator named card, 0 when
// the card is not in the table.
func PeakTFLOPS(card string) float64 {
	for _, p := range peaks {
		if strings.Contains(card, p.match) {
			return p.tflops
		}
	}
	return 0
}

// DetectCard is the first GPU's name as nvidia-smi reports it, "" where
// there is no nvidia-smi or no GPU.
func DetectCard(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "nvidia-smi", "--query-gpu=name", "--format=csv,noheader").Output()
	if err != nil {
		return ""
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(first)
}
