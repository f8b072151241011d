// Package gguf reads and writes llama.cpp's GGUF files (versions 2 and 3):
// a low-level reader and writer for the header, metadata and tensor data,
// and the mapping between GGUF models (llama.cpp's llama, qwen2, qwen3,
// gemma2 and phi3 architectures) and whittle's IR.
//
// Reading never trusts the file: every count and length is checked against
// the bytes that remain before anything is allocated, and tensor data is
// handed out lazily as slices of a read-only memory map.
package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	"github.com/whittle-ml/whittle/ir"
)

// Magic opens every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// KeyAlignment overrides the alignment of tensor data.
const KeyAlignment = "general.alignment"

// maxDims is ggml's GGML_MAX_DIMS.
const maxDims = 4

// maxNesting bounds nested arrays so a hostile file cannot recurse deeply;
// real files nest at most once.
const maxNesting = 8

// Smallest encodings, used to bound counts by the bytes that remain.
const (
	minKVBytes     = 8 + 4 + 1     // key length, type, 1-byte value
	minTensorBytes = 8 + 4 + 4 + 8 // name length, n_dims, type, offset
	minArrayBytes  = 4 + 8         // element type, count
)

// File is a parsed GGUF header plus access to the tensor data behind it.
type File struct {
	// Path names the file in messages.
	Path    string
	Version uint32
	KVs     []KV
	Tensors []TensorInfo
	// Alignment of every tensor's data, from general.alignment.
	Alignment uint64
	// DataOffset is where the data section starts in the file.
	DataOffset int64

	data    []byte
	mapping *ir.Mapping
	kvIndex map[string]int
	kvAt    []int // file offset of each KV, for messages
	tIndex  map[string]int
}

// TensorInfo is one tensor's header entry.
type TensorInfo struct {
	Name string
	// Dims is ggml's ne: the innermost (contiguous) dimension first, so a
	// row-major [out, in] matrix has Dims [in, out].
	Dims []uint64
	Type GGMLType
	// Offset is relative to the data section.
	Offset uint64
	// Size is the data's length in bytes, computed from Dims and Type.
	Size uint64
	// InfoOffset is where this entry starts in the file, for messages.
	InfoOffset int64
}

// Shape is the row-major shape (Dims reversed).
func (t *TensorInfo) Shape() []int {
	s := make([]int, len(t.Dims))
	for i, d := range t.Dims {
		s[len(s)-1-i] = int(d)
	}
	return s
}

// Open memory-maps path and parses its header. Tensor data is read only
// when asked for; Close releases the map.
func Open(path string) (*File, error) {
	m, err := ir.MapFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(path, m.Bytes())
	if err != nil {
		m.Close()
		return nil, err
	}
	f.mapping = m
	return f, nil
}

// Close unmaps a file opened with Open. Tensors obtained from it must not
// be used afterwards.
func (f *File) Close() error {
	if f.mapping == nil {
		return nil
	}
	err := f.mapping.Close()
	f.mapping = nil
	f.data = nil
	return err
}

// Get returns the metadata value stored under key.
func (f *File) Get(key string) (Value, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return Value{}, false
	}
	return f.KVs[i].Value, true
}

// Info returns the header entry of a tensor.
func (f *File) Info(name string) (*TensorInfo, bool) {
	i, ok := f.tIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// Tensor returns a tensor whose bytes are read from the file on first use.
// Only F32, F16 and BF16 tensors can be read; any other ggml type is an
// error naming the tensor.
func (f *File) Tensor(name string) (*ir.Tensor, error) {
	ti, ok := f.Info(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.Path, name)
	}
	return f.tensor(ti)
}

