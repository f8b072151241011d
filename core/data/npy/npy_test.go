package npy

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The golden files come from numpy (testdata/gen_golden.py); the expected
// values below recompute the generator's formulas.

func golden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func i4x23() []int32 {
	var v []int32
	for i := range 2 {
		for j := range 3 {
			v = append(v, int32(i*10+j-7))
		}
	}
	return v
}

func TestReadGolden(t *testing.T) {
	tests := []struct {
		file  string
		descr string
		shape []int
		check func(t *testing.T, a *Array)
	}{
		{"i4_2x3.npy", "<i4", []int{2, 3}, func(t *testing.T, a *Array) { wantInt32(t, a, i4x23()) }},
		{"i4_2x3_v2.npy", "<i4", []int{2, 3}, func(t *testing.T, a *Array) { wantInt32(t, a, i4x23()) }},
		{"i4_2x3_v3.npy", "<i4", []int{2, 3}, func(t *testing.T, a *Array) { wantInt32(t, a, i4x23()) }},
		{"u1_2x5.npy", "|u1", []int{2, 5}, func(t *testing.T, a *Array) {
			var want []uint8
			for k := range 10 {
				want = append(want, uint8(k*50%256))
			}
			got, err := a.Uint8()
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("Uint8 = %v, %v; want %v", got, err, want)
			}
		}},
		{"f4_4.npy", "<f4", []int{4}, func(t *testing.T, a *Array) {
			got, err := a.Float32()
			want := []float32{-0.25, -0.125, 0, 0.125}
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("Float32 = %v, %v; want %v", got, err, want)
			}
		}},
		{"f8_3x1x2.npy", "<f8", []int{3, 1, 2}, func(t *testing.T, a *Array) {
			got, err := a.Float64()
			want := []float64{-2, -0.5, 1, 2.5, 4, 5.5}
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("Float64 = %v, %v; want %v", got, err, want)
			}
		}},
		{"b1_5.npy", "|b1", []int{5}, func(t *testing.T, a *Array) {
			got, err := a.Bool()
			want := []bool{true, false, true, false, true}
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("Bool = %v, %v; want %v", got, err, want)
			}
			ints, err := a.Int32()
			if err != nil || !reflect.DeepEqual(ints, []int32{1, 0, 1, 0, 1}) {
				t.Errorf("Int32 of bool = %v, %v", ints, err)
			}
		}},
		{"i4_scalar.npy", "<i4", []int{}, func(t *testing.T, a *Array) { wantInt32(t, a, []int32{42}) }},
		{"i4_0x7.npy", "<i4", []int{0, 7}, func(t *testing.T, a *Array) { wantInt32(t, a, []int32{}) }},
		{"i4_1234567x0.npy", "<i4", []int{1234567, 0}, func(t *testing.T, a *Array) { wantInt32(t, a, []int32{}) }},
		{"i4_fortran_2x3.npy", "<i4", []int{2, 3}, func(t *testing.T, a *Array) {
			// Read returns C order: element [i, j] = i*10 + j.
			wantInt32(t, a, []int32{0, 1, 2, 10, 11, 12})
		}},
		{"i4_be_3.npy", ">i4", []int{3}, func(t *testing.T, a *Array) { wantInt32(t, a, []int32{1, -2, 300000}) }},
		{"i8_3.npy", "<i8", []int{3}, func(t *testing.T, a *Array) {
			got, err := a.Int64()
			if err != nil || !reflect.DeepEqual(got, []int64{1, -2, 1 << 40}) {
				t.Errorf("Int64 = %v, %v", got, err)
			}
			if _, err := a.Int32(); err == nil || !strings.Contains(err.Error(), "element 2") {
				t.Errorf("Int32 of 2^40: err = %v, want an out-of-range error naming element 2", err)
			}
		}},
		{"i2_2.npy", "<i2", []int{2}, func(t *testing.T, a *Array) {
			wantInt32(t, a, []int32{-300, 300})
			if _, err := a.Uint8(); err == nil {
				t.Error("Uint8 of -300 succeeded")
			}
			f, err := a.Float32()
			if err != nil || !reflect.DeepEqual(f, []float32{-300, 300}) {
				t.Errorf("Float32 = %v, %v", f, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			a, err := Read(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if a.Descr != tt.descr || !reflect.DeepEqual(a.Shape, tt.shape) || a.Fortran {
				t.Fatalf("header = %+v, want descr %s shape %v C order", a.Header, tt.descr, tt.shape)
			}
			tt.check(t, a)
		})
	}
}

func wantInt32(t *testing.T, a *Array, want []int32) {
	t.Helper()
	got, err := a.Int32()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Int32 = %v, want %v", got, want)
	}
}

func TestFloatNotInteger(t *testing.T) {
	a, err := Read("testdata/f4_4.npy")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Int32(); err == nil {
		t.Error("Int32 of a float array succeeded")
	}
	if _, err := a.Bool(); err == nil {
		t.Error("Bool of a float array succeeded")
	}
}

