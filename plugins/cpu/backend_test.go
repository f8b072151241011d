package cpu

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

func TestInfo(t *testing.T) {
	b := newBackend(t)
	info, err := b.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "cpu" || info.Device != "cpu" || info.Threads != 2 || info.Version == "" {
		t.Errorf("info %+v", info)
	}
	for _, c := range []string{backend.CapTrain, backend.CapLoRA, backend.CapStats, backend.CapEvaluate, backend.CapGenerate} {
		if !info.Has(c) {
			t.Errorf("capability %q missing", c)
		}
	}
	if _, err := New(Options{Threads: -1}); err == nil {
		t.Error("negative thread count accepted")
	}
}

// TestSaveLoadRoundTrip: f32 saves are exact, f16 and bf16 saves hold the
// weights rounded to those types, and the tokenizer travels along.
func TestSaveLoadRoundTrip(t *testing.T) {
	f := loadStories(t)
	b := newBackend(t)
	id := load(t, b, f.dir)
	orig := b.models[id].params.Flat()
	for _, c := range []struct {
		dtype string
		dt    ir.DType
	}{{"", ir.F32}, {"f32", ir.F32}, {"bf16", ir.BF16}, {"f16", ir.F16}} {
		dir := filepath.Join(t.TempDir(), "saved")
		if err := b.Save(context.Background(), backend.SaveRequest{Model: id, Dir: dir, DType: c.dtype}); err != nil {
			t.Fatal(err)
		}
		m, err := hf.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		emb, _ := m.Tensor(ir.NameEmbed)
		if emb.DType != c.dt {
			t.Errorf("%q: saved as %v", c.dtype, emb.DType)
		}
		if m.Tokenizer == nil || m.Tokenizer.Size() != f.m.Tokenizer.Size() {
			t.Errorf("%q: tokenizer did not travel", c.dtype)
		}
		m.Close()
		back := load(t, b, dir)
		got := b.models[back].params.Flat()
		want, err := ir.FromFloat32(c.dt, []int{len(orig)}, orig).Float32()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%q: weights after the round trip differ", c.dtype)
		}
		if err := b.Release(context.Background(), back); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Save(context.Background(), backend.SaveRequest{Model: id, Dir: t.TempDir(), DType: "f8"}); err == nil {
		t.Error("dtype f8 accepted")
	}
}

func TestModelLifecycle(t *testing.T) {
	f := loadStories(t)
	b := newBackend(t)
	ctx := context.Background()
	if _, err := b.Load(ctx, backend.LoadRequest{Dir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("loading a missing directory succeeded")
	}
	id := load(t, b, f.dir)
	id2 := load(t, b, f.dir)
	if id == id2 {
		t.Errorf("two loads share the id %s", id)
	}
	if err := b.Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx, id); err == nil {
		t.Error("releasing twice succeeded")
	}
	path, _ := f.sequences(t, 2, 8)
	if _, err := b.Evaluate(ctx, backend.EvalRequest{Model: id, LM: &backend.Sequences{Path: path}}); err == nil {
		t.Error("evaluating a released model succeeded")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Evaluate(cancelled, backend.EvalRequest{Model: id2, LM: &backend.Sequences{Path: path}}); !errors.Is(err, context.Canceled) {
		t.Errorf("evaluate with a cancelled context: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Evaluate(ctx, backend.EvalRequest{Model: id2, LM: &backend.Sequences{Path: path}}); err == nil {
		t.Error("evaluate after Close succeeded")
	}
}
