package npy

import (
	"fmt"

	"github.com/whittle-ml/whittle/ir"
)

// File is a .npy file mapped into memory, for reading ranges of rows of a
// large array (a token dataset) without loading all of it: only the pages
// a caller touches are read from disk.
type File struct {
	Header
	path string
	m    *ir.Mapping
	data []byte // the element bytes, inside the mapping
	dt   dtype
}

// Open maps the .npy file at path and checks its header and size. Arrays
// of two or more dimensions must be in C order.
func Open(path string) (*File, error) {
	m, err := ir.MapFile(path)
	if err != nil {
		return nil, fmt.Errorf("npy: %w", err)
	}
	b := m.Bytes()
	h, off, err := ParseHeader(b)
	if err != nil {
		m.Close()
		return nil, withFile(err, path)
	}
	dt, _ := parseDescr(h.Descr)
	if want := h.Len() * dt.size; len(b)-off != want {
		m.Close()
		return nil, &FormatError{File: path, Offset: int64(off),
			Msg: fmt.Sprintf("shape %v of %s needs %d data bytes, the file has %d", h.Shape, h.Descr, want, len(b)-off)}
	}
	if h.Fortran && len(h.Shape) > 1 {
		m.Close()
		return nil, fmt.Errorf("npy: %s: Fortran-ordered arrays cannot be read by rows", path)
	}
	return &File{Header: h, path: path, m: m, data: b[off:], dt: dt}, nil
}

// Close unmaps the file; slices from Raw become invalid.
func (f *File) Close() error { return f.m.Close() }

// Rows is the length of the first axis (1 for a 0-d scalar).
func (f *File) Rows() int {
	if len(f.Shape) == 0 {
		return 1
	}
	return f.Shape[0]
}

// RowLen is the number of elements in one row: the product of the shape
// after the first axis.
func (f *File) RowLen() int {
	n := 1
	if len(f.Shape) > 1 {
		for _, d := range f.Shape[1:] {
			n *= d
		}
	}
	return n
}

// Raw returns the element bytes of rows [start, start+n). The slice aliases
// the read-only mapping: it is valid until Close and must not be written.
func (f *File) Raw(start, n int) ([]byte, error) {
	if start < 0 || n < 0 || start > f.Rows() || n > f.Rows()-start {
		return nil, fmt.Errorf("npy: %s: rows [%d, %d) outside the %d rows of the array", f.path, start, start+n, f.Rows())
	}
	row := f.RowLen() * f.dt.size
	return f.data[start*row : (start+n)*row], nil
}

// rows is rows [start, start+n) as an Array over the mapped bytes.
func (f *File) rows(start, n int) (*Array, error) {
	raw, err := f.Raw(start, n)
	if err != nil {
		return nil, err
	}
	shape := []int{n}
	if len(f.Shape) > 1 {
		shape = append(shape, f.Shape[1:]...)
	}
	return &Array{Header: Header{Descr: f.Descr, Shape: shape}, Data: raw}, nil
}

// Int32Rows returns rows [start, start+n) as int32, flattened (n × RowLen
// elements); see Array.Int32 for the dtypes that convert.
func (f *File) Int32Rows(start, n int) ([]int32, error) {
	a, err := f.rows(start, n)
	if err != nil {
		return nil, err
	}
	v, err := a.Int32()
	if err != nil {
		return nil, fmt.Errorf("%s: rows [%d, %d): %w", f.path, start, start+n, err)
	}
	return v, nil
}

// Uint8Rows returns rows [start, start+n) as uint8, flattened.
func (f *File) Uint8Rows(start, n int) ([]uint8, error) {
	a, err := f.rows(start, n)
	if err != nil {
		return nil, err
	}
	v, err := a.Uint8()
	if err != nil {
		return nil, fmt.Errorf("%s: rows [%d, %d): %w", f.path, start, start+n, err)
	}
	return v, nil
}

// Float32Rows returns rows [start, start+n) as float32, flattened.
func (f *File) Float32Rows(start, n int) ([]float32, error) {
	a, err := f.rows(start, n)
	if err != nil {
		return nil, err
	}
	v, err := a.Float32()
	if err != nil {
		return nil, fmt.Errorf("%s: rows [%d, %d): %w", f.path, start, start+n, err)
	}
	return v, nil
}
