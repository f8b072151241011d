package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// le builds little-endian byte strings for hand-written files.
type le []byte

func (b le) u32(x uint32) le  { return binary.LittleEndian.AppendUint32(b, x) }
func (b le) u64(x uint64) le  { return binary.LittleEndian.AppendUint64(b, x) }
func (b le) str(s string) le  { return append(b.u64(uint64(len(s))), s...) }
func (b le) raw(x ...byte) le { return append(b, x...) }
func (b le) zeros(n int) le   { return append(b, make([]byte, n)...) }

// handFile is a GGUF file written out field by field from the
// specification: one uint32 KV and one F32 tensor of 2 elements.
func handFile() []byte {
	var b le
	b = b.raw('G', 'G', 'U', 'F').u32(3).u64(1).u64(1)
	b = b.str("a.b").u32(uint32(TypeUint32)).u32(7)
	b = b.str("t").u32(1).u64(2).u32(uint32(GGMLF32)).u64(0)
	// Header so far: 4+4+8+8 + (8+3+4+4) + (8+1+4+8+4+8) = 76 bytes,
	// padded to 96.
	b = b.zeros(96 - len(b))
	b = b.u32(math.Float32bits(1.5)).u32(math.Float32bits(-2))
	return b.zeros(32 - 8) // the last tensor is padded too
}

func TestEncodeMatchesHandWrittenFile(t *testing.T) {
	data := make([]byte, 8)
	binary.LittleEndian.PutUint32(data, math.Float32bits(1.5))
	binary.LittleEndian.PutUint32(data[4:], math.Float32bits(-2))
	var got bytes.Buffer
	err := Encode(&got, []KV{{"a.b", Of(uint32(7))}},
		[]WriteTensor{{Name: "t", Type: GGMLF32, Shape: []int{2}, Data: func() ([]byte, error) { return data, nil }}})
	if err != nil {
		t.Fatal(err)
	}
	if want := handFile(); !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("encoded file differs from the hand-written one:\n got %x\nwant %x", got.Bytes(), want)
	}

	f, err := Parse("hand", handFile())
	if err != nil {
		t.Fatal(err)
	}
	if f.DataOffset != 96 || f.Version != 3 || len(f.KVs) != 1 || len(f.Tensors) != 1 {
		t.Fatalf("parsed %+v", f)
	}
	tt, err := f.Tensor("t")
	if err != nil {
		t.Fatal(err)
	}
	v, err := tt.Float32()
	if err != nil || len(v) != 2 || v[0] != 1.5 || v[1] != -2 {
		t.Fatalf("tensor t = %v, %v; want [1.5 -2]", v, err)
	}
}

// allValues covers every value type, empty and nested arrays.
func allValues() []KV {
	return []KV{
		{"u8", Of(uint8(200))},
		{"i8", Of(int8(-100))},
		{"u16", Of(uint16(60000))},
		{"i16", Of(int16(-30000))},
		{"u32", Of(uint32(4000000000))},
		{"i32", Of(int32(-2000000000))},
		{"f32", Of(float32(math.Pi))},
		{"nan", Of(float32(math.NaN()))},
		{"bool", Of(true)},
		{"str", Of("héllo ▁wörld")},
		{"empty.str", Of("")},
		{"u64", Of(uint64(math.MaxUint64))},
		{"i64", Of(int64(math.MinInt64))},
		{"f64", Of(math.E)},
		{"a.u8", ArrayOf([]uint8{0, 1, 255})},
		{"a.i8", ArrayOf([]int8{-128, 127})},
		{"a.u16", ArrayOf([]uint16{1, 65535})},
		{"a.i16", ArrayOf([]int16{-1, 2})},
		{"a.u32", ArrayOf([]uint32{3, 4})},
		{"a.i32", ArrayOf([]int32{-5, 6})},
		{"a.f32", ArrayOf([]float32{0.5, -0.25, float32(math.Inf(1))})},
		{"a.bool", ArrayOf([]bool{true, false, true})},
		{"a.str", ArrayOf([]string{"a", "", "▁b"})},
		{"a.u64", ArrayOf([]uint64{7})},
		{"a.i64", ArrayOf([]int64{-8})},
		{"a.f64", ArrayOf([]float64{1e300})},
		{"a.empty", ArrayOf([]int32(nil))},
		{"a.nested", ArrayOfArrays([]Value{
			ArrayOf([]int32{1, 2}),
			ArrayOf([]string{"x"}),
			ArrayOfArrays([]Value{ArrayOf([]bool{false}), ArrayOfArrays(nil)}),
		})},
	}
}

