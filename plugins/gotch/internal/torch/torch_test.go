package torch

import (
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestMatmulAndTransfer(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := NewScope()
	defer s.Free()
	a := s.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	b := s.FromFloat32([]float32{1, 0, 0, 1, 1, 1}, 3, 2)
	got := s.Float32s(s.Matmul(a, b))
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	want := []float32{4, 5, 10, 11}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("matmul = %v, want %v", got, want)
		}
	}
	if sh := s.Matmul(a, b).Shape(); len(sh) != 2 || sh[0] != 2 || sh[1] != 2 {
		t.Fatalf("shape %v", sh)
	}
}

func TestStickyError(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := NewScope()
	defer s.Free()
	a := s.FromFloat32([]float32{1, 2, 3}, 3)
	b := s.FromFloat32([]float32{1, 2}, 2)
	c := s.Add(a, b) // shapes do not broadcast
	if c.Defined() || s.Err() == nil {
		t.Fatal("expected an error from a broadcast mismatch")
	}
	if !strings.Contains(s.Err().Error(), "Add") {
		t.Fatalf("error %q does not name the operation", s.Err())
	}
	if d := s.Add(a, a); d.Defined() {
		t.Fatal("operation ran after an error")
	}
}

func TestAutogradAndAdamW(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := NewScope()
	defer s.Free()
	w := s.FromFloat32([]float32{1, -2}, 2)
	s.SetRequiresGrad(w, true)
	loss := s.Sum(s.Square(w), false) // d/dw = 2w
	s.Backward(loss)
	g := s.Grad(w)
	if got := s.Float32s(g); s.Err() != nil || got[0] != 2 || got[1] != -4 {
		t.Fatalf("grad %v, err %v", got, s.Err())
	}
	if n := s.Item(s.GlobalNorm([]Tensor{g})); math.Abs(n-math.Sqrt(20)) > 1e-6 {
		t.Fatalf("norm %v", n)
	}
	m, v := s.ZerosLike(w), s.ZerosLike(w)
	// First AdamW step without decay moves each weight by lr against the
	// gradient's sign (m̂/sqrt(v̂) = ±1).
	s.AdamWStep([]Tensor{w}, []Tensor{g}, []Tensor{m}, []Tensor{v}, []float64{0}, 1, 0.1, 0.9, 0.999, 1e-12, 1, false)
	got := s.Float32s(w)
	if s.Err() != nil || math.Abs(float64(got[0])-0.9) > 1e-6 || math.Abs(float64(got[1])+1.9) > 1e-6 {
		t.Fatalf("after step %v, err %v", got, s.Err())
	}
}

func TestStubbedWrapperIsAnError(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := NewScope()
	defer s.Free()
	q := s.Zeros([]int64{1, 1, 2, 4}, Float32, CPU)
	o := s.SDPA(q, q, q, 0.5)
	if Version() < "2" && (o.Defined() || s.Err() == nil) {
		t.Fatalf("libtorch %s: SDPA should be a stub", Version())
	}
}

// TestIndexAddSigmoid: IndexAdd accumulates repeated rows and passes
// gradients to both inputs; Sigmoid is 1/(1+e^−x).
func TestIndexAddSigmoid(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := NewScope()
	defer s.Free()
	base := s.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 3, 2)
	src := s.FromFloat32([]float32{10, 20, 30, 40, 50, 60}, 3, 2)
	s.SetRequiresGrad(base, true)
	s.SetRequiresGrad(src, true)
	idx := s.FromInt64([]int64{2, 0, 2}, 3)
	out := s.IndexAdd(base, 0, idx, src)
	got := s.Float32s(out)
	want := []float32{1 + 30, 2 + 40, 3, 4, 5 + 10 + 50, 6 + 20 + 60}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("index_add = %v, want %v", got, want)
		}
	}
	// d/dsrc[r] of Σ out·c is c[idx[r]].
	c := s.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 3, 2)
	s.Backward(s.Sum(s.Mul(out, c), false))
	gs, gb := s.Float32s(s.Grad(src)), s.Float32s(s.Grad(base))
	wantS := []float32{5, 6, 1, 2, 5, 6}
	for i := range wantS {
		if gs[i] != wantS[i] || gb[i] != float32(i+1) {
			t.Fatalf("gradients src %v base %v, want %v and %v", gs, gb, wantS, []float32{1, 2, 3, 4, 5, 6})
		}
	}
	sg := s.Float32s(s.Sigmoid(s.FromFloat32([]float32{-2, 0, 3}, 3)))
	for i, x := range []float64{-2, 0, 3} {
		if w := 1 / (1 + math.Exp(-x)); math.Abs(float64(sg[i])-w) > 1e-6 {
			t.Errorf("sigmoid(%g) = %g, want %g", x, sg[i], w)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestUnbind: the slices of a tensor along a dim, each a view whose
// gradient reaches the right part of the source.
func TestUnbind(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := NewScope()
	defer s.Free()
	w := s.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 3, 2)
	s.SetRequiresGrad(w, true)
	parts := s.Unbind(w, 0)
	if len(parts) != 3 {
		t.Fatalf("%d slices, want 3", len(parts))
	}
	if got := s.Float32s(parts[1]); got[0] != 3 || got[1] != 4 {
		t.Fatalf("slice 1 = %v, want [3 4]", got)
	}
	// Only slices 0 and 2 feed the loss, slice 2 twice.
	s.Backward(s.Add(s.Sum(parts[0], false), s.Scale(s.Sum(parts[2], false), 2)))
	g := s.Float32s(s.Grad(w))
	want := []float32{1, 1, 0, 0, 2, 2}
	for i := range want {
		if g[i] != want[i] {
			t.Fatalf("gradient %v, want %v", g, want)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}
