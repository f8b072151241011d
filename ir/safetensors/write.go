package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/whittle-ml/whittle/ir"
)

// Source is one tensor to write. Data is called once, when the tensor's
// turn comes, and its result is not retained, so a writer that converts
// dtypes on the fly holds one tensor in memory at a time.
type Source struct {
	Name  string
	DType ir.DType
	Shape []int
	Data  func() ([]byte, error)
}

func (s Source) numBytes() int64 {
	n := int64(s.DType.Size())
	for _, d := range s.Shape {
		n *= int64(d)
	}
	return n
}

// dtypeRank orders dtypes the way the Rust implementation's enum does
// (F16 < BF16 < F32); files list larger-alignment dtypes first.
func dtypeRank(d ir.DType) int {
	switch d {
	case ir.F16:
		return 0
	case ir.BF16:
		return 1
	case ir.F32:
		return 2
	}
	return -1
}

// SortSources puts sources in the order the reference implementation
// writes them: by dtype, widest alignment first, then by name. With the
// header padded to 8 bytes this keeps every tensor aligned to its element
// size, so readers can use the bytes in place.
func SortSources(srcs []Source) {
	sort.SliceStable(srcs, func(i, j int) bool {
		ri, rj := dtypeRank(srcs[i].DType), dtypeRank(srcs[j].DType)
		if ri != rj {
			return ri > rj
		}
		return srcs[i].Name < srcs[j].Name
	})
}

// Write writes tensors to path. With names nil the tensors are ordered as
// safetensors itself orders them (see SortSources); otherwise names gives
// the order and must list every tensor exactly once. metadata (may be nil)
// becomes the header's "__metadata__"; transformers expects
// {"format": "pt"} in model files.
func Write(path string, names []string, tensors map[string]*ir.Tensor, metadata map[string]string) error {
	sorted := names == nil
	if sorted {
		names = sortedKeys(tensors)
	}
	if len(names) != len(tensors) {
		return fmt.Errorf("safetensors %s: %d names given for %d tensors", path, len(names), len(tensors))
	}
	srcs := make([]Source, len(names))
	for i, n := range names {
		t, ok := tensors[n]
		if !ok {
			return fmt.Errorf("safetensors %s: no tensor %q to write", path, n)
		}
		srcs[i] = Source{Name: n, DType: t.DType, Shape: t.Shape, Data: t.Bytes}
	}
	if sorted {
		SortSources(srcs)
	}
	return WriteSources(path, srcs, metadata)
}

// WriteSources writes the sources in the given order. The file is built in
// a temporary file in the same directory and renamed over path only when
// complete, so readers never see a partial file.
func WriteSources(path string, srcs []Source, metadata map[string]string) (err error) {
	hdr, total, err := buildHeader(srcs, metadata)
	if err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	return writeAtomic(path, func(w *bufio.Writer) error {
		var lenBuf [8]byte
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
		w.Write(lenBuf[:])
		w.Write(hdr)
		var written int64
		for _, s := range srcs {
			raw, err := s.Data()
			if err != nil {
				return fmt.Errorf("tensor %q: %w", s.Name, err)
			}
			if int64(len(raw)) != s.numBytes() {
				return fmt.Errorf("tensor %q: %d bytes of data for shape %v of %s, which needs %d", s.Name, len(raw), s.Shape, s.DType, s.numBytes())
			}
			if _, err := w.Write(raw); err != nil {
				return err
			}
			written += int64(len(raw))
		}
		if written != total {
			return fmt.Errorf("wrote %d data bytes, header promised %d", written, total)
		}
		return nil
	})
}

// buildHeader serializes the header as the Rust implementation does:
// compact JSON, "__metadata__" first (keys sorted here, for determinism),
// tensors in data order, padded with spaces to a multiple of 8 bytes.
func buildHeader(srcs []Source, metadata map[string]string) ([]byte, int64, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			b.WriteByte(',')
		}
		first = false
	}
	if metadata != nil {
		sep()
		b.WriteString(`"` + metadataKey + `":{`)
		for i, k := range sortedKeys(metadata) {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(quote(k))
			b.WriteByte(':')
			b.Write(quote(metadata[k]))
		}
		b.WriteByte('}')
	}
	seen := map[string]bool{}
	var off int64
	for _, s := range srcs {
		switch {
		case s.Name == metadataKey:
			return nil, 0, fmt.Errorf("tensor name %q is reserved", s.Name)
		case seen[s.Name]:
			return nil, 0, fmt.Errorf("tensor %q listed twice", s.Name)
		case s.Data == nil:
			return nil, 0, fmt.Errorf("tensor %q has no data", s.Name)
		}
		seen[s.Name] = true
		dt, err := dtypeName(s.DType)
		if err != nil {
			return nil, 0, fmt.Errorf("tensor %q: %w", s.Name, err)
		}
		for _, d := range s.Shape {
			if d < 0 {
				return nil, 0, fmt.Errorf("tensor %q: negative dimension in shape %v", s.Name, s.Shape)
			}
		}
		n := s.numBytes()
		sep()
		b.Write(quote(s.Name))
		b.WriteString(`:{"dtype":"` + dt + `","shape":[`)
		for i, d := range s.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(d))
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, off, off+n)
		off += n
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	return b.Bytes(), off, nil
}

// quote is JSON string encoding without Go's HTML escaping of <, > and &,
// matching serde_json's output byte for byte.
func quote(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// writeAtomic runs fill on a buffered temporary file next to path, then
// syncs it and renames it over path; on any error the temporary file is
// removed and path is untouched.
func writeAtomic(path string, fill func(w *bufio.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("safetensors %s: %w", path, err)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	if err := fill(w); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
