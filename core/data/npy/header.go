// Package npy reads and writes NumPy's .npy array files (format versions
// 1.0, 2.0 and 3.0), the container whittle's token datasets cross the
// backend boundary in.
//
// Only plain (non-structured) numeric dtypes are supported: bool, signed
// and unsigned integers of 1, 2, 4 and 8 bytes and 4- and 8-byte floats, in
// either byte order. Writers produce the byte stream numpy.save produces
// (version 1.0, little-endian, C order, the same header text and padding),
// so files compare byte for byte.
package npy

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Magic starts every .npy file.
const Magic = "\x93NUMPY"

// align is the boundary numpy pads the header to, so the data can be
// mapped and read in place.
const align = 64

// growthDigits is numpy's GROWTH_AXIS_MAX_DIGITS: numpy leaves room in the
// header for the first axis to grow to this many digits, so the header can
// be rewritten in place when rows are appended.
const growthDigits = 21

// maxHeader bounds the header length we accept; numpy itself refuses
// headers over 10,000 bytes unless told otherwise.
const maxHeader = 1 << 20

// Header describes the array stored in a .npy file.
type Header struct {
	// Descr is the dtype string, e.g. "<i4", "|u1", "<f4".
	Descr string
	// Fortran reports column-major (Fortran) element order.
	Fortran bool
	// Shape is the array's shape; empty for a 0-d scalar.
	Shape []int
}

// Len is the number of elements: the product of Shape (1 for a scalar).
func (h Header) Len() int {
	n := 1
	for _, d := range h.Shape {
		n *= d
	}
	return n
}

// ItemSize is the size of one element in bytes, or 0 when Descr is not a
// supported dtype.
func (h Header) ItemSize() int {
	dt, err := parseDescr(h.Descr)
	if err != nil {
		return 0
	}
	return dt.size
}

// dtype is a parsed descr.
type dtype struct {
	kind      byte // 'b' bool, 'i' signed, 'u' unsigned, 'f' float
	size      int
	bigEndian bool
}

func parseDescr(s string) (dtype, error) {
	if len(s) < 3 {
		return dtype{}, fmt.Errorf("unsupported dtype %q", s)
	}
	var dt dtype
	switch s[0] {
	case '<', '|', '=':
		// '=' (native order) is read as little-endian: numpy never writes
		// it, and the machines whittle runs on are little-endian.
	case '>':
		dt.bigEndian = true
	default:
		return dtype{}, fmt.Errorf("unsupported dtype %q: byte order %q", s, s[0])
	}
	dt.kind = s[1]
	n, err := strconv.Atoi(s[2:])
	if err != nil {
		return dtype{}, fmt.Errorf("unsupported dtype %q", s)
	}
	dt.size = n
	ok := false
	switch dt.kind {
	case 'b':
		ok = n == 1
	case 'i', 'u':
		ok = n == 1 || n == 2 || n == 4 || n == 8
	case 'f':
		ok = n == 4 || n == 8
	}
	if !ok {
		return dtype{}, fmt.Errorf("unsupported dtype %q", s)
	}
	if n == 1 {
		dt.bigEndian = false
	}
	return dt, nil
}

// FormatError reports malformed .npy content: the file (when known) and
// the byte offset where the problem lies.
type FormatError struct {
	File   string
	Offset int64
	Msg    string
}

func (e *FormatError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("npy: byte %d: %s", e.Offset, e.Msg)
	}
	return fmt.Sprintf("npy: %s: byte %d: %s", e.File, e.Offset, e.Msg)
}

func errAt(off int, format string, args ...any) error {
	return &FormatError{Offset: int64(off), Msg: fmt.Sprintf(format, args...)}
}

