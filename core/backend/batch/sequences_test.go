package batch

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
)

// writeTokens writes an int32 .npy array into dir and returns its path.
func writeTokens(t *testing.T, dir, name string, shape []int, data []int32) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := npy.WriteInt32(p, shape, data); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeMask(t *testing.T, dir, name string, shape []int, data []uint8) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := npy.WriteUint8(p, shape, data); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tok := writeTokens(t, dir, "tok.npy", []int{3, 4}, make([]int32, 12))
	flat := writeTokens(t, dir, "flat.npy", []int{12}, make([]int32, 12))
	empty := writeTokens(t, dir, "empty.npy", []int{0, 4}, nil)
	rowsMask := writeMask(t, dir, "rows.npy", []int{2, 4}, make([]uint8, 8))
	colsMask := writeMask(t, dir, "cols.npy", []int{3, 3}, make([]uint8, 9))
	for _, c := range []struct {
		name   string
		s      backend.Sequences
		maxSeq int
		want   string
	}{
		{"no path", backend.Sequences{}, 0, "no path"},
		{"negative limit", backend.Sequences{Path: tok, Limit: -1}, 0, "tok.npy: negative limit -1"},
		{"missing file", backend.Sequences{Path: filepath.Join(dir, "none.npy")}, 0, "none.npy"},
		{"one axis", backend.Sequences{Path: flat}, 0, "flat.npy: token array has shape [12]"},
		{"no rows", backend.Sequences{Path: empty}, 0, "empty.npy: no tokens"},
		{"longer than the context", backend.Sequences{Path: tok}, 3, "tok.npy: sequences of 4 tokens exceed the model's 3 positions"},
		{"missing mask", backend.Sequences{Path: tok, MaskPath: filepath.Join(dir, "nomask.npy")}, 0, "nomask.npy"},
		{"mask rows", backend.Sequences{Path: tok, MaskPath: rowsMask}, 0, "rows.npy: mask shape [2 4] differs from the tokens' [3 4]"},
		// The mask covers the whole file, whatever the limit.
		{"mask rows with a limit", backend.Sequences{Path: tok, MaskPath: rowsMask, Limit: 2}, 0, "rows.npy: mask shape"},
		{"mask columns", backend.Sequences{Path: tok, MaskPath: colsMask}, 0, "cols.npy: mask shape [3 3]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := Open(c.s, 16, c.maxSeq)
			if err == nil {
				d.Close()
				t.Fatalf("Open succeeded, want an error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestBatch(t *testing.T) {
	dir := t.TempDir()
	tok := writeTokens(t, dir, "tok.npy", []int{3, 4}, []int32{
		1, 2, 3, 4,
		5, 6, 7, 8,
		9, 1, 2, 3,
	})
	mask := writeMask(t, dir, "mask.npy", []int{3, 4}, []uint8{
		1, 1, 0, 1,
		0, 1, 1, 1,
		0, 0, 0, 0,
	})
	for _, c := range []struct {
		name            string
		s               backend.Sequences
		start, n        int
		rows            int
		tokens, targets []int32
	}{
		{"unmasked", backend.Sequences{Path: tok}, 0, 2, 3,
			[]int32{1, 2, 3, 4, 5, 6, 7, 8},
			[]int32{2, 3, 4, -1, 6, 7, 8, -1}},
		{"wraps around", backend.Sequences{Path: tok}, 2, 2, 3,
			[]int32{9, 1, 2, 3, 1, 2, 3, 4},
			[]int32{1, 2, 3, -1, 2, 3, 4, -1}},
		// A 0 at position j drops the target of position j−1; the first
		// position's mask value is never a target.
		{"masked", backend.Sequences{Path: tok, MaskPath: mask}, 0, 3, 3,
			[]int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3},
			[]int32{2, -1, 4, -1, 6, 7, 8, -1, -1, -1, -1, -1}},
		{"limit wraps early", backend.Sequences{Path: tok, Limit: 2}, 1, 2, 2,
			[]int32{5, 6, 7, 8, 1, 2, 3, 4},
			[]int32{6, 7, 8, -1, 2, 3, 4, -1}},
		{"limit above the rows", backend.Sequences{Path: tok, Limit: 9}, 0, 1, 3,
			[]int32{1, 2, 3, 4},
			[]int32{2, 3, 4, -1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := Open(c.s, 10, 4)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Rows != c.rows || d.Cols != 4 || d.Path != tok {
				t.Fatalf("rows %d, cols %d, path %s; want %d, 4, %s", d.Rows, d.Cols, d.Path, c.rows, tok)
			}
			tokens, targets, err := d.Batch(c.start, c.n, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(tokens, c.tokens) || !slices.Equal(targets, c.targets) {
				t.Errorf("tokens %v, targets %v; want %v, %v", tokens, targets, c.tokens, c.targets)
			}
		})
	}
}

func TestBatchReusesBuffers(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(backend.Sequences{Path: writeTokens(t, dir, "tok.npy", []int{2, 3}, []int32{1, 2, 3, 4, 5, 6})}, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tokBuf, idBuf := make([]int32, 10), make([]int32, 10)
	tokens, ids, err := d.Batch(1, 1, tokBuf, idBuf)
	if err != nil {
		t.Fatal(err)
	}
	if &tokens[0] != &tokBuf[0] || &ids[0] != &idBuf[0] || len(tokens) != 3 || len(ids) != 3 {
		t.Errorf("buffers of capacity 10 not reused for 3 positions (lengths %d, %d)", len(tokens), len(ids))
	}
	if !slices.Equal(tokens, []int32{4, 5, 6}) || !slices.Equal(ids, []int32{5, 6, -1}) {
		t.Errorf("tokens %v, ids %v", tokens, ids)
	}
	// Too small: new slices, the old ones untouched.
	small := []int32{7}
	if tokens, _, err = d.Batch(0, 2, small, nil); err != nil || len(tokens) != 6 || small[0] != 7 {
		t.Errorf("batch into a short buffer: %v, %v (buffer %v)", tokens, err, small)
	}
}

func TestBatchVocabulary(t *testing.T) {
	dir := t.TempDir()
	p := writeTokens(t, dir, "tok.npy", []int{2, 3}, []int32{1, 2, 3, 4, -1, 6})
	d, err := Open(backend.Sequences{Path: p}, 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, _, err := d.Batch(0, 1, nil, nil); err != nil {
		t.Errorf("row 0 is in the vocabulary: %v", err)
	}
	_, _, err = d.Batch(0, 2, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "tok.npy: row 1 position 1: token -1 outside vocabulary of 5") {
		t.Errorf("error %v, want row 1 position 1's token named", err)
	}
	if _, _, err := d.Batch(-1, 1, nil, nil); err == nil {
		t.Error("negative start accepted")
	}
}

// FuzzSequences opens arbitrary bytes as a token file (and the same bytes
// as its mask) and reads every row: Open and Batch must fail cleanly, never
// panic, and a batch must hold only in-vocabulary tokens.
func FuzzSequences(f *testing.F) {
	le := func(v ...int32) []byte {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
		}
		return b
	}
	for _, seed := range []struct {
		h    npy.Header
		data []byte
	}{
		{npy.Header{Descr: "<i4", Shape: []int{2, 3}}, le(1, 2, 3, 4, 5, 6)},
		{npy.Header{Descr: "<i4", Shape: []int{1, 2}}, le(0, 99)},
		{npy.Header{Descr: "|u1", Shape: []int{2, 2}}, []byte{1, 0, 1, 1}},
		{npy.Header{Descr: "<i8", Shape: []int{1, 2}}, make([]byte, 16)},
		{npy.Header{Descr: "<f4", Shape: []int{2}}, make([]byte, 8)},
	} {
		b, err := npy.Marshal(seed.h, seed.data)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(0), false)
		f.Add(b, uint8(1), true)
	}
	f.Fuzz(func(t *testing.T, file []byte, limit uint8, masked bool) {
		p := filepath.Join(t.TempDir(), "f.npy")
		if err := os.WriteFile(p, file, 0o644); err != nil {
			t.Fatal(err)
		}
		s := backend.Sequences{Path: p, Limit: int(limit)}
		if masked {
			s.MaskPath = p
		}
		const vocab = 64
		d, err := Open(s, vocab, 0)
		if err != nil {
			return
		}
		defer d.Close()
		if d.Rows < 1 || d.Cols < 1 || (limit > 0 && d.Rows > int(limit)) {
			t.Fatalf("opened with %d rows of %d (limit %d)", d.Rows, d.Cols, limit)
		}
		if d.Rows*d.Cols > 1<<16 {
			return // a header promising more than the test should read
		}
		tokens, ids, err := d.Batch(0, d.Rows, nil, nil)
		if err != nil {
			return
		}
		for i, id := range tokens {
			if id < 0 || id >= vocab || ids[i] < -1 || ids[i] >= vocab {
				t.Fatalf("position %d: token %d, target %d outside vocabulary", i, id, ids[i])
			}
		}
	})
}