func (f *File) tensor(ti *TensorInfo) (*ir.Tensor, error) {
	if dequantizable(ti.Type) {
		// Read as float32: the IR computes in float32 whatever the storage.
		load, shape, path := f.loader(ti), ti.Shape(), f.Path
		n := 1
		for _, d := range shape {
			n *= d
		}
		return ir.LazyTensor(ir.F32, shape, func() ([]byte, error) {
			raw, err := load()
			if err != nil {
				return nil, err
			}
			out, err := dequantize(ti.Type, raw, n)
			if err != nil {
				return nil, fmt.Errorf("%s: tensor %q: %w", path, ti.Name, err)
			}
			return out, nil
		}), nil
	}
	d, ok := ti.Type.DType()
	if !ok {
		return nil, fmt.Errorf("%s: offset %d: tensor %q is stored as %s; whittle reads F32, F16, BF16, Q8_0 and Q4_0 tensors (convert the file first)",
			f.Path, ti.InfoOffset, ti.Name, ti.Type)
	}
	return ir.LazyTensor(d, ti.Shape(), f.loader(ti)), nil
}

// loader returns the lazy reader of a tensor's bytes. Parse has already
// checked that they lie inside the file.
func (f *File) loader(ti *TensorInfo) func() ([]byte, error) {
	off, n := f.DataOffset+int64(ti.Offset), int64(ti.Size)
	if f.mapping != nil {
		slice := f.mapping.Slice(ti.Name, off, n)
		path := f.Path
		return func() ([]byte, error) {
			b, err := slice()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return b, nil
		}
	}
	data := f.data
	return func() ([]byte, error) { return data[off : off+n : off+n], nil }
}

// raw returns a tensor's bytes whatever its type.
func (f *File) raw(ti *TensorInfo) ([]byte, error) { return f.loader(ti)() }

// Parse decodes a GGUF file held in memory; name is used in messages.
// Tensor data is not copied: tensors alias data.
func Parse(name string, data []byte) (*File, error) {
	d := &decoder{name: name, buf: data}
	f := &File{Path: name, data: data, kvIndex: map[string]int{}, tIndex: map[string]int{}, Alignment: DefaultAlignment}

	if len(data) < len(Magic) || string(data[:len(Magic)]) != Magic {
		n := min(len(data), len(Magic))
		return nil, d.errorf(0, "not a GGUF file (starts with %q, want %q)", data[:n], Magic)
	}
	d.off = len(Magic)
	v, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case v == 2 || v == 3:
	case v == 1:
		return nil, d.errorf(4, "GGUF version 1 (32-bit counts) is not supported")
	case bits.ReverseBytes32(v) >= 1 && bits.ReverseBytes32(v) <= 3:
		return nil, d.errorf(4, "big-endian GGUF is not supported")
	default:
		return nil, d.errorf(4, "unsupported GGUF version %d (want 2 or 3)", v)
	}
	f.Version = v

	nTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	if nKV > d.remaining()/minKVBytes {
		return nil, d.errorf(16, "metadata count %d cannot fit in the %d bytes that remain", nKV, d.remaining())
	}
	if nTensors > d.remaining()/minTensorBytes {
		return nil, d.errorf(8, "tensor count %d cannot fit in the %d bytes that remain", nTensors, d.remaining())
	}

	f.KVs = make([]KV, 0, nKV)
	f.kvAt = make([]int, 0, nKV)
	for i := uint64(0); i < nKV; i++ {
		at := d.off
		key, err := d.str(fmt.Sprintf("metadata key #%d", i), -1)
		if err != nil {
			return nil, err
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, d.errorf(at, "duplicate metadata key %q", key)
		}
		ctx := fmt.Sprintf("key %q", key)
		tAt := d.off
		t, err := d.u32(ctx + " type")
		if err != nil {
			return nil, err
		}
		if !ValueType(t).valid() {
			return nil, d.errorf(tAt, "%s: unknown value type %d", ctx, t)
		}
		val, err := d.value(ctx, ValueType(t), 0)
		if err != nil {
			return nil, err
		}
		f.kvIndex[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{Key: key, Value: val})
		f.kvAt = append(f.kvAt, at)
	}

	if i, ok := f.kvIndex[KeyAlignment]; ok {
		a := f.KVs[i].Value
		x, isU32 := a.Any().(uint32)
		if !isU32 || x == 0 || x&(x-1) != 0 {
			return nil, d.errorf(f.kvAt[i], "key %q: alignment must be a uint32 power of two, got %s %s", KeyAlignment, a.Type, a)
		}
		f.Alignment = uint64(x)
	}

	// The count was bounded above, but recheck now that the metadata has
	// been consumed, before allocating.
	if nTensors > d.remaining()/minTensorBytes {
		return nil, d.errorf(8, "tensor count %d cannot fit in the %d bytes after the metadata", nTensors, d.remaining())
	}
	f.Tensors = make([]TensorInfo, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		ti, err := d.tensorInfo(i)
		if err != nil {
			return nil, err
		}
		if _, dup := f.tIndex[ti.Name]; dup {
			return nil, d.errorf(int(ti.InfoOffset), "duplicate tensor name %q", ti.Name)
		}
		f.tIndex[ti.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
	}

	f.DataOffset = int64(alignUp(uint64(d.off), f.Alignment))
	size := uint64(len(data))
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		at := int(ti.InfoOffset)
		if ti.Offset%f.Alignment != 0 {
			return nil, d.errorf(at, "tensor %q: data offset %d is not a multiple of the alignment %d", ti.Name, ti.Offset, f.Alignment)
		}
		start := uint64(f.DataOffset) + ti.Offset
		if ti.Offset > size || start > size || ti.Size > size-start {
			return nil, d.errorf(at, "tensor %q: data at file bytes [%d, %d) (offset %d of the data section at %d) lies outside the %d-byte file",
				ti.Name, uint64(f.DataOffset)+ti.Offset, uint64(f.DataOffset)+ti.Offset+ti.Size, ti.Offset, f.DataOffset, size)
		}
	}
	return f, nil
}

