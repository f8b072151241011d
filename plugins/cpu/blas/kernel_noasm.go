//go:build !amd64 || purego

package blas

func activeKernel() kernel { return goKernel }
