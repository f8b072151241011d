package ir_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

func TestMapFileSlice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.bin")
	data := []byte("0123456789abcdef")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mp, err := ir.MapFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	if !bytes.Equal(mp.Bytes(), data) {
		t.Fatalf("mapped %q, want %q", mp.Bytes(), data)
	}
	tests := []struct {
		name    string
		off, n  int64
		want    string
		wantErr []string
	}{
		{"middle", 4, 6, "456789", nil},
		{"whole file", 0, 16, string(data), nil},
		{"empty at end", 16, 0, "", nil},
		{"past end", 10, 7, "", []string{"blk.3.attn_q", "[10,17)", "16-byte"}},
		{"offset past end", 17, 0, "", []string{"blk.3.attn_q", "17"}},
		{"negative offset", -1, 4, "", []string{"blk.3.attn_q", "-1"}},
		{"negative length", 2, -1, "", []string{"blk.3.attn_q"}},
		{"overflowing range", 8, 1<<63 - 4, "", []string{"blk.3.attn_q", "[8,"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mp.Slice("blk.3.attn_q", tc.off, tc.n)()
			if tc.wantErr == nil {
				if err != nil || string(got) != tc.want {
					t.Errorf("Slice = %q, %v; want %q", got, err, tc.want)
				}
				if cap(got) != len(got) {
					t.Errorf("slice capacity %d reaches past its %d bytes", cap(got), len(got))
				}
				return
			}
			if err == nil {
				t.Fatalf("Slice(%d, %d) = %q, want an error", tc.off, tc.n, got)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	// As a lazy tensor: the loader's error surfaces from Float32.
	lt := ir.LazyTensor(ir.F32, []int{4}, mp.Slice("tok_embeddings", 8, 16))
	if _, err := lt.Float32(); err == nil || !strings.Contains(err.Error(), "tok_embeddings") {
		t.Errorf("out-of-file lazy tensor: %v", err)
	}
	ok := ir.LazyTensor(ir.F16, []int{2, 2}, mp.Slice("x", 8, 8))
	if raw, err := ok.Bytes(); err != nil || string(raw) != "89abcdef" {
		t.Errorf("lazy tensor bytes %q, %v", raw, err)
	}

	if err := mp.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := mp.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// After Close the mapping is gone; loaders report instead of faulting.
	if _, err := mp.Slice("late", 0, 4)(); err == nil {
		t.Error("Slice after Close succeeded")
	}
}

func TestMapFileEdgeCases(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.bin")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mp, err := ir.MapFile(empty)
	if err != nil {
		t.Fatalf("empty file: %v", err)
	}
	if len(mp.Bytes()) != 0 {
		t.Errorf("empty file mapped %d bytes", len(mp.Bytes()))
	}
	if _, err := mp.Slice("t", 0, 1)(); err == nil {
		t.Error("reading a byte of an empty file succeeded")
	}
	if err := mp.Close(); err != nil {
		t.Error(err)
	}

	missing := filepath.Join(dir, "missing.bin")
	if _, err := ir.MapFile(missing); err == nil || !strings.Contains(err.Error(), "missing.bin") {
		t.Errorf("MapFile(missing) = %v, want an error naming the file", err)
	}
	if _, err := ir.MapFile(dir); err == nil || !strings.Contains(err.Error(), "regular") {
		t.Errorf("mapping a directory: %v", err)
	}
}
