package ir_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/tokenizer"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

// smallConfig is a toy Llama with grouped-query attention (4 heads over 2
// KV groups) whose q width (16) differs from the hidden size (12), so a
// transposed coupling would not type-check.
func smallConfig(tied bool) ir.Config {
	return ir.Config{
		Arch: "llama", Vocab: 13, Hidden: 12,
		Layers:  ir.UniformLayers(3, ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 4, MLP: 10}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 32, Tied: tied, BOS: 1, EOS: 2,
	}
}

// randomModel fills every tensor the config implies with seeded Gaussian
// weights; norms sit around 1 so no layer is degenerate.
func randomModel(t *testing.T, cfg ir.Config, seed uint64) *ir.Model {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 99))
	names, shapes := cfg.ExpectedShapes()
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Source: "random"}
	for _, n := range names {
		tn := ir.NewTensor(ir.F32, shapes[n], nil)
		v := make([]float32, tn.NumElements())
		for i := range v {
			if len(shapes[n]) == 1 {
				v[i] = float32(1 + 0.2*r.NormFloat64())
			} else {
				v[i] = float32(0.4 * r.NormFloat64())
			}
		}
		m.Tensors[n] = ir.FromFloat32(ir.F32, shapes[n], v)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

var prompt = []int{1, 5, 7, 3, 11, 0, 12, 5}

// logits runs the float32 reference forward over prompt and returns the
// logits after every position.
func logits(t *testing.T, m *ir.Model) [][]float32 {
	t.Helper()
	rm, err := reference.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	s := rm.NewSession(0)
	var out [][]float32
	for _, tok := range prompt {
		l, err := s.Forward(tok)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]float32(nil), l...))
	}
	return out
}

// maxDiff is the largest elementwise difference, relative to max(1, |a|).
func maxDiff(a, b [][]float32) float64 {
	var d float64
	for i := range a {
		for j := range a[i] {
			x, y := float64(a[i][j]), float64(b[i][j])
			d = math.Max(d, math.Abs(x-y)/math.Max(1, math.Abs(x)))
		}
	}
	return d
}

func sameLogits(t *testing.T, what string, got, want [][]float32) {
	t.Helper()
	if d := maxDiff(got, want); d > 1e-5 {
		t.Errorf("%s: logits differ from the oracle by %g", what, d)
	}
}

// withEdit returns a shallow copy of m where tensor name is replaced by an
// edited copy; edit gets the values and the [rows, cols] of the matrix.
func withEdit(t *testing.T, m *ir.Model, name string, edit func(v []float32, rows, cols int)) *ir.Model {
	t.Helper()
	old := m.Tensors[name]
	v := mustFloat32(t, old)
	edit(v, old.Shape[0], old.NumElements()/old.Shape[0])
	ts := make(map[string]*ir.Tensor, len(m.Tensors))
	for k, x := range m.Tensors {
		ts[k] = x
	}
	ts[name] = ir.FromFloat32(old.DType, old.Shape, v)
	return &ir.Model{Config: m.Config.Clone(), Tensors: ts, Source: m.Source}
}

func zeroCols(cols ...int) func(v []float32, rows, n int) {
	return func(v []float32, rows, n int) {
		for r := 0; r < rows; r++ {
			for _, c := range cols {
				v[r*n+c] = 0
			}
		}
	}
}

func complement(n int, keep []int) []int {
	in := map[int]bool{}
	for _, k := range keep {
		in[k] = true
	}
	var out []int
	for i := 0; i < n; i++ {
		if !in[i] {
			out = append(out, i)
		}
	}
	return out
}

// unchanged fails if a transformation altered the model it was called on.
func unchanged(t *testing.T, m *ir.Model, cfg ir.Config, want [][]float32) {
	t.Helper()
	if !reflect.DeepEqual(m.Config, cfg) {
		t.Errorf("the source model's config changed: %+v", m.Config)
	}
	sameLogits(t, "source model after transformation", logits(t, m), want)
}

