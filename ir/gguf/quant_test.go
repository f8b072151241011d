package gguf

import (
	"encoding/binary"
	"math"
	"path/filepath"
	"testing"

	"github.com/x448/float16"

	"github.com/whittle-ml/whittle/internal/shareddata"
)

// TestQuantizeQ8_0Block works one block by hand: values −16..15 have
// max |x| = 16, so d = 16/127 and q = round(127·x/16), halves away from
// zero as C's roundf (x = 8 gives 63.5 → 64).
func TestQuantizeQ8_0Block(t *testing.T) {
	x := make([]float32, 32)
	for i := range x {
		x[i] = float32(i - 16)
	}
	b, err := quantizeQ8_0(x)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 34 {
		t.Fatalf("%d bytes", len(b))
	}
	if d := float16.Frombits(binary.LittleEndian.Uint16(b)); d != float16.Fromfloat32(16.0/127) {
		t.Errorf("scale %v", d)
	}
	for i, v := range x {
		want := int8(math.Round(float64(v) * 127 / 16))
		if got := int8(b[2+i]); got != want {
			t.Errorf("q[%d] = %d, want %d", i, got, want)
		}
	}
	if got := int8(b[2+24]); got != 64 { // x = 8
		t.Errorf("q for 8 = %d, want 64 (half away from zero)", got)
	}
	zero, _ := quantizeQ8_0(make([]float32, 32))
	for _, c := range zero {
		if c != 0 {
			t.Fatal("an all-zero block must quantize to zeros")
		}
	}
	if _, err := quantizeQ8_0(make([]float32, 31)); err == nil {
		t.Error("a partial block was accepted")
	}
}

// TestDequantize checks Q8_0 and Q4_0 against their definitions on
// hand-built blocks.
func TestDequantize(t *testing.T) {
	d := float16.Fromfloat32(0.5)
	q8 := binary.LittleEndian.AppendUint16(nil, d.Bits())
	q4 := binary.LittleEndian.AppendUint16(nil, d.Bits())
	for j := 0; j < 32; j++ {
		q8 = append(q8, byte(int8(j-16)))
	}
	for j := 0; j < 16; j++ {
		q4 = append(q4, byte(j)|byte(15-j)<<4)
	}
	f8, err := dequantize(GGMLQ8_0, q8, 32)
	if err != nil {
		t.Fatal(err)
	}
	f4, err := dequantize(GGMLQ4_0, q4, 32)
	if err != nil {
		t.Fatal(err)
	}
	at := func(b []byte, i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])) }
	for j := 0; j < 32; j++ {
		if got := at(f8, j); got != 0.5*float32(j-16) {
			t.Errorf("Q8_0[%d] = %g", j, got)
		}
		want := float32(j - 8) // low nibbles j, high nibbles 15−j
		if j >= 16 {
			want = float32(15 - (j - 16) - 8)
		}
		if got := at(f4, j); got != 0.5*want {
			t.Errorf("Q4_0[%d] = %g, want %g", j, got, 0.5*want)
		}
	}
	if _, err := dequantize(GGMLQ8_0, q8[:33], 32); err == nil {
		t.Error("a short block was accepted")
	}
}

// TestSaveLoadQuantized: stories260K saved with Q8_0 or Q4_0 matrices
// loads back within the format's error of every weight: half a step
// (|max|/127 for Q8_0), or a whole one (|max|/8 for Q4_0, whose code range
// is one short on the far side), plus the scale's float16 rounding (2⁻¹¹
// relative) times the largest |q|. Matrices whose rows are not whole
// blocks stay F16; the file type is llama.cpp's.
func TestSaveLoadQuantized(t *testing.T) {
	src, err := Load(shareddata.Path(t, "models/stories260K/stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, c := range []struct {
		quant    string
		typ      GGMLType
		fileType uint32
		levels   float64 // |max| / step
		steps    float64 // the error bound in steps
	}{
		{"q8_0", GGMLQ8_0, fileTypeQ8_0, 127, 0.5 + 127.0/2048},
		{"q4_0", GGMLQ4_0, fileTypeQ4_0, 8, 1 + 8.0/2048},
	} {
		t.Run(c.quant, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), c.quant+".gguf")
			if err := Save(src, path, SaveOptions{Quantize: c.quant}); err != nil {
				t.Fatal(err)
			}
			got, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if v, _ := f.Get(KeyFileType); !v.Equal(Of(c.fileType)) {
				t.Errorf("file type %s", v)
			}
			quantized := 0
			for _, ti := range f.Tensors {
				if ti.Type == c.typ {
					quantized++
				} else if len(ti.Dims) == 2 && ti.Dims[0]%32 == 0 {
					t.Errorf("%s stored as %s", ti.Name, ti.Type)
				}
			}
			if quantized == 0 {
				t.Fatalf("no %s tensor written", c.typ)
			}
			for name, want := range src.Tensors {
				if len(want.Shape) == 1 || want.Shape[1]%32 != 0 {
					continue
				}
				a, _ := want.Float32()
				b, err := got.Tensors[name].Float32()
				if err != nil {
					t.Fatal(err)
				}
				for blk := 0; blk < len(a); blk += 32 {
					var amax float64
					for _, v := range a[blk : blk+32] {
						amax = math.Max(amax, math.Abs(float64(v)))
					}
					step := amax / c.levels
					for i := blk; i < blk+32; i++ {
						if diff := math.Abs(float64(a[i] - b[i])); diff > step*c.steps+1e-9 {
							t.Fatalf("%s[%d]: %g became %g (step %g)", name, i, a[i], b[i], step)
						}
					}
				}
			}
		})
	}
	if err := Save(src, filepath.Join(t.TempDir(), "x.gguf"), SaveOptions{Quantize: "q4_k"}); err == nil {
		t.Error("an unknown quantization was accepted")
	}
}

