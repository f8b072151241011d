package initialize

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
)

// lazyModel is a model of cfg whose tensors fail to load: Random must need
// the architecture only.
func lazyModel(cfg ir.Config, dt ir.DType) *ir.Model {
	names, shapes := cfg.ExpectedShapes()
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Tokenizer: passtest.Tokenizer(), Source: "lazy"}
	for _, n := range names {
		m.Tensors[n] = ir.LazyTensor(dt, shapes[n], func() ([]byte, error) {
			return nil, errors.New("weights of " + n + " read")
		})
	}
	return m
}

func values(t *testing.T, m *ir.Model, name string) []float32 {
	t.Helper()
	tn, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRandom(t *testing.T) {
	cfg := passtest.TinyConfig(len(passtest.Tokenizer().Pieces))
	cfg.Hidden = 32
	cfg.Layers = ir.UniformLayers(3, ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 8, MLP: 48})
	in := lazyModel(cfg, ir.F32)
	const std = 0.05
	m, err := Random(in, 7, std)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Config, cfg) || m.Tokenizer != in.Tokenizer {
		t.Errorf("architecture or tokenizer changed: %+v", m.Config)
	}
	if len(m.Tensors) != len(in.Tensors) {
		t.Errorf("%d tensors, want %d", len(m.Tensors), len(in.Tensors))
	}
	// Every matrix entry pooled: mean 0, standard deviation std, and the
	// normal's share within one standard deviation (68.27%).
	var n, within int
	var sum, sumSq float64
	for name, tn := range m.Tensors {
		if tn.DType != ir.F32 || !reflect.DeepEqual(tn.Shape, in.Tensors[name].Shape) {
			t.Errorf("%s: %v %v, want the input's f32 %v", name, tn.DType, tn.Shape, in.Tensors[name].Shape)
		}
		v := values(t, m, name)
		if len(tn.Shape) == 1 {
			for i, x := range v {
				if x != 1 {
					t.Fatalf("norm %s[%d] = %g, want 1", name, i, x)
				}
			}
			continue
		}
		for _, x := range v {
			n++
			sum += float64(x)
			sumSq += float64(x) * float64(x)
			if math.Abs(float64(x)) <= std {
				within++
			}
		}
	}
	mean := sum / float64(n)
	sd := math.Sqrt(sumSq/float64(n) - mean*mean)
	t.Logf("%d entries: mean %.2g sd %.4g within 1 sd %.4f", n, mean, sd, float64(within)/float64(n))
	// Five standard errors of each estimate.
	if se := std / math.Sqrt(float64(n)); math.Abs(mean) > 5*se {
		t.Errorf("mean %g, want 0 ± %g", mean, 5*se)
	}
	if math.Abs(sd/std-1) > 5/math.Sqrt(2*float64(n)) {
		t.Errorf("standard deviation %g, want %g", sd, std)
	}
	if frac := float64(within) / float64(n); math.Abs(frac-0.6827) > 5*math.Sqrt(0.6827*0.3173/float64(n)) {
		t.Errorf("%.4f of the entries within one sd, want 0.6827", frac)
	}
}

