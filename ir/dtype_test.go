package ir_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// f16Value decodes IEEE half-precision bits from the format's definition,
// independently of the float16 package the implementation uses.
func f16Value(b uint16) float64 {
	sign := 1.0
	if b&0x8000 != 0 {
		sign = -1
	}
	e, m := int(b>>10)&0x1f, float64(b&0x3ff)
	switch e {
	case 0:
		return sign * math.Ldexp(m, -24)
	case 31:
		if m != 0 {
			return math.NaN()
		}
		return sign * math.Inf(1)
	}
	return sign * math.Ldexp(1024+m, e-25)
}

// bf16Value decodes bfloat16 bits (float32's top half) from the definition.
func bf16Value(b uint16) float64 {
	sign := 1.0
	if b&0x8000 != 0 {
		sign = -1
	}
	e, m := int(b>>7)&0xff, float64(b&0x7f)
	switch e {
	case 0:
		return sign * math.Ldexp(m, -133)
	case 255:
		if m != 0 {
			return math.NaN()
		}
		return sign * math.Inf(1)
	}
	return sign * math.Ldexp(128+m, e-134)
}

// format describes a 16-bit float format for the reference rounding.
type format struct {
	dtype     ir.DType
	value     func(uint16) float64
	maxFinite uint16  // bits of the largest finite value
	overflow  float64 // the value one ulp above maxFinite (where inf sits)
}

var (
	f16Format  = format{ir.F16, f16Value, 0x7bff, 65536}
	bf16Format = format{ir.BF16, bf16Value, 0x7f7f, math.Ldexp(1, 128)}
)

