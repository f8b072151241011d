// Package safetensors reads and writes Hugging Face's safetensors format:
// an 8-byte little-endian header length N, N bytes of JSON mapping each
// tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the first byte after the header) plus an optional
// "__metadata__" string map, then the tensor bytes.
//
// Files are memory-mapped and tensors are loaded lazily, so opening a large
// checkpoint reads only its header. Every header is validated before any
// tensor is handed out: a malformed file is an error that names the file,
// the tensor and the byte offset, never a panic.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"unicode/utf8"

	"github.com/whittle-ml/whittle/ir"
)

// MaxHeaderSize is the largest JSON header accepted. It matches the Rust
// reference implementation, which refuses larger headers as hostile.
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key holding free-form string metadata.
const metadataKey = "__metadata__"

// elemSize is the element size of every dtype the format defines that has
// a whole-byte size. Knowing the sizes of dtypes whittle cannot compute
// with still lets their offsets be validated.
var elemSize = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// irDType maps the dtypes whittle can hold in an ir.Tensor.
var irDType = map[string]ir.DType{"F32": ir.F32, "F16": ir.F16, "BF16": ir.BF16}

// dtypeName is the header spelling of an ir.DType.
func dtypeName(d ir.DType) (string, error) {
	switch d {
	case ir.F32:
		return "F32", nil
	case ir.F16:
		return "F16", nil
	case ir.BF16:
		return "BF16", nil
	}
	return "", fmt.Errorf("dtype %v has no safetensors spelling", d)
}

// TensorInfo is one validated header entry.
type TensorInfo struct {
	Name string
	// DType is the header's spelling ("F32", "BF16", "I64", ...).
	DType string
	Shape []int
	// Begin and End are the data_offsets, relative to the data section.
	Begin, End int64
}

// header is a parsed and validated file header.
type header struct {
	metadata  map[string]string
	infos     []TensorInfo // sorted by name
	dataStart int64        // absolute file offset of the data section
}

// parse validates a whole safetensors file held in data. Errors name the
// tensor and the absolute byte offset where possible; callers prefix the
// file name.
func parse(data []byte) (*header, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("truncated: %d bytes, need at least the 8-byte header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("header length %d at offset 0 exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	if n > uint64(len(data)-8) {
		return nil, fmt.Errorf("header length %d at offset 0 runs past the end of the %d-byte file", n, len(data))
	}
	raw := data[8 : 8+n]
	h := &header{dataStart: int64(8 + n)}
	dataLen := int64(len(data)) - h.dataStart
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("header at offset 8 is not valid UTF-8")
	}
	entries, err := splitObject(raw)
	if err != nil {
		return nil, fmt.Errorf("header at offset 8: %w", err)
	}
	for _, e := range entries {
		if e.key == metadataKey {
			if err := json.Unmarshal(e.value, &h.metadata); err != nil {
				return nil, fmt.Errorf("header at offset 8: %s must map strings to strings: %v", metadataKey, err)
			}
			continue
		}
		info, err := parseInfo(e.key, e.value, dataLen, h.dataStart)
		if err != nil {
			return nil, err
		}
		h.infos = append(h.infos, info)
	}
	sort.Slice(h.infos, func(i, j int) bool { return h.infos[i].Name < h.infos[j].Name })
	if err := checkOverlap(h.infos, h.dataStart); err != nil {
		return nil, err
	}
	return h, nil
}

type rawEntry struct {
	key   string
	value json.RawMessage
}

// splitObject decodes a JSON object into its entries in file order,
// rejecting duplicate keys (which a map-based decoder would silently
// resolve to the last one, hiding a tensor) and trailing data.
func splitObject(raw []byte) ([]rawEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("JSON header is not an object")
	}
	var out []rawEntry
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("invalid JSON: object key is %v", tok)
		}
		if seen[key] {
			return nil, fmt.Errorf("key %q appears twice", key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("invalid JSON for key %q: %v", key, err)
		}
		out = append(out, rawEntry{key, v})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("invalid JSON: data after the header object")
	}
	return out, nil
}

