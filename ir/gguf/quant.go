package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Block quantization as ggml lays it out (ggml-quants.c's reference
// functions): Q8_0 and Q4_0 hold 32 values per block behind one float16
// scale d. Q8_0: value = d·q with q an int8; Q4_0: value = d·(q − 8) with q
// a nibble, the first 16 values in the low nibbles, the next 16 in the
// high ones. whittle reads both (dequantizing to float32) and writes Q8_0.
const qk = 32

// dequantize decodes n values of a block-quantized tensor into little-
// endian float32 bytes.
func dequantize(t GGMLType, raw []byte, n int) ([]byte, error) {
	elems, size, _ := t.Block()
	if n%int(elems) != 0 || len(raw) != n/int(elems)*int(size) {
		return nil, fmt.Errorf("%s tensor of %d values takes %d bytes, not %d", t, n, n/int(elems)*int(size), len(raw))
	}
	out := make([]byte, 4*n)
	put := func(i int, v float32) { binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v)) }
	for b := 0; b < n/qk; b++ {
		blk := raw[b*int(size) : (b+1)*int(size)]
		d := float16.Frombits(binary.LittleEndian.Uint16(blk)).Float32()
		switch t {
		case GGMLQ8_0:
			for j := 0; j < qk; j++ {
				put(b*qk+j, d*float32(int8(blk[2+j])))
			}
		case GGMLQ4_0:
			for j := 0; j < qk/2; j++ {
				q := blk[2+j]
				put(b*qk+j, d*float32(int(q&0x0F)-8))
				put(b*qk+j+qk/2, d*float32(int(q>>4)-8))
			}
		default:
			return nil, fmt.Errorf("cannot dequantize %s", t)
		}
	}
	return out, nil
}

// quantizeQ8_0 is ggml's quantize_row_q8_0_ref: per block, d = max|x|/127
// (rounded to float16 for storage, the division uses the float32 d) and
// q = round(x/d), halves away from zero.
func quantizeQ8_0(x []float32) ([]byte, error) {
	if len(x)%qk != 0 {
		return nil, fmt.Errorf("Q8_0 needs a multiple of %d values, got %d", qk, len(x))
	}
	out := make([]byte, 0, len(x)/qk*34)
	for b := 0; b < len(x); b += qk {
		var amax float32
		for _, v := range x[b : b+qk] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		id := float32(0)
		if d != 0 {
			id = 1 / d
		}
		out = binary.LittleEndian.AppendUint16(out, float16.Fromfloat32(d).Bits())
		for _, v := range x[b : b+qk] {
			out = append(out, byte(int8(math.Round(float64(v*id)))))
		}
	}
	return out, nil
}

// quantizeQ4_0 is ggml's quantize_row_q4_0_ref: per block, the value of
// largest magnitude m (sign kept) sets d = m/−8, and each value becomes
// min(15, trunc(x/d + 8.5)), packed two to a byte (the first 16 values in
// the low nibbles).
func quantizeQ4_0(x []float32) ([]byte, error) {
	if len(x)%qk != 0 {
		return nil, fmt.Errorf("Q4_0 needs a multiple of %d values, got %d", qk, len(x))
	}
	out := make([]byte, 0, len(x)/qk*18)
	for b := 0; b < len(x); b += qk {
		blk := x[b : b+qk]
		var amax, m float32
		for _, v := range blk {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax, m = a, v
			}
		}
		d := m / -8
		id := float32(0)
		if d != 0 {
			id = 1 / d
		}
		out = binary.LittleEndian.AppendUint16(out, float16.Fromfloat32(d).Bits())
		q := func(v float32) byte { return byte(min(15, int8(v*id+8.5))) }
		for j := 0; j < qk/2; j++ {
			out = append(out, q(blk[j])|q(blk[j+qk/2])<<4)
		}
	}
	return out, nil
}

// dequantizable reports the quantized types whittle reads.
func dequantizable(t GGMLType) bool { return t == GGMLQ8_0 || t == GGMLQ4_0 }
