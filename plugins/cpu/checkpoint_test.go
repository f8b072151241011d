package cpu

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
)

func sampleCheckpoint() *checkpoint {
	v := 2.5
	return &checkpoint{
		Fingerprint: "abc", Step: 3, AdamT: 3, Tokens: 96,
		History: []backend.TrainEvent{{Step: 1, Steps: 4, Loss: 1.5, ValLoss: &v}},
		Arrays: map[string][]float32{
			"weights": {1, -2, float32(math.Inf(1)), 3.5},
			"adam_m":  {0.5, 0.25, 0, -1},
			"adam_v":  {},
		},
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", CheckpointFile)
	if _, err := readCheckpoint(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing checkpoint: %v", err)
	}
	ck := sampleCheckpoint()
	if err := writeCheckpoint(path, ck); err != nil {
		t.Fatal(err)
	}
	got, err := readCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint != ck.Fingerprint || got.Step != 3 || got.AdamT != 3 || got.Tokens != 96 ||
		len(got.History) != 1 || *got.History[0].ValLoss != 2.5 || len(got.Arrays) != 3 {
		t.Fatalf("read back %+v", got)
	}
	for name, v := range ck.Arrays {
		if !slices.Equal(got.Arrays[name], v) {
			t.Errorf("%s: %v, wrote %v", name, got.Arrays[name], v)
		}
	}
	// Every single-byte corruption of the arrays is caught by the checksum,
	// and truncation anywhere by the size checks.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(data) - 32; i < len(data); i++ {
		bad := slices.Clone(data)
		bad[i] ^= 0x40
		if _, err := parseCheckpoint(bad); err == nil {
			t.Errorf("flipping byte %d went unnoticed", i)
		}
	}
	for n := 0; n < len(data); n += 7 {
		if _, err := parseCheckpoint(data[:n]); err == nil {
			t.Errorf("a checkpoint cut to %d bytes parsed", n)
		}
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	path := filepath.Join(f.TempDir(), CheckpointFile)
	if err := writeCheckpoint(path, sampleCheckpoint()); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(checkpointMagic))
	huge := append([]byte(checkpointMagic), binary.LittleEndian.AppendUint32(nil, math.MaxUint32)...)
	f.Add(huge)
	f.Add(append([]byte(checkpointMagic+"\x10\x00\x00\x00"), `{"arrays":[{"name":"w","len":-1}]}`...))
	f.Fuzz(func(t *testing.T, data []byte) {
		ck, err := parseCheckpoint(data)
		if err != nil {
			return
		}
		// Whatever parses holds no more values than the file has room for.
		total := 0
		for _, v := range ck.Arrays {
			total += 4 * len(v)
		}
		if total > len(data) {
			t.Fatalf("%d array bytes from a %d-byte file", total, len(data))
		}
	})
}
