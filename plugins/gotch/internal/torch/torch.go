// Package torch is a thin layer over gotch's libtch C API: tensors whose
// lifetimes a Scope owns, and a sticky error in place of gotch's log.Fatal
// paths.
//
// gotch's own ts package frees tensors from finalizers, allocates 100 KB of
// Go heap per tensor to make the collector notice them and exits the process
// from its Must* helpers; a training loop on a GPU needs deterministic
// frees instead, so this package calls libtch directly.
//
// libtorch keeps its error message, gradient mode and autocast state per OS
// thread: every call must come from one locked thread (see Worker).
package torch

// #include <stdlib.h>
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	lib "github.com/sugarme/gotch/libtch"
)

// DType is a libtorch ScalarType.
type DType int32

// The dtypes whittle uses, numbered as c10::ScalarType.
const (
	Uint8    DType = 0
	Int32    DType = 3
	Int64    DType = 4
	Float16  DType = 5
	Float32  DType = 6
	Float64  DType = 7
	Bool     DType = 11
	BFloat16 DType = 15
)

// Size is the element size in bytes.
func (d DType) Size() int {
	switch d {
	case Uint8, Bool:
		return 1
	case Float16, BFloat16:
		return 2
	case Int32, Float32:
		return 4
	default:
		return 8
	}
}

func (d DType) String() string {
	switch d {
	case Uint8:
		return "uint8"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case Float16:
		return "float16"
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	case Bool:
		return "bool"
	case BFloat16:
		return "bfloat16"
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// Device is a libtorch device as libtch numbers them: -1 the CPU, i ≥ 0 the
// i-th CUDA device.
type Device int32

// CPU is the host.
const CPU Device = -1

// CUDA returns the i-th CUDA device.
func CUDA(i int) Device { return Device(i) }

// IsCUDA reports whether d is a GPU.
func (d Device) IsCUDA() bool { return d >= 0 }

func (d Device) String() string {
	if d < 0 {
		return "cpu"
	}
	return fmt.Sprintf("cuda:%d", int32(d))
}

// CUDAAvailable reports whether libtorch sees a CUDA device.
func CUDAAvailable() bool { return lib.AtcCudaIsAvailable() }

// CUDADeviceCount is the number of CUDA devices.
func CUDADeviceCount() int { return int(lib.AtcCudaDeviceCount()) }

// Synchronize waits for the device's queued work.
func Synchronize(d Device) {
	if d.IsCUDA() {
		lib.AtcSynchronize(int64(d))
	}
}

// Version is the libtorch version libtch.so was built against.
func Version() string { return lib.WhtTorchVersion() }

// HasFusedAdamW reports whether the fused AdamW kernel is compiled in.
func HasFusedAdamW() bool { return lib.WhtHasFusedAdamW() }

// SetThreads sets libtorch's intra-op thread count.
func SetThreads(n int) {
	if n > 0 {
		lib.WhtSetNumThreads(n)
	}
}

// Threads is libtorch's intra-op thread count.
func Threads() int { return lib.WhtGetNumThreads() }

// MaxMemory returns and resets the peak bytes allocated on a CUDA device.
func MaxMemory(d Device) int64 {
	if !d.IsCUDA() {
		return 0
	}
	return lib.WhtCudaMaxMemory(int(d))
}

// SetGradEnabled switches autograd recording on this thread and returns
// the previous setting.
func SetGradEnabled(on bool) bool {
	v := 0
	if on {
		v = 1
	}
	return lib.AtGradSetEnabled(v) != 0
}

// lastErr collects libtch's pending error on this thread, if any.
func lastErr() error {
	p := lib.GetAndResetLastErr()
	if p == nil {
		if msg := lib.WhtLastError(); msg != "" {
			return errors.New(firstLine(msg))
		}
		return nil
	}
	msg := C.GoString((*C.char)(unsafe.Pointer(p)))
	C.free(unsafe.Pointer(p))
	return errors.New(firstLine(msg))
}

// firstLine trims libtorch's multi-line messages (C++ backtraces) to what
// a person reads.
func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			if i == 0 {
				continue
			}
			return s[:i]
		}
	}
	return s
}

// Tensor is a handle on a libtorch tensor. The zero Tensor is undefined
// (libtorch's None for optional arguments).
type Tensor struct{ c lib.Ctensor }

// Defined reports whether t refers to a tensor.
func (t Tensor) Defined() bool { return t.c != nil }

// Shape returns t's sizes.
func (t Tensor) Shape() []int64 {
	if t.c == nil {
		return nil
	}
	n := lib.AtDim(t.c)
	if n == 0 {
		return []int64{}
	}
	buf := C.malloc(C.size_t(n) * 8)
	defer C.free(buf)
	lib.AtShape(t.c, buf)
	out := make([]int64, n)
	copy(out, unsafe.Slice((*int64)(buf), n))
	return out
}

// Numel is the number of elements.
func (t Tensor) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape() {
		n *= d
	}
	return n
}

// DType is t's element type.
func (t Tensor) DType() DType { return DType(lib.AtScalarType(t.c)) }

