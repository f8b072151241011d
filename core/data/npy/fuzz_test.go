package npy

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func addGoldenSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.npy")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(Magic + "\x01\x00\x10\x00{'shape': (1,2)"))
	f.Add([]byte(Magic + "\x02\x00\xff\xff\xff\xff"))
}

// FuzzParseHeader checks that no input panics and that whatever parses
// survives a write and re-parse unchanged.
func FuzzParseHeader(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, off, err := ParseHeader(data)
		if err != nil {
			return
		}
		if off > len(data) {
			t.Fatalf("data offset %d past the end (%d)", off, len(data))
		}
		b, err := EncodeHeader(h)
		if err != nil {
			t.Fatalf("EncodeHeader(%+v): %v", h, err)
		}
		h2, off2, err := ParseHeader(b)
		if err != nil || off2 != len(b) {
			t.Fatalf("re-parse: %v (offset %d of %d)", err, off2, len(b))
		}
		if h2.Descr != h.Descr || h2.Fortran != h.Fortran || !reflect.DeepEqual(h2.Shape, h.Shape) {
			t.Fatalf("round trip %+v -> %+v", h, h2)
		}
	})
}

// FuzzParse checks that whole-file parsing and every accessor survive
// arbitrary input.
func FuzzParse(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Parse(data)
		if err != nil {
			return
		}
		a.Int32()
		a.Int64()
		a.Uint8()
		a.Float32()
		a.Float64()
		a.Bool()
	})
}
