package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/whittle-ml/whittle/internal/fsutil"
)

// Version is the GGUF version this package writes.
const Version = 3

// maxNameBytes is the longest tensor name llama.cpp accepts (GGML_MAX_NAME
// is 64 including the terminating NUL).
const maxNameBytes = 63

// WriteTensor is one tensor to write.
type WriteTensor struct {
	Name string
	Type GGMLType
	// Shape is row-major (outermost first), as in the IR; the file stores
	// it reversed, as ggml's ne.
	Shape []int
	// Data returns the tensor's bytes. It is called once, when the
	// tensor's turn comes, and its result is not retained, so a file
	// larger than memory can be written one tensor at a time.
	Data func() ([]byte, error)
}

// dims is the ggml ne of the tensor (innermost first).
func (t *WriteTensor) dims() ([]uint64, error) {
	d := make([]uint64, len(t.Shape))
	for i, s := range t.Shape {
		if s < 0 {
			return nil, fmt.Errorf("negative dimension in shape %v", t.Shape)
		}
		d[len(d)-1-i] = uint64(s)
	}
	return d, nil
}

// Write writes a GGUF v3 file atomically: it is built in a temporary file
// beside path and renamed into place only once complete. The tensor data
// of each tensor is aligned to general.alignment when kvs sets it (it must
// then be a uint32 power of two), else to DefaultAlignment.
func Write(path string, kvs []KV, tensors []WriteTensor) error {
	f, err := fsutil.Create(path)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	defer f.Abort()
	w := bufio.NewWriterSize(f, 1<<20)
	if err := Encode(w, kvs, tensors); err != nil {
		return fmt.Errorf("gguf %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("gguf %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("gguf %s: %w", path, err)
	}
	return nil
}

// Encode writes a GGUF v3 file to w (see Write). The header is checked in
// full before the first byte is written; tensor data is then streamed, one
// tensor's Data at a time.
func Encode(w io.Writer, kvs []KV, tensors []WriteTensor) error {
	hdr, align, sizes, err := encodeHeader(kvs, tensors)
	if err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	if err := writeZeros(w, alignUp(uint64(len(hdr)), align)-uint64(len(hdr))); err != nil {
		return err
	}
	for i, t := range tensors {
		raw, err := t.Data()
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if uint64(len(raw)) != sizes[i] {
			return fmt.Errorf("tensor %q: data is %d bytes, shape %v of %s needs %d", t.Name, len(raw), t.Shape, t.Type, sizes[i])
		}
		if _, err := w.Write(raw); err != nil {
			return err
		}
		// Every tensor, the last included, is padded as llama.cpp does.
		if err := writeZeros(w, alignUp(sizes[i], align)-sizes[i]); err != nil {
			return err
		}
	}
	return nil
}

// zeros is padding; alignments may be large, so padding is written in
// chunks rather than allocated whole.
var zeros [4096]byte

func writeZeros(w io.Writer, n uint64) error {
	for n > 0 {
		k := min(n, uint64(len(zeros)))
		if _, err := w.Write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// encodeHeader serializes everything up to the data section, less the
// padding before it, and returns the alignment and each tensor's byte size.
func encodeHeader(kvs []KV, tensors []WriteTensor) ([]byte, uint64, []uint64, error) {
	align := uint64(DefaultAlignment)
	var b bytes.Buffer
	b.WriteString(Magic)
	le := binary.LittleEndian
	b.Write(le.AppendUint32(nil, Version))
	b.Write(le.AppendUint64(nil, uint64(len(tensors))))
	b.Write(le.AppendUint64(nil, uint64(len(kvs))))

	seen := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		if kv.Key == "" {
			return nil, 0, nil, fmt.Errorf("empty metadata key")
		}
		if seen[kv.Key] {
			return nil, 0, nil, fmt.Errorf("duplicate metadata key %q", kv.Key)
		}
		seen[kv.Key] = true
		if kv.Key == KeyAlignment {
			x, ok := kv.Value.Any().(uint32)
			if !ok || kv.Value.Type != TypeUint32 || x == 0 || x&(x-1) != 0 {
				return nil, 0, nil, fmt.Errorf("key %q: alignment must be a uint32 power of two, got %s %s", KeyAlignment, kv.Value.Type, kv.Value)
			}
			align = uint64(x)
		}
		writeString(&b, kv.Key)
		b.Write(le.AppendUint32(nil, uint32(kv.Value.Type)))
		if err := encodeValue(&b, kv.Value, 0); err != nil {
			return nil, 0, nil, fmt.Errorf("key %q: %w", kv.Key, err)
		}
	}

	sizes := make([]uint64, len(tensors))
	names := make(map[string]bool, len(tensors))
	var off uint64
	for i, t := range tensors {
		switch {
		case t.Name == "":
			return nil, 0, nil, fmt.Errorf("tensor #%d has no name", i)
		case len(t.Name) > maxNameBytes:
			return nil, 0, nil, fmt.Errorf("tensor name %q is %d bytes; llama.cpp allows at most %d", t.Name, len(t.Name), maxNameBytes)
		case names[t.Name]:
			return nil, 0, nil, fmt.Errorf("duplicate tensor name %q", t.Name)
		case t.Data == nil:
			return nil, 0, nil, fmt.Errorf("tensor %q has no data source", t.Name)
		}
		names[t.Name] = true
		dims, err := t.dims()
		if err != nil {
			return nil, 0, nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		size, err := tensorBytes(t.Type, dims)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		sizes[i] = size
		writeString(&b, t.Name)
		b.Write(le.AppendUint32(nil, uint32(len(dims))))
		for _, d := range dims {
			b.Write(le.AppendUint64(nil, d))
		}
		b.Write(le.AppendUint32(nil, uint32(t.Type)))
		b.Write(le.AppendUint64(nil, off))
		next := alignUp(off+size, align)
		if next < off {
			return nil, 0, nil, fmt.Errorf("tensor %q: data offsets overflow", t.Name)
		}
		off = next
	}
	return b.Bytes(), align, sizes, nil
}

func writeString(b *bytes.Buffer, s string) {
	b.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(s))))
	b.WriteString(s)
}

