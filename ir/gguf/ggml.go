package gguf

import (
	"fmt"

	"github.com/whittle-ml/whittle/ir"
)

// GGMLType is a tensor storage type, numbered as ggml's enum ggml_type.
type GGMLType uint32

// The ggml types whose layout this package knows. Only F32, F16 and BF16
// can be decoded; the others are recognised so that a quantized file's
// header can be read and its tensors reported by name.
const (
	GGMLF32     GGMLType = 0
	GGMLF16     GGMLType = 1
	GGMLQ4_0    GGMLType = 2
	GGMLQ4_1    GGMLType = 3
	GGMLQ5_0    GGMLType = 6
	GGMLQ5_1    GGMLType = 7
	GGMLQ8_0    GGMLType = 8
	GGMLQ8_1    GGMLType = 9
	GGMLQ2_K    GGMLType = 10
	GGMLQ3_K    GGMLType = 11
	GGMLQ4_K    GGMLType = 12
	GGMLQ5_K    GGMLType = 13
	GGMLQ6_K    GGMLType = 14
	GGMLQ8_K    GGMLType = 15
	GGMLIQ2_XXS GGMLType = 16
	GGMLIQ2_XS  GGMLType = 17
	GGMLIQ3_XXS GGMLType = 18
	GGMLIQ1_S   GGMLType = 19
	GGMLIQ4_NL  GGMLType = 20
	GGMLIQ3_S   GGMLType = 21
	GGMLIQ2_S   GGMLType = 22
	GGMLIQ4_XS  GGMLType = 23
	GGMLI8      GGMLType = 24
	GGMLI16     GGMLType = 25
	GGMLI32     GGMLType = 26
	GGMLI64     GGMLType = 27
	GGMLF64     GGMLType = 28
	GGMLIQ1_M   GGMLType = 29
	GGMLBF16    GGMLType = 30
	GGMLTQ1_0   GGMLType = 34
	GGMLTQ2_0   GGMLType = 35
	GGMLMXFP4   GGMLType = 39
	GGMLNVFP4   GGMLType = 40
	GGMLQ1_0    GGMLType = 41
	GGMLQ2_0    GGMLType = 42
)

type ggmlTraits struct {
	name       string
	blockElems uint64 // elements per block
	blockBytes uint64 // bytes per block
}

// ggmlTable mirrors gguf-py's GGML_QUANT_SIZES (QK_K = 256).
var ggmlTable = map[GGMLType]ggmlTraits{
	GGMLF32:     {"F32", 1, 4},
	GGMLF16:     {"F16", 1, 2},
	GGMLQ4_0:    {"Q4_0", 32, 18},
	GGMLQ4_1:    {"Q4_1", 32, 20},
	GGMLQ5_0:    {"Q5_0", 32, 22},
	GGMLQ5_1:    {"Q5_1", 32, 24},
	GGMLQ8_0:    {"Q8_0", 32, 34},
	GGMLQ8_1:    {"Q8_1", 32, 40},
	GGMLQ2_K:    {"Q2_K", 256, 84},
	GGMLQ3_K:    {"Q3_K", 256, 110},
	GGMLQ4_K:    {"Q4_K", 256, 144},
	GGMLQ5_K:    {"Q5_K", 256, 176},
	GGMLQ6_K:    {"Q6_K", 256, 210},
	GGMLQ8_K:    {"Q8_K", 256, 292},
	GGMLIQ2_XXS: {"IQ2_XXS", 256, 66},
	GGMLIQ2_XS:  {"IQ2_XS", 256, 74},
	GGMLIQ3_XXS: {"IQ3_XXS", 256, 98},
	GGMLIQ1_S:   {"IQ1_S", 256, 50},
	GGMLIQ4_NL:  {"IQ4_NL", 32, 18},
	GGMLIQ3_S:   {"IQ3_S", 256, 110},
	GGMLIQ2_S:   {"IQ2_S", 256, 82},
	GGMLIQ4_XS:  {"IQ4_XS", 256, 136},
	GGMLI8:      {"I8", 1, 1},
	GGMLI16:     {"I16", 1, 2},
	GGMLI32:     {"I32", 1, 4},
	GGMLI64:     {"I64", 1, 8},
	GGMLF64:     {"F64", 1, 8},
	GGMLIQ1_M:   {"IQ1_M", 256, 56},
	GGMLBF16:    {"BF16", 1, 2},
	GGMLTQ1_0:   {"TQ1_0", 256, 54},
	GGMLTQ2_0:   {"TQ2_0", 256, 66},
	GGMLMXFP4:   {"MXFP4", 32, 17},
	GGMLNVFP4:   {"NVFP4", 64, 36},
	GGMLQ1_0:    {"Q1_0", 128, 18},
	GGMLQ2_0:    {"Q2_0", 64, 18},
}

func (t GGMLType) String() string {
	if tr, ok := ggmlTable[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("GGMLType(%d)", uint32(t))
}

// Known reports whether the type's block layout is known, so that the
// byte size of a tensor of this type can be computed.
func (t GGMLType) Known() bool {
	_, ok := ggmlTable[t]
	return ok
}

// Block returns how many elements one block of the type holds and how
// many bytes it takes; ok is false for unknown types.
func (t GGMLType) Block() (elems, bytes uint64, ok bool) {
	tr, ok := ggmlTable[t]
	return tr.blockElems, tr.blockBytes, ok
}

// DType is the IR storage type of t; ok is false for the types whittle
// cannot decode (quantized and integer types).
func (t GGMLType) DType() (ir.DType, bool) {
	switch t {
	case GGMLF32:
		return ir.F32, true
	case GGMLF16:
		return ir.F16, true
	case GGMLBF16:
		return ir.BF16, true
	}
	return 0, false
}

// GGMLTypeOf is the ggml type that stores an IR dtype.
func GGMLTypeOf(d ir.DType) (GGMLType, error) {
	switch d {
	case ir.F32:
		return GGMLF32, nil
	case ir.F16:
		return GGMLF16, nil
	case ir.BF16:
		return GGMLBF16, nil
	}
	return 0, fmt.Errorf("dtype %s has no ggml type", d)
}