// FuzzQuantRoundTrip: any block of floats quantizes, and dequantizes
// within half a step (plus the scale's rounding) of where it started;
// arbitrary bytes dequantize without panicking.
func FuzzQuantRoundTrip(f *testing.F) {
	f.Add(make([]byte, 128), uint8(0))
	f.Add([]byte("the quick brown fox jumps over the lazy dog, twice over: the quick brown fox jumps over the lazy dog...."), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		typ := []GGMLType{GGMLQ8_0, GGMLQ4_0}[which%2]
		_, size, _ := typ.Block()
		if n := len(data) / int(size); n > 0 {
			if _, err := dequantize(typ, data[:n*int(size)], n*32); err != nil {
				t.Fatal(err)
			}
		}
		if len(data) < 128 {
			return
		}
		x := make([]float32, 32)
		for i := range x {
			x[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
			if math.IsNaN(float64(x[i])) || math.IsInf(float64(x[i]), 0) || math.Abs(float64(x[i])) > 6e4 {
				return // beyond float16's range the scale saturates
			}
		}
		q, err := quantizeQ8_0(x)
		if err != nil {
			t.Fatal(err)
		}
		back, err := dequantize(GGMLQ8_0, q, 32)
		if err != nil {
			t.Fatal(err)
		}
		var amax float64
		for _, v := range x {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
		step := amax / 127
		if step < 6.2e-5 {
			return // a scale below float16's normal range loses precision: the format's limit, ggml's too
		}
		for i, v := range x {
			got := math.Float32frombits(binary.LittleEndian.Uint32(back[4*i:]))
			if diff := math.Abs(float64(got - v)); diff > step*(0.5+127.0/2048)+1e-6*amax+1e-30 {
				t.Fatalf("x[%d] = %g came back %g (step %g)", i, v, got, step)
			}
		}
	})
}

// TestQuantizeQ4_0Block works one block by hand: the value of largest
// magnitude, m = −16, gives d = m/−8 = 2; x becomes min(15, trunc(x/2 +
// 8.5)), so −16 → 0, 0 → 8, 15 → 15 (clamped from 16), and decoding gives
// d·(q − 8).
func TestQuantizeQ4_0Block(t *testing.T) {
	x := make([]float32, 32)
	for i := range x {
		x[i] = float32(i - 16)
	}
	b, err := quantizeQ4_0(x)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 18 || float16.Frombits(binary.LittleEndian.Uint16(b)).Float32() != 2 {
		t.Fatalf("block %x", b)
	}
	nib := func(j int) int {
		if j < 16 {
			return int(b[2+j] & 0x0F)
		}
		return int(b[2+j-16] >> 4)
	}
	for j, v := range x {
		want := min(15, int(math.Trunc(float64(v)/2+8.5)))
		if got := nib(j); got != want {
			t.Errorf("q[%d] (x = %g) = %d, want %d", j, v, got, want)
		}
	}
	back, err := dequantize(GGMLQ4_0, b, 32)
	if err != nil {
		t.Fatal(err)
	}
	for j, v := range x {
		got := math.Float32frombits(binary.LittleEndian.Uint32(back[4*j:]))
		if math.Abs(float64(got-v)) > 2 { // one step at most (the clamped end), half a step elsewhere
			t.Errorf("x[%d] = %g came back %g", j, v, got)
		}
	}
}