// Keeping a subset of MLP neurons computes exactly what the full model
// computes with the dropped neurons' down_proj columns zeroed.
func TestKeepMLPFunctional(t *testing.T) {
	for _, tied := range []bool{true, false} {
		m := randomModel(t, smallConfig(tied), 1)
		cfg0, base := m.Config.Clone(), logits(t, m)
		tests := []struct {
			layer int
			keep  []int
		}{
			{0, []int{0, 3, 4, 9}},
			{1, []int{7}},
			{2, []int{9, 1, 5, 2}}, // unsorted input is sorted
			{1, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		}
		for _, tc := range tests {
			t.Run(fmt.Sprintf("tied=%v/layer%d/%v", tied, tc.layer, tc.keep), func(t *testing.T) {
				got, err := m.KeepMLP(tc.layer, tc.keep)
				if err != nil {
					t.Fatal(err)
				}
				if got.Config.Layers[tc.layer].MLP != len(tc.keep) {
					t.Errorf("MLP width %d, want %d", got.Config.Layers[tc.layer].MLP, len(tc.keep))
				}
				oracle := withEdit(t, m, ir.LayerName(tc.layer, ir.RoleDown), zeroCols(complement(10, tc.keep)...))
				want := logits(t, oracle)
				if len(tc.keep) < 10 && maxDiff(want, base) < 1e-3 {
					t.Fatal("zeroing neurons did not change the oracle; the test would not notice a wrong cut")
				}
				sameLogits(t, "KeepMLP", logits(t, got), want)
				unchanged(t, m, cfg0, base)
			})
		}
	}
}

// Keeping a subset of query heads equals zeroing the dropped heads'
// o_proj columns; a KV group whose every head is dropped disappears.
func TestKeepHeadsFunctional(t *testing.T) {
	const hd = 4
	for _, tied := range []bool{true, false} {
		m := randomModel(t, smallConfig(tied), 2)
		cfg0, base := m.Config.Clone(), logits(t, m)
		tests := []struct {
			layer          int
			keep           []int
			heads, kvHeads int
			keptKV         []int
		}{
			{0, []int{0, 2}, 2, 2, []int{0, 1}},       // one head per group
			{1, []int{3, 1}, 2, 2, []int{0, 1}},       // the other one per group
			{2, []int{2, 3}, 2, 1, []int{1}},          // group 0 dropped whole
			{1, []int{0, 1}, 2, 1, []int{0}},          // group 1 dropped whole
			{0, []int{3}, 1, 1, []int{1}},             // a single head
			{2, []int{0, 1, 2, 3}, 4, 2, []int{0, 1}}, // identity
		}
		for _, tc := range tests {
			t.Run(fmt.Sprintf("tied=%v/layer%d/%v", tied, tc.layer, tc.keep), func(t *testing.T) {
				got, err := m.KeepHeads(tc.layer, tc.keep)
				if err != nil {
					t.Fatal(err)
				}
				l := got.Config.Layers[tc.layer]
				if l.Heads != tc.heads || l.KVHeads != tc.kvHeads || l.HeadDim != hd {
					t.Errorf("layer config %+v, want %d heads over %d KV heads", l, tc.heads, tc.kvHeads)
				}
				var dropped []int
				for _, h := range complement(4, tc.keep) {
					for j := 0; j < hd; j++ {
						dropped = append(dropped, h*hd+j)
					}
				}
				oracle := withEdit(t, m, ir.LayerName(tc.layer, ir.RoleO), zeroCols(dropped...))
				sameLogits(t, "KeepHeads", logits(t, got), logits(t, oracle))
				// K and V keep exactly the rows of the surviving groups.
				for _, role := range []string{ir.RoleK, ir.RoleV} {
					n := ir.LayerName(tc.layer, role)
					var rows []int
					for _, g := range tc.keptKV {
						for j := 0; j < hd; j++ {
							rows = append(rows, g*hd+j)
						}
					}
					want, _ := m.Tensors[n].KeepIndices(0, rows)
					if !reflect.DeepEqual(mustFloat32(t, got.Tensors[n]), mustFloat32(t, want)) {
						t.Errorf("%s does not hold the rows of KV groups %v", n, tc.keptKV)
					}
				}
				unchanged(t, m, cfg0, base)
			})
		}
	}
}

// A layer whose o_proj and down_proj are zero adds nothing to the residual
// stream, so dropping it leaves the logits as they were; dropping a real
// layer does not.
func TestDropLayersFunctional(t *testing.T) {
	for _, tied := range []bool{true, false} {
		m := randomModel(t, smallConfig(tied), 3)
		zero := func(v []float32, _, _ int) { clear(v) }
		m = withEdit(t, m, ir.LayerName(1, ir.RoleO), zero)
		m = withEdit(t, m, ir.LayerName(1, ir.RoleDown), zero)
		base := logits(t, m)

		got, err := m.DropLayers([]int{1})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Config.Layers) != 2 {
			t.Fatalf("%d layers left, want 2", len(got.Config.Layers))
		}
		sameLogits(t, "dropping an identity layer", logits(t, got), base)
		// Layer 2 is renumbered 1, sharing its tensors.
		for _, r := range ir.LayerRoles {
			if got.Tensors[ir.LayerName(1, r)] != m.Tensors[ir.LayerName(2, r)] {
				t.Errorf("new layer 1 %s is not old layer 2's", r)
			}
		}
		if _, ok := got.Tensors[ir.LayerName(2, ir.RoleQ)]; ok {
			t.Error("a layer-2 tensor survived")
		}

		real, err := m.DropLayers([]int{0})
		if err != nil {
			t.Fatal(err)
		}
		if maxDiff(logits(t, real), base) < 1e-3 {
			t.Error("dropping a real layer did not change the logits")
		}
		both, err := m.DropLayers([]int{2, 1})
		if err != nil || len(both.Config.Layers) != 1 || both.Tensors[ir.LayerName(0, ir.RoleQ)] != m.Tensors[ir.LayerName(0, ir.RoleQ)] {
			t.Errorf("DropLayers([2 1]) = %v", err)
		}
		if none, err := m.DropLayers(nil); err != nil || len(none.Config.Layers) != 3 {
			t.Errorf("DropLayers(nil) = %v", err)
		}
	}
}

