package ir

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// DType is the storage type of a tensor's elements. Computation is always
// float32 (or float64 in reference paths); storage keeps what the file had.
type DType uint8

const (
	F32 DType = iota
	F16
	BF16
)

// Size is the number of bytes one element occupies.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case BF16:
		return "BF16"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// ParseDType accepts the spellings used by safetensors, GGUF and recipes
// (case-insensitive): f32/float32, f16/float16/half, bf16/bfloat16.
func ParseDType(s string) (DType, error) {
	switch lower(s) {
	case "f32", "float32", "float":
		return F32, nil
	case "f16", "float16", "half":
		return F16, nil
	case "bf16", "bfloat16":
		return BF16, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (want f32, f16 or bf16)", s)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// DecodeFloat32 converts little-endian raw storage of dtype d into float32s.
func DecodeFloat32(d DType, raw []byte, dst []float32) {
	switch d {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = float16.Frombits(binary.LittleEndian.Uint16(raw[2*i:])).Float32()
		}
	case BF16:
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		}
	}
}

// EncodeFloat32 converts float32s into little-endian storage of dtype d.
// BF16 rounds to nearest even, as PyTorch does.
func EncodeFloat32(d DType, src []float32) []byte {
	out := make([]byte, len(src)*d.Size())
	switch d {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], float16.Fromfloat32(v).Bits())
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], float32ToBF16(v))
		}
	}
	return out
}

func float32ToBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v { // NaN: keep it a quiet NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