// encodeValue appends v's encoding (without its type tag, which the caller
// writes for a KV and the array header carries for elements). It fails on
// values not built by Of, ArrayOf or ArrayOfArrays, and on arrays nested
// deeper than Parse accepts.
func encodeValue(b *bytes.Buffer, v Value, depth int) error {
	le := binary.LittleEndian
	var tmp [8]byte
	if v.Type != TypeArray {
		if want := scalarType(v.v); want != v.Type || !v.Type.valid() {
			return fmt.Errorf("invalid %s value holding %T", v.Type, v.v)
		}
		switch x := v.v.(type) {
		case uint8:
			b.WriteByte(x)
		case int8:
			b.WriteByte(byte(x))
		case uint16:
			b.Write(le.AppendUint16(tmp[:0], x))
		case int16:
			b.Write(le.AppendUint16(tmp[:0], uint16(x)))
		case uint32:
			b.Write(le.AppendUint32(tmp[:0], x))
		case int32:
			b.Write(le.AppendUint32(tmp[:0], uint32(x)))
		case float32:
			b.Write(le.AppendUint32(tmp[:0], math.Float32bits(x)))
		case bool:
			if x {
				b.WriteByte(1)
			} else {
				b.WriteByte(0)
			}
		case string:
			writeString(b, x)
		case uint64:
			b.Write(le.AppendUint64(tmp[:0], x))
		case int64:
			b.Write(le.AppendUint64(tmp[:0], uint64(x)))
		case float64:
			b.Write(le.AppendUint64(tmp[:0], math.Float64bits(x)))
		}
		return nil
	}

	// The reader counts the outermost array as depth 1.
	if depth+1 > maxNesting {
		return fmt.Errorf("arrays nested more than %d deep", maxNesting)
	}
	if want := sliceElemType(v.v); want != v.Elem || !v.Elem.valid() {
		return fmt.Errorf("invalid array of %s holding %T", v.Elem, v.v)
	}
	b.Write(le.AppendUint32(tmp[:0], uint32(v.Elem)))
	b.Write(le.AppendUint64(tmp[:0], uint64(v.Len())))
	switch s := v.v.(type) {
	case []uint8:
		b.Write(s)
	case []int8:
		for _, x := range s {
			b.WriteByte(byte(x))
		}
	case []uint16:
		for _, x := range s {
			b.Write(le.AppendUint16(tmp[:0], x))
		}
	case []int16:
		for _, x := range s {
			b.Write(le.AppendUint16(tmp[:0], uint16(x)))
		}
	case []uint32:
		for _, x := range s {
			b.Write(le.AppendUint32(tmp[:0], x))
		}
	case []int32:
		for _, x := range s {
			b.Write(le.AppendUint32(tmp[:0], uint32(x)))
		}
	case []float32:
		for _, x := range s {
			b.Write(le.AppendUint32(tmp[:0], math.Float32bits(x)))
		}
	case []bool:
		for _, x := range s {
			if x {
				b.WriteByte(1)
			} else {
				b.WriteByte(0)
			}
		}
	case []string:
		for _, x := range s {
			writeString(b, x)
		}
	case []uint64:
		for _, x := range s {
			b.Write(le.AppendUint64(tmp[:0], x))
		}
	case []int64:
		for _, x := range s {
			b.Write(le.AppendUint64(tmp[:0], uint64(x)))
		}
	case []float64:
		for _, x := range s {
			b.Write(le.AppendUint64(tmp[:0], math.Float64bits(x)))
		}
	case []Value:
		for i, e := range s {
			if e.Type != TypeArray {
				return fmt.Errorf("element %d of an array of arrays is a %s", i, e.Type)
			}
			if err := encodeValue(b, e, depth+1); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
	}
	return nil
}

// scalarType is the value type of a Go scalar, or an invalid type.
func scalarType(x any) ValueType {
	switch x.(type) {
	case uint8:
		return TypeUint8
	case int8:
		return TypeInt8
	case uint16:
		return TypeUint16
	case int16:
		return TypeInt16
	case uint32:
		return TypeUint32
	case int32:
		return TypeInt32
	case float32:
		return TypeFloat32
	case bool:
		return TypeBool
	case string:
		return TypeString
	case uint64:
		return TypeUint64
	case int64:
		return TypeInt64
	case float64:
		return TypeFloat64
	}
	return ValueType(math.MaxUint32)
}

// sliceElemType is the element type of a slice a Value may hold, or an
// invalid type.
func sliceElemType(x any) ValueType {
	switch x.(type) {
	case []uint8:
		return TypeUint8
	case []int8:
		return TypeInt8
	case []uint16:
		return TypeUint16
	case []int16:
		return TypeInt16
	case []uint32:
		return TypeUint32
	case []int32:
		return TypeInt32
	case []float32:
		return TypeFloat32
	case []bool:
		return TypeBool
	case []string:
		return TypeString
	case []uint64:
		return TypeUint64
	case []int64:
		return TypeInt64
	case []float64:
		return TypeFloat64
	case []Value:
		return TypeArray
	}
	return ValueType(math.MaxUint32)
}