// refRound rounds x to the format by searching the ordered positive
// encodings for its neighbours and picking the nearer one, ties to the even
// encoding: IEEE round-to-nearest-even spelled out, for non-NaN x.
func (f format) refRound(x float32) uint16 {
	var sign uint16
	a := float64(x)
	if math.Signbit(a) {
		sign, a = 0x8000, -a
	}
	if math.IsInf(a, 0) {
		return sign | (f.maxFinite + 1)
	}
	// Largest k in [0, maxFinite] with value(k) <= a (positive encodings
	// are monotonic in their bits).
	lo, hi := 0, int(f.maxFinite)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if f.value(uint16(mid)) <= a {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	k := uint16(lo)
	below := f.value(k)
	above := f.overflow
	if k < f.maxFinite {
		above = f.value(k + 1)
	}
	dBelow, dAbove := a-below, above-a
	switch {
	case dBelow < dAbove:
		return sign | k
	case dAbove < dBelow:
		return sign | (k + 1)
	case k%2 == 0:
		return sign | k
	}
	return sign | (k + 1)
}

func encode16(t *testing.T, d ir.DType, v float32) uint16 {
	t.Helper()
	raw := ir.EncodeFloat32(d, []float32{v})
	if len(raw) != 2 {
		t.Fatalf("EncodeFloat32(%s) gave %d bytes for one value", d, len(raw))
	}
	return binary.LittleEndian.Uint16(raw)
}

func decode16(d ir.DType, b uint16) float32 {
	raw := binary.LittleEndian.AppendUint16(nil, b)
	out := make([]float32, 1)
	ir.DecodeFloat32(d, raw, out)
	return out[0]
}

func TestEncodeHandPatterns(t *testing.T) {
	f32 := math.Float32frombits
	tests := []struct {
		name string
		d    ir.DType
		in   float32
		want uint16
	}{
		{"f16 one", ir.F16, 1, 0x3c00},
		{"f16 minus two", ir.F16, -2, 0xc000},
		{"f16 half", ir.F16, 0.5, 0x3800},
		{"f16 neg zero", ir.F16, float32(math.Copysign(0, -1)), 0x8000},
		{"f16 max", ir.F16, 65504, 0x7bff},
		{"f16 halfway to overflow rounds to inf (even)", ir.F16, 65520, 0x7c00},
		{"f16 just below overflow halfway", ir.F16, 65519, 0x7bff},
		{"f16 inf", ir.F16, float32(math.Inf(1)), 0x7c00},
		{"f16 -inf", ir.F16, float32(math.Inf(-1)), 0xfc00},
		{"f16 smallest normal", ir.F16, f32(0x38800000), 0x0400},      // 2^-14
		{"f16 smallest subnormal", ir.F16, f32(0x33800000), 0x0001},   // 2^-24
		{"f16 largest subnormal", ir.F16, 1023.0 / (1 << 24), 0x03ff}, // 1023·2^-24
		{"f16 half of smallest subnormal ties to 0", ir.F16, f32(0x33000000), 0x0000},
		{"f16 3/4 of smallest subnormal rounds up", ir.F16, f32(0x33400000), 0x0001},
		{"f16 1+2^-11 ties to even (down)", ir.F16, 1 + 1.0/2048, 0x3c00},
		{"f16 1+3·2^-11 ties to even (up)", ir.F16, 1 + 3.0/2048, 0x3c02},
		{"f16 one third", ir.F16, 1.0 / 3, 0x3555},

		{"bf16 one", ir.BF16, 1, 0x3f80},
		{"bf16 minus two", ir.BF16, -2, 0xc000},
		{"bf16 three", ir.BF16, 3, 0x4040},
		{"bf16 pi rounds down", ir.BF16, f32(0x40490fdb), 0x4049},
		{"bf16 neg zero", ir.BF16, float32(math.Copysign(0, -1)), 0x8000},
		{"bf16 tie, even stays", ir.BF16, f32(0x3f808000), 0x3f80},
		{"bf16 tie, odd rounds up", ir.BF16, f32(0x3f818000), 0x3f82},
		{"bf16 above tie rounds up", ir.BF16, f32(0x3f808001), 0x3f81},
		{"bf16 below tie rounds down", ir.BF16, f32(0x3f807fff), 0x3f80},
		{"bf16 negative tie odd", ir.BF16, f32(0xbf818000), 0xbf82},
		{"bf16 max float32 overflows to inf", ir.BF16, math.MaxFloat32, 0x7f80},
		{"bf16 -max float32 overflows to -inf", ir.BF16, -math.MaxFloat32, 0xff80},
		{"bf16 largest finite below tie", ir.BF16, f32(0x7f7f7fff), 0x7f7f},
		{"bf16 inf", ir.BF16, float32(math.Inf(1)), 0x7f80},
		{"bf16 -inf", ir.BF16, float32(math.Inf(-1)), 0xff80},
		{"bf16 subnormal exact", ir.BF16, f32(0x00010000), 0x0001},
		{"bf16 subnormal tie to zero", ir.BF16, f32(0x00008000), 0x0000},
		{"bf16 subnormal tie odd rounds up", ir.BF16, f32(0x00018000), 0x0002},
		{"bf16 smallest float32 subnormal", ir.BF16, f32(0x00000001), 0x0000},
		{"bf16 subnormal rounds into normal", ir.BF16, f32(0x007fffff), 0x0080},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := encode16(t, tc.d, tc.in); got != tc.want {
				t.Errorf("encode %s(%g) = %#04x, want %#04x", tc.d, tc.in, got, tc.want)
			}
		})
	}
}

func TestEncodeNaN(t *testing.T) {
	nans := []uint32{
		0x7fc00000, // quiet NaN
		0xffc00000, // negative quiet NaN
		0x7f800001, // signalling NaN whose payload lies only in the low half
		0xff800001,
		0x7fa00000, // signalling NaN with a high payload
	}
	for _, bits := range nans {
		v := math.Float32frombits(bits)
		for _, d := range []ir.DType{ir.F16, ir.BF16} {
			b := encode16(t, d, v)
			back := decode16(d, b)
			if !math.IsNaN(float64(back)) {
				t.Errorf("%s: NaN %#08x encoded as %#04x, which decodes to %g", d, bits, b, back)
			}
			if (b&0x8000 != 0) != (bits&0x80000000 != 0) {
				t.Errorf("%s: NaN %#08x lost its sign: %#04x", d, bits, b)
			}
		}
		// F32 keeps the exact payload.
		raw := ir.EncodeFloat32(ir.F32, []float32{v})
		if got := binary.LittleEndian.Uint32(raw); got != bits {
			t.Errorf("F32: NaN %#08x stored as %#08x", bits, got)
		}
	}
	if got := encode16(t, ir.BF16, math.Float32frombits(0x7f800001)); got != 0x7fc0 {
		t.Errorf("BF16 signalling NaN 0x7f800001 = %#04x, want the quiet NaN 0x7fc0", got)
	}
}