func TestWriteParseRoundTrip(t *testing.T) {
	for _, align := range []uint32{0, 1, 8, 64} {
		kvs := allValues()
		if align != 0 {
			kvs = append(kvs, KV{KeyAlignment, Of(align)})
		}
		q4k := make([]byte, 144) // one Q4_K block of 256 elements
		for i := range q4k {
			q4k[i] = byte(i * 7)
		}
		f32 := make([]byte, 4*3*5)
		for i := range f32 {
			f32[i] = byte(i)
		}
		tensors := []WriteTensor{
			{Name: "m", Type: GGMLF32, Shape: []int{3, 5}, Data: func() ([]byte, error) { return f32, nil }},
			{Name: "q", Type: GGMLQ4_K, Shape: []int{256}, Data: func() ([]byte, error) { return q4k, nil }},
			{Name: "h", Type: GGMLF16, Shape: []int{1, 1, 1, 3}, Data: func() ([]byte, error) { return []byte{1, 2, 3, 4, 5, 6}, nil }},
			{Name: "z", Type: GGMLBF16, Shape: []int{0, 4}, Data: func() ([]byte, error) { return nil, nil }},
		}
		path := filepath.Join(t.TempDir(), "x.gguf")
		if err := Write(path, kvs, tensors); err != nil {
			t.Fatal(err)
		}
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()

		wantAlign := uint64(DefaultAlignment)
		if align != 0 {
			wantAlign = uint64(align)
		}
		if f.Alignment != wantAlign || f.DataOffset%int64(wantAlign) != 0 {
			t.Errorf("align %d: alignment %d, data offset %d", align, f.Alignment, f.DataOffset)
		}
		if len(f.KVs) != len(kvs) {
			t.Fatalf("align %d: %d KVs, want %d", align, len(f.KVs), len(kvs))
		}
		for i, kv := range kvs {
			got := f.KVs[i]
			if got.Key != kv.Key || !got.Value.Equal(kv.Value) {
				t.Errorf("align %d: KV %d = %q %s, want %q %s", align, i, got.Key, got.Value, kv.Key, kv.Value)
			}
		}
		var end uint64
		for i, wt := range tensors {
			ti := f.Tensors[i]
			if ti.Name != wt.Name || ti.Type != wt.Type || ti.Offset%wantAlign != 0 || !equalInts(ti.Shape(), wt.Shape) {
				t.Errorf("align %d: tensor %d = %+v, want %s %s %v", align, i, ti, wt.Name, wt.Type, wt.Shape)
			}
			want, _ := wt.Data()
			got, err := f.raw(&ti)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("align %d: tensor %q bytes %x, want %x (%v)", align, wt.Name, got, want, err)
			}
			end = ti.Offset + alignUp(ti.Size, wantAlign)
		}
		st, _ := os.Stat(path)
		if st.Size() != f.DataOffset+int64(end) {
			t.Errorf("align %d: file is %d bytes, want data offset %d + %d", align, st.Size(), f.DataOffset, end)
		}
		if _, err := f.Tensor("q"); err == nil || !strings.Contains(err.Error(), "Q4_K") {
			t.Errorf("reading a Q4_K tensor: got %v, want an error naming Q4_K", err)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestValueAccessors(t *testing.T) {
	if i, ok := Of(uint16(9)).Int(); !ok || i != 9 {
		t.Error("Int of uint16")
	}
	if _, ok := Of(uint64(math.MaxUint64)).Int(); ok {
		t.Error("Int of MaxUint64 should not fit")
	}
	if u, ok := Of(uint64(math.MaxUint64)).Uint(); !ok || u != math.MaxUint64 {
		t.Error("Uint of MaxUint64")
	}
	if _, ok := Of(int8(-1)).Uint(); ok {
		t.Error("Uint of -1")
	}
	if xs, ok := ArrayOf([]uint8{1, 2}).Ints(); !ok || len(xs) != 2 || xs[1] != 2 {
		t.Error("Ints of []uint8")
	}
	if _, ok := ArrayOf([]string{"a"}).Ints(); ok {
		t.Error("Ints of strings")
	}
	if _, ok := Of("x").Strs(); ok {
		t.Error("Strs of a scalar")
	}
	if !Of(float32(math.NaN())).Equal(Of(float32(math.NaN()))) {
		t.Error("NaN should equal itself bitwise")
	}
	if Of(int32(1)).Equal(Of(uint32(1))) {
		t.Error("int32 1 equals uint32 1")
	}
	if (Value{}).Equal(Value{}) {
		t.Error("invalid values compare equal")
	}
	if s := ArrayOf(make([]int32, 20)).String(); !strings.HasPrefix(s, "[20×int32: 0") || !strings.HasSuffix(s, "…]") {
		t.Errorf("String = %q", s)
	}
}

func TestEncodeRejects(t *testing.T) {
	ok := func() ([]byte, error) { return make([]byte, 4), nil }
	deep := ArrayOf([]int32{1})
	for range maxNesting {
		deep = ArrayOfArrays([]Value{deep})
	}
	cases := []struct {
		name    string
		kvs     []KV
		tensors []WriteTensor
		want    string
	}{
		{"zero value", []KV{{"k", Value{}}}, nil, `key "k"`},
		{"mistyped value", []KV{{"k", Value{Type: TypeUint32, v: "x"}}}, nil, "invalid uint32"},
		{"duplicate key", []KV{{"k", Of(true)}, {"k", Of(false)}}, nil, "duplicate metadata key"},
		{"bad alignment", []KV{{KeyAlignment, Of(uint32(3))}}, nil, "power of two"},
		{"alignment type", []KV{{KeyAlignment, Of(uint64(32))}}, nil, "power of two"},
		{"too deep", []KV{{"k", deep}}, nil, "nested more than"},
		{"scalar in array of arrays", []KV{{"k", Value{Type: TypeArray, Elem: TypeArray, v: []Value{Of(1.0)}}}}, nil, "element 0"},
		{"duplicate tensor", nil, []WriteTensor{{Name: "t", Shape: []int{1}, Data: ok}, {Name: "t", Shape: []int{1}, Data: ok}}, "duplicate tensor"},
		{"long name", nil, []WriteTensor{{Name: strings.Repeat("n", 64), Shape: []int{1}, Data: ok}}, "at most 63"},
		{"five dims", nil, []WriteTensor{{Name: "t", Shape: []int{1, 1, 1, 1, 1}, Data: ok}}, "dimensions"},
		{"block size", nil, []WriteTensor{{Name: "t", Type: GGMLQ8_0, Shape: []int{31}, Data: ok}}, "block size"},
		{"short data", nil, []WriteTensor{{Name: "t", Shape: []int{2}, Data: ok}}, "needs 8"},
		{"data error", nil, []WriteTensor{{Name: "t", Shape: []int{1}, Data: func() ([]byte, error) { return nil, errors.New("boom") }}}, `tensor "t": boom`},
	}
	for _, c := range cases {
		err := Encode(&bytes.Buffer{}, c.kvs, c.tensors)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// A header error is found before any tensor's data is produced, and a
// failed write leaves neither the file nor a temporary behind.
func TestWriteIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	calls := 0
	data := func() ([]byte, error) { calls++; return make([]byte, 4), nil }
	err := Write(path, nil, []WriteTensor{{Name: "a", Shape: []int{1}, Data: data}, {Name: "a", Shape: []int{1}, Data: data}})
	if err == nil || calls != 0 {
		t.Fatalf("duplicate names: err %v after %d data calls; want an error before any", err, calls)
	}
	err = Write(path, nil, []WriteTensor{{Name: "a", Shape: []int{1}, Data: data}, {Name: "b", Shape: []int{1}, Data: func() ([]byte, error) { return nil, errors.New("disk on fire") }}})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("failed write left %v behind", ents)
	}
	if calls != 1 {
		t.Fatalf("tensor a's data was produced %d times, want once", calls)
	}
}

// corrupt returns a copy of data with b written at off.
func corrupt(data []byte, off int, b ...byte) []byte {
	out := append([]byte(nil), data...)
	copy(out[off:], b)
	return out
}

func TestParseErrorsNameOffsets(t *testing.T) {
	good := handFile()
	u64 := func(x uint64) []byte { return binary.LittleEndian.AppendUint64(nil, x) }
	u32 := func(x uint32) []byte { return binary.LittleEndian.AppendUint32(nil, x) }
	// Offsets in handFile: KV key at 24, its type at 35, value at 39;
	// tensor info at 43 (n_dims 52, dim 56, type 64, offset 68).
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "offset 0: not a GGUF file"},
		{"magic", corrupt(good, 0, 'G', 'G', 'M', 'L'), "offset 0: not a GGUF file"},
		{"version 1", corrupt(good, 4, u32(1)...), "offset 4: GGUF version 1"},
		{"big endian", corrupt(good, 4, 0, 0, 0, 3), "offset 4: big-endian"},
		{"version 9", corrupt(good, 4, u32(9)...), "offset 4: unsupported GGUF version 9"},
		{"tensor count", corrupt(good, 8, u64(1<<40)...), "offset 8: tensor count"},
		{"kv count", corrupt(good, 16, u64(1<<40)...), "offset 16: metadata count"},
		{"key length", corrupt(good, 24, u64(1<<50)...), "offset 24:"},
		{"value type", corrupt(good, 35, u32(13)...), "offset 35: key \"a.b\": unknown value type 13"},
		{"bool byte", corrupt(corrupt(good, 35, u32(uint32(TypeBool))...), 39, 2), "offset 39: key \"a.b\": bool byte 2"},
		{"n_dims", corrupt(good, 52, u32(5)...), "offset 52: tensor \"t\": 5 dimensions"},
		{"ggml type", corrupt(good, 64, u32(99)...), "offset 43: tensor \"t\": unknown ggml type 99"},
		{"misaligned", corrupt(good, 68, u64(4)...), "offset 43: tensor \"t\": data offset 4 is not a multiple"},
		{"outside", corrupt(good, 68, u64(64)...), "offset 43: tensor \"t\": data"},
		{"huge dim", corrupt(good, 56, u64(1<<62)...), "offset 43: tensor \"t\""},
		{"truncated data", good[:100], "offset 43: tensor \"t\": data"},
		{"truncated info", good[:67], "offset 64: tensor \"t\" type needs 4 bytes, only 3 remain"},
		{"truncated header", good[:37], "offset 8: tensor count 1 cannot fit"},
	}
	for _, c := range cases {
		_, err := Parse("f.gguf", c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "f.gguf: ") {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
	// Every strict prefix of a valid file is an error naming an offset.
	for n := 0; n < len(good)-24; n++ { // the last tensor's padding is not needed
		if _, err := Parse("f.gguf", good[:n]); err == nil || !strings.Contains(err.Error(), "offset ") {
			t.Errorf("prefix of %d bytes: got %v", n, err)
		}
	}
}

func TestParseRejectsDuplicatesAndBadAlignment(t *testing.T) {
	var b le
	b = b.raw([]byte(Magic)...).u32(3).u64(0).u64(2)
	b = b.str("k").u32(uint32(TypeUint8)).raw(1)
	dup := b.str("k").u32(uint32(TypeUint8)).raw(2)
	if _, err := Parse("d", dup); err == nil || !strings.Contains(err.Error(), `offset 38: duplicate metadata key "k"`) {
		t.Errorf("duplicate key: %v", err)
	}
	al := b.str(KeyAlignment).u32(uint32(TypeUint32)).u32(48)
	if _, err := Parse("a", al); err == nil || !strings.Contains(err.Error(), "offset 38: key \"general.alignment\": alignment must be a uint32 power of two") {
		t.Errorf("bad alignment: %v", err)
	}
	var n le
	n = n.raw([]byte(Magic)...).u32(3).u64(0).u64(1).str("k").u32(uint32(TypeArray))
	for range maxNesting + 1 {
		n = n.u32(uint32(TypeArray)).u64(1)
	}
	n = n.u32(uint32(TypeUint8)).u64(0)
	if _, err := Parse("n", n); err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Errorf("deep nesting: %v", err)
	}
}