func alignUp(x, a uint64) uint64 { return (x + a - 1) / a * a }

// tensorBytes is the storage size of a tensor, or an error when the dims
// do not suit the type or the size overflows.
func tensorBytes(t GGMLType, dims []uint64) (uint64, error) {
	be, bb, ok := t.Block()
	if !ok {
		return 0, fmt.Errorf("unknown ggml type %d", uint32(t))
	}
	if len(dims) > maxDims {
		return 0, fmt.Errorf("%d dimensions (ggml allows at most %d)", len(dims), maxDims)
	}
	// Multiply the non-zero dims with overflow checks, so no shape can
	// overflow later whatever order it is multiplied in.
	n, nonzero := uint64(1), uint64(1)
	for _, x := range dims {
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("dimension %d is out of range", x)
		}
		if x == 0 {
			n = 0
			continue
		}
		hi, lo := bits.Mul64(nonzero, x)
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("dims %v overflow the element count", dims)
		}
		nonzero = lo
		n *= x
	}
	ne0 := uint64(1)
	if len(dims) > 0 {
		ne0 = dims[0]
	}
	if ne0%be != 0 {
		return 0, fmt.Errorf("innermost dimension %d is not a multiple of the %s block size %d", ne0, t, be)
	}
	hi, lo := bits.Mul64(n/be, bb)
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("dims %v of %s overflow the byte size", dims, t)
	}
	return lo, nil
}

// decoder reads little-endian fields, reporting the file and offset of
// anything malformed.
type decoder struct {
	name string
	buf  []byte
	off  int
}

func (d *decoder) errorf(at int, format string, args ...any) error {
	return fmt.Errorf("%s: offset %d: %s", d.name, at, fmt.Sprintf(format, args...))
}

func (d *decoder) remaining() uint64 { return uint64(len(d.buf) - d.off) }

