package prunewidth

import (
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

func iptr(v int) *int             { return &v }
func fptr(v float64) *float64     { return &v }
func ref(name string) *recipe.Ref { return &recipe.Ref{Kind: "scores", Name: name} }

func TestResolve(t *testing.T) {
	tests := []struct {
		name    string
		abs     *int
		ratio   *float64
		cur     int
		roundTo int
		want    int
		wantErr string
	}{
		{"unset keeps current", nil, nil, 172, 8, 172, ""},
		{"absolute", iptr(100), nil, 172, 8, 100, ""}, // round_to applies to ratios only
		{"absolute all", iptr(172), nil, 172, 0, 172, ""},
		{"absolute one", iptr(1), nil, 172, 0, 1, ""},
		{"absolute zero", iptr(0), nil, 172, 0, 0, "between 1 and the current 172"},
		{"absolute above current", iptr(173), nil, 172, 0, 0, "between 1"},
		{"both set", iptr(10), fptr(0.5), 172, 0, 0, "both set"},
		{"half", nil, fptr(0.5), 172, 0, 86, ""},
		{"ratio rounds to nearest", nil, fptr(0.3), 172, 0, 52, ""}, // 51.6
		{"ratio rounds half away", nil, fptr(0.25), 6, 0, 2, ""},    // 1.5
		{"ratio rounds down", nil, fptr(0.33), 10, 0, 3, ""},        // 3.3
		{"tiny ratio keeps one", nil, fptr(0.01), 10, 0, 1, ""},     // 0.1
		{"ratio one", nil, fptr(1), 172, 0, 172, ""},
		{"round_to 8 rounds down", nil, fptr(0.5), 172, 8, 80, ""},        // 86 -> 80
		{"round_to exact multiple", nil, fptr(0.5), 128, 8, 64, ""},       // 64
		{"round_to keeps one multiple", nil, fptr(0.25), 172, 64, 64, ""}, // 43 -> 64
		{"round_to capped at current", nil, fptr(0.5), 12, 64, 12, ""},
		{"round_to 1 is no rounding", nil, fptr(0.5), 171, 1, 86, ""}, // 85.5
		{"ratio zero", nil, fptr(0), 172, 0, 0, "(0, 1]"},
		{"ratio negative", nil, fptr(-0.5), 172, 0, 0, "(0, 1]"},
		{"ratio above one", nil, fptr(1.5), 172, 0, 0, "(0, 1]"},
		{"ratio NaN", nil, fptr(math.NaN()), 172, 0, 0, "(0, 1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolve("mlp", tc.abs, tc.ratio, tc.cur, tc.roundTo)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "mlp") {
					t.Errorf("resolve = %d, %v; want an error about mlp mentioning %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("resolve = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func testConfig() ir.Config {
	return ir.Config{
		Arch: "llama", Vocab: 11, Hidden: 16,
		Layers:  ir.UniformLayers(2, ir.LayerConfig{Heads: 8, KVHeads: 4, HeadDim: 2, MLP: 10}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 16, BOS: 1, EOS: 2,
	}
}

func TestTargets(t *testing.T) {
	tests := []struct {
		name    string
		c       Config
		want    targets
		wantErr string
	}{
		{"nothing set", Config{}, targets{hidden: 16, mlp: 10, heads: 8, kvHeads: 4}, ""},
		{"kv heads carry their groups", Config{KVHeads: iptr(2)}, targets{hidden: 16, mlp: 10, heads: 4, kvHeads: 2}, ""},
		{"heads within groups", Config{Heads: iptr(4)}, targets{hidden: 16, mlp: 10, heads: 4, kvHeads: 4}, ""},
		{"heads and kv", Config{Heads: iptr(2), KVHeadsRatio: fptr(0.5)}, targets{hidden: 16, mlp: 10, heads: 2, kvHeads: 2}, ""},
		{"ratios with round_to", Config{HiddenRatio: fptr(0.75), MLPRatio: fptr(0.5), RoundTo: 4}, targets{hidden: 12, mlp: 4, heads: 8, kvHeads: 4}, ""},
		{"heads not rounded", Config{HeadsRatio: fptr(0.5), RoundTo: 64}, targets{hidden: 16, mlp: 10, heads: 4, kvHeads: 4}, ""},
		{"heads uneven over groups", Config{Heads: iptr(6)}, targets{}, "evenly"},
		{"more heads per group than exist", Config{Heads: iptr(6), KVHeads: iptr(2)}, targets{}, "at most 2"},
		{"bad hidden", Config{Hidden: iptr(17)}, targets{}, "hidden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.targets(testConfig())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("targets = %+v, %v; want error mentioning %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("targets = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	nonUniform := testConfig()
	nonUniform.Layers[1].MLP = 9
	if _, err := (&Config{}).targets(nonUniform); err == nil || !strings.Contains(err.Error(), "homogeneous") {
		t.Errorf("non-uniform model: %v", err)
	}
}

func TestCheckCriterion(t *testing.T) {
	tests := []struct {
		c       Config
		wantErr string
	}{
		{Config{Scores: ref("act")}, ""},
		{Config{Scores: ref("act"), Criterion: "activation"}, ""},
		{Config{Criterion: "magnitude"}, ""},
		{Config{Criterion: "magnitude", Scores: ref("act")}, ""},
		{Config{}, "needs scores"},
		{Config{Criterion: "activation"}, "needs scores"},
		{Config{Criterion: "taylor", Scores: ref("act")}, `"taylor"`},
		{Config{Criterion: "random"}, ""},
		{Config{Criterion: "random", Seed: func() *int64 { v := int64(3); return &v }()}, ""},
		{Config{Scores: ref("act"), Seed: func() *int64 { v := int64(3); return &v }()}, "seed only"},
	}
	for _, tc := range tests {
		err := tc.c.checkCriterion()
		if (tc.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("criterion %q scores %v: %v, want %q", tc.c.Criterion, tc.c.Scores, err, tc.wantErr)
		}
	}
}

func TestPickHeads(t *testing.T) {
	// 8 heads in 4 groups of 2; group sums 6, 4, 9, 6.
	s := []float64{1, 5, 2, 2, 0, 9, 3, 3}
	tests := []struct {
		groups, perGroup int
		want             []int
	}{
		{4, 2, []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{1, 2, []int{4, 5}},
		{1, 1, []int{5}},
		// Groups 0 and 3 tie at 6: the lower index wins.
		{2, 1, []int{1, 5}},
		{2, 2, []int{0, 1, 4, 5}},
		{3, 1, []int{1, 5, 6}}, // group 3's heads tie: the first is kept
		{4, 1, []int{1, 2, 5, 6}},
	}
	for _, tc := range tests {
		if got := pickHeads(s, 2, tc.groups, tc.perGroup); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("pickHeads(%d groups, %d per group) = %v, want %v", tc.groups, tc.perGroup, got, tc.want)
		}
	}
}

func randomModel(t testing.TB, cfg ir.Config, seed uint64) *ir.Model {
	return irtest.RandomModel(t, cfg, rand.New(rand.NewPCG(seed, 5)))
}

func values(t *testing.T, m *ir.Model, name string) ([]float64, int) {
	t.Helper()
	tn, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	cols := 1
	if len(tn.Shape) == 2 {
		cols = tn.Shape[1]
	}
	return out, cols
}

// Sums of squares over rows [r0,r1) or columns [c0,c1) of a matrix.
func rowsSq(v []float64, cols, r0, r1 int) (s float64) {
	for _, x := range v[r0*cols : r1*cols] {
		s += x * x
	}
	return s
}

func colsSq(v []float64, cols, c0, c1 int) (s float64) {
	for r := 0; r < len(v)/cols; r++ {
		for c := c0; c < c1; c++ {
			s += v[r*cols+c] * v[r*cols+c]
		}
	}
	return s
}

// magnitudeByHand spells out which slices each unit owns, tensor by tensor.
func magnitudeByHand(t *testing.T, m *ir.Model) *scores.Table {
	c := m.Config
	tab := &scores.Table{Hidden: make([]float64, c.Hidden)}
	readers := []string{ir.RoleQ, ir.RoleK, ir.RoleV, ir.RoleGate, ir.RoleUp} // [*, hidden]
	writers := []string{ir.RoleO, ir.RoleDown}                                // [hidden, *]
	norms := []string{ir.RoleAttnNorm, ir.RoleMLPNorm}
	for ch := 0; ch < c.Hidden; ch++ {
		e, cols := values(t, m, ir.NameEmbed)
		s := colsSq(e, cols, ch, ch+1)
		if !c.Tied {
			w, cols := values(t, m, ir.NameClassifier)
			s += colsSq(w, cols, ch, ch+1)
		}
		f, _ := values(t, m, ir.NameFinalNorm)
		s += f[ch] * f[ch]
		for l := range c.Layers {
			for _, r := range readers {
				w, cols := values(t, m, ir.LayerName(l, r))
				s += colsSq(w, cols, ch, ch+1)
			}
			for _, r := range writers {
				w, cols := values(t, m, ir.LayerName(l, r))
				s += rowsSq(w, cols, ch, ch+1)
			}
			for _, r := range norms {
				w, _ := values(t, m, ir.LayerName(l, r))
				s += w[ch] * w[ch]
			}
		}
		tab.Hidden[ch] = math.Sqrt(s)
	}
	for l, lc := range c.Layers {
		gate, gc := values(t, m, ir.LayerName(l, ir.RoleGate))
		up, uc := values(t, m, ir.LayerName(l, ir.RoleUp))
		down, dc := values(t, m, ir.LayerName(l, ir.RoleDown))
		var mlp []float64
		for j := 0; j < lc.MLP; j++ {
			mlp = append(mlp, math.Sqrt(rowsSq(gate, gc, j, j+1)+rowsSq(up, uc, j, j+1)+colsSq(down, dc, j, j+1)))
		}
		q, qc := values(t, m, ir.LayerName(l, ir.RoleQ))
		o, oc := values(t, m, ir.LayerName(l, ir.RoleO))
		var heads []float64
		hd := lc.HeadDim
		for h := 0; h < lc.Heads; h++ {
			heads = append(heads, math.Sqrt(rowsSq(q, qc, h*hd, (h+1)*hd)+colsSq(o, oc, h*hd, (h+1)*hd)))
		}
		tab.MLP = append(tab.MLP, mlp)
		tab.Heads = append(tab.Heads, heads)
	}
	return tab
}

func approxEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-9*math.Max(1, math.Abs(b[i])) {
			return false
		}
	}
	return true
}

func TestMagnitudeMatchesHandNorms(t *testing.T) {
	for _, tied := range []bool{true, false} {
		cfg := testConfig()
		cfg.Tied = tied
		m := randomModel(t, cfg, 3)
		got, err := Magnitude(m)
		if err != nil {
			t.Fatal(err)
		}
		want := magnitudeByHand(t, m)
		if got.Method != "magnitude" {
			t.Errorf("method %q", got.Method)
		}
		if !approxEqual(got.Hidden, want.Hidden) {
			t.Errorf("tied=%v hidden norms\n got %v\nwant %v", tied, got.Hidden, want.Hidden)
		}
		for l := range cfg.Layers {
			if !approxEqual(got.MLP[l], want.MLP[l]) {
				t.Errorf("tied=%v layer %d mlp norms\n got %v\nwant %v", tied, l, got.MLP[l], want.MLP[l])
			}
			if !approxEqual(got.Heads[l], want.Heads[l]) {
				t.Errorf("tied=%v layer %d head norms\n got %v\nwant %v", tied, l, got.Heads[l], want.Heads[l])
			}
		}
	}
}

// A unit made of 3s and 4s has an exact norm, and a heavy unit ranks first.
func TestMagnitudeHandValues(t *testing.T) {
	cfg := ir.Config{Vocab: 2, Hidden: 2, Layers: []ir.LayerConfig{{Heads: 2, KVHeads: 1, HeadDim: 2, MLP: 3}}, NormEps: 1e-5, RopeTheta: 1e4, Tied: true, BOS: -1, EOS: -1}
	names, shapes := cfg.ExpectedShapes()
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}}
	for _, n := range names {
		k := 1
		for _, d := range shapes[n] {
			k *= d
		}
		m.Tensors[n] = ir.FromFloat32(ir.F32, shapes[n], make([]float32, k))
	}
	set := func(name string, v ...float32) {
		m.Tensors[name] = ir.FromFloat32(ir.F32, m.Tensors[name].Shape, v)
	}
	// MLP neuron 1: gate row (3, 0), up row (0, 0), down column (4, 0)
	// -> norm 5; neuron 2: down column (0, 1) -> 1; neuron 0: 0.
	set(ir.LayerName(0, ir.RoleGate), 0, 0, 3, 0, 0, 0)
	set(ir.LayerName(0, ir.RoleDown), 0, 4, 0, 0, 0, 1)
	// Head 1 owns q rows 2,3 = (1,2), (2,0) and o columns 2,3, which hold
	// a 4: sqrt(1+4+4+16) = 5. Head 0 owns q row 0 = (0,2): 2.
	set(ir.LayerName(0, ir.RoleQ), 0, 2, 0, 0, 1, 2, 2, 0)
	set(ir.LayerName(0, ir.RoleO), 0, 0, 4, 0, 0, 0, 0, 0)
	set(ir.NameFinalNorm, 12, 0)
	got, err := Magnitude(m)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{0, 5, 1}; !approxEqual(got.MLP[0], want) {
		t.Errorf("mlp norms %v, want %v", got.MLP[0], want)
	}
	if want := []float64{2, 5}; !approxEqual(got.Heads[0], want) {
		t.Errorf("head norms %v, want %v", got.Heads[0], want)
	}
	// Channel 0 (column 0 of readers, row 0 of writers, entry 0 of norms):
	// gate 3, q 1 and 2, o row 0 = (0,0,4,0), down row 0 = (0,4,0), final
	// norm 12: 9+1+4+16+16+144 = 190. Channel 1: q 2, 2; down row 1 = 1:
	// 4+4+1 = 9.
	if want := []float64{math.Sqrt(190), 3}; !approxEqual(got.Hidden, want) {
		t.Errorf("hidden norms %v, want %v", got.Hidden, want)
	}
	// The ranking the pass keeps by: neurons 1 then 2, head 1, channel 0.
	if k := scores.TopK(got.MLP[0], 2); !reflect.DeepEqual(k, []int{1, 2}) {
		t.Errorf("top 2 neurons %v, want [1 2]", k)
	}
	if k := scores.TopK(got.Heads[0], 1); !reflect.DeepEqual(k, []int{1}) {
		t.Errorf("top head %v, want [1]", k)
	}
	if k := scores.TopK(got.Hidden, 1); !reflect.DeepEqual(k, []int{0}) {
		t.Errorf("top channel %v, want [0]", k)
	}

	delete(m.Tensors, ir.LayerName(0, ir.RoleUp))
	if _, err := Magnitude(m); err == nil || !strings.Contains(err.Error(), "up_proj") {
		t.Errorf("Magnitude without up_proj: %v", err)
	}
}

func table(cfg ir.Config, r *rand.Rand) *scores.Table {
	s := &scores.Table{Hidden: make([]float64, cfg.Hidden)}
	for i := range s.Hidden {
		s.Hidden[i] = r.Float64()
	}
	for _, l := range cfg.Layers {
		mlp, heads := make([]float64, l.MLP), make([]float64, l.Heads)
		for i := range mlp {
			mlp[i] = r.Float64()
		}
		for i := range heads {
			heads[i] = r.Float64()
		}
		s.MLP = append(s.MLP, mlp)
		s.Heads = append(s.Heads, heads)
	}
	return s
}

// Prune keeps the top-k units by score, in their original order, with
// ties going to the lower index.
func TestPruneKeepsTopByScore(t *testing.T) {
	cfg := testConfig()
	m := randomModel(t, cfg, 4)
	s := table(cfg, rand.New(rand.NewPCG(1, 1)))
	s.Hidden = []float64{5, 1, 9, 9, 0, 3, 7, 2, 8, 8, 4, 6, 1, 0, 2, 3}
	s.MLP[0] = []float64{0.1, 0.9, 0.5, 0.9, 0.2, 0.3, 0.5, 0.5, 0, 1}
	s.MLP[1] = []float64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	s.Heads[0] = []float64{1, 5, 2, 2, 0, 9, 3, 3} // group sums 6 4 9 6
	s.Heads[1] = []float64{0, 0, 0, 0, 0, 0, 1, 0} // group 3 first, then 0
	out, err := Prune(m, s, 9, 4, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Validate(); err != nil {
		t.Fatal(err)
	}
	// Top 9 channels: the 9s, 8s, 7, 6, 5, 4 and, of the 3s at 5 and 15,
	// the lower index.
	keepHidden := []int{0, 2, 3, 5, 6, 8, 9, 10, 11}
	// Layer 0: 1, 0.9, 0.9 and the first of the 0.5s; layer 1 all tie.
	keepMLP := [][]int{{1, 3, 9, 2}, {0, 1, 2, 3}}
	keepHeads := [][]int{{1, 5}, {0, 6}}
	keepKV := [][]int{{0, 2}, {0, 3}}

	// Expected tensors, built by slicing the original directly.
	slice := func(name string, dim int, idx []int, block int) *ir.Tensor {
		var full []int
		for _, i := range idx {
			for j := 0; j < block; j++ {
				full = append(full, i*block+j)
			}
		}
		tn, err := m.Tensors[name].KeepIndices(dim, sortInts(full))
		if err != nil {
			t.Fatal(err)
		}
		return tn
	}
	for l := range cfg.Layers {
		checks := []struct {
			role      string
			dim       int
			idx       []int
			block     int
			hiddenDim int
		}{
			{ir.RoleGate, 0, keepMLP[l], 1, 1},
			{ir.RoleDown, 1, keepMLP[l], 1, 0},
			{ir.RoleQ, 0, keepHeads[l], 2, 1},
			{ir.RoleO, 1, keepHeads[l], 2, 0},
			{ir.RoleK, 0, keepKV[l], 2, 1},
			{ir.RoleV, 0, keepKV[l], 2, 1},
		}
		for _, c := range checks {
			n := ir.LayerName(l, c.role)
			want := slice(n, c.dim, c.idx, c.block)
			want, err := want.KeepIndices(c.hiddenDim, keepHidden)
			if err != nil {
				t.Fatal(err)
			}
			if !sameTensor(t, out.Tensors[n], want) {
				t.Errorf("%s: not the expected slice (mlp %v heads %v kv %v hidden %v)", n, keepMLP[l], keepHeads[l], keepKV[l], keepHidden)
			}
		}
	}
	if !sameTensor(t, out.Tensors[ir.NameFinalNorm], slice(ir.NameFinalNorm, 0, keepHidden, 1)) {
		t.Error("final norm: not the top hidden channels")
	}
	if got := out.Config.Params().Total; got >= m.Config.Params().Total {
		t.Errorf("pruning did not shrink the model: %d", got)
	}

	// Targets at the current sizes change nothing.
	same, err := Prune(m, s, 16, 10, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	for n, tn := range m.Tensors {
		if same.Tensors[n] != tn {
			t.Errorf("full-size prune replaced %s", n)
		}
	}
}

func sortInts(v []int) []int {
	out := append([]int(nil), v...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func sameTensor(t *testing.T, a, b *ir.Tensor) bool {
	t.Helper()
	if !reflect.DeepEqual(a.Shape, b.Shape) {
		return false
	}
	av, err := a.Float32()
	if err != nil {
		t.Fatal(err)
	}
	bv, err := b.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(av, bv)
}

func TestPruneErrors(t *testing.T) {
	cfg := testConfig()
	m := randomModel(t, cfg, 6)
	good := func() *scores.Table { return table(cfg, rand.New(rand.NewPCG(2, 2))) }
	tests := []struct {
		name                        string
		s                           func() *scores.Table
		hidden, mlp, heads, kvHeads int
		want                        string
	}{
		{"short hidden scores", func() *scores.Table { s := good(); s.Hidden = s.Hidden[:15]; return s }, 8, 5, 4, 2, "15 hidden"},
		{"missing layer", func() *scores.Table { s := good(); s.MLP = s.MLP[:1]; return s }, 8, 5, 4, 2, "layers"},
		{"short mlp scores", func() *scores.Table { s := good(); s.MLP[1] = s.MLP[1][:9]; return s }, 8, 5, 4, 2, "layer 1"},
		{"short head scores", func() *scores.Table { s := good(); s.Heads[0] = s.Heads[0][:7]; return s }, 8, 5, 4, 2, "layer 0"},
		{"zero kv heads", good, 8, 5, 4, 0, "KV heads"},
		{"zero mlp", good, 8, 0, 4, 2, "positive"},
		{"negative hidden", good, -1, 5, 4, 2, "positive"},
		{"heads not a multiple", good, 8, 5, 3, 2, "multiple"},
		{"more kv heads than exist", good, 8, 5, 5, 5, "cannot keep"},
		{"groups larger than before", good, 8, 5, 6, 2, "cannot keep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Prune(m, tc.s(), tc.hidden, tc.mlp, tc.heads, tc.kvHeads)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Prune = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// BenchmarkPrune measures a whole magnitude-scored width prune of an
// 80-layer model with tiny layers, so that the time is the bookkeeping
// (graphs, couplings, validation) rather than slicing weights.
func BenchmarkPrune(b *testing.B) {
	cfg := ir.Config{Vocab: 32, Hidden: 64, Layers: ir.UniformLayers(80, ir.LayerConfig{Heads: 8, KVHeads: 2, HeadDim: 8, MLP: 128}), NormEps: 1e-5, RopeTheta: 1e4}
	m := randomModel(b, cfg, 1)
	for b.Loop() {
		s, err := Magnitude(m)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Prune(m, s, 32, 64, 4, 1); err != nil {
			b.Fatal(err)
		}
	}
}