func TestKeepHidden(t *testing.T) {
	for _, tied := range []bool{true, false} {
		t.Run(fmt.Sprintf("tied=%v", tied), func(t *testing.T) {
			m := randomModel(t, smallConfig(tied), 4)
			all := make([]int, 12)
			for i := range all {
				all[i] = i
			}
			id, err := m.KeepHidden(all)
			if err != nil {
				t.Fatal(err)
			}
			base := logits(t, m)
			if d := maxDiff(logits(t, id), base); d != 0 {
				t.Errorf("keeping every channel changed the logits by %g", d)
			}

			keep := []int{11, 0, 4, 5, 7} // sorted to 0 4 5 7 11
			sorted := []int{0, 4, 5, 7, 11}
			got, err := m.KeepHidden(keep)
			if err != nil {
				t.Fatal(err)
			}
			if err := got.Validate(); err != nil || got.Config.Hidden != 5 {
				t.Fatalf("hidden %d, Validate() = %v", got.Config.Hidden, err)
			}
			if len(got.Tensors) != len(m.Tensors) {
				t.Errorf("%d tensors, want %d", len(got.Tensors), len(m.Tensors))
			}
			// Matrices reading the residual stream lose columns, those
			// writing it lose rows, norms lose entries.
			for n, orig := range m.Tensors {
				v := mustFloat32(t, orig)
				var want []float32
				switch {
				case len(orig.Shape) == 1:
					for _, c := range sorted {
						want = append(want, v[c])
					}
				case strings.Contains(n, ir.RoleO) || strings.Contains(n, ir.RoleDown):
					cols := orig.Shape[1]
					for _, r := range sorted {
						want = append(want, v[r*cols:(r+1)*cols]...)
					}
				default:
					for r := 0; r < orig.Shape[0]; r++ {
						for _, c := range sorted {
							want = append(want, v[r*12+c])
						}
					}
				}
				if g := mustFloat32(t, got.Tensors[n]); !reflect.DeepEqual(g, want) {
					t.Errorf("%s: sliced values differ", n)
				}
			}
			if _, err := reference.Load(got); err != nil {
				t.Errorf("pruned model does not load: %v", err)
			}
		})
	}
}

// Transformations work on raw storage, so half-precision models stay so.
func TestTransformationsKeepDType(t *testing.T) {
	m := randomModel(t, smallConfig(false), 5)
	for n, tn := range m.Tensors {
		b, err := tn.Convert(ir.BF16)
		if err != nil {
			t.Fatal(err)
		}
		m.Tensors[n] = b
	}
	got, err := m.KeepMLP(0, []int{1, 2})
	if err == nil {
		got, err = got.KeepHeads(1, []int{0, 3})
	}
	if err == nil {
		got, err = got.KeepHidden([]int{1, 2, 3})
	}
	if err != nil {
		t.Fatal(err)
	}
	for n, tn := range got.Tensors {
		if tn.DType != ir.BF16 {
			t.Errorf("%s became %s", n, tn.DType)
		}
	}
}

