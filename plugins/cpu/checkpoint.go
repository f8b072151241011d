package cpu

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/internal/fsutil"
)

// A checkpoint file is
//
//	"WHTLCKPT"  magic
//	uint32      little-endian length H of the header
//	H bytes     JSON header (checkpointHeader)
//	arrays      little-endian float32, in the header's order
//
// written atomically (temp file + rename), so a crash never leaves half a
// checkpoint.
const checkpointMagic = "WHTLCKPT"

const checkpointVersion = 1

// maxCheckpointHeader bounds the JSON header (the history grows with the
// number of steps; a million steps stay far below this).
const maxCheckpointHeader = 1 << 30

// checkpoint is the state a training run resumes from.
type checkpoint struct {
	Fingerprint string
	Step        int
	AdamT       int
	Tokens      int64
	History     []backend.TrainEvent
	// Arrays: weights, adam_m, adam_v, and in lora mode lora, lora_m,
	// lora_v. Empty moments mean the optimizer has not allocated them.
	Arrays map[string][]float32
}

type checkpointHeader struct {
	Version     int                  `json:"version"`
	Fingerprint string               `json:"fingerprint"`
	Step        int                  `json:"step"`
	AdamT       int                  `json:"adam_t"`
	Tokens      int64                `json:"tokens"`
	History     []backend.TrainEvent `json:"history"`
	Arrays      []checkpointArray    `json:"arrays"`
	// CRC32C is the Castagnoli checksum of the array bytes.
	CRC32C uint32 `json:"crc32c"`
}

type checkpointArray struct {
	Name string `json:"name"`
	Len  int    `json:"len"`
}

// checkpointOrder fixes the order arrays are written in.
var checkpointOrder = []string{"weights", "adam_m", "adam_v", "lora", "lora_m", "lora_v"}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func writeCheckpoint(path string, ck *checkpoint) error {
	h := checkpointHeader{
		Version: checkpointVersion, Fingerprint: ck.Fingerprint, Step: ck.Step,
		AdamT: ck.AdamT, Tokens: ck.Tokens, History: ck.History,
	}
	crc := crc32.New(castagnoli)
	buf := make([]byte, 0, 1<<16)
	each := func(v []float32, f func([]byte) error) error {
		for _, x := range v {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
			if len(buf) == cap(buf) {
				if err := f(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
		err := f(buf)
		buf = buf[:0]
		return err
	}
	var arrays [][]float32
	for _, name := range checkpointOrder {
		v, ok := ck.Arrays[name]
		if !ok {
			continue
		}
		h.Arrays = append(h.Arrays, checkpointArray{Name: name, Len: len(v)})
		arrays = append(arrays, v)
		each(v, func(b []byte) error { crc.Write(b); return nil })
	}
	h.CRC32C = crc.Sum32()
	js, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	f, err := fsutil.Create(path)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer f.Abort()
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(checkpointMagic)
	binary.Write(w, binary.LittleEndian, uint32(len(js)))
	w.Write(js)
	for _, v := range arrays {
		if err := each(v, func(b []byte) error { _, err := w.Write(b); return err }); err != nil {
			return fmt.Errorf("checkpoint %s: %w", path, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return nil
}

// readCheckpoint loads a checkpoint; a missing file gives an error
// satisfying errors.Is(err, fs.ErrNotExist).
func readCheckpoint(path string) (*checkpoint, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ck, err := parseCheckpoint(data)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return ck, nil
}

// parseCheckpoint decodes a checkpoint file's bytes.
func parseCheckpoint(data []byte) (*checkpoint, error) {
	const pre = len(checkpointMagic) + 4
	if len(data) < pre || string(data[:len(checkpointMagic)]) != checkpointMagic {
		return nil, fmt.Errorf("not a whittle training checkpoint (bad magic at offset 0)")
	}
	hl := binary.LittleEndian.Uint32(data[len(checkpointMagic):])
	if hl > maxCheckpointHeader || int64(hl) > int64(len(data)-pre) {
		return nil, fmt.Errorf("header length %d at offset %d exceeds the file's %d bytes", hl, len(checkpointMagic), len(data))
	}
	var h checkpointHeader
	dec := json.NewDecoder(bytes.NewReader(data[pre : pre+int(hl)]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("header at offset %d: %w", pre, err)
	}
	if h.Version != checkpointVersion {
		return nil, fmt.Errorf("checkpoint version %d, this build reads %d", h.Version, checkpointVersion)
	}
	if h.Step < 0 || h.AdamT < 0 || h.Tokens < 0 {
		return nil, fmt.Errorf("negative step %d, optimizer step %d or token count %d", h.Step, h.AdamT, h.Tokens)
	}
	off := pre + int(hl)
	rest := len(data) - off
	need := 0
	seen := map[string]bool{}
	for _, a := range h.Arrays {
		if seen[a.Name] {
			return nil, fmt.Errorf("array %q listed twice", a.Name)
		}
		seen[a.Name] = true
		if a.Len < 0 || a.Len > (rest-need)/4 {
			return nil, fmt.Errorf("array %q of %d values does not fit the %d bytes after offset %d", a.Name, a.Len, rest-need, off+need)
		}
		need += 4 * a.Len
	}
	if need != rest {
		return nil, fmt.Errorf("%d bytes of arrays after offset %d, the header lists %d", rest, off, need)
	}
	if got := crc32.Checksum(data[off:], castagnoli); got != h.CRC32C {
		return nil, fmt.Errorf("array checksum %08x, the header says %08x (corrupt file)", got, h.CRC32C)
	}
	ck := &checkpoint{
		Fingerprint: h.Fingerprint, Step: h.Step, AdamT: h.AdamT, Tokens: h.Tokens,
		History: h.History, Arrays: map[string][]float32{},
	}
	for _, a := range h.Arrays {
		v := make([]float32, a.Len)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[off+4*i:]))
		}
		ck.Arrays[a.Name] = v
		off += 4 * a.Len
	}
	return ck, nil
}