func TestDecodeHandPatterns(t *testing.T) {
	tests := []struct {
		d    ir.DType
		in   uint16
		want float64
	}{
		{ir.F16, 0x3c00, 1},
		{ir.F16, 0xc000, -2},
		{ir.F16, 0x7bff, 65504},
		{ir.F16, 0x0001, math.Ldexp(1, -24)},
		{ir.F16, 0x03ff, 1023 * math.Ldexp(1, -24)},
		{ir.F16, 0x0400, math.Ldexp(1, -14)},
		{ir.F16, 0x3555, 0.333251953125},
		{ir.F16, 0x7c00, math.Inf(1)},
		{ir.F16, 0xfc00, math.Inf(-1)},
		{ir.BF16, 0x3f80, 1},
		{ir.BF16, 0x4049, 3.140625},
		{ir.BF16, 0xc000, -2},
		{ir.BF16, 0x0001, math.Ldexp(1, -133)},
		{ir.BF16, 0x7f7f, 255 * math.Ldexp(1, 127-7)},
		{ir.BF16, 0x7f80, math.Inf(1)},
		{ir.BF16, 0xff80, math.Inf(-1)},
	}
	for _, tc := range tests {
		if got := decode16(tc.d, tc.in); float64(got) != tc.want {
			t.Errorf("decode %s(%#04x) = %g, want %g", tc.d, tc.in, got, tc.want)
		}
	}
	for _, d := range []ir.DType{ir.F16, ir.BF16} {
		nan := uint16(0x7e00)
		if d == ir.BF16 {
			nan = 0x7fc0
		}
		if got := decode16(d, nan); !math.IsNaN(float64(got)) {
			t.Errorf("decode %s(%#04x) = %g, want NaN", d, nan, got)
		}
		if got := decode16(d, 0x8000); got != 0 || !math.Signbit(float64(got)) {
			t.Errorf("decode %s(0x8000) = %g, want -0", d, got)
		}
	}
}

// Every 16-bit pattern decodes to the value its format defines, and every
// non-NaN one survives an encode/decode round trip bit for bit.
func TestExhaustive16BitRoundTrip(t *testing.T) {
	for _, f := range []format{f16Format, bf16Format} {
		raw := make([]byte, 2<<16)
		for b := 0; b < 1<<16; b++ {
			binary.LittleEndian.PutUint16(raw[2*b:], uint16(b))
		}
		vals := make([]float32, 1<<16)
		ir.DecodeFloat32(f.dtype, raw, vals)
		back := ir.EncodeFloat32(f.dtype, vals)
		bad := 0
		for b := 0; b < 1<<16 && bad < 5; b++ {
			want := f.value(uint16(b))
			got := float64(vals[b])
			if math.IsNaN(want) {
				if !math.IsNaN(got) {
					t.Errorf("%s %#04x decodes to %g, want NaN", f.dtype, b, got)
					bad++
				}
				continue
			}
			if got != want || math.Signbit(got) != math.Signbit(want) {
				t.Errorf("%s %#04x decodes to %g, want %g", f.dtype, b, got, want)
				bad++
			}
			if rt := binary.LittleEndian.Uint16(back[2*b:]); rt != uint16(b) {
				t.Errorf("%s %#04x round-trips to %#04x", f.dtype, b, rt)
				bad++
			}
		}
	}
}

func checkAgainstReference(t *testing.T, bits uint32) {
	v := math.Float32frombits(bits)
	if math.IsNaN(float64(v)) {
		return
	}
	for _, f := range []format{f16Format, bf16Format} {
		if got, want := encode16(t, f.dtype, v), f.refRound(v); got != want {
			t.Errorf("%s(%#08x = %g) = %#04x, nearest-even is %#04x", f.dtype, bits, v, got, want)
		}
	}
}