func (d *decoder) take(n uint64, what string) ([]byte, error) {
	if n > d.remaining() {
		return nil, d.errorf(d.off, "%s needs %d bytes, only %d remain", what, n, d.remaining())
	}
	b := d.buf[d.off : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

func (d *decoder) u32(what string) (uint32, error) {
	b, err := d.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	b, err := d.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// str reads a length-prefixed string; idx >= 0 names an array element.
// The label is built only on error: vocabularies hold many strings.
func (d *decoder) str(what string, idx int) (string, error) {
	at := d.off
	label := func() string {
		if idx >= 0 {
			return fmt.Sprintf("%s[%d]", what, idx)
		}
		return what
	}
	if d.remaining() < 8 {
		return "", d.errorf(at, "%s length needs 8 bytes, only %d remain", label(), d.remaining())
	}
	n, _ := d.u64("")
	if n > d.remaining() {
		return "", d.errorf(at, "%s: string length %d exceeds the %d bytes that remain", label(), n, d.remaining())
	}
	b, _ := d.take(n, "")
	return string(b), nil
}

func (d *decoder) value(ctx string, t ValueType, depth int) (Value, error) {
	if t == TypeString {
		s, err := d.str(ctx, -1)
		return Of(s), err
	}
	if t == TypeArray {
		return d.array(ctx, depth+1)
	}
	at := d.off
	b, err := d.take(uint64(t.fixedSize()), ctx)
	if err != nil {
		return Value{}, err
	}
	switch t {
	case TypeUint8:
		return Of(b[0]), nil
	case TypeInt8:
		return Of(int8(b[0])), nil
	case TypeUint16:
		return Of(binary.LittleEndian.Uint16(b)), nil
	case TypeInt16:
		return Of(int16(binary.LittleEndian.Uint16(b))), nil
	case TypeUint32:
		return Of(binary.LittleEndian.Uint32(b)), nil
	case TypeInt32:
		return Of(int32(binary.LittleEndian.Uint32(b))), nil
	case TypeFloat32:
		return Of(math.Float32frombits(binary.LittleEndian.Uint32(b))), nil
	case TypeBool:
		if b[0] > 1 {
			return Value{}, d.errorf(at, "%s: bool byte %d is neither 0 nor 1", ctx, b[0])
		}
		return Of(b[0] == 1), nil
	case TypeUint64:
		return Of(binary.LittleEndian.Uint64(b)), nil
	case TypeInt64:
		return Of(int64(binary.LittleEndian.Uint64(b))), nil
	case TypeFloat64:
		return Of(math.Float64frombits(binary.LittleEndian.Uint64(b))), nil
	}
	return Value{}, d.errorf(at, "%s: unknown value type %d", ctx, uint32(t))
}

func (d *decoder) array(ctx string, depth int) (Value, error) {
	at := d.off
	if depth > maxNesting {
		return Value{}, d.errorf(at, "%s: arrays nested more than %d deep", ctx, maxNesting)
	}
	et32, err := d.u32(ctx + " array type")
	if err != nil {
		return Value{}, err
	}
	et := ValueType(et32)
	if !et.valid() {
		return Value{}, d.errorf(at, "%s: unknown array element type %d", ctx, et32)
	}
	n, err := d.u64(ctx + " array length")
	if err != nil {
		return Value{}, err
	}
	if sz := et.fixedSize(); sz > 0 {
		if n > d.remaining()/uint64(sz) {
			return Value{}, d.errorf(at, "%s: array of %d %s needs %d bytes each, only %d bytes remain", ctx, n, et, sz, d.remaining())
		}
		raw, _ := d.take(n*uint64(sz), ctx)
		return decodeFixed(d, ctx, at+12, et, int(n), raw)
	}
	minSize := uint64(8) // a string's length prefix
	if et == TypeArray {
		minSize = minArrayBytes
	}
	if n > d.remaining()/minSize {
		return Value{}, d.errorf(at, "%s: array of %d %s needs at least %d bytes each, only %d bytes remain", ctx, n, et, minSize, d.remaining())
	}
	if et == TypeString {
		out := make([]string, n)
		for i := range out {
			if out[i], err = d.str(ctx, i); err != nil {
				return Value{}, err
			}
		}
		return ArrayOf(out), nil
	}
	out := make([]Value, n)
	for i := range out {
		if out[i], err = d.array(fmt.Sprintf("%s[%d]", ctx, i), depth+1); err != nil {
			return Value{}, err
		}
	}
	return ArrayOfArrays(out), nil
}

func decodeFixed(d *decoder, ctx string, at int, et ValueType, n int, b []byte) (Value, error) {
	le := binary.LittleEndian
	switch et {
	case TypeUint8:
		return ArrayOf(append([]uint8{}, b...)), nil
	case TypeInt8:
		return ArrayOf(fill(n, func(i int) int8 { return int8(b[i]) })), nil
	case TypeUint16:
		return ArrayOf(fill(n, func(i int) uint16 { return le.Uint16(b[2*i:]) })), nil
	case TypeInt16:
		return ArrayOf(fill(n, func(i int) int16 { return int16(le.Uint16(b[2*i:])) })), nil
	case TypeUint32:
		return ArrayOf(fill(n, func(i int) uint32 { return le.Uint32(b[4*i:]) })), nil
	case TypeInt32:
		return ArrayOf(fill(n, func(i int) int32 { return int32(le.Uint32(b[4*i:])) })), nil
	case TypeFloat32:
		return ArrayOf(fill(n, func(i int) float32 { return math.Float32frombits(le.Uint32(b[4*i:])) })), nil
	case TypeUint64:
		return ArrayOf(fill(n, func(i int) uint64 { return le.Uint64(b[8*i:]) })), nil
	case TypeInt64:
		return ArrayOf(fill(n, func(i int) int64 { return int64(le.Uint64(b[8*i:])) })), nil
	case TypeFloat64:
		return ArrayOf(fill(n, func(i int) float64 { return math.Float64frombits(le.Uint64(b[8*i:])) })), nil
	case TypeBool:
		out := make([]bool, n)
		for i, x := range b {
			if x > 1 {
				return Value{}, d.errorf(at+i, "%s[%d]: bool byte %d is neither 0 nor 1", ctx, i, x)
			}
			out[i] = x == 1
		}
		return ArrayOf(out), nil
	}
	return Value{}, d.errorf(at, "%s: unknown array element type %d", ctx, uint32(et))
}

func fill[T any](n int, f func(int) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func (d *decoder) tensorInfo(i uint64) (TensorInfo, error) {
	at := d.off
	name, err := d.str(fmt.Sprintf("tensor #%d name", i), -1)
	if err != nil {
		return TensorInfo{}, err
	}
	ctx := fmt.Sprintf("tensor %q", name)
	ndAt := d.off
	nd, err := d.u32(ctx + " n_dims")
	if err != nil {
		return TensorInfo{}, err
	}
	if nd > maxDims {
		return TensorInfo{}, d.errorf(ndAt, "%s: %d dimensions (ggml allows at most %d)", ctx, nd, maxDims)
	}
	dims := make([]uint64, nd)
	for j := range dims {
		if dims[j], err = d.u64(ctx + " dimension"); err != nil {
			return TensorInfo{}, err
		}
	}
	t, err := d.u32(ctx + " type")
	if err != nil {
		return TensorInfo{}, err
	}
	size, err := tensorBytes(GGMLType(t), dims)
	if err != nil {
		return TensorInfo{}, d.errorf(at, "%s: %v", ctx, err)
	}
	off, err := d.u64(ctx + " data offset")
	if err != nil {
		return TensorInfo{}, err
	}
	return TensorInfo{Name: name, Dims: dims, Type: GGMLType(t), Offset: off, Size: size, InfoOffset: int64(at)}, nil
}
