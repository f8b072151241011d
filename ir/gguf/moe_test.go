package gguf

import (
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// writableMoE is irtest's mixture-of-experts config of a family as
// llama.cpp's architectures hold it: Qwen2-MoE's dense layer routed too
// (qwen2moe routes every layer).
func writableMoE(name string, c ir.Config) ir.Config {
	c = c.Clone()
	if name == "qwen2_moe" {
		for i, l := range c.Layers {
			if !l.MoE() {
				c.Layers[i] = c.Layers[0]
			}
		}
	}
	return c
}

// TestMoERoundTrip: IR → GGUF → IR for each MoE family (random weights):
// the config (expert keys, the family from the architecture) and the
// stacked tensors read back as written, also stored as BF16 and Q8_0
// (the experts quantized row by row, the routers kept F32).
func TestMoERoundTrip(t *testing.T) {
	fams := irtest.MoEFamilies()
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		c := writableMoE(name, fams[name])
		t.Run(name, func(t *testing.T) {
			m := randomModel(t, c)
			got, path := saveLoad(t, m, SaveOptions{})
			sameConfig(t, got.Config, c)
			compareTensors(t, &c, got.Tensors, m.Tensors)
			f := openGGUF(t, path)
			wantArch, _ := ggufArch(&c, false)
			if arch, _ := f.str(KeyArchitecture, true); arch != wantArch {
				t.Errorf("architecture %s, want %s", arch, wantArch)
			}
			for _, n := range []string{"blk.0.ffn_gate_exps.weight", "blk.0.ffn_down_exps.weight", "blk.0.ffn_gate_inp.weight"} {
				if _, ok := f.Info(n); !ok {
					t.Errorf("no tensor %s", n)
				}
			}

			q, qpath := saveLoad(t, m, SaveOptions{Quantize: "q8_0", DType: ptrTo(ir.BF16)})
			sameConfig(t, q.Config, c)
			qf := openGGUF(t, qpath)
			for _, ti := range qf.Tensors {
				want := GGMLQ8_0
				switch {
				case strings.Contains(ti.Name, "ffn_gate_inp") || len(ti.Dims) == 1:
					want = GGMLF32
				case ti.Dims[0]%qk != 0:
					want = GGMLF16
				}
				if ti.Type != want {
					t.Errorf("%s stored as %s, want %s", ti.Name, ti.Type, want)
				}
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestMoESaveRejects: mixtures of experts llama.cpp would run otherwise
// are refused, naming what differs.
func TestMoESaveRejects(t *testing.T) {
	fams := irtest.MoEFamilies()
	for _, tc := range []struct {
		fam  string
		edit func(c *ir.Config)
		want string
	}{
		{"qwen2_moe", func(c *ir.Config) {}, "routes every layer"},
		{"mixtral", func(c *ir.Config) { c.NormTopK = false }, "NormTopK"},
		{"qwen2_moe", func(c *ir.Config) { *c = writableMoE("qwen2_moe", *c); c.NormTopK = true }, "NormTopK"},
		{"qwen3_moe", func(c *ir.Config) { c.Layers[1].SharedMLP = 4 }, "shared expert"},
		{"mixtral", func(c *ir.Config) { c.Layers[1].Experts = 3 }, "one expert_count"},
		{"mixtral", func(c *ir.Config) { c.Arch = "qwen2"; c.AttnBias = true }, "has none"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			c := fams[tc.fam].Clone()
			tc.edit(&c)
			err := Save(randomModel(t, c), filepath.Join(t.TempDir(), "x.gguf"), SaveOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestMoESharedGateVector: a shared expert gate stored as a vector [n]
// (as llama.cpp declares it) reads as the IR's [1, n].
func TestMoESharedGateVector(t *testing.T) {
	c := writableMoE("qwen2_moe", irtest.MoEFamilies()["qwen2_moe"])
	m := randomModel(t, c)
	kvs, ts, err := saveLayout(m, "x.gguf", SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range ts {
		if strings.HasSuffix(ts[i].Name, "ffn_gate_inp_shexp.weight") {
			ts[i].Shape = ts[i].Shape[1:]
		}
	}
	path := filepath.Join(t.TempDir(), "x.gguf")
	if err := Write(path, kvs, ts); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	compareTensors(t, &c, got.Tensors, m.Tensors)
}

// llamaLogitsLoss writes tokens (rows, length) to a file and runs
// llama-logits on model over them.
func llamaLogitsLoss(t *testing.T, bin, model string, rows, length int, toks []int32) (float64, []float32) {
	t.Helper()
	tokPath := filepath.Join(t.TempDir(), "tokens.npy")
	if err := npy.WriteInt32(tokPath, []int{rows, length}, toks); err != nil {
		t.Fatal(err)
	}
	return llamaLogits(t, bin, model, tokPath)
}

// compareDecoder64 runs decoder64 on m over the same tokens and compares
// with llama.cpp's mean NLL and logits: llama.cpp's f16 KV cache bounds
// the agreement (see decoder64's TestMatchesLlamaCpp). It returns the
// largest logit difference of decoder64 with a plausible mistake made by
// perturb, which the bounds must see.
func compareDecoder64(t *testing.T, m *ir.Model, rows, length int, toks []int32, loss float64, logits []float32, perturb func(g *decoder64.Model)) (flipped float64) {
	t.Helper()
	g, err := decoder64.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	wrong := g.Clone()
	perturb(wrong)
	V := m.Config.Vocab
	if len(logits) != rows*length*V {
		t.Fatalf("%d logits, want %d", len(logits), rows*length*V)
	}
	var nll, worst float64
	for r := range rows {
		seq := make([]int, length)
		for j := range seq {
			seq[j] = int(toks[r*length+j])
		}
		for p, z := range wrong.Forward(seq, nil, nil) {
			for i, v := range z {
				flipped = max(flipped, math.Abs(v-float64(logits[(r*length+p)*V+i])))
			}
		}
		for p, z := range g.Forward(seq, nil, nil) {
			mx := slices.Max(z)
			var s float64
			for i, v := range z {
				worst = max(worst, math.Abs(v-float64(logits[(r*length+p)*V+i])))
				s += math.Exp(v - mx)
			}
			if p+1 < length {
				nll += mx + math.Log(s) - z[seq[p+1]]
			}
		}
	}
	nll /= float64(rows * (length - 1))
	t.Logf("mean NLL %.6f (llama.cpp %.6f, Δ %.2g); max |Δlogit| %.3g", nll, loss, nll-loss, worst)
	if !(math.Abs(nll-loss) <= 1e-3) {
		t.Errorf("mean NLL %.6f, llama.cpp %.6f", nll, loss)
	}
	if !(worst <= 0.1) {
		t.Errorf("max |Δlogit| %.3g with llama.cpp, want ≤ 0.1", worst)
	}
	return flipped
}

// TestMoEMatchesLlamaCpp is the independent check of the
// mixture of experts: decoder64 on the Mixtral fixture as ir/hf loads it
// against llama.cpp on whittle's GGUF export of it, before and after
// pruning experts (a different pair in each layer, so that the router's
// rows go with their experts), and a random Qwen2-MoE (shared expert with
// its sigmoid gate, top-k not renormalized; its fixture has a dense layer
// llama.cpp cannot run) with the fixture's tokenizer.
func TestMoEMatchesLlamaCpp(t *testing.T) {
	bin := shareddata.LlamaCpp(t, "llama-logits")
	const rows, length = 2, 16
	rng := rand.New(rand.NewPCG(13, 14))
	toks := make([]int32, rows*length)
	for i := range toks {
		toks[i] = int32(3 + rng.IntN(509))
	}
	mixtral := hfModel(t, "mixtral")
	pruned, err := mixtral.Keep(ir.Selection{Experts: map[int][]int{0: {1, 3}, 1: {0, 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if pruned.Config.Layers[0].Experts != 2 {
		t.Fatalf("pruned to %d experts", pruned.Config.Layers[0].Experts)
	}

	qc := ir.Config{Arch: "qwen2_moe", Vocab: 512, Hidden: 32, NormEps: 1e-6, RopeTheta: 1e6, MaxSeq: 64, BOS: 1, EOS: 2,
		AttnBias: true, ExpertsPerToken: 2,
		Layers: ir.UniformLayers(2, ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 8, Experts: 4, ExpertMLP: 16, SharedMLP: 24})}
	qwen := irtest.RandomModel(t, qc, rand.New(rand.NewPCG(15, 16)))
	for _, tt := range qwen.Tensors {
		// Weights of 0.3 keep the 2-layer model's logits in a range
		// where f16 rounding stays small.
		v, _ := tt.Float32()
		for i := range v {
			v[i] *= 0.3
		}
		*tt = *ir.FromFloat32(ir.F32, tt.Shape, v)
	}
	qwen.Tokenizer = mixtral.Tokenizer

	// The plausible mistakes: the top-k weighing flipped; after pruning
	// (where top-2 of 2 makes the weighing moot) the router's first rows
	// kept instead of the kept experts'.
	flip := func(g *decoder64.Model) { g.Config.NormTopK = !g.Config.NormTopK }
	unprunedRouter := func(g *decoder64.Model) {
		for l := range g.Config.Layers {
			name := g.Config.LayerTensors(l).Router
			r, err := mixtral.Tensors[name].Float32()
			if err != nil {
				t.Fatal(err)
			}
			for i := range g.W[name] {
				g.W[name][i] = float64(r[i])
			}
		}
	}
	for _, tc := range []struct {
		name  string
		m     *ir.Model
		wrong func(g *decoder64.Model)
	}{{"mixtral", mixtral, flip}, {"mixtral pruned to 2 experts", pruned, unprunedRouter}, {"qwen2_moe", qwen, flip}} {
		t.Run(tc.name, func(t *testing.T) {
			loss, logits := llamaLogitsLoss(t, bin, exportModel(t, tc.m), rows, length, toks)
			moved := compareDecoder64(t, tc.m, rows, length, toks, loss, logits, tc.wrong)
			t.Logf("perturbed: max |Δlogit| %.3g", moved)
			if !(moved > 0.15) {
				t.Errorf("the perturbation moves the logits by %.3g only: the bounds cannot see it", moved)
			}
		})
	}
}

// TestMoESplitExperts reads llama.cpp's older Mixtral layout, one tensor
// per expert (blk.N.ffn_gate.J.weight, as Mixtral GGUFs of early 2024
// have it): the Mixtral fixture written so reads as the stacked file
// does. (The shared llama.cpp build still names these tensors but no
// longer loads them: "missing tensor 'blk.0.ffn_down_exps.weight'".)
func TestMoESplitExperts(t *testing.T) {
	m := hfModel(t, "mixtral")
	f32 := ir.F32
	kvs, ts, err := saveLayout(m, "x.gguf", SaveOptions{DType: &f32})
	if err != nil {
		t.Fatal(err)
	}
	var split []WriteTensor
	re := regexp.MustCompile(`^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$`)
	for _, wt := range ts {
		mm := re.FindStringSubmatch(wt.Name)
		if mm == nil {
			split = append(split, wt)
			continue
		}
		e, size := wt.Shape[0], wt.Shape[1]*wt.Shape[2]*4
		for j := range e {
			data := wt.Data
			split = append(split, WriteTensor{Name: "blk." + mm[1] + ".ffn_" + mm[2] + "." + strconv.Itoa(j) + ".weight", Type: wt.Type, Shape: wt.Shape[1:],
				Data: func() ([]byte, error) {
					b, err := data()
					if err != nil {
						return nil, err
					}
					return b[j*size : (j+1)*size], nil
				}})
		}
	}
	if len(split) == len(ts) {
		t.Fatal("no stacked expert tensors to split")
	}
	path := filepath.Join(t.TempDir(), "split.gguf")
	if err := Write(path, kvs, split); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	sameConfig(t, got.Config, m.Config)
	compareTensors(t, &m.Config, got.Tensors, m.Tensors)

	// An expert missing is named.
	short := slices.DeleteFunc(slices.Clone(split), func(w WriteTensor) bool { return w.Name == "blk.1.ffn_up.3.weight" })
	if err := Write(path, kvs, short); err != nil {
		t.Fatal(err)
	}
	if m, err := Load(path); err == nil || !strings.Contains(err.Error(), "expert 3 is missing") {
		if err == nil {
			m.Close()
		}
		t.Errorf("without an expert: %v", err)
	}
}
