package blas

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

// TestKernelGenerated checks that kernel_amd64.s is what gen/gen_kernel.py
// writes (make asm-check does the same from the shell).
func TestKernelGenerated(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	want, err := exec.Command(python, "gen/gen_kernel.py").Output()
	if err != nil {
		t.Fatalf("running gen/gen_kernel.py: %v", err)
	}
	got, err := os.ReadFile("kernel_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("kernel_amd64.s differs from what gen/gen_kernel.py writes; run plugins/cpu/blas/gen/generate.sh")
	}
	if !bytes.HasPrefix(got, []byte("// Code generated ")) || !bytes.Contains(got, []byte("DO NOT EDIT.\n")) {
		t.Error("kernel_amd64.s lacks the \"Code generated … DO NOT EDIT.\" header")
	}
}
