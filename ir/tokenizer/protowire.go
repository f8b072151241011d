package tokenizer

// A minimal reader and writer of the protobuf wire format, enough for
// SentencePiece's ModelProto. The project takes no protobuf dependency for
// one small, stable message (go.mod stays on its few vetted modules); the
// wire format itself is simple: a message is a run of fields, each a varint
// key (field number << 3 | wire type) and a value whose length the wire type
// gives.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireStart   = 3 // start group (deprecated, still legal to skip)
	wireEnd     = 4 // end group
	wireFixed32 = 5
)

var wireNames = [...]string{"varint", "fixed64", "length-delimited", "start-group", "end-group", "fixed32", "6", "7"}

// maxGroupDepth bounds the recursion of skipping nested groups, which
// hostile input could otherwise nest until the stack runs out.
const maxGroupDepth = 64

var errTruncated = errors.New("truncated")

// pbReader reads one message. base is the offset of data within the whole
// file, so that errors name absolute byte offsets.
type pbReader struct {
	data []byte
	off  int
	base int
}

func (r *pbReader) done() bool { return r.off >= len(r.data) }

// pos is the absolute offset of the next byte.
func (r *pbReader) pos() int { return r.base + r.off }

func (r *pbReader) varint() (uint64, error) {
	v, n := binary.Uvarint(r.data[r.off:])
	switch {
	case n == 0:
		return 0, fmt.Errorf("varint at offset %d: %w", r.pos(), errTruncated)
	case n < 0:
		return 0, fmt.Errorf("varint at offset %d overflows 64 bits", r.pos())
	}
	r.off += n
	return v, nil
}

// key reads a field key.
func (r *pbReader) key() (num int, wire int, err error) {
	at := r.pos()
	k, err := r.varint()
	if err != nil {
		return 0, 0, err
	}
	num, wire = int(k>>3), int(k&7)
	if k>>3 == 0 || k>>3 > 1<<29-1 {
		return 0, 0, fmt.Errorf("field key at offset %d has invalid field number %d", at, k>>3)
	}
	return num, wire, nil
}

func (r *pbReader) fixed32() (uint32, error) {
	if len(r.data)-r.off < 4 {
		return 0, fmt.Errorf("fixed32 at offset %d: %w", r.pos(), errTruncated)
	}
	v := binary.LittleEndian.Uint32(r.data[r.off:])
	r.off += 4
	return v, nil
}

// bytes reads a length-delimited value and returns it with its absolute
// offset.
func (r *pbReader) bytes() ([]byte, int, error) {
	at := r.pos()
	n, err := r.varint()
	if err != nil {
		return nil, 0, err
	}
	if left := len(r.data) - r.off; n > uint64(left) {
		return nil, 0, fmt.Errorf("length-delimited value at offset %d: length %d runs past the end of its message (%d bytes left)", at, n, left)
	}
	start := r.off
	r.off += int(n)
	return r.data[start:r.off], r.base + start, nil
}

// skip passes over the value of a field nobody asked for.
func (r *pbReader) skip(num, wire, depth int) error {
	at := r.pos()
	switch wire {
	case wireVarint:
		_, err := r.varint()
		return err
	case wireFixed64:
		if len(r.data)-r.off < 8 {
			return fmt.Errorf("fixed64 at offset %d: %w", at, errTruncated)
		}
		r.off += 8
		return nil
	case wireBytes:
		_, _, err := r.bytes()
		return err
	case wireFixed32:
		_, err := r.fixed32()
		return err
	case wireStart:
		if depth >= maxGroupDepth {
			return fmt.Errorf("group at offset %d nests deeper than %d", at, maxGroupDepth)
		}
		for {
			if r.done() {
				return fmt.Errorf("group %d starting before offset %d has no end", num, at)
			}
			n, w, err := r.key()
			if err != nil {
				return err
			}
			if w == wireEnd {
				if n != num {
					return fmt.Errorf("group %d ended by end-group %d before offset %d", num, n, r.pos())
				}
				return nil
			}
			if err := r.skip(n, w, depth+1); err != nil {
				return err
			}
		}
	case wireEnd:
		return fmt.Errorf("unexpected end-group for field %d before offset %d", num, at)
	}
	return fmt.Errorf("field %d before offset %d has invalid wire type %d", num, at, wire)
}

// want checks that a known field arrived with the wire type its declaration
// implies.
func want(msg string, num, got, want, at int) error {
	if got == want {
		return nil
	}
	return fmt.Errorf("%s field %d before offset %d has wire type %s, want %s", msg, num, at, wireNames[got&7], wireNames[want])
}

// pbWriter appends fields to a message.
type pbWriter struct{ b []byte }

func (w *pbWriter) key(num, wire int) {
	w.b = binary.AppendUvarint(w.b, uint64(num)<<3|uint64(wire))
}

func (w *pbWriter) uvarint(num int, v uint64) {
	w.key(num, wireVarint)
	w.b = binary.AppendUvarint(w.b, v)
}

// int32 writes v the way protobuf encodes int32: sign-extended to 64 bits,
// so -1 takes ten bytes.
func (w *pbWriter) int32(num int, v int32) { w.uvarint(num, uint64(int64(v))) }

func (w *pbWriter) bool(num int, v bool) {
	var u uint64
	if v {
		u = 1
	}
	w.uvarint(num, u)
}

func (w *pbWriter) float(num int, v float32) {
	w.key(num, wireFixed32)
	w.b = binary.LittleEndian.AppendUint32(w.b, math.Float32bits(v))
}

func (w *pbWriter) bytes(num int, v []byte) {
	w.key(num, wireBytes)
	w.b = binary.AppendUvarint(w.b, uint64(len(v)))
	w.b = append(w.b, v...)
}

func (w *pbWriter) string(num int, v string) {
	w.key(num, wireBytes)
	w.b = binary.AppendUvarint(w.b, uint64(len(v)))
	w.b = append(w.b, v...)
}
