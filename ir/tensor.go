package ir

import (
	"fmt"
	"sync"
)

// Tensor is a named model weight. Its bytes are little-endian storage of
// DType in row-major order and are produced lazily by a loader (usually a
// slice of a memory-mapped file), so inspecting or planning a large model
// reads only headers.
type Tensor struct {
	DType DType
	Shape []int

	once sync.Once
	raw  []byte
	err  error
	load func() ([]byte, error)
}

// NewTensor wraps bytes that are already in memory.
func NewTensor(d DType, shape []int, raw []byte) *Tensor {
	return &Tensor{DType: d, Shape: append([]int(nil), shape...), raw: raw, load: func() ([]byte, error) { return raw, nil }}
}

// LazyTensor returns a tensor whose bytes come from load on first use.
// load must return exactly NumBytes() bytes.
func LazyTensor(d DType, shape []int, load func() ([]byte, error)) *Tensor {
	return &Tensor{DType: d, Shape: append([]int(nil), shape...), load: load}
}

// FromFloat32 builds an in-memory tensor of dtype d from float32 values.
func FromFloat32(d DType, shape []int, v []float32) *Tensor {
	return NewTensor(d, shape, EncodeFloat32(d, v))
}

// NumElements is the product of the shape.
func (t *Tensor) NumElements() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// NumBytes is the storage size.
func (t *Tensor) NumBytes() int { return t.NumElements() * t.DType.Size() }

// Bytes returns the raw storage, loading it on first call. The slice may
// alias a read-only memory map: never write to it.
func (t *Tensor) Bytes() ([]byte, error) {
	t.once.Do(func() {
		if t.DType.Size() == 0 {
			t.err = fmt.Errorf("tensor of shape %v has unknown dtype %s", t.Shape, t.DType)
			return
		}
		if t.raw == nil && t.load != nil {
			t.raw, t.err = t.load()
		}
		// Checked for in-memory storage too: a short buffer handed to
		// NewTensor would otherwise make Float32 index past its end.
		if t.err == nil && len(t.raw) != t.NumBytes() {
			t.err = fmt.Errorf("tensor storage is %d bytes, shape %v of %s needs %d", len(t.raw), t.Shape, t.DType, t.NumBytes())
			t.raw = nil
		}
	})
	return t.raw, t.err
}

// Float32 returns a fresh float32 copy of the tensor's values.
func (t *Tensor) Float32() ([]float32, error) {
	raw, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.NumElements())
	DecodeFloat32(t.DType, raw, out)
	return out, nil
}

// Convert returns the tensor stored as dtype d (the same tensor if it
// already is).
func (t *Tensor) Convert(d DType) (*Tensor, error) {
	if d == t.DType {
		return t, nil
	}
	v, err := t.Float32()
	if err != nil {
		return nil, err
	}
	return FromFloat32(d, t.Shape, v), nil
}

// KeepIndices returns a new tensor holding only the given indices along dim,
// in the given order. It works on raw storage, so any dtype is kept as is.
func (t *Tensor) KeepIndices(dim int, idx []int) (*Tensor, error) {
	if dim < 0 || dim >= len(t.Shape) {
		return nil, fmt.Errorf("dim %d out of range for shape %v", dim, t.Shape)
	}
	n := t.Shape[dim]
	for _, i := range idx {
		if i < 0 || i >= n {
			return nil, fmt.Errorf("index %d out of range [0,%d) along dim %d", i, n, dim)
		}
	}
	raw, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	outer := 1
	for _, s := range t.Shape[:dim] {
		outer *= s
	}
	inner := t.DType.Size()
	for _, s := range t.Shape[dim+1:] {
		inner *= s
	}
	out := make([]byte, 0, outer*len(idx)*inner)
	for o := 0; o < outer; o++ {
		base := o * n * inner
		for _, i := range idx {
			out = append(out, raw[base+i*inner:base+(i+1)*inner]...)
		}
	}
	shape := append([]int(nil), t.Shape...)
	shape[dim] = len(idx)
	return NewTensor(t.DType, shape, out), nil
}

// KeepIndicesWithin keeps, in each slice g of dimension 0, the entries
// per[g] along dimension dim (≥ 1): the experts of a stacked [experts, …]
// tensor each keep their own neurons. Every per[g] must have one length.
func (t *Tensor) KeepIndicesWithin(dim int, per [][]int) (*Tensor, error) {
	if dim < 1 || dim >= len(t.Shape) {
		return nil, fmt.Errorf("dim %d out of range [1,%d) for shape %v", dim, len(t.Shape), t.Shape)
	}
	if len(per) != t.Shape[0] {
		return nil, fmt.Errorf("%d index lists for %d slices of shape %v", len(per), t.Shape[0], t.Shape)
	}
	n, k := t.Shape[dim], len(per[0])
	for g, idx := range per {
		if len(idx) != k {
			return nil, fmt.Errorf("slice %d keeps %d entries, slice 0 keeps %d", g, len(idx), k)
		}
		for _, i := range idx {
			if i < 0 || i >= n {
				return nil, fmt.Errorf("slice %d: index %d out of range [0,%d) along dim %d", g, i, n, dim)
			}
		}
	}
	raw, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	outer := 1
	for _, s := range t.Shape[1:dim] {
		outer *= s
	}
	inner := t.DType.Size()
	for _, s := range t.Shape[dim+1:] {
		inner *= s
	}
	out := make([]byte, 0, len(per)*outer*k*inner)
	for g, idx := range per {
		for o := 0; o < outer; o++ {
			base := (g*outer + o) * n * inner
			for _, i := range idx {
				out = append(out, raw[base+i*inner:base+(i+1)*inner]...)
			}
		}
	}
	shape := append([]int(nil), t.Shape...)
	shape[dim] = k
	return NewTensor(t.DType, shape, out), nil
}

// PermuteRows reorders dimension 0: row i of the result is row perm[i].
func (t *Tensor) PermuteRows(perm []int) (*Tensor, error) {
	if len(t.Shape) == 0 || len(perm) != t.Shape[0] {
		return nil, fmt.Errorf("permutation of length %d does not fit shape %v", len(perm), t.Shape)
	}
	return t.KeepIndices(0, perm)
}