// Device is where t lives.
func (t Tensor) Device() Device { return Device(lib.AtDevice(t.c)) }

// RequiresGrad reports whether autograd tracks t.
func (t Tensor) RequiresGrad() bool { return lib.AtRequiresGrad(t.c) }

// Free releases a tensor that no Scope owns (see Scope.Keep).
func Free(t Tensor) {
	if t.c != nil {
		lib.AtFree(t.c)
	}
}

// Scope owns the tensors created through it until Free. The first failing
// operation's error sticks: later operations return undefined tensors and
// do nothing, so a sequence of operations is checked once, at its end.
type Scope struct {
	owned []lib.Ctensor
	err   error
}

// NewScope returns an empty scope.
func NewScope() *Scope { return &Scope{} }

// Err is the first error of an operation in s.
func (s *Scope) Err() error { return s.err }

// Fail records err (when s has none yet) so that later operations do nothing.
func (s *Scope) Fail(err error) {
	if s.err == nil && err != nil {
		s.err = err
	}
}

// Free releases every tensor s owns. The scope stays usable.
func (s *Scope) Free() {
	for _, c := range s.owned {
		lib.AtFree(c)
	}
	s.owned = s.owned[:0]
}

// Keep hands t over to the caller, who must Free it (or Adopt it into
// another scope).
func (s *Scope) Keep(t Tensor) Tensor {
	for i := len(s.owned) - 1; i >= 0; i-- {
		if s.owned[i] == t.c {
			s.owned = append(s.owned[:i], s.owned[i+1:]...)
			break
		}
	}
	return t
}

// Drop frees t now if s owns it (memory is released once nothing else,
// such as an autograd graph, refers to the tensor).
func (s *Scope) Drop(t Tensor) {
	for i := len(s.owned) - 1; i >= 0; i-- {
		if s.owned[i] == t.c {
			s.owned = append(s.owned[:i], s.owned[i+1:]...)
			lib.AtFree(t.c)
			return
		}
	}
}

// Adopt makes s own t.
func (s *Scope) Adopt(t Tensor) Tensor {
	if t.c != nil {
		s.owned = append(s.owned, t.c)
	}
	return t
}

// run calls an operation that writes one new tensor through out.
func (s *Scope) run(op string, f func(out *lib.Ctensor)) Tensor {
	if s.err != nil {
		return Tensor{}
	}
	var out [1]lib.Ctensor
	f(&out[0])
	if err := lastErr(); err != nil {
		s.err = fmt.Errorf("torch %s: %w", op, err)
		return Tensor{}
	}
	if out[0] == nil {
		s.err = fmt.Errorf("torch %s: no result", op)
		return Tensor{}
	}
	s.owned = append(s.owned, out[0])
	return Tensor{out[0]}
}

// run2 calls an operation with two results.
func (s *Scope) run2(op string, f func(out *lib.Ctensor)) (Tensor, Tensor) {
	if s.err != nil {
		return Tensor{}, Tensor{}
	}
	var out [2]lib.Ctensor
	f(&out[0])
	if err := lastErr(); err != nil {
		s.err = fmt.Errorf("torch %s: %w", op, err)
		return Tensor{}, Tensor{}
	}
	s.owned = append(s.owned, out[0], out[1])
	return Tensor{out[0]}, Tensor{out[1]}
}

// Unbind splits t along dim into its slices (views). Unlike a Select per
// slice, whose backward materializes a zero-filled gradient of t's full
// size for every slice, their gradients come back to t as one stacked
// tensor.
func (s *Scope) Unbind(t Tensor, dim int64) []Tensor {
	if !s.ok(t) {
		return nil
	}
	var out []Tensor
	s.check("Unbind", func() {
		p := lib.AtgUnbind(t.c, dim)
		if p == nil {
			return
		}
		// A malloc'd, null-terminated array of new tensors.
		defer C.free(unsafe.Pointer(p))
		for q := p; *q != nil; q = (*lib.Ctensor)(unsafe.Add(unsafe.Pointer(q), unsafe.Sizeof(*q))) {
			s.owned = append(s.owned, *q)
			out = append(out, Tensor{*q})
		}
	})
	return out
}

// check runs an operation without a tensor result.
func (s *Scope) check(op string, f func()) {
	if s.err != nil {
		return
	}
	f()
	if err := lastErr(); err != nil {
		s.err = fmt.Errorf("torch %s: %w", op, err)
	}
}

// ok reports whether operations should proceed with these operands.
func (s *Scope) ok(ts ...Tensor) bool {
	if s.err != nil {
		return false
	}
	for _, t := range ts {
		if t.c == nil {
			s.err = errors.New("torch: operation on an undefined tensor")
			return false
		}
	}
	return true
}

// withScalar passes a libtorch Scalar holding v to f.
func withScalar(v float64, f func(lib.Cscalar)) {
	sc := lib.AtsFloat(v)
	defer lib.AtsFree(sc)
	f(sc)
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

// keepAlive ties Go slices handed to C to the call's duration.
func keepAlive(v any) { runtime.KeepAlive(v) }