func TestTransformationErrors(t *testing.T) {
	m := randomModel(t, smallConfig(true), 6)
	bad := m.Config.Clone()
	bad.Layers[0].KVHeads = 0
	broken := &ir.Model{Config: bad, Tensors: m.Tensors}
	tests := []struct {
		name string
		run  func() (*ir.Model, error)
		want string
	}{
		{"mlp layer out of range", func() (*ir.Model, error) { return m.KeepMLP(3, []int{0}) }, "layer 3"},
		{"mlp negative layer", func() (*ir.Model, error) { return m.KeepMLP(-1, []int{0}) }, "layer -1"},
		{"mlp index out of range", func() (*ir.Model, error) { return m.KeepMLP(0, []int{0, 10}) }, "10"},
		{"mlp negative index", func() (*ir.Model, error) { return m.KeepMLP(0, []int{-1}) }, "-1"},
		{"mlp duplicate", func() (*ir.Model, error) { return m.KeepMLP(0, []int{2, 2}) }, "increasing"},
		{"mlp empty", func() (*ir.Model, error) { return m.KeepMLP(0, nil) }, "empty"},
		{"heads layer out of range", func() (*ir.Model, error) { return m.KeepHeads(7, []int{0}) }, "layer 7"},
		{"heads index out of range", func() (*ir.Model, error) { return m.KeepHeads(0, []int{4}) }, "4"},
		{"heads duplicate", func() (*ir.Model, error) { return m.KeepHeads(0, []int{1, 1}) }, "increasing"},
		{"heads empty", func() (*ir.Model, error) { return m.KeepHeads(0, []int{}) }, "empty"},
		{"heads uneven per group", func() (*ir.Model, error) { return m.KeepHeads(0, []int{0, 1, 2}) }, "same number"},
		{"heads on invalid config", func() (*ir.Model, error) { return broken.KeepHeads(0, []int{0}) }, "kv heads"},
		{"drop all layers", func() (*ir.Model, error) { return m.DropLayers([]int{0, 1, 2}) }, "no model"},
		{"drop out of range", func() (*ir.Model, error) { return m.DropLayers([]int{3}) }, "layer 3"},
		{"drop negative", func() (*ir.Model, error) { return m.DropLayers([]int{-1}) }, "layer -1"},
		{"drop duplicate", func() (*ir.Model, error) { return m.DropLayers([]int{1, 1}) }, "twice"},
		{"hidden out of range", func() (*ir.Model, error) { return m.KeepHidden([]int{12}) }, "12"},
		{"hidden duplicate", func() (*ir.Model, error) { return m.KeepHidden([]int{3, 0, 3}) }, "increasing"},
		{"hidden empty", func() (*ir.Model, error) { return m.KeepHidden(nil) }, "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got (%v, %v), want an error mentioning %q", got != nil, err, tc.want)
			}
		})
	}
}

// Keep applies a selection over several axes and layers at once exactly as
// the single-axis transformations applied one after another do.
func TestKeepSelectionMatchesSteps(t *testing.T) {
	for _, tied := range []bool{true, false} {
		m := randomModel(t, smallConfig(tied), 8)
		sel := ir.Selection{
			Hidden: []int{7, 0, 3, 11, 5},
			MLP:    map[int][]int{0: {9, 1, 4}, 2: {0}},
			Heads:  map[int][]int{1: {3, 2}, 2: {0, 3}},
		}
		got, err := m.Keep(sel)
		if err != nil {
			t.Fatal(err)
		}
		want := m
		steps := []func(*ir.Model) (*ir.Model, error){
			func(m *ir.Model) (*ir.Model, error) { return m.KeepMLP(0, sel.MLP[0]) },
			func(m *ir.Model) (*ir.Model, error) { return m.KeepMLP(2, sel.MLP[2]) },
			func(m *ir.Model) (*ir.Model, error) { return m.KeepHeads(1, sel.Heads[1]) },
			func(m *ir.Model) (*ir.Model, error) { return m.KeepHeads(2, sel.Heads[2]) },
			func(m *ir.Model) (*ir.Model, error) { return m.KeepHidden(sel.Hidden) },
		}
		for i, step := range steps {
			if want, err = step(want); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		if !reflect.DeepEqual(got.Config, want.Config) {
			t.Errorf("tied=%v: Keep config %+v, steps %+v", tied, got.Config, want.Config)
		}
		for _, n := range want.TensorNames() {
			a, _ := got.Tensor(n)
			b, _ := want.Tensor(n)
			av, err := a.Float32()
			if err != nil {
				t.Fatal(err)
			}
			bv, err := b.Float32()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a.Shape, b.Shape) || !slices.Equal(av, bv) {
				t.Errorf("tied=%v: %s differs (shapes %v, %v)", tied, n, a.Shape, b.Shape)
			}
		}
		if len(got.Tensors) != len(want.Tensors) {
			t.Errorf("tied=%v: Keep has %d tensors, steps %d", tied, len(got.Tensors), len(want.Tensors))
		}
		// The empty selection keeps everything.
		if same, err := m.Keep(ir.Selection{}); err != nil {
			t.Errorf("tied=%v: empty selection: %v", tied, err)
		} else if !reflect.DeepEqual(same.Config, m.Config) {
			t.Errorf("tied=%v: empty selection changed the config to %+v", tied, same.Config)
		}
	}
}

