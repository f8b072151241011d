package gguf

import (
	"bytes"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// FuzzParse feeds arbitrary bytes to the parser and, when they parse, to
// the llama mapping and back through the writer. Nothing may panic; a
// file that parses and can be written again must parse to the same
// metadata and tensor bytes.
func FuzzParse(f *testing.F) {
	kvs, ts, err := saveLayout(tinyModel(f, ir.F16), "seed.gguf", SaveOptions{})
	if err != nil {
		f.Fatal(err)
	}
	var seed bytes.Buffer
	if err := Encode(&seed, kvs, ts); err != nil {
		f.Fatal(err)
	}
	valid := seed.Bytes()
	f.Add(valid)
	for _, n := range []int{0, 3, 4, 8, 23, 24, 100, 1000, len(valid) / 2, len(valid) - 1} {
		f.Add(valid[:n])
	}
	f.Add(handFile())
	var all bytes.Buffer
	if err := Encode(&all, allValues(), nil); err != nil {
		f.Fatal(err)
	}
	f.Add(all.Bytes())

	f.Fuzz(checkParse)
}

func checkParse(t *testing.T, data []byte) {
	file, err := Parse("fuzz", data)
	if err != nil {
		return
	}
	// Every tensor Parse accepted lies inside the data.
	for _, ti := range file.Tensors {
		if tt, err := file.Tensor(ti.Name); err == nil {
			if _, err := tt.Bytes(); err != nil {
				t.Fatalf("tensor %q: %v", ti.Name, err)
			}
		}
	}
	if m, err := file.Model(); err == nil {
		for n, tt := range m.Tensors {
			if _, err := tt.Bytes(); err != nil {
				t.Fatalf("model tensor %q: %v", n, err)
			}
		}
	}

	if file.Alignment > 1<<16 {
		return // legal, but re-encoding would write megabytes of padding
	}
	wts := make([]WriteTensor, len(file.Tensors))
	for i := range file.Tensors {
		ti := &file.Tensors[i]
		wts[i] = WriteTensor{Name: ti.Name, Type: ti.Type, Shape: ti.Shape(), Data: func() ([]byte, error) { return file.raw(ti) }}
	}
	var out bytes.Buffer
	if err := Encode(&out, file.KVs, wts); err != nil {
		return // e.g. names longer than llama.cpp accepts
	}
	again, err := Parse("again", out.Bytes())
	if err != nil {
		t.Fatalf("re-encoded file does not parse: %v", err)
	}
	if len(again.KVs) != len(file.KVs) || len(again.Tensors) != len(file.Tensors) {
		t.Fatalf("re-encoded file has %d KVs and %d tensors, want %d and %d", len(again.KVs), len(again.Tensors), len(file.KVs), len(file.Tensors))
	}
	for i, kv := range file.KVs {
		if again.KVs[i].Key != kv.Key || !again.KVs[i].Value.Equal(kv.Value) {
			t.Fatalf("KV %q changed: %s -> %s", kv.Key, kv.Value, again.KVs[i].Value)
		}
	}
	for i := range file.Tensors {
		a, _ := file.raw(&file.Tensors[i])
		b, _ := again.raw(&again.Tensors[i])
		if !bytes.Equal(a, b) || !equalDims(file.Tensors[i].Dims, again.Tensors[i].Dims) {
			t.Fatalf("tensor %q changed", file.Tensors[i].Name)
		}
	}
}