// parseInfo validates one tensor entry against the data section.
func parseInfo(name string, raw json.RawMessage, dataLen, dataStart int64) (TensorInfo, error) {
	var e struct {
		DType       *string   `json:"dtype"`
		Shape       *[]uint64 `json:"shape"`
		DataOffsets *[]uint64 `json:"data_offsets"`
	}
	fail := func(format string, args ...any) (TensorInfo, error) {
		return TensorInfo{}, fmt.Errorf("tensor %q: %s", name, fmt.Sprintf(format, args...))
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return fail("bad header entry %s: %v", clip(raw), err)
	}
	if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
		return fail("header entry %s needs dtype, shape and data_offsets", clip(raw))
	}
	size, ok := elemSize[*e.DType]
	if !ok {
		return fail("unknown dtype %q", *e.DType)
	}
	offs := *e.DataOffsets
	if len(offs) != 2 {
		return fail("data_offsets has %d entries, want [begin, end]", len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin > end {
		return fail("data_offsets [%d,%d] end before they begin (file offset %d)", begin, end, uint64(dataStart)+begin)
	}
	if end > uint64(dataLen) {
		return fail("data_offsets [%d,%d] run past the %d-byte data section that starts at file offset %d", begin, end, dataLen, dataStart)
	}
	shape := make([]int, len(*e.Shape))
	for i, d := range *e.Shape {
		if d > math.MaxInt {
			return fail("dimension %d of shape %v is too large", i, *e.Shape)
		}
		shape[i] = int(d)
	}
	want, ok := byteSize(*e.Shape, uint64(size), uint64(dataLen))
	if !ok || want != end-begin {
		return fail("shape %v of %s needs %s bytes but data_offsets [%d,%d] hold %d (file offset %d)",
			*e.Shape, *e.DType, describeSize(want, ok), begin, end, end-begin, uint64(dataStart)+begin)
	}
	return TensorInfo{Name: name, DType: *e.DType, Shape: shape, Begin: int64(begin), End: int64(end)}, nil
}

// byteSize multiplies out a shape without overflowing; ok is false when
// the product exceeds limit (so it cannot fit the file anyway).
func byteSize(shape []uint64, elem, limit uint64) (uint64, bool) {
	for _, d := range shape {
		if d == 0 {
			return 0, true
		}
	}
	n := elem
	for _, d := range shape {
		if n > limit/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

func describeSize(n uint64, ok bool) string {
	if !ok {
		return "more"
	}
	return fmt.Sprint(n)
}

// clip shortens a raw JSON value for an error message.
func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

// checkOverlap rejects tensors whose byte ranges intersect: a writer never
// produces them, and aliasing would let one tensor's edits leak into another.
func checkOverlap(infos []TensorInfo, dataStart int64) error {
	byOff := make([]*TensorInfo, len(infos))
	for i := range infos {
		byOff[i] = &infos[i]
	}
	sort.Slice(byOff, func(i, j int) bool {
		if byOff[i].Begin != byOff[j].Begin {
			return byOff[i].Begin < byOff[j].Begin
		}
		return byOff[i].End < byOff[j].End
	})
	for i := 1; i < len(byOff); i++ {
		prev, cur := byOff[i-1], byOff[i]
		if cur.Begin < prev.End {
			return fmt.Errorf("tensor %q: data_offsets [%d,%d] overlap tensor %q at [%d,%d] (file offset %d)",
				cur.Name, cur.Begin, cur.End, prev.Name, prev.Begin, prev.End, dataStart+cur.Begin)
		}
	}
	return nil
}

// File is an open, validated safetensors file. Its tensors are views of a
// memory map and must not be used after Close.
type File struct {
	Path string
	// Metadata is the header's "__metadata__" map (nil when absent).
	Metadata map[string]string

	h *header
	m *ir.Mapping
}

// Open maps and validates a safetensors file.
func Open(path string) (*File, error) {
	m, err := ir.MapFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	h, err := parse(m.Bytes())
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	return &File{Path: path, Metadata: h.metadata, h: h, m: m}, nil
}

// Names lists the tensors in the file, sorted.
func (f *File) Names() []string {
	out := make([]string, len(f.h.infos))
	for i, in := range f.h.infos {
		out[i] = in.Name
	}
	return out
}

// Info returns a tensor's header entry.
func (f *File) Info(name string) (TensorInfo, bool) {
	i := sort.Search(len(f.h.infos), func(i int) bool { return f.h.infos[i].Name >= name })
	if i < len(f.h.infos) && f.h.infos[i].Name == name {
		in := f.h.infos[i]
		in.Shape = append([]int(nil), in.Shape...)
		return in, true
	}
	return TensorInfo{}, false
}

// ErrUnsupportedDType is returned (wrapped) for tensors whose dtype the
// file format allows but whittle cannot compute with.
var ErrUnsupportedDType = errors.New("unsupported dtype")

// Tensor returns a lazy view of one tensor; its bytes are read from the
// map on first use.
func (f *File) Tensor(name string) (*ir.Tensor, error) {
	in, ok := f.Info(name)
	if !ok {
		return nil, fmt.Errorf("safetensors %s: no tensor %q", f.Path, name)
	}
	d, ok := irDType[in.DType]
	if !ok {
		return nil, fmt.Errorf("safetensors %s: tensor %q has dtype %s (want F32, F16 or BF16): %w", f.Path, name, in.DType, ErrUnsupportedDType)
	}
	return ir.LazyTensor(d, in.Shape, f.m.Slice(name, f.h.dataStart+in.Begin, in.End-in.Begin)), nil
}

// Tensors returns every tensor of the file. It fails on the first tensor
// whose dtype whittle does not support.
func (f *File) Tensors() (map[string]*ir.Tensor, error) {
	out := make(map[string]*ir.Tensor, len(f.h.infos))
	for _, in := range f.h.infos {
		t, err := f.Tensor(in.Name)
		if err != nil {
			return nil, err
		}
		out[in.Name] = t
	}
	return out, nil
}

// Close unmaps the file.
func (f *File) Close() error { return f.m.Close() }
