package ir

import (
	"fmt"
	"os"

	"github.com/edsrzf/mmap-go"
)

// Mapping is a read-only memory map of a whole file. Loaders hand out
// sub-slices of it as lazy tensor storage, so only the pages a caller
// touches are read from disk.
type Mapping struct {
	data mmap.MMap
}

// MapFile maps path read-only. An empty file maps to an empty slice.
func MapFile(path string) (*Mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		// A directory or device may report size 0 and map as "empty".
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() == 0 {
		return &Mapping{}, nil
	}
	if int64(int(st.Size())) != st.Size() {
		return nil, fmt.Errorf("%s: %d bytes do not fit the address space", path, st.Size())
	}
	// mmap-go maps on Unix and Windows alike.
	data, err := mmap.Map(f, mmap.RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	return &Mapping{data: data}, nil
}

// Bytes is the mapped file. It is read-only: writing to it faults.
func (m *Mapping) Bytes() []byte { return m.data }

// Close unmaps the file.
func (m *Mapping) Close() error {
	if m.data == nil {
		return nil
	}
	err := m.data.Unmap()
	m.data = nil
	return err
}

// Slice returns a lazy loader for data[off:off+n] that reports the tensor
// name and offset if the range lies outside the file.
func (m *Mapping) Slice(name string, off, n int64) func() ([]byte, error) {
	return func() ([]byte, error) {
		if off < 0 || n < 0 || off+n > int64(len(m.data)) || off+n < off {
			return nil, fmt.Errorf("tensor %q: bytes [%d,%d) lie outside the %d-byte file", name, off, off+n, len(m.data))
		}
		return m.data[off : off+n : off+n], nil
	}
}
