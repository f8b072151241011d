package npy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/internal/fsutil"
)

// Write writes an array whose element bytes are already encoded: data must
// hold exactly h.Len() elements of h.Descr in h's order. The file appears
// atomically (temp file + rename).
func Write(path string, h Header, data []byte) error {
	return write(path, h, func(w *bufio.Writer) error {
		_, err := w.Write(data)
		return err
	}, len(data))
}

// WriteInt32 writes a little-endian int32 ("<i4") array.
func WriteInt32(path string, shape []int, data []int32) error {
	return writeFixed(path, "<i4", shape, len(data), 4, func(b []byte, i int) []byte {
		return binary.LittleEndian.AppendUint32(b, uint32(data[i]))
	})
}

// WriteUint8 writes a uint8 ("|u1") array.
func WriteUint8(path string, shape []int, data []uint8) error {
	h := Header{Descr: "|u1", Shape: shape}
	if err := checkCount(path, h, len(data)); err != nil {
		return err
	}
	return Write(path, h, data)
}

// WriteBool writes a bool ("|b1") array.
func WriteBool(path string, shape []int, data []bool) error {
	return writeFixed(path, "|b1", shape, len(data), 1, func(b []byte, i int) []byte {
		if data[i] {
			return append(b, 1)
		}
		return append(b, 0)
	})
}

// WriteFloat32 writes a little-endian float32 ("<f4") array.
func WriteFloat32(path string, shape []int, data []float32) error {
	return writeFixed(path, "<f4", shape, len(data), 4, func(b []byte, i int) []byte {
		return binary.LittleEndian.AppendUint32(b, math.Float32bits(data[i]))
	})
}

// WriteFloat64 writes a little-endian float64 ("<f8") array.
func WriteFloat64(path string, shape []int, data []float64) error {
	return writeFixed(path, "<f8", shape, len(data), 8, func(b []byte, i int) []byte {
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(data[i]))
	})
}

func checkCount(path string, h Header, n int) error {
	for _, d := range h.Shape {
		if d < 0 {
			return fmt.Errorf("npy: %s: negative dimension in shape %v", path, h.Shape)
		}
	}
	if h.Len() != n {
		return fmt.Errorf("npy: %s: shape %v holds %d elements, got %d", path, h.Shape, h.Len(), n)
	}
	return nil
}

// writeFixed encodes n elements in chunks, so writing a large token array
// does not need a second copy of it in memory.
func writeFixed(path, descr string, shape []int, n, size int, enc func([]byte, int) []byte) error {
	h := Header{Descr: descr, Shape: shape}
	if err := checkCount(path, h, n); err != nil {
		return err
	}
	return write(path, h, func(w *bufio.Writer) error {
		const chunk = 1 << 14
		buf := make([]byte, 0, chunk*size)
		for i := 0; i < n; i += chunk {
			buf = buf[:0]
			for j := i; j < min(n, i+chunk); j++ {
				buf = enc(buf, j)
			}
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}, n*size)
}

func write(path string, h Header, body func(*bufio.Writer) error, nbytes int) error {
	dt, err := parseDescr(h.Descr)
	if err != nil {
		return fmt.Errorf("npy: %s: %w", path, err)
	}
	if err := checkCount(path, h, nbytes/dt.size); err != nil {
		return err
	}
	if nbytes != h.Len()*dt.size {
		return fmt.Errorf("npy: %s: %d data bytes do not hold shape %v of %s", path, nbytes, h.Shape, h.Descr)
	}
	hdr, err := EncodeHeader(h)
	if err != nil {
		return fmt.Errorf("npy: %s: %w", path, err)
	}
	f, err := fsutil.Create(path)
	if err != nil {
		return fmt.Errorf("npy: %w", err)
	}
	defer f.Abort()
	w := bufio.NewWriterSize(f, 1<<16)
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("npy: writing %s: %w", path, err)
	}
	if err := body(w); err != nil {
		return fmt.Errorf("npy: writing %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("npy: writing %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("npy: writing %s: %w", path, err)
	}
	return nil
}

// Marshal returns the bytes of a .npy file holding h and data (encoded
// elements, as for Write).
func Marshal(h Header, data []byte) ([]byte, error) {
	dt, err := parseDescr(h.Descr)
	if err != nil {
		return nil, fmt.Errorf("npy: %w", err)
	}
	if len(data) != h.Len()*dt.size {
		return nil, fmt.Errorf("npy: %d data bytes do not hold shape %v of %s", len(data), h.Shape, h.Descr)
	}
	hdr, err := EncodeHeader(h)
	if err != nil {
		return nil, err
	}
	return append(hdr, data...), nil
}