// Random float32s, concentrated around each format's range, are rounded to
// the nearest representable value with ties to even.
func TestEncodeMatchesReferenceRounding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		bits := r.Uint32()
		if i%2 == 0 {
			// Exponents near f16's range (2^-26 .. 2^17), and low bits set
			// to exact ties now and then.
			e := uint32(101 + r.IntN(44))
			bits = bits&0x807fffff | e<<23
			if i%6 == 0 {
				bits = bits&^0x1fff | 0x1000 // f16 tie
			}
			if i%10 == 0 {
				bits = bits&^0xffff | 0x8000 // bf16 tie
			}
		}
		checkAgainstReference(t, bits)
	}
}

func FuzzEncode16(f *testing.F) {
	for _, s := range []uint32{0, 0x3f800000, 0x3f808000, 0x3f818000, 0x477ff000, 0x33000000, 0x7f7fffff, 0x00018000, 0xbf818000} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, bits uint32) { checkAgainstReference(t, bits) })
}

func TestF32RoundTripExact(t *testing.T) {
	in := []float32{0, 1, -1.5, math.MaxFloat32, math.SmallestNonzeroFloat32, float32(math.Inf(-1)), math.Float32frombits(0x7f800123)}
	raw := ir.EncodeFloat32(ir.F32, in)
	if len(raw) != 4*len(in) {
		t.Fatalf("F32 encoding is %d bytes for %d values", len(raw), len(in))
	}
	if binary.LittleEndian.Uint32(raw[4:]) != 0x3f800000 {
		t.Errorf("F32 is not little-endian IEEE: % x", raw[4:8])
	}
	out := make([]float32, len(in))
	ir.DecodeFloat32(ir.F32, raw, out)
	for i := range in {
		if math.Float32bits(out[i]) != math.Float32bits(in[i]) {
			t.Errorf("value %d: %#08x came back as %#08x", i, math.Float32bits(in[i]), math.Float32bits(out[i]))
		}
	}
}

func TestParseDType(t *testing.T) {
	tests := []struct {
		in      string
		want    ir.DType
		wantErr bool
	}{
		{"f32", ir.F32, false},
		{"F32", ir.F32, false},
		{"float32", ir.F32, false},
		{"Float", ir.F32, false},
		{"f16", ir.F16, false},
		{"F16", ir.F16, false},
		{"float16", ir.F16, false},
		{"HALF", ir.F16, false},
		{"bf16", ir.BF16, false},
		{"BF16", ir.BF16, false},
		{"bfloat16", ir.BF16, false},
		{"BFloat16", ir.BF16, false},
		{"", 0, true},
		{"f64", 0, true},
		{"int8", 0, true},
		{"q4_0", 0, true},
		{" f32", 0, true},
		{"bf 16", 0, true},
	}
	for _, tc := range tests {
		got, err := ir.ParseDType(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseDType(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && got != tc.want {
			t.Errorf("ParseDType(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestDTypeStringSize(t *testing.T) {
	tests := []struct {
		d    ir.DType
		name string
		size int
	}{
		{ir.F32, "F32", 4},
		{ir.F16, "F16", 2},
		{ir.BF16, "BF16", 2},
		{ir.DType(9), "DType(9)", 0},
	}
	for _, tc := range tests {
		if tc.d.String() != tc.name || tc.d.Size() != tc.size {
			t.Errorf("DType %d: String %q Size %d, want %q %d", uint8(tc.d), tc.d.String(), tc.d.Size(), tc.name, tc.size)
		}
		if tc.size == 0 {
			continue
		}
		if back, err := ir.ParseDType(tc.d.String()); err != nil || back != tc.d {
			t.Errorf("ParseDType(%q) = %v, %v; want %s", tc.d.String(), back, err, tc.d)
		}
	}
}

func FuzzParseDType(f *testing.F) {
	for _, s := range []string{"f32", "BF16", "half", "", "float64", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ir.ParseDType(s)
		if err != nil {
			return
		}
		if d.Size() == 0 {
			t.Fatalf("ParseDType(%q) accepted unknown dtype %s", s, d)
		}
		if back, err := ir.ParseDType(d.String()); err != nil || back != d {
			t.Fatalf("%q parsed as %s, which does not parse back: %v", s, d, err)
		}
	})
}
