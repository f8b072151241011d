package ir_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

func seq(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i)
	}
	return v
}

func mustFloat32(t *testing.T, tn *ir.Tensor) []float32 {
	t.Helper()
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestKeepIndices(t *testing.T) {
	// A [2,3,4] tensor holding 0..23, so element (a,b,c) = 12a+4b+c.
	tests := []struct {
		name  string
		dim   int
		idx   []int
		shape []int
		want  []float32
	}{
		{"dim0 reorder", 0, []int{1, 0}, []int{2, 3, 4},
			[]float32{12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},
		{"dim1 subset", 1, []int{2, 0}, []int{2, 2, 4},
			[]float32{8, 9, 10, 11, 0, 1, 2, 3, 20, 21, 22, 23, 12, 13, 14, 15}},
		{"dim2 repeat", 2, []int{3, 3, 1}, []int{2, 3, 3},
			[]float32{3, 3, 1, 7, 7, 5, 11, 11, 9, 15, 15, 13, 19, 19, 17, 23, 23, 21}},
		{"dim2 none", 2, nil, []int{2, 3, 0}, []float32{}},
	}
	for _, d := range []ir.DType{ir.F32, ir.F16, ir.BF16} {
		src := ir.FromFloat32(d, []int{2, 3, 4}, seq(24))
		for _, tc := range tests {
			t.Run(d.String()+"/"+tc.name, func(t *testing.T) {
				got, err := src.KeepIndices(tc.dim, tc.idx)
				if err != nil {
					t.Fatal(err)
				}
				if got.DType != d || !reflect.DeepEqual(got.Shape, tc.shape) {
					t.Fatalf("got %s %v, want %s %v", got.DType, got.Shape, d, tc.shape)
				}
				if v := mustFloat32(t, got); !reflect.DeepEqual(v, tc.want) {
					t.Errorf("values %v, want %v", v, tc.want)
				}
			})
		}
	}
}

func TestKeepIndicesErrors(t *testing.T) {
	src := ir.FromFloat32(ir.F32, []int{2, 3}, seq(6))
	tests := []struct {
		dim int
		idx []int
	}{{-1, []int{0}}, {2, []int{0}}, {0, []int{2}}, {1, []int{-1}}, {1, []int{0, 3}}}
	for _, tc := range tests {
		if _, err := src.KeepIndices(tc.dim, tc.idx); err == nil {
			t.Errorf("KeepIndices(%d, %v) on %v succeeded", tc.dim, tc.idx, src.Shape)
		}
	}
}

func TestPermuteRows(t *testing.T) {
	src := ir.FromFloat32(ir.F32, []int{3, 2}, seq(6))
	got, err := src.PermuteRows([]int{2, 0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if v := mustFloat32(t, got); !reflect.DeepEqual(v, []float32{4, 5, 0, 1, 2, 3}) {
		t.Errorf("PermuteRows = %v", v)
	}
	for _, p := range [][]int{{0, 1}, {0, 1, 2, 3}, {0, 1, 5}} {
		if _, err := src.PermuteRows(p); err == nil {
			t.Errorf("PermuteRows(%v) of %v succeeded", p, src.Shape)
		}
	}
	if _, err := ir.NewTensor(ir.F32, nil, make([]byte, 4)).PermuteRows(nil); err == nil {
		t.Error("PermuteRows of a scalar succeeded")
	}
}

func TestConvert(t *testing.T) {
	src := ir.FromFloat32(ir.F32, []int{4}, []float32{1, 1.0 / 3, -2.5, 65504})
	same, err := src.Convert(ir.F32)
	if err != nil || same != src {
		t.Errorf("Convert to own dtype = %p, %v; want the same tensor", same, err)
	}
	tests := []struct {
		d    ir.DType
		want []float32
	}{
		{ir.F16, []float32{1, 0.333251953125, -2.5, 65504}},
		{ir.BF16, []float32{1, 0.333984375, -2.5, 65536}},
	}
	for _, tc := range tests {
		got, err := src.Convert(tc.d)
		if err != nil {
			t.Fatal(err)
		}
		if got.DType != tc.d || got.NumBytes() != 8 || !reflect.DeepEqual(got.Shape, src.Shape) {
			t.Errorf("Convert(%s) = %s %v, %d bytes", tc.d, got.DType, got.Shape, got.NumBytes())
		}
		if v := mustFloat32(t, got); !reflect.DeepEqual(v, tc.want) {
			t.Errorf("Convert(%s) values %v, want %v", tc.d, v, tc.want)
		}
	}
}

func TestTensorStorageErrors(t *testing.T) {
	loadErr := errors.New("disk on fire")
	tests := []struct {
		name string
		t    *ir.Tensor
		want string
	}{
		{"short in-memory buffer", ir.NewTensor(ir.F32, []int{2, 2}, make([]byte, 12)), "12 bytes"},
		{"long in-memory buffer", ir.NewTensor(ir.F16, []int{3}, make([]byte, 8)), "8 bytes"},
		{"nil buffer", ir.NewTensor(ir.BF16, []int{1}, nil), "0 bytes"},
		{"values do not fill shape", ir.FromFloat32(ir.F32, []int{2, 3}, seq(5)), "needs 24"},
		{"loader returns wrong size", ir.LazyTensor(ir.F32, []int{2}, func() ([]byte, error) { return make([]byte, 4), nil }), "needs 8"},
		{"loader fails", ir.LazyTensor(ir.F32, []int{2}, func() ([]byte, error) { return nil, loadErr }), "disk on fire"},
		{"unknown dtype", ir.NewTensor(ir.DType(7), []int{2}, make([]byte, 8)), "dtype"},
		{"zero value", &ir.Tensor{DType: ir.F32, Shape: []int{2}}, "0 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Must be an error, not a panic, from every accessor.
			if _, err := tc.t.Bytes(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Bytes error = %v, want one mentioning %q", err, tc.want)
			}
			if _, err := tc.t.Float32(); err == nil {
				t.Error("Float32 succeeded")
			}
			if _, err := tc.t.KeepIndices(0, []int{0}); err == nil {
				t.Error("KeepIndices succeeded")
			}
		})
	}
}

func TestLazyTensorLoadsOnce(t *testing.T) {
	calls := 0
	raw := ir.EncodeFloat32(ir.F32, []float32{3, 4})
	lt := ir.LazyTensor(ir.F32, []int{2}, func() ([]byte, error) { calls++; return raw, nil })
	if calls != 0 {
		t.Fatal("LazyTensor loaded eagerly")
	}
	if lt.NumElements() != 2 || lt.NumBytes() != 8 {
		t.Errorf("NumElements %d NumBytes %d, want 2 8", lt.NumElements(), lt.NumBytes())
	}
	for range 3 {
		if v := mustFloat32(t, lt); !reflect.DeepEqual(v, []float32{3, 4}) {
			t.Errorf("values %v", v)
		}
	}
	if calls != 1 {
		t.Errorf("loader ran %d times, want once", calls)
	}
}

func TestNewTensorCopiesShape(t *testing.T) {
	shape := []int{2, 1}
	tn := ir.NewTensor(ir.F32, shape, make([]byte, 8))
	shape[0] = 5
	if tn.Shape[0] != 2 {
		t.Error("NewTensor aliases the caller's shape slice")
	}
	if s := ir.NewTensor(ir.F32, nil, make([]byte, 4)); s.NumElements() != 1 {
		t.Errorf("a scalar has %d elements, want 1", s.NumElements())
	}
}