// ParseHeader parses the magic, version and header dictionary at the start
// of data. It returns the header and the offset where the array data
// starts. It checks the header only, not that data holds the elements.
func ParseHeader(data []byte) (Header, int, error) {
	if len(data) < len(Magic)+2 {
		return Header{}, 0, errAt(0, "file too short for the .npy magic (%d bytes)", len(data))
	}
	if string(data[:len(Magic)]) != Magic {
		return Header{}, 0, errAt(0, "not a .npy file: bad magic %q", data[:len(Magic)])
	}
	major, minor := data[6], data[7]
	var hlen, start int
	switch major {
	case 1:
		if len(data) < 10 {
			return Header{}, 0, errAt(8, "truncated header length")
		}
		hlen, start = int(binary.LittleEndian.Uint16(data[8:])), 10
	case 2, 3:
		if len(data) < 12 {
			return Header{}, 0, errAt(8, "truncated header length")
		}
		n := binary.LittleEndian.Uint32(data[8:])
		if n > maxHeader {
			return Header{}, 0, errAt(8, "header length %d exceeds the %d-byte limit", n, maxHeader)
		}
		hlen, start = int(n), 12
	default:
		return Header{}, 0, errAt(6, "unsupported format version %d.%d", major, minor)
	}
	if minor != 0 {
		return Header{}, 0, errAt(7, "unsupported format version %d.%d", major, minor)
	}
	end := start + hlen
	if end > len(data) {
		return Header{}, 0, errAt(start, "header of %d bytes runs past the end of the file (%d bytes)", hlen, len(data))
	}
	text := data[start:end]
	if major < 3 {
		// Versions 1 and 2 are latin-1; a non-ASCII byte cannot occur in a
		// header we can use (descr, booleans and integers are ASCII).
		for i, c := range text {
			if c >= 0x80 {
				return Header{}, 0, errAt(start+i, "non-ASCII byte 0x%02x in header", c)
			}
		}
	}
	p := &hdrParser{s: string(text), base: start}
	h, err := p.parse()
	if err != nil {
		return Header{}, 0, err
	}
	return h, end, nil
}

// hdrParser parses the Python dict literal numpy writes:
// {'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }
type hdrParser struct {
	s    string
	i    int
	base int // offset of s in the file, for errors
}

func (p *hdrParser) errf(format string, args ...any) error {
	return errAt(p.base+p.i, "header: "+format, args...)
}

func (p *hdrParser) skipSpace() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *hdrParser) peekPos() int {
	p.skipSpace()
	return p.i
}

func (p *hdrParser) peek() byte {
	p.skipSpace()
	if p.i >= len(p.s) {
		return 0
	}
	return p.s[p.i]
}

func (p *hdrParser) expect(c byte) error {
	if p.peek() != c {
		if p.i >= len(p.s) {
			return p.errf("expected %q, found the end of the header", c)
		}
		return p.errf("expected %q, found %q", c, p.s[p.i])
	}
	p.i++
	return nil
}

func (p *hdrParser) parse() (Header, error) {
	var h Header
	if err := p.expect('{'); err != nil {
		return h, err
	}
	seen := map[string]bool{}
	shapeAt := 0
	for p.peek() != '}' {
		keyAt := p.i
		key, err := p.str()
		if err != nil {
			return h, err
		}
		if seen[key] {
			p.i = keyAt
			return h, p.errf("duplicate key %q", key)
		}
		seen[key] = true
		if err := p.expect(':'); err != nil {
			return h, err
		}
		switch key {
		case "descr":
			if p.peek() == '[' {
				return h, p.errf("structured dtypes are not supported")
			}
			at := p.i
			if h.Descr, err = p.str(); err != nil {
				return h, err
			}
			if _, err := parseDescr(h.Descr); err != nil {
				p.i = at
				return h, p.errf("%v", err)
			}
		case "fortran_order":
			if h.Fortran, err = p.boolean(); err != nil {
				return h, err
			}
		case "shape":
			shapeAt = p.peekPos()
			if h.Shape, err = p.shape(); err != nil {
				return h, err
			}
		default:
			p.i = keyAt
			return h, p.errf("unexpected key %q", key)
		}
		if p.peek() == ',' {
			p.i++
			continue
		}
		if p.peek() != '}' {
			return h, p.expect('}')
		}
	}
	p.i++
	for _, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[k] {
			return h, p.errf("missing key %q", k)
		}
	}
	if p.peek() != 0 {
		return h, p.errf("unexpected %q after the header dictionary", p.s[p.i])
	}
	if h.Shape == nil {
		h.Shape = []int{}
	}
	// The element count and byte size must fit an int, or later offset
	// arithmetic would overflow.
	n := int64(1)
	size := int64(parseDescrSize(h.Descr))
	for _, d := range h.Shape {
		if d == 0 {
			n = 0
			break
		}
		if n > math.MaxInt64/int64(d)/size {
			p.i = shapeAt
			return h, p.errf("shape %v is too large", h.Shape)
		}
		n *= int64(d)
	}
	return h, nil
}

func parseDescrSize(s string) int {
	dt, err := parseDescr(s)
	if err != nil || dt.size == 0 {
		return 1
	}
	return dt.size
}

