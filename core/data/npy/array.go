package npy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
)

// Array is a whole .npy array in memory.
type Array struct {
	Header
	// Data holds the elements' bytes in C (row-major) order and in the byte
	// order Descr names. Read converts Fortran-ordered files, so Fortran is
	// always false on an Array it returns.
	Data []byte
}

// Read loads the .npy file at path.
func Read(path string) (*Array, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("npy: %w", err)
	}
	a, err := Parse(data)
	if err != nil {
		return nil, withFile(err, path)
	}
	return a, nil
}

// withFile names the file in a FormatError.
func withFile(err error, path string) error {
	var fe *FormatError
	if errors.As(err, &fe) && fe.File == "" {
		c := *fe
		c.File = path
		return &c
	}
	return err
}

// Parse decodes a .npy file held in data. The returned Array's Data aliases
// data unless the file is in Fortran order.
func Parse(data []byte) (*Array, error) {
	h, off, err := ParseHeader(data)
	if err != nil {
		return nil, err
	}
	dt, _ := parseDescr(h.Descr) // ParseHeader validated it
	want := h.Len() * dt.size
	if got := len(data) - off; got != want {
		return nil, errAt(off, "shape %v of %s needs %d data bytes, the file has %d", h.Shape, h.Descr, want, got)
	}
	a := &Array{Header: h, Data: data[off:]}
	if h.Fortran {
		a.Data = fortranToC(a.Data, h.Shape, dt.size)
		a.Fortran = false
	}
	return a, nil
}

// fortranToC reorders column-major elements into row-major order.
func fortranToC(src []byte, shape []int, size int) []byte {
	dst := make([]byte, len(src))
	if len(src) == 0 || len(shape) < 2 {
		copy(dst, src)
		return dst
	}
	// stride[j] is the column-major element stride of axis j.
	stride := make([]int, len(shape))
	s := 1
	for j := range shape {
		stride[j] = s
		s *= shape[j]
	}
	idx := make([]int, len(shape))
	f := 0 // column-major offset of idx, in elements
	for c := 0; c*size < len(dst); c++ {
		copy(dst[c*size:(c+1)*size], src[f*size:(f+1)*size])
		// Advance idx in row-major order, keeping f in step.
		for j := len(shape) - 1; j >= 0; j-- {
			idx[j]++
			f += stride[j]
			if idx[j] < shape[j] {
				break
			}
			f -= idx[j] * stride[j]
			idx[j] = 0
		}
	}
	return dst
}

// Int32 returns the elements as int32. Any bool or integer dtype converts;
// a value outside int32's range is an error, as is a float dtype.
func (a *Array) Int32() ([]int32, error) {
	return intsOf[int32](a, math.MinInt32, math.MaxInt32)
}

// Int64 returns the elements as int64 (bool and integer dtypes).
func (a *Array) Int64() ([]int64, error) {
	return intsOf[int64](a, math.MinInt64, math.MaxInt64)
}

// Uint8 returns the elements as uint8 (bool and integer dtypes in range).
func (a *Array) Uint8() ([]uint8, error) {
	return intsOf[uint8](a, 0, math.MaxUint8)
}

// Float32 returns the elements as float32; integer and float64 elements are
// converted (rounding as Go's conversion does).
func (a *Array) Float32() ([]float32, error) { return floatsOf[float32](a) }

// Float64 returns the elements as float64.
func (a *Array) Float64() ([]float64, error) { return floatsOf[float64](a) }

// Bool returns the elements of a bool array.
func (a *Array) Bool() ([]bool, error) {
	dt, err := a.dtype()
	if err != nil {
		return nil, err
	}
	if dt.kind != 'b' {
		return nil, fmt.Errorf("npy: dtype %s is not bool", a.Descr)
	}
	out := make([]bool, a.Len())
	for i := range out {
		out[i] = a.Data[i] != 0
	}
	return out, nil
}

func (a *Array) dtype() (dtype, error) {
	dt, err := parseDescr(a.Descr)
	if err != nil {
		return dt, fmt.Errorf("npy: %w", err)
	}
	if len(a.Data) != a.Len()*dt.size {
		return dt, fmt.Errorf("npy: %d data bytes do not hold shape %v of %s", len(a.Data), a.Shape, a.Descr)
	}
	if a.Fortran && len(a.Shape) > 1 {
		return dt, fmt.Errorf("npy: array is in Fortran order")
	}
	return dt, nil
}

func (dt dtype) order() binary.ByteOrder {
	if dt.bigEndian {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

// raw reads element i's bits, zero-extended.
func (dt dtype) raw(b []byte, i int) uint64 {
	p := b[i*dt.size:]
	switch dt.size {
	case 1:
		return uint64(p[0])
	case 2:
		return uint64(dt.order().Uint16(p))
	case 4:
		return uint64(dt.order().Uint32(p))
	default:
		return dt.order().Uint64(p)
	}
}

// signed reads element i of an integer or bool dtype; big reports an
// unsigned 64-bit value above MaxInt64, which v cannot hold.
func (dt dtype) signed(b []byte, i int) (v int64, big bool) {
	r := dt.raw(b, i)
	if dt.kind == 'i' {
		shift := 64 - 8*dt.size
		return int64(r<<shift) >> shift, false
	}
	if r > math.MaxInt64 {
		return 0, true
	}
	return int64(r), false
}

func intsOf[T int32 | int64 | uint8](a *Array, lo, hi int64) ([]T, error) {
	dt, err := a.dtype()
	if err != nil {
		return nil, err
	}
	if dt.kind == 'f' {
		return nil, fmt.Errorf("npy: dtype %s is not an integer type", a.Descr)
	}
	n := a.Len()
	out := make([]T, n)
	if dt.kind == 'i' && dt.size == 4 && !dt.bigEndian && lo <= math.MinInt32 && hi >= math.MaxInt32 {
		// The common case: little-endian int32 tokens.
		for i := range out {
			out[i] = T(int32(binary.LittleEndian.Uint32(a.Data[4*i:])))
		}
		return out, nil
	}
	for i := range out {
		v, big := dt.signed(a.Data, i)
		if big || v < lo || v > hi {
			return nil, fmt.Errorf("npy: element %d (%s) is out of range [%d, %d]", i, elemString(dt, a.Data, i), lo, hi)
		}
		out[i] = T(v)
	}
	return out, nil
}

func elemString(dt dtype, b []byte, i int) string {
	if dt.kind == 'i' {
		v, _ := dt.signed(b, i)
		return fmt.Sprint(v)
	}
	return fmt.Sprint(dt.raw(b, i))
}

func floatsOf[T float32 | float64](a *Array) ([]T, error) {
	dt, err := a.dtype()
	if err != nil {
		return nil, err
	}
	out := make([]T, a.Len())
	for i := range out {
		switch {
		case dt.kind == 'f' && dt.size == 4:
			out[i] = T(math.Float32frombits(uint32(dt.raw(a.Data, i))))
		case dt.kind == 'f':
			out[i] = T(math.Float64frombits(dt.raw(a.Data, i)))
		case dt.kind == 'i':
			v, _ := dt.signed(a.Data, i)
			out[i] = T(v)
		default:
			out[i] = T(dt.raw(a.Data, i))
		}
	}
	return out, nil
}