func TestRandomIsKeyedBySeedAndName(t *testing.T) {
	cfg := passtest.TinyConfig(len(passtest.Tokenizer().Pieces))
	base, err := Random(lazyModel(cfg, ir.F32), 3, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Random(lazyModel(cfg, ir.F32), 3, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Random(lazyModel(cfg, ir.F32), 4, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range base.TensorNames() {
		if !reflect.DeepEqual(values(t, base, name), values(t, again, name)) {
			t.Errorf("%s differs between two runs with seed 3", name)
		}
		if len(base.Tensors[name].Shape) > 1 && reflect.DeepEqual(values(t, base, name), values(t, other, name)) {
			t.Errorf("%s is the same with seeds 3 and 4", name)
		}
	}
	// Tensors of the same shape get different streams.
	q, o := ir.LayerName(0, ir.RoleQ), ir.LayerName(0, ir.RoleO)
	if reflect.DeepEqual(values(t, base, q), values(t, base, o)) {
		t.Errorf("%s and %s hold the same values", q, o)
	}
	// Removing a layer leaves the others' values alone; a bf16 model
	// gets the same values rounded to bf16.
	fewer := cfg.Clone()
	fewer.Layers = fewer.Layers[:2]
	short, err := Random(lazyModel(fewer, ir.BF16), 3, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range short.TensorNames() {
		if short.Tensors[name].DType != ir.BF16 {
			t.Fatalf("%s is %v, want the input's bf16", name, short.Tensors[name].DType)
		}
		want, err := base.Tensors[name].Convert(ir.BF16)
		if err != nil {
			t.Fatal(err)
		}
		wv, _ := want.Float32()
		if !reflect.DeepEqual(values(t, short, name), wv) {
			t.Errorf("%s changed when layers 2 and 3 were removed", name)
		}
	}
}

func TestRandomRejectsStd(t *testing.T) {
	m := lazyModel(passtest.TinyConfig(len(passtest.Tokenizer().Pieces)), ir.F32)
	for _, std := range []float64{0, -0.1, math.NaN(), math.Inf(1)} {
		if _, err := Random(m, 1, std); err == nil || !strings.Contains(err.Error(), "std") {
			t.Errorf("std %g: error %v, want one about std", std, err)
		}
	}
}

const recipeSrc = passtest.Inputs + `
pass "init" {
  model = model.base
  into  = "scratch"
  seed  = 5
  std   = 0.1
}
`

func TestRun(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	fake := passtest.NewFake()
	man, err := env.Run(t, reg, recipeSrc, fake, pipeline.Events{})
	if err != nil {
		t.Fatal(err)
	}
	rec := passtest.Pass(t, man, "init")
	if rec.Into != "scratch" || fmt.Sprint(rec.Metrics["seed"]) != "5" || fmt.Sprint(rec.Metrics["std"]) != "0.1" {
		t.Errorf("record %+v", rec)
	}
	if got := len(fake.Calls); got != 0 {
		t.Errorf("%d backend calls, want none", got)
	}
	base, err := hf.Load(filepath.Join(env.Dir, "model"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	want, err := Random(base, 5, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := hf.Load(filepath.Join(env.Dir, "run", "passes", "00-init", "model"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if !reflect.DeepEqual(got.Config, base.Config) {
		t.Errorf("saved architecture %+v, want %+v", got.Config, base.Config)
	}
	if fmt.Sprint(rec.Metrics["params"]) != fmt.Sprint(base.Config.Params().Total) {
		t.Errorf("params metric %v, want %d", rec.Metrics["params"], base.Config.Params().Total)
	}
	for _, name := range want.TensorNames() {
		gv, wv := values(t, got, name), values(t, want, name)
		if !reflect.DeepEqual(gv, wv) {
			t.Errorf("%s: saved weights are not Random(base, 5, 0.1)", name)
		}
		if len(want.Tensors[name].Shape) > 1 && reflect.DeepEqual(gv, values(t, base, name)) {
			t.Errorf("%s: still the base model's weights", name)
		}
	}
}

func TestRecipeErrors(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	tests := []struct{ name, body, at, want string }{
		{"zero std", "  std = 0\n", "0\n", "std = 0 must be a positive number"},
		{"negative std", "  std = -1\n", "-1", "std = -1"},
		{"fractional seed", "  seed = 1.5\n", "1.5", `Invalid value for "seed"`},
		{"unknown attribute", "  mean = 0\n", "mean", "Unsupported argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := passtest.Inputs + "pass \"init\" {\n  model = model.base\n  into  = \"x\"\n" + tc.body + "}\n"
			at := passtest.Pos(t, src, tc.at)
			r, diags := env.Load(t, reg, src)
			if diags.HasErrors() {
				if !strings.Contains(diags.Error(), tc.want) || passtest.DiagPos(diags) != at {
					t.Errorf("diagnostics %q (at %s), want %q at %s", diags.Error(), passtest.DiagPos(diags), tc.want, at)
				}
				return
			}
			_, err := pipeline.MakePlan(r, reg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), at) {
				t.Errorf("plan error %v, want %q at %s", err, tc.want, at)
			}
		})
	}
}
