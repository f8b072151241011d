package gguf

import (
	"bytes"
	"fmt"
	"math"
	"strings"
)

// ValueType is the type tag of a metadata value, numbered as in the GGUF
// specification.
type ValueType uint32

const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("ValueType(%d)", uint32(t))
}

// valid reports whether t is a type this package knows.
func (t ValueType) valid() bool { return int(t) < len(valueTypeNames) }

// fixedSize is the encoded size of a scalar of type t, or 0 for strings
// and arrays, whose size depends on their contents.
func (t ValueType) fixedSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// Scalar is the set of Go types that map one-to-one onto GGUF scalar types.
type Scalar interface {
	uint8 | int8 | uint16 | int16 | uint32 | int32 | float32 | bool | string | uint64 | int64 | float64
}

func typeOf[T Scalar]() ValueType {
	var zero T
	return scalarType(zero)
}

// Value is one metadata value. Build values with Of, ArrayOf and
// ArrayOfArrays; the zero Value is invalid and cannot be written.
//
// A scalar holds the Go type of its ValueType (uint8 … float64, bool,
// string). An array holds a slice of its element type, or []Value when the
// elements are themselves arrays (GGUF allows nesting, and each nested
// array carries its own element type).
type Value struct {
	Type ValueType
	// Elem is the element type of an array (meaningless for scalars).
	Elem ValueType
	v    any
}

// KV is one metadata entry.
type KV struct {
	Key   string
	Value Value
}

// Of makes a scalar value.
func Of[T Scalar](x T) Value { return Value{Type: typeOf[T](), v: x} }

// ArrayOf makes an array of scalars. The slice is not copied.
func ArrayOf[T Scalar](xs []T) Value {
	if xs == nil {
		xs = []T{}
	}
	return Value{Type: TypeArray, Elem: typeOf[T](), v: xs}
}

// ArrayOfArrays makes an array whose elements are arrays.
func ArrayOfArrays(xs []Value) Value {
	if xs == nil {
		xs = []Value{}
	}
	return Value{Type: TypeArray, Elem: TypeArray, v: xs}
}

// Any returns the Go value: a scalar, a typed slice, or []Value.
func (v Value) Any() any { return v.v }

// Len is the number of elements of an array, 0 for a scalar.
func (v Value) Len() int {
	if v.Type != TypeArray {
		return 0
	}
	switch s := v.v.(type) {
	case []uint8:
		return len(s)
	case []int8:
		return len(s)
	case []uint16:
		return len(s)
	case []int16:
		return len(s)
	case []uint32:
		return len(s)
	case []int32:
		return len(s)
	case []float32:
		return len(s)
	case []bool:
		return len(s)
	case []string:
		return len(s)
	case []uint64:
		return len(s)
	case []int64:
		return len(s)
	case []float64:
		return len(s)
	case []Value:
		return len(s)
	}
	return 0
}

// Int returns an integer scalar of any width and signedness as int64;
// ok is false for other types and for uint64 values above MaxInt64.
func (v Value) Int() (int64, bool) {
	switch x := v.v.(type) {
	case uint8:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	}
	return 0, false
}

// Uint returns a non-negative integer scalar of any width as uint64.
func (v Value) Uint() (uint64, bool) {
	if x, ok := v.v.(uint64); ok {
		return x, true
	}
	i, ok := v.Int()
	if !ok || i < 0 {
		return 0, false
	}
	return uint64(i), true
}

// Float returns a float32 or float64 scalar.
func (v Value) Float() (float64, bool) {
	switch x := v.v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// Str returns a string scalar.
func (v Value) Str() (string, bool) {
	s, ok := v.v.(string)
	return s, ok
}

// Bool returns a bool scalar.
func (v Value) Bool() (bool, bool) {
	b, ok := v.v.(bool)
	return b, ok
}

// Ints returns an array of integers of any width as int64s; ok is false
// for other arrays and when an element does not fit.
func (v Value) Ints() ([]int64, bool) {
	if v.Type != TypeArray {
		return nil, false
	}
	n := v.Len()
	out := make([]int64, n)
	switch s := v.v.(type) {
	case []uint8:
		for i, x := range s {
			out[i] = int64(x)
		}
	case []int8:
		for i, x := range s {
			out[i] = int64(x)
		}
	case []uint16:
		for i, x := range s {
			out[i] = int64(x)
		}
	case []int16:
		for i, x := range s {
			out[i] = int64(x)
		}
	case []uint32:
		for i, x := range s {
			out[i] = int64(x)
		}
	case []int32:
		for i, x := range s {
			out[i] = int64(x)
		}
	case []int64:
		copy(out, s)
	case []uint64:
		for i, x := range s {
			if x > math.MaxInt64 {
				return nil, false
			}
			out[i] = int64(x)
		}
	default:
		return nil, false
	}
	return out, true
}

// Float32s returns an array of float32.
func (v Value) Float32s() ([]float32, bool) {
	s, ok := v.v.([]float32)
	return s, ok && v.Type == TypeArray
}

// Strs returns an array of strings.
func (v Value) Strs() ([]string, bool) {
	s, ok := v.v.([]string)
	return s, ok && v.Type == TypeArray
}

// Arrays returns an array of arrays.
func (v Value) Arrays() ([]Value, bool) {
	s, ok := v.v.([]Value)
	return s, ok && v.Type == TypeArray
}

// Equal reports whether two values have the same type and the same
// encoding (floats compare bit for bit, so NaNs compare equal to
// themselves). Invalid values are equal to nothing.
func (v Value) Equal(w Value) bool {
	var a, b bytes.Buffer
	if encodeValue(&a, v, 0) != nil || encodeValue(&b, w, 0) != nil {
		return false
	}
	return v.Type == w.Type && bytes.Equal(a.Bytes(), b.Bytes())
}

// String renders the value for messages, eliding long arrays.
func (v Value) String() string {
	if v.Type != TypeArray {
		if s, ok := v.v.(string); ok {
			return fmt.Sprintf("%q", s)
		}
		return fmt.Sprint(v.v)
	}
	n := v.Len()
	const show = 8
	var b strings.Builder
	fmt.Fprintf(&b, "[%d×%s:", n, v.Elem)
	for i := 0; i < n && i < show; i++ {
		b.WriteByte(' ')
		b.WriteString(v.index(i))
	}
	if n > show {
		b.WriteString(" …")
	}
	b.WriteByte(']')
	return b.String()
}

func (v Value) index(i int) string {
	switch s := v.v.(type) {
	case []string:
		return fmt.Sprintf("%q", s[i])
	case []Value:
		return s[i].String()
	case []uint8:
		return fmt.Sprint(s[i])
	case []int8:
		return fmt.Sprint(s[i])
	case []uint16:
		return fmt.Sprint(s[i])
	case []int16:
		return fmt.Sprint(s[i])
	case []uint32:
		return fmt.Sprint(s[i])
	case []int32:
		return fmt.Sprint(s[i])
	case []float32:
		return fmt.Sprint(s[i])
	case []bool:
		return fmt.Sprint(s[i])
	case []uint64:
		return fmt.Sprint(s[i])
	case []int64:
		return fmt.Sprint(s[i])
	case []float64:
		return fmt.Sprint(s[i])
	}
	return "?"
}