// TestWriteMatchesNumpy writes the golden arrays and compares the bytes
// with what numpy.save produced.
func TestWriteMatchesNumpy(t *testing.T) {
	dir := t.TempDir()
	u1 := make([]uint8, 10)
	for k := range u1 {
		u1[k] = uint8(k * 50 % 256)
	}
	tests := []struct {
		file  string
		write func(path string) error
	}{
		{"i4_2x3.npy", func(p string) error { return WriteInt32(p, []int{2, 3}, i4x23()) }},
		{"u1_2x5.npy", func(p string) error { return WriteUint8(p, []int{2, 5}, u1) }},
		{"f4_4.npy", func(p string) error { return WriteFloat32(p, []int{4}, []float32{-0.25, -0.125, 0, 0.125}) }},
		{"f8_3x1x2.npy", func(p string) error {
			return WriteFloat64(p, []int{3, 1, 2}, []float64{-2, -0.5, 1, 2.5, 4, 5.5})
		}},
		{"b1_5.npy", func(p string) error { return WriteBool(p, []int{5}, []bool{true, false, true, false, true}) }},
		{"i4_scalar.npy", func(p string) error { return WriteInt32(p, []int{}, []int32{42}) }},
		{"i4_0x7.npy", func(p string) error { return WriteInt32(p, []int{0, 7}, nil) }},
		{"i4_1234567x0.npy", func(p string) error { return WriteInt32(p, []int{1234567, 0}, nil) }},
		{"i4_be_3.npy", func(p string) error {
			return Write(p, Header{Descr: ">i4", Shape: []int{3}}, []byte{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe, 0, 0x04, 0x93, 0xe0})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p := filepath.Join(dir, tt.file)
			if err := tt.write(p); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			want := golden(t, tt.file)
			if !bytes.Equal(got, want) {
				t.Errorf("bytes differ from numpy's:\n got %q\nwant %q", got, want)
			}
			a, err := Parse(want)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Marshal(a.Header, a.Data)
			if err != nil || !bytes.Equal(m, want) {
				t.Errorf("Marshal differs from numpy's: %v", err)
			}
		})
	}
}

func TestEncodeHeaderAlignment(t *testing.T) {
	// Every header length must leave the data 64-byte aligned, including
	// the edge where the text alone is a multiple of 64 (numpy then pads a
	// full 64 bytes rather than none).
	for d := 0; d < 200000; d = d*3 + 1 {
		for ndim := 0; ndim < 8; ndim++ {
			shape := make([]int, ndim)
			for i := range shape {
				shape[i] = i + 1
			}
			if ndim > 0 {
				shape[0] = d
			}
			h := Header{Descr: "<f8", Shape: shape}
			b, err := EncodeHeader(h)
			if err != nil {
				t.Fatal(err)
			}
			if len(b)%64 != 0 || b[len(b)-1] != '\n' {
				t.Fatalf("shape %v: header of %d bytes", shape, len(b))
			}
			got, off, err := ParseHeader(b)
			if err != nil || off != len(b) || !reflect.DeepEqual(got.Shape, shape) || got.Descr != "<f8" {
				t.Fatalf("shape %v: parsed %+v at %d, %v", shape, got, off, err)
			}
		}
	}
}

func TestParseHeaderErrors(t *testing.T) {
	valid := golden(t, "i4_2x3.npy")
	hdr := func(text string) []byte {
		b := []byte(Magic + "\x01\x00")
		b = append(b, byte(len(text)), byte(len(text)>>8))
		return append(b, text...)
	}
	tests := []struct {
		name string
		data []byte
		off  int64
		msg  string
	}{
		{"empty", nil, 0, "too short"},
		{"magic", append([]byte("\x93NUMPX"), valid[6:]...), 0, "bad magic"},
		{"version", append(append([]byte{}, valid[:6]...), append([]byte{4, 0}, valid[8:]...)...), 6, "version 4.0"},
		{"minor", append(append([]byte{}, valid[:6]...), append([]byte{1, 1}, valid[8:]...)...), 7, "version 1.1"},
		{"header past end", valid[:40], 10, "runs past the end"},
		{"structured", hdr("{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2,), }"), 20, "structured"},
		{"dtype", hdr("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }"), 20, `unsupported dtype "<c8"`},
		{"object", hdr("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"), 20, "unsupported dtype"},
		{"missing shape", hdr("{'descr': '<i4', 'fortran_order': False, }"), 52, `missing key "shape"`},
		{"extra key", hdr("{'descr': '<i4', 'x': 1, 'fortran_order': False, 'shape': (2,), }"), 27, `unexpected key "x"`},
		{"duplicate", hdr("{'descr': '<i4', 'descr': '<i4', 'fortran_order': False, 'shape': (2,), }"), 27, "duplicate"},
		{"negative", hdr("{'descr': '<i4', 'fortran_order': False, 'shape': (-2,), }"), 61, "expected a dimension"},
		{"bool", hdr("{'descr': '<i4', 'fortran_order': false, 'shape': (2,), }"), 44, "True or False"},
		{"huge", hdr("{'descr': '<i4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"), 60, "too large"},
		{"trailing", hdr("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), } x"), 68, "after the header"},
		{"unterminated", hdr("{'descr': '<i4"), 20, "unterminated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseHeader(tt.data)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a *FormatError", err)
			}
			if fe.Offset != tt.off || !strings.Contains(fe.Msg, tt.msg) {
				t.Errorf("err = %v (offset %d), want offset %d and %q", err, fe.Offset, tt.off, tt.msg)
			}
		})
	}
}

func TestReadErrorNamesFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "short.npy")
	b := golden(t, "i4_2x3.npy")
	if err := os.WriteFile(p, b[:len(b)-1], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, open := range []func(string) error{
		func(p string) error { _, err := Read(p); return err },
		func(p string) error {
			f, err := Open(p)
			if err == nil {
				f.Close()
			}
			return err
		},
	} {
		err := open(p)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "byte 128") ||
			!strings.Contains(err.Error(), "needs 24 data bytes, the file has 23") {
			t.Errorf("err = %v, want the file name, byte 128 and the size mismatch", err)
		}
	}
}

func TestWriteShapeMismatch(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.npy")
	if err := WriteInt32(p, []int{2, 3}, []int32{1, 2, 3}); err == nil {
		t.Error("WriteInt32 with 3 values for shape [2 3] succeeded")
	}
	if err := WriteInt32(p, []int{-1}, nil); err == nil {
		t.Error("negative dimension accepted")
	}
	if err := Write(p, Header{Descr: "<c8", Shape: []int{1}}, make([]byte, 8)); err == nil {
		t.Error("unsupported dtype accepted")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("failed writes left %s behind", p)
	}
}

func TestMappedRows(t *testing.T) {
	const rows, cols = 1000, 37
	data := make([]int32, rows*cols)
	mask := make([]uint8, rows*cols)
	for i := range data {
		data[i] = int32(i*7919%100003 - 50000)
		mask[i] = uint8(i % 3 % 2)
	}
	dir := t.TempDir()
	tp, mp := filepath.Join(dir, "tok.npy"), filepath.Join(dir, "mask.npy")
	if err := WriteInt32(tp, []int{rows, cols}, data); err != nil {
		t.Fatal(err)
	}
	if err := WriteUint8(mp, []int{rows, cols}, mask); err != nil {
		t.Fatal(err)
	}
	f, err := Open(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Rows() != rows || f.RowLen() != cols {
		t.Fatalf("Rows, RowLen = %d, %d", f.Rows(), f.RowLen())
	}
	got, err := f.Int32Rows(123, 45)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, data[123*cols:168*cols]) {
		t.Error("Int32Rows(123, 45) differs from the written rows")
	}
	if _, err := f.Int32Rows(990, 11); err == nil || !strings.Contains(err.Error(), tp) {
		t.Errorf("rows past the end: err = %v", err)
	}
	if _, err := f.Int32Rows(-1, 1); err == nil {
		t.Error("negative start accepted")
	}
	if got, err := f.Int32Rows(rows, 0); err != nil || len(got) != 0 {
		t.Errorf("empty range at the end = %v, %v", got, err)
	}
	g, err := Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	m, err := g.Uint8Rows(999, 1)
	if err != nil || !reflect.DeepEqual(m, mask[999*cols:]) {
		t.Errorf("Uint8Rows(999, 1) = %v, %v", m, err)
	}
	// Whole-file Read agrees with the mapping.
	a, err := Read(tp)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := a.Int32()
	if !reflect.DeepEqual(all, data) {
		t.Error("Read differs from the written data")
	}
}

func TestOpenRejectsFortran(t *testing.T) {
	if _, err := Open("testdata/i4_fortran_2x3.npy"); err == nil {
		t.Error("Open of a Fortran-ordered 2-d array succeeded")
	}
}

func TestFortranToC3D(t *testing.T) {
	// A [2, 3, 4] array in column-major order: element (i, j, k) lives at
	// i + 2j + 6k and holds the value 100i + 10j + k.
	shape := []int{2, 3, 4}
	src := make([]byte, 24)
	for i := range 2 {
		for j := range 3 {
			for k := range 4 {
				src[i+2*j+6*k] = byte(100*i + 10*j + k)
			}
		}
	}
	got := fortranToC(src, shape, 1)
	var want []byte
	for i := range 2 {
		for j := range 3 {
			for k := range 4 {
				want = append(want, byte(100*i+10*j+k))
			}
		}
	}
	if !bytes.Equal(got, want) {
		t.Errorf("fortranToC = %v, want %v", got, want)
	}
}

func TestFloatRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f.npy")
	v := []float32{float32(math.Inf(-1)), -0, 1e-40, math.MaxFloat32, float32(math.NaN())}
	if err := WriteFloat32(p, []int{5}, v); err != nil {
		t.Fatal(err)
	}
	a, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := a.Float32()
	for i := range v {
		if math.Float32bits(got[i]) != math.Float32bits(v[i]) {
			t.Errorf("element %d = %v, want %v", i, got[i], v[i])
		}
	}
}