// A model missing a tensor the transformation needs reports it by name.
func TestTransformationMissingTensor(t *testing.T) {
	m := randomModel(t, smallConfig(true), 7)
	delete(m.Tensors, ir.LayerName(1, ir.RoleUp))
	for name, run := range map[string]func() (*ir.Model, error){
		"KeepMLP":    func() (*ir.Model, error) { return m.KeepMLP(1, []int{0}) },
		"KeepHidden": func() (*ir.Model, error) { return m.KeepHidden([]int{0}) },
		"DropLayers": func() (*ir.Model, error) { return m.DropLayers([]int{0}) },
	} {
		if _, err := run(); err == nil || !strings.Contains(err.Error(), "up_proj") {
			t.Errorf("%s: error %v does not name the missing tensor", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	q1 := ir.LayerName(1, ir.RoleQ)
	tests := []struct {
		name   string
		tied   bool
		mutate func(m *ir.Model)
		want   []string // substrings of the error; nil means valid
	}{
		{"valid tied", true, func(m *ir.Model) {}, nil},
		{"valid untied", false, func(m *ir.Model) {}, nil},
		{"wrong shape", true, func(m *ir.Model) {
			m.Tensors[q1] = ir.FromFloat32(ir.F32, []int{12, 16}, make([]float32, 192))
		}, []string{q1, "[12 16]", "[16 12]"}},
		{"wrong rank", true, func(m *ir.Model) {
			m.Tensors[ir.NameFinalNorm] = ir.FromFloat32(ir.F32, []int{12, 1}, make([]float32, 12))
		}, []string{ir.NameFinalNorm}},
		{"missing", false, func(m *ir.Model) { delete(m.Tensors, ir.NameClassifier) }, []string{"missing", ir.NameClassifier}},
		{"extra", true, func(m *ir.Model) {
			m.Tensors[ir.NameClassifier] = m.Tensors[ir.NameEmbed]
		}, []string{"unexpected", ir.NameClassifier}},
		{"bad config", true, func(m *ir.Model) { m.Config.Layers[2].KVHeads = 3 }, []string{"layer 2"}},
		{"config and tensors disagree", true, func(m *ir.Model) { m.Config.Layers[0].MLP = 9 }, []string{"mlp.gate_proj"}},
		{"tokenizer size", true, func(m *ir.Model) {
			m.Tokenizer = &tokenizer.Tokenizer{Pieces: make([]string, 12)}
		}, []string{"12 pieces", "13"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := randomModel(t, smallConfig(tc.tied), 8)
			m.Source = "toy.bin"
			tc.mutate(m)
			err := m.Validate()
			if tc.want == nil {
				if err != nil {
					t.Errorf("Validate() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil")
			}
			for _, w := range append(tc.want, "toy.bin") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestModelAccessors(t *testing.T) {
	for _, tied := range []bool{true, false} {
		m := randomModel(t, smallConfig(tied), 9)
		cls, err := m.Classifier()
		want := ir.NameClassifier
		if tied {
			want = ir.NameEmbed
		}
		if err != nil || cls != m.Tensors[want] {
			t.Errorf("tied=%v: Classifier() is not %s (%v)", tied, want, err)
		}
		names, _ := m.Config.ExpectedShapes()
		if got := m.TensorNames(); !reflect.DeepEqual(got, names) {
			t.Errorf("TensorNames() = %v", got)
		}
	}
	m := randomModel(t, smallConfig(true), 9)
	if _, err := m.Tensor("nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Tensor(nope) = %v", err)
	}
}

type closer struct{ n *int }

func (c closer) Close() error { *c.n++; return nil }

func TestModelClose(t *testing.T) {
	var n int
	m := &ir.Model{}
	m.AddCloser(closer{&n})
	m.AddCloser(closer{&n})
	if err := m.Close(); err != nil || n != 2 {
		t.Errorf("Close() = %v after %d closes", err, n)
	}
	if err := m.Close(); err != nil || n != 2 {
		t.Errorf("second Close() = %v, closed %d times", err, n)
	}
}
