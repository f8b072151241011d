package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// goldenHeader is testdata/golden.safetensors' JSON header as the spec lays
// it out (and as the Rust implementation writes it): compact JSON,
// __metadata__ first, tensors in data order (F32, then BF16, then F16),
// space-padded to a multiple of 8 bytes.
const goldenHeader = `{"__metadata__":{"format":"pt"},` +
	`"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},` +
	`"bias":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]},` +
	`"scale":{"dtype":"F16","shape":[3],"data_offsets":[20,26]}}     `

// goldenData is the data section, little-endian, written out by hand:
// F32 1, -2, 0.5, 3; BF16 1, -0.5; F16 1, 0.5, -2.
const goldenData = "0000803f" + "000000c0" + "0000003f" + "00004040" +
	"803f" + "00bf" +
	"003c" + "0038" + "00c0"

var goldenValues = map[string]struct {
	dtype ir.DType
	shape []int
	vals  []float32
}{
	"weight": {ir.F32, []int{2, 2}, []float32{1, -2, 0.5, 3}},
	"bias":   {ir.BF16, []int{2}, []float32{1, -0.5}},
	"scale":  {ir.F16, []int{3}, []float32{1, 0.5, -2}},
}

func TestGoldenFileLayout(t *testing.T) {
	raw, err := os.ReadFile("testdata/golden.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if len(goldenHeader)%8 != 0 {
		t.Fatalf("test constant: header is %d bytes, not padded to 8", len(goldenHeader))
	}
	n := binary.LittleEndian.Uint64(raw)
	if n != uint64(len(goldenHeader)) {
		t.Fatalf("header length field = %d, want %d", n, len(goldenHeader))
	}
	if got := string(raw[8 : 8+n]); got != goldenHeader {
		t.Fatalf("header =\n%s\nwant\n%s", got, goldenHeader)
	}
	if got := hex.EncodeToString(raw[8+n:]); got != goldenData {
		t.Fatalf("data = %s, want %s", got, goldenData)
	}
}

func TestReadGolden(t *testing.T) {
	f, err := Open("testdata/golden.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if want := map[string]string{"format": "pt"}; !reflect.DeepEqual(f.Metadata, want) {
		t.Errorf("metadata = %v, want %v", f.Metadata, want)
	}
	if got, want := f.Names(), []string{"bias", "scale", "weight"}; !reflect.DeepEqual(got, want) {
		t.Errorf("names = %v, want %v", got, want)
	}
	infos := map[string]TensorInfo{
		"weight": {Name: "weight", DType: "F32", Shape: []int{2, 2}, Begin: 0, End: 16},
		"bias":   {Name: "bias", DType: "BF16", Shape: []int{2}, Begin: 16, End: 20},
		"scale":  {Name: "scale", DType: "F16", Shape: []int{3}, Begin: 20, End: 26},
	}
	for name, want := range infos {
		got, ok := f.Info(name)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("Info(%q) = %+v, %v; want %+v", name, got, ok, want)
		}
	}
	ts, err := f.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != len(goldenValues) {
		t.Fatalf("%d tensors, want %d", len(ts), len(goldenValues))
	}
	for name, want := range goldenValues {
		tt := ts[name]
		if tt.DType != want.dtype || !reflect.DeepEqual(tt.Shape, want.shape) {
			t.Errorf("%s: %v %v, want %v %v", name, tt.DType, tt.Shape, want.dtype, want.shape)
		}
		v, err := tt.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(v, want.vals) {
			t.Errorf("%s = %v, want %v", name, v, want.vals)
		}
	}
	if _, err := f.Tensor("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Tensor(nope) error = %v", err)
	}
}

