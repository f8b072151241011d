//go:build !unix

package engine

// cpuSeconds is unknown here; the benchmark then omits tokens/cpu-s.
func cpuSeconds() float64 { return 0 }