// str parses a Python string literal in single or double quotes. Escapes
// are rejected: no valid header needs them.
func (p *hdrParser) str() (string, error) {
	q := p.peek()
	if q != '\'' && q != '"' {
		if q == 0 {
			return "", p.errf("expected a string, found the end of the header")
		}
		return "", p.errf("expected a string, found %q", q)
	}
	start := p.i + 1
	for j := start; j < len(p.s); j++ {
		switch p.s[j] {
		case q:
			p.i = j + 1
			return p.s[start:j], nil
		case '\\', '\n':
			p.i = j
			return "", p.errf("unsupported character %q in string", p.s[j])
		}
	}
	return "", p.errf("unterminated string")
}

func (p *hdrParser) boolean() (bool, error) {
	p.skipSpace()
	switch {
	case strings.HasPrefix(p.s[p.i:], "True"):
		p.i += 4
		return true, nil
	case strings.HasPrefix(p.s[p.i:], "False"):
		p.i += 5
		return false, nil
	}
	return false, p.errf("expected True or False")
}

// shape parses a tuple (or list) of non-negative integers: (), (3,), (2, 3).
func (p *hdrParser) shape() ([]int, error) {
	open := p.peek()
	var closer byte
	switch open {
	case '(':
		closer = ')'
	case '[':
		closer = ']'
	default:
		return nil, p.errf("expected a shape tuple")
	}
	p.i++
	shape := []int{}
	for p.peek() != closer {
		if len(shape) >= 64 {
			return nil, p.errf("more than 64 dimensions")
		}
		d, err := p.integer()
		if err != nil {
			return nil, err
		}
		shape = append(shape, d)
		if p.peek() == ',' {
			p.i++
			continue
		}
		if p.peek() != closer {
			return nil, p.expect(closer)
		}
	}
	p.i++
	return shape, nil
}

func (p *hdrParser) integer() (int, error) {
	p.skipSpace()
	start := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	if p.i == start {
		if p.i < len(p.s) {
			return 0, p.errf("expected a dimension, found %q", p.s[p.i])
		}
		return 0, p.errf("expected a dimension, found the end of the header")
	}
	d, err := strconv.ParseInt(p.s[start:p.i], 10, 64)
	if err != nil || int64(int(d)) != d {
		digits := p.s[start:p.i]
		p.i = start
		return 0, p.errf("dimension %s out of range", digits)
	}
	// Python 2's numpy wrote longs as 3L.
	if p.i < len(p.s) && p.s[p.i] == 'L' {
		p.i++
	}
	return int(d), nil
}

// EncodeHeader returns the magic, version, header length and padded header
// text numpy.save writes for h: version 1.0 unless the header needs more
// than 65,535 bytes (then 2.0), keys sorted, spare room for the first axis
// to grow, padded with spaces and a newline so the data starts at a
// multiple of 64 bytes.
func EncodeHeader(h Header) ([]byte, error) {
	if _, err := parseDescr(h.Descr); err != nil {
		return nil, fmt.Errorf("npy: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "{'descr': '%s', 'fortran_order': %s, 'shape': (", h.Descr, pyBool(h.Fortran))
	for i, d := range h.Shape {
		if d < 0 {
			return nil, fmt.Errorf("npy: negative dimension %d in shape %v", d, h.Shape)
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(d))
	}
	if len(h.Shape) == 1 {
		b.WriteByte(',')
	}
	b.WriteString("), }")
	if len(h.Shape) > 0 {
		axis := h.Shape[0]
		if h.Fortran {
			axis = h.Shape[len(h.Shape)-1]
		}
		if pad := growthDigits - len(strconv.Itoa(axis)); pad > 0 {
			b.WriteString(strings.Repeat(" ", pad))
		}
	}
	text := b.String()
	hlen := len(text) + 1 // the final newline
	prefix := len(Magic) + 2 + 2
	version := byte(1)
	if pad := align - (prefix+hlen)%align; hlen+pad > math.MaxUint16 {
		version, prefix = 2, len(Magic)+2+4
	}
	pad := align - (prefix+hlen)%align
	out := make([]byte, 0, prefix+hlen+pad)
	out = append(out, Magic...)
	out = append(out, version, 0)
	if version == 1 {
		out = binary.LittleEndian.AppendUint16(out, uint16(hlen+pad))
	} else {
		out = binary.LittleEndian.AppendUint32(out, uint32(hlen+pad))
	}
	out = append(out, text...)
	for range pad {
		out = append(out, ' ')
	}
	return append(out, '\n'), nil
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}