// TestWriteGolden checks the writer against the hand-built file: same
// order, same JSON spelling, same padding, byte for byte.
func TestWriteGolden(t *testing.T) {
	want, err := os.ReadFile("testdata/golden.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	tensors := map[string]*ir.Tensor{}
	for name, g := range goldenValues {
		tensors[name] = ir.FromFloat32(g.dtype, g.shape, g.vals)
	}
	path := filepath.Join(t.TempDir(), "out.safetensors")
	if err := Write(path, nil, tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("written file differs from golden:\n got %q\nwant %q", got, want)
	}
}

func randomTensor(rng *rand.Rand, d ir.DType, shape []int) *ir.Tensor {
	n := 1
	for _, s := range shape {
		n *= s
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return ir.FromFloat32(d, shape, v)
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tensors := map[string]*ir.Tensor{
		"a.f32":    randomTensor(rng, ir.F32, []int{3, 5}),
		"b.f16":    randomTensor(rng, ir.F16, []int{7}),
		"c.bf16":   randomTensor(rng, ir.BF16, []int{2, 3, 3}),
		"d.f32":    randomTensor(rng, ir.F32, []int{1}),
		"e.scalar": randomTensor(rng, ir.F32, []int{}),
		"f.empty":  randomTensor(rng, ir.BF16, []int{0, 4}),
		"g.f16":    randomTensor(rng, ir.F16, []int{3}),
		"ünïcødé":  randomTensor(rng, ir.F32, []int{2}),
	}
	for _, order := range []struct {
		name  string
		names []string
	}{
		{"sorted", nil},
		{"given", []string{"g.f16", "e.scalar", "a.f32", "b.f16", "ünïcødé", "f.empty", "c.bf16", "d.f32"}},
	} {
		t.Run(order.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.safetensors")
			if err := Write(path, order.names, tensors, map[string]string{"format": "pt", "k": "<&>"}); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Metadata["k"] != "<&>" || f.Metadata["format"] != "pt" {
				t.Errorf("metadata = %v", f.Metadata)
			}
			got, err := f.Tensors()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tensors) {
				t.Fatalf("%d tensors back, wrote %d", len(got), len(tensors))
			}
			for name, want := range tensors {
				g := got[name]
				if g == nil {
					t.Fatalf("tensor %q missing", name)
				}
				if g.DType != want.DType || !reflect.DeepEqual(g.Shape, want.Shape) {
					t.Errorf("%s: %v %v, want %v %v", name, g.DType, g.Shape, want.DType, want.Shape)
				}
				gb, err := g.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				wb, _ := want.Bytes()
				if !bytes.Equal(gb, wb) {
					t.Errorf("%s: bytes differ", name)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			n := binary.LittleEndian.Uint64(raw)
			if n%8 != 0 {
				t.Errorf("header length %d is not a multiple of 8", n)
			}
			if order.names == nil {
				// Sorted order keeps every tensor aligned to its element size.
				for _, name := range f.Names() {
					in, _ := f.Info(name)
					if off := 8 + int64(n) + in.Begin; off%int64(elemSize[in.DType]) != 0 {
						t.Errorf("%s at file offset %d is not aligned to %d", name, off, elemSize[in.DType])
					}
				}
			} else {
				// A given order is the data order.
				var prev int64 = -1
				for _, name := range order.names {
					in, _ := f.Info(name)
					if in.Begin < prev {
						t.Errorf("%s at %d comes before the previous tensor at %d", name, in.Begin, prev)
					}
					prev = in.Begin
				}
			}
		})
	}
}

// TestWriteSourcesConvertsLazily checks that Data is called once per
// tensor, in order, and that a failing source aborts without a file.
func TestWriteSources(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.safetensors")
	var calls []string
	src := func(name string, v ...float32) Source {
		return Source{Name: name, DType: ir.F32, Shape: []int{len(v)}, Data: func() ([]byte, error) {
			calls = append(calls, name)
			return ir.EncodeFloat32(ir.F32, v), nil
		}}
	}
	if err := WriteSources(path, []Source{src("z", 1, 2), src("a", 3)}, nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(calls, []string{"z", "a"}) {
		t.Errorf("Data calls = %v", calls)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata != nil {
		t.Errorf("metadata = %v, want none", f.Metadata)
	}
	z, _ := f.Info("z")
	a, _ := f.Info("a")
	if z.Begin != 0 || a.Begin != 8 {
		t.Errorf("offsets z=%d a=%d, want 0 and 8", z.Begin, a.Begin)
	}
	f.Close()
	before, _ := os.ReadFile(path)

	boom := errors.New("boom")
	cases := []struct {
		name string
		srcs []Source
		want string
	}{
		{"data error", []Source{src("ok", 1), {Name: "bad", DType: ir.F32, Shape: []int{1}, Data: func() ([]byte, error) { return nil, boom }}}, `tensor "bad": boom`},
		{"short data", []Source{{Name: "short", DType: ir.F32, Shape: []int{2}, Data: func() ([]byte, error) { return make([]byte, 4), nil }}}, `tensor "short": 4 bytes of data for shape [2]`},
		{"duplicate", []Source{src("d", 1), src("d", 2)}, `tensor "d" listed twice`},
		{"reserved", []Source{src("__metadata__", 1)}, `reserved`},
		{"negative", []Source{{Name: "n", DType: ir.F32, Shape: []int{-1}, Data: func() ([]byte, error) { return nil, nil }}}, "negative dimension"},
		{"nil data", []Source{{Name: "nil", DType: ir.F32, Shape: []int{1}}}, `tensor "nil" has no data`},
		{"bad dtype", []Source{{Name: "q", DType: ir.DType(9), Shape: []int{1}, Data: func() ([]byte, error) { return nil, nil }}}, `tensor "q": dtype`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := WriteSources(path, c.srcs, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error = %v, want one naming %s and containing %q", err, path, c.want)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Error("failed write changed the existing file")
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("directory holds %d entries after a failed write, want only the original", len(entries))
			}
		})
	}
}

func TestWriteNames(t *testing.T) {
	tensors := map[string]*ir.Tensor{"a": ir.FromFloat32(ir.F32, []int{1}, []float32{1}), "b": ir.FromFloat32(ir.F32, []int{1}, []float32{2})}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	for _, names := range [][]string{{"a"}, {"a", "c"}, {"a", "a"}} {
		if err := Write(path, names, tensors, nil); err == nil {
			t.Errorf("Write with names %v succeeded", names)
		}
	}
}

// file assembles a safetensors file from a header and a data section.
func file(header string, data int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

func TestMalformed(t *testing.T) {
	const f32x2 = `"dtype":"F32","shape":[2]`
	// at gives the absolute file offset of data_offsets' begin in a
	// file with this header: 8 bytes of length, the header, then data.
	at := func(header string, begin int) string {
		return fmt.Sprintf("file offset %d", 8+len(header)+begin)
	}
	const (
		reversed = `{"w":{` + f32x2 + `,"data_offsets":[8,0]}}`
		inRange  = `{"w":{` + f32x2 + `,"data_offsets":[0,8]}}`
		mismatch = `{"w":{` + f32x2 + `,"data_offsets":[0,12]}}`
		overlap  = `{"a":{` + f32x2 + `,"data_offsets":[0,8]},"b":{` + f32x2 + `,"data_offsets":[4,12]}}`
	)
	cases := []struct {
		name string
		data []byte
		want []string // substrings of the error, besides the file name
	}{
		{"empty", nil, []string{"truncated: 0 bytes"}},
		{"short length", []byte{1, 2, 3}, []string{"truncated: 3 bytes"}},
		{"huge length", binary.LittleEndian.AppendUint64(nil, math.MaxUint64), []string{"header length 18446744073709551615", "offset 0", "limit"}},
		{"length past end", append(binary.LittleEndian.AppendUint64(nil, 100), "{}"...), []string{"header length 100", "past the end of the 10-byte file"}},
		{"not json", file(`{"a":`, 0), []string{"offset 8", "invalid JSON"}},
		{"not object", file(`[1,2]`, 0), []string{"offset 8", "not an object"}},
		{"trailing", file(`{} {}`, 0), []string{"offset 8", "data after the header"}},
		{"invalid utf8", file("{\"\xff\":1}", 0), []string{"offset 8", "UTF-8"}},
		{"duplicate", file(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"a":{`+f32x2+`,"data_offsets":[0,8]}}`, 8), []string{`key "a" appears twice`}},
		{"bad metadata", file(`{"__metadata__":{"n":1}}`, 0), []string{"__metadata__ must map strings to strings"}},
		{"unknown dtype", file(`{"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}`, 8), []string{`tensor "w"`, `unknown dtype "F33"`}},
		{"dtype not string", file(`{"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}`, 8), []string{`tensor "w"`, "bad header entry"}},
		{"missing offsets", file(`{"w":{`+f32x2+`}}`, 8), []string{`tensor "w"`, "needs dtype, shape and data_offsets"}},
		{"entry not object", file(`{"w":7}`, 0), []string{`tensor "w"`, "bad header entry"}},
		{"negative dim", file(`{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, 8), []string{`tensor "w"`}},
		{"three offsets", file(`{"w":{`+f32x2+`,"data_offsets":[0,4,8]}}`, 8), []string{`tensor "w"`, "3 entries"}},
		{"reversed", file(reversed, 8), []string{`tensor "w"`, "[8,0]", at(reversed, 8)}},
		{"out of range", file(inRange, 7), []string{`tensor "w"`, "[0,8]", "7-byte data section", at(inRange, 0)}},
		{"far out of range", file(`{"w":{`+f32x2+`,"data_offsets":[0,18446744073709551615]}}`, 8), []string{`tensor "w"`, "run past"}},
		{"size mismatch", file(mismatch, 16), []string{`tensor "w"`, "needs 8 bytes", "hold 12", at(mismatch, 0)}},
		{"shape overflow", file(`{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}`, 8), []string{`tensor "w"`, "needs more bytes"}},
		{"overlap", file(overlap, 16), []string{`tensor "b"`, `overlap tensor "a"`, at(overlap, 4)}},
		{"same range", file(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"b":{`+f32x2+`,"data_offsets":[0,8]}}`, 8), []string{`overlap tensor`}},
	}
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("case%d.safetensors", i))
			if err := os.WriteFile(path, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatal("Open succeeded")
			}
			for _, w := range append(c.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestAcceptsSpecVariants covers inputs that are valid though whittle's
// writer never produces them.
func TestAcceptsSpecVariants(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name   string
		data   []byte
		tensor string
		shape  []int
	}{
		{"no padding, extra field, unordered", file(`{"w":{"shape":[1,1],"extra":true,"data_offsets":[4,8],"dtype":"F32"},"v":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}`, 8), "w", []int{1, 1}},
		{"null metadata", file(`{"__metadata__":null,"w":{"dtype":"F16","shape":[],"data_offsets":[0,2]}}`, 2), "w", []int{}},
		{"empty header", file(`{}`, 0), "", nil},
		{"zero-size tensors", file(`{"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"f":{"dtype":"F32","shape":[3,0],"data_offsets":[0,0]}}`, 0), "f", []int{3, 0}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("ok%d.safetensors", i))
			if err := os.WriteFile(path, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if c.tensor == "" {
				if len(f.Names()) != 0 {
					t.Errorf("names = %v", f.Names())
				}
				return
			}
			tt, err := f.Tensor(c.tensor)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(tt.Shape) != fmt.Sprint(c.shape) {
				t.Errorf("shape %v, want %v", tt.Shape, c.shape)
			}
			if _, err := tt.Bytes(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestUnsupportedDType(t *testing.T) {
	path := filepath.Join(t.TempDir(), "i64.safetensors")
	data := file(`{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}`, 20)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if in, ok := f.Info("ids"); !ok || in.DType != "I64" {
		t.Errorf("Info(ids) = %+v, %v", in, ok)
	}
	if _, err := f.Tensor("w"); err != nil {
		t.Error(err)
	}
	_, err = f.Tensor("ids")
	if !errors.Is(err, ErrUnsupportedDType) || !strings.Contains(err.Error(), `"ids"`) || !strings.Contains(err.Error(), path) {
		t.Errorf("Tensor(ids) error = %v", err)
	}
	if _, err := f.Tensors(); !errors.Is(err, ErrUnsupportedDType) {
		t.Errorf("Tensors error = %v", err)
	}
}

func writeIndex(t *testing.T, dir string, weightMap map[string]string) {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"metadata":{"total_size":0},"weight_map":{`)
	first := true
	for k, v := range weightMap {
		if !first {
			b.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&b, "%q:%q", k, v)
	}
	b.WriteString("}}")
	if err := os.WriteFile(filepath.Join(dir, IndexFileName), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenModelDir(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	all := map[string]*ir.Tensor{
		"a": randomTensor(rng, ir.F32, []int{2, 3}),
		"b": randomTensor(rng, ir.BF16, []int{4}),
		"c": randomTensor(rng, ir.F16, []int{5}),
	}
	check := func(t *testing.T, dir string, want map[string]*ir.Tensor) {
		t.Helper()
		got, closers, err := OpenModelDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			for _, c := range closers {
				c.Close()
			}
		}()
		if len(got) != len(want) {
			t.Fatalf("got %d tensors, want %d", len(got), len(want))
		}
		for name, w := range want {
			g, ok := got[name]
			if !ok {
				t.Fatalf("tensor %q missing", name)
			}
			gb, err := g.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			wb, _ := w.Bytes()
			if !bytes.Equal(gb, wb) || g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) {
				t.Errorf("tensor %q differs", name)
			}
		}
	}

	t.Run("single", func(t *testing.T) {
		dir := t.TempDir()
		if err := Write(filepath.Join(dir, SingleFileName), nil, all, nil); err != nil {
			t.Fatal(err)
		}
		// A stale index beside the single file is ignored, as transformers does.
		writeIndex(t, dir, map[string]string{"a": "missing.safetensors"})
		check(t, dir, all)
	})

	sharded := func(t *testing.T) string {
		dir := t.TempDir()
		if err := Write(filepath.Join(dir, "model-00001-of-00002.safetensors"), nil, map[string]*ir.Tensor{"a": all["a"], "b": all["b"]}, nil); err != nil {
			t.Fatal(err)
		}
		if err := Write(filepath.Join(dir, "model-00002-of-00002.safetensors"), nil, map[string]*ir.Tensor{"c": all["c"]}, nil); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	t.Run("sharded", func(t *testing.T) {
		dir := sharded(t)
		writeIndex(t, dir, map[string]string{"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"})
		check(t, dir, all)
	})
	t.Run("index subset", func(t *testing.T) {
		// Tensors a shard holds but the index does not list are left out.
		dir := sharded(t)
		writeIndex(t, dir, map[string]string{"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"})
		check(t, dir, map[string]*ir.Tensor{"a": all["a"], "c": all["c"]})
	})

	errCases := []struct {
		name      string
		weightMap map[string]string
		index     string
		want      []string
	}{
		{"wrong shard", map[string]string{"a": "model-00002-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}, "", []string{`tensor "a" is mapped to`, "model-00002-of-00002.safetensors", IndexFileName}},
		{"missing shard", map[string]string{"a": "model-00009-of-00009.safetensors"}, "", []string{"model-00009-of-00009.safetensors", IndexFileName}},
		{"traversal", map[string]string{"a": "../model-00001-of-00002.safetensors"}, "", []string{`shard "../model-00001-of-00002.safetensors" is not a file name`}},
		{"dotdot", map[string]string{"a": ".."}, "", []string{"is not a file name"}},
		{"empty map", nil, `{"weight_map":{}}`, []string{"no weight_map entries"}},
		{"bad json", nil, `{"weight_map":[1]}`, []string{"invalid index JSON", IndexFileName}},
	}
	for _, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			dir := sharded(t)
			if c.index != "" {
				os.WriteFile(filepath.Join(dir, IndexFileName), []byte(c.index), 0o644)
			} else {
				writeIndex(t, dir, c.weightMap)
			}
			_, closers, err := OpenModelDir(dir)
			if err == nil {
				t.Fatal("OpenModelDir succeeded")
			}
			if closers != nil {
				t.Error("closers returned with an error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	t.Run("empty dir", func(t *testing.T) {
		dir := t.TempDir()
		_, _, err := OpenModelDir(dir)
		if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), SingleFileName) {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("corrupt single", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, SingleFileName), []byte("garbage"), 0o644)
		_, _, err := OpenModelDir(dir)
		if err == nil || !strings.Contains(err.Error(), SingleFileName) {
			t.Errorf("error = %v", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	golden, err := os.ReadFile("testdata/golden.safetensors")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	f.Add(file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 16))
	f.Add(file(`{"__metadata__":{"a":"b"},"w":{"dtype":"I64","shape":[1,0],"data_offsets":[0,0]}}`, 0))
	f.Add(file(`{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := parse(data)
		if err != nil {
			return
		}
		// Whatever parses must describe ranges inside the file that do
		// not overlap and that match their shapes.
		for _, in := range h.infos {
			if in.Begin < 0 || in.Begin > in.End || h.dataStart+in.End > int64(len(data)) {
				t.Fatalf("tensor %q: range [%d,%d) outside the %d-byte file (data at %d)", in.Name, in.Begin, in.End, len(data), h.dataStart)
			}
			n := elemSize[in.DType]
			for _, d := range in.Shape {
				n *= int64(d)
			}
			if n != in.End-in.Begin {
				t.Fatalf("tensor %q: %d bytes for shape %v", in.Name, in.End-in.Begin, in.Shape)
			}
			_ = data[h.dataStart+in.Begin : h.dataStart+in.End]
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"metadata":{"total_size":8},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{"a":"../x"}}`))
	f.Add([]byte(`{"weight_map":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := ParseIndex(data)
		if err != nil {
			return
		}
		// Every accepted shard is a plain name inside the directory.
		for _, s := range ix.Shards() {
			if s == "" || s == "." || s == ".." || filepath.Base(s) != s || strings.ContainsAny(s, `/\`) {
				t.Fatalf("accepted shard %q", s)
			}
		}
	})
}
