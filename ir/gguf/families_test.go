package gguf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/ir/safetensors"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// familiesDir holds one tiny checkpoint per family in its Hugging Face
// layout and, for the families the shared llama.cpp runs, llama.cpp's own
// f32 conversion <fam>-llamacpp.gguf (gen.py there).
const familiesDir = "../testdata/families"

// llamaCppFamilies are the fixtures with a llama.cpp conversion; decilm
// is a Llama whose layers differ, in DeciLM's layout (gen_decilm.py),
// converted to llama.cpp's deci architecture.
var llamaCppFamilies = []string{"llama3", "mistral", "qwen2", "gemma2", "mixtral", "decilm"}

// hfModel is the fixture as ir/hf loads it.
func hfModel(t *testing.T, fam string) *ir.Model {
	t.Helper()
	m, err := hf.Load(filepath.Join(familiesDir, fam))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// asConverter is the config of a fixture as llama.cpp's converter reads
// it: for llama3 RoPE scaling it takes the original context from a
// top-level original_max_position_embeddings, 8192 when absent, not from
// rope_scaling (as transformers does); and Mistral is Llama to it.
func asConverter(t *testing.T, fam string, c ir.Config) ir.Config {
	t.Helper()
	c = c.Clone()
	if c.Arch == "mistral" {
		c.Arch = archLlama
	}
	if s := c.RopeScaling; s != nil && s.Type == "llama3" {
		raw, err := os.ReadFile(filepath.Join(familiesDir, fam, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var top struct {
			Orig *int `json:"original_max_position_embeddings"`
		}
		if err := json.Unmarshal(raw, &top); err != nil {
			t.Fatal(err)
		}
		s.OriginalMaxPos = converterOrigCtx
		if top.Orig != nil {
			s.OriginalMaxPos = *top.Orig
		}
	}
	return c
}

// isGemmaNorm reports whether a tensor of c is a norm weight stored as
// 1 + w (every norm of Gemma 2).
func isGemmaNorm(c *ir.Config, name string) bool {
	return c.NormOffset != 0 && strings.HasSuffix(name, "norm.weight")
}

// compareTensors checks got against want element-wise: bitwise, except
// Gemma's norms, which reach the IR as (1 + w) - 1 in float32 and may
// differ from w by the rounding of 1 + w: half a float32 ulp of 1 + w.
func compareTensors(t *testing.T, c *ir.Config, got, want map[string]*ir.Tensor) {
	t.Helper()
	if g, w := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(g, w) {
		t.Fatalf("tensors\n got %v\nwant %v", g, w)
	}
	for n, wt := range want {
		gt := got[n]
		a, err := gt.Float32()
		if err != nil {
			t.Fatal(err)
		}
		b, err := wt.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(gt.Shape, wt.Shape) {
			t.Errorf("%s: shape %v, want %v", n, gt.Shape, wt.Shape)
			continue
		}
		gemma := isGemmaNorm(c, n)
		for i := range b {
			if math.Float32bits(a[i]) == math.Float32bits(b[i]) {
				continue
			}
			if gemma && math.Abs(float64(a[i]-b[i])) <= halfULP(b[i]+1) {
				continue
			}
			t.Errorf("%s[%d] = %g, want %g", n, i, a[i], b[i])
			break
		}
	}
}

// halfULP is half the float32 spacing at |x|.
func halfULP(x float32) float64 {
	x = float32(math.Abs(float64(x)))
	return float64(math.Nextafter32(x, float32(math.Inf(1)))-x) / 2
}

// sameConfig compares configs; a llama3 RoPE scaling is compared by the
// frequencies it gives, since llama.cpp's rope_freqs tensor fixes only
// those (the converter assumes an original context of 8192).
func sameConfig(t *testing.T, got, want ir.Config) {
	t.Helper()
	g, w := got.Clone(), want.Clone()
	if w.RopeScaling != nil && w.RopeScaling.Type == "llama3" && g.RopeScaling != nil {
		hd := w.Layers[0].HeadDim
		gf, wf := g.RopeInvFreq(hd), w.RopeInvFreq(hd)
		for i := range wf {
			if math.Abs(gf[i]-wf[i]) > 1e-6*wf[i] {
				t.Errorf("RoPE frequency %d: %g, want %g", i, gf[i], wf[i])
			}
		}
		g.RopeScaling, w.RopeScaling = nil, nil
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("config\n got %+v\nwant %+v", g, w)
	}
}

// TestFamiliesReadLlamaCppConversions reads llama.cpp's own conversion of
// each fixture: the config (family options included) and the tensors are
// the ones ir/hf reads from the fixture (as the converter reads it, see
// asConverter).
func TestFamiliesReadLlamaCppConversions(t *testing.T) {
	for _, fam := range llamaCppFamilies {
		t.Run(fam, func(t *testing.T) {
			ref := hfModel(t, fam)
			m, err := Load(filepath.Join(familiesDir, fam+"-llamacpp.gguf"))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			sameConfig(t, m.Config, asConverter(t, fam, ref.Config))
			compareTensors(t, &ref.Config, m.Tensors, ref.Tensors)
		})
	}
}

// exportFamily writes whittle's F32 GGUF of a fixture as the converter
// reads it (asConverter).
func exportFamily(t *testing.T, fam string) string {
	t.Helper()
	m := hfModel(t, fam)
	m.Config = asConverter(t, fam, m.Config)
	return exportModel(t, m)
}

func exportModel(t *testing.T, m *ir.Model) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "whittle.gguf")
	f32 := ir.F32
	if err := Save(m, path, SaveOptions{DType: &f32}); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFamiliesExportRopeFreqs: whittle's export of the llama3 fixture
// carries the fixture's RoPE frequencies and reads back as the fixture's
// scaling exactly (its original context, 64, is recorded; llama.cpp's
// file, divisors only, reads back as an equivalent scaling).
func TestFamiliesExportRopeFreqs(t *testing.T) {
	m := hfModel(t, "llama3")
	path := exportModel(t, m)
	checkInvFreq(t, openGGUF(t, path), &m.Config)
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if got, want := back.Config.RopeScaling, m.Config.RopeScaling; !reflect.DeepEqual(got, want) {
		t.Errorf("scaling %+v, want %+v", got, want)
	}
}

// computeKeys are the metadata keys llama.cpp's forward pass reads, per
// architecture, with the value llama.cpp assumes when a key is absent
// (nil: required, or no default worth comparing).
func computeKeys(f *File) map[string]string {
	arch, _ := f.str(KeyArchitecture, true)
	ak := func(k string) string { return archKeyOf(arch, k) }
	str := func(key string, def func() string) string {
		if v, ok := f.Get(key); ok {
			if x, ok := v.Float(); ok && v.Type == TypeFloat32 {
				return fmt.Sprint(float32(x))
			}
			return v.String()
		}
		if def != nil {
			return def()
		}
		return "absent"
	}
	out := map[string]string{KeyArchitecture: arch}
	for _, k := range []string{keyContext, keyEmbedding, keyBlocks, keyFFN, keyHeads, keyKVHeads, keyRMSEps,
		keyRopeType, keyRopeFactor, keyRopeLinear, keyExperts, keyExpertsUsed, keyExpertFFN, keySharedExpertFFN} {
		out[ak(k)] = str(ak(k), nil)
	}
	headDim := func() string {
		e, _, _ := f.size(ak(keyEmbedding))
		h, _, _ := f.size(ak(keyHeads))
		return fmt.Sprint(e / max(h, 1))
	}
	out[ak(keyKeyLength)] = str(ak(keyKeyLength), headDim)
	out[ak(keyValueLength)] = str(ak(keyValueLength), headDim)
	out[ak(keyRopeDim)] = str(ak(keyRopeDim), func() string { return out[ak(keyKeyLength)] })
	out[ak(keyRopeBase)] = str(ak(keyRopeBase), func() string { return "10000" })
	switch arch {
	case archGemma2:
		out[ak(keyAttnSoftCap)] = str(ak(keyAttnSoftCap), func() string { return "50" })
		out[ak(keyFinalSoftCap)] = str(ak(keyFinalSoftCap), func() string { return "30" })
		out[ak(keySlidingWindow)] = str(ak(keySlidingWindow), func() string { return "4096" })
	case archPhi3:
		out[ak(keySlidingWindow)] = str(ak(keySlidingWindow), func() string { return "0" })
	}
	for _, k := range []string{KeyTokModel, KeyTokTokens, KeyTokBOS, KeyTokEOS} {
		out[k] = str(k, nil)
	}
	return out
}

// TestFamiliesExportMatchesLlamaCpp: whittle's GGUF of each fixture is
// equivalent to llama.cpp's conversion: the same tensors (names, types,
// shapes, bytes: Gemma's 1 + w included, which both compute in float32)
// and the same values of the metadata the forward pass reads.
func TestFamiliesExportMatchesLlamaCpp(t *testing.T) {
	for _, fam := range llamaCppFamilies {
		t.Run(fam, func(t *testing.T) {
			got := openGGUF(t, exportFamily(t, fam))
			want := openGGUF(t, filepath.Join(familiesDir, fam+"-llamacpp.gguf"))
			if g, w := computeKeys(got), computeKeys(want); !reflect.DeepEqual(g, w) {
				for k := range w {
					if g[k] != w[k] {
						t.Errorf("%s: whittle %.80s, llama.cpp %.80s", k, g[k], w[k])
					}
				}
			}
			if len(got.Tensors) != len(want.Tensors) {
				t.Errorf("%d tensors, llama.cpp %d", len(got.Tensors), len(want.Tensors))
			}
			for i := range want.Tensors {
				wi := &want.Tensors[i]
				gi, ok := got.Info(wi.Name)
				if !ok {
					t.Errorf("tensor %s missing from whittle's export", wi.Name)
					continue
				}
				if gi.Type != wi.Type || !slices.Equal(gi.Dims, wi.Dims) {
					t.Errorf("tensor %s: %s %v, llama.cpp %s %v", wi.Name, gi.Type, gi.Dims, wi.Type, wi.Dims)
					continue
				}
				a, err := got.raw(gi)
				if err != nil {
					t.Fatal(err)
				}
				b, err := want.raw(wi)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(a, b) {
					t.Errorf("tensor %s differs from llama.cpp's", wi.Name)
				}
			}
		})
	}
}

// TestFamiliesLogitsMatchLlamaCpp runs llama.cpp's forward pass on
// whittle's export and on llama.cpp's conversion of each fixture.
func TestFamiliesLogitsMatchLlamaCpp(t *testing.T) {
	bin := shareddata.LlamaCpp(t, "llama-logits")
	const rows, length, vocab = 2, 16, 512
	r := rand.New(rand.NewPCG(7, 8))
	toks := make([]int32, rows*length)
	for i := range toks {
		toks[i] = int32(3 + r.IntN(vocab-3))
	}
	dir := t.TempDir()
	tokPath := filepath.Join(dir, "tokens.npy")
	if err := npy.WriteInt32(tokPath, []int{rows, length}, toks); err != nil {
		t.Fatal(err)
	}
	logits := func(t *testing.T, model string) []float32 {
		_, z := llamaLogits(t, bin, model, tokPath)
		return z
	}
	for _, fam := range llamaCppFamilies {
		t.Run(fam, func(t *testing.T) {
			got := logits(t, exportFamily(t, fam))
			want := logits(t, filepath.Join(familiesDir, fam+"-llamacpp.gguf"))
			if len(got) != rows*length*vocab || len(got) != len(want) {
				t.Fatalf("%d and %d logits, want %d", len(got), len(want), rows*length*vocab)
			}
			var worst float64
			for i := range got {
				worst = max(worst, math.Abs(float64(got[i]-want[i])))
			}
			if worst > 1e-4 {
				t.Errorf("max |Δlogit| = %g between whittle's export and llama.cpp's conversion", worst)
			}
		})
	}
}

// writableFamily is irtest's config of a family as GGUF can hold it, and
// the config reading it back gives: Mistral's sliding window is dropped
// (llama.cpp's llama architecture has none) and it reads back as llama;
// Gemma 2's query_pre_attn_scalar is the head size llama.cpp implies.
func writableFamily(name string, c ir.Config) (write, read ir.Config) {
	write = c.Clone()
	switch name {
	case "mistral":
		for i := range write.Layers {
			write.Layers[i].Window = 0
		}
	case "gemma2":
		write.AttnScalar = float64(write.Layers[0].HeadDim)
	}
	read = write.Clone()
	if read.Arch == "mistral" {
		read.Arch = archLlama
	}
	return write, read
}

// TestFamiliesRoundTrip: GGUF → IR → GGUF for every family (random
// weights, every option on): the config and tensors read back are the
// ones written (Gemma norms to half an ulp of 1 + w, see compareTensors),
// and writing them again gives the same file data.
func TestFamiliesRoundTrip(t *testing.T) {
	for name, c := range irtest.Families() {
		t.Run(name, func(t *testing.T) {
			wc, rc := writableFamily(name, c)
			m := randomModel(t, wc)
			got, path := saveLoad(t, m, SaveOptions{})
			sameConfig(t, got.Config, rc)
			compareTensors(t, &rc, got.Tensors, m.Tensors)

			again, path2 := saveLoad(t, got, SaveOptions{})
			sameConfig(t, again.Config, rc)
			a, b := openGGUF(t, path), openGGUF(t, path2)
			if len(a.Tensors) != len(b.Tensors) {
				t.Fatalf("%d tensors, then %d", len(a.Tensors), len(b.Tensors))
			}
			for i := range a.Tensors {
				ai := &a.Tensors[i]
				bi, ok := b.Info(ai.Name)
				if !ok || bi.Type != ai.Type || !slices.Equal(bi.Dims, ai.Dims) {
					t.Errorf("tensor %s: %v then %v", ai.Name, ai, bi)
					continue
				}
				x, _ := a.Tensor(ai.Name)
				y, _ := b.Tensor(ai.Name)
				xv, err := x.Float32()
				if err != nil {
					t.Fatal(err)
				}
				yv, err := y.Float32()
				if err != nil {
					t.Fatal(err)
				}
				for j := range xv {
					// 1 + ((1 + w) - 1) is 1 + w unless (1 + w) - 1 rounded.
					if xv[j] != yv[j] && !(rc.NormOffset != 0 && strings.HasSuffix(ai.Name, "norm.weight") && math.Abs(float64(xv[j]-yv[j])) <= 2*halfULP(xv[j])) {
						t.Errorf("tensor %s[%d]: %g, then %g", ai.Name, j, xv[j], yv[j])
						break
					}
				}
			}
		})
	}
}

// TestFamiliesSaveRejects: options an architecture cannot express are
// refused with an error naming them.
func TestFamiliesSaveRejects(t *testing.T) {
	fams := irtest.Families()
	cases := []struct {
		fam  string
		edit func(c *ir.Config)
		want string
	}{
		{"mistral", func(c *ir.Config) {}, "no sliding-window attention"},
		{"qwen2", func(c *ir.Config) { c.AttnBias = false }, "AttnBias"},
		{"llama", func(c *ir.Config) { c.QKNorm = true }, "QKNorm"},
		{"llama", func(c *ir.Config) { c.AttnSoftCap = 5 }, "soft caps"},
		{"qwen3", func(c *ir.Config) { c.Layers[1].MLP = 12 }, "layers differ in size"},
		{"qwen2", func(c *ir.Config) {
			c.RopeScaling = &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 16}
		}, "rope_freqs"},
		{"gemma2", func(c *ir.Config) {}, "query_pre_attn_scalar"},
		{"gemma2", func(c *ir.Config) { c.AttnScalar = 8; c.Layers[1].Window = 4 }, "every even layer"},
		{"gemma2", func(c *ir.Config) { c.AttnScalar = 8; c.AttnSoftCap = 0 }, "always caps"},
		{"gemma2", func(c *ir.Config) { c.AttnScalar = 8; c.Tied = false }, "untied"},
		{"phi3", func(c *ir.Config) { c.Layers[0].Window = 3 }, "one window for every layer"},
		{"phi3", func(c *ir.Config) {
			for i := range c.Layers {
				c.Layers[i].HeadDim = 6
			}
		}, "heads × head size"},
	}
	for _, tc := range cases {
		c := fams[tc.fam].Clone()
		tc.edit(&c)
		m := randomModel(t, c)
		path := filepath.Join(t.TempDir(), "x.gguf")
		err := Save(m, path, SaveOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.fam, err, tc.want)
		}
	}
}

// TestFamiliesLoadErrors: a fused Phi-3 tensor of the wrong size and a
// tensor of another architecture are refused, naming the tensor.
func TestFamiliesLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		fam  string
		edit func(ts []WriteTensor) []WriteTensor
		want string
	}{
		{"phi3", func(ts []WriteTensor) []WriteTensor {
			for i := range ts {
				if ts[i].Name == "blk.0.attn_qkv.weight" {
					ts[i].Shape = []int{ts[i].Shape[0] - 1, ts[i].Shape[1]}
					d := ts[i].Data
					ts[i].Data = func() ([]byte, error) { b, err := d(); return b[:len(b)-4*ts[i].Shape[1]], err }
				}
			}
			return ts
		}, `"blk.0.attn_qkv.weight" has shape`},
		{"llama", func(ts []WriteTensor) []WriteTensor {
			return append(ts, WriteTensor{Name: "blk.0.attn_q_norm.weight", Type: GGMLF32, Shape: []int{6}, Data: func() ([]byte, error) { return make([]byte, 24), nil }})
		}, `"blk.0.attn_q_norm.weight" is not part of the llama architecture`},
	} {
		t.Run(tc.fam, func(t *testing.T) {
			wc, _ := writableFamily(tc.fam, irtest.Families()[tc.fam])
			kvs, ts, err := saveLayout(randomModel(t, wc), "x.gguf", SaveOptions{})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "x.gguf")
			if err := Write(path, kvs, tc.edit(ts)); err != nil {
				t.Fatal(err)
			}
			m, err := Load(path)
			if err == nil {
				m.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestPhi3MatchesConverterLayout: the shared llama.cpp cannot run the
// Phi-3 fixture (its vocabulary loader wants Phi-3's special tokens), so
// its layout is checked against what the converter does with it: it
// copies qkv_proj to attn_qkv and gate_up_proj to ffn_up unchanged. The
// fixture as ir/hf splits it (q, k, v; gate, up), written by Save, has
// the checkpoint's fused tensors, bit for bit, and its window, and reads
// back as the same model.
func TestPhi3MatchesConverterLayout(t *testing.T) {
	m := hfModel(t, "phi3")
	raw, err := safetensors.Open(filepath.Join(familiesDir, "phi3", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	path := exportModel(t, m)
	f := openGGUF(t, path)
	for i := range m.Config.Layers {
		for gname, hname := range map[string]string{
			fmt.Sprintf("blk.%d.attn_qkv.weight", i): fmt.Sprintf("model.layers.%d.self_attn.qkv_proj.weight", i),
			fmt.Sprintf("blk.%d.ffn_up.weight", i):   fmt.Sprintf("model.layers.%d.mlp.gate_up_proj.weight", i),
		} {
			got, err := f.Tensor(gname)
			if err != nil {
				t.Fatal(err)
			}
			want, err := raw.Tensor(hname)
			if err != nil {
				t.Fatal(err)
			}
			a, err := got.Float32()
			if err != nil {
				t.Fatal(err)
			}
			b, err := want.Float32()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a, b) || !slices.Equal(got.Shape, want.Shape) {
				t.Errorf("%s is not %s", gname, hname)
			}
		}
	}
	if w, ok := f.Get(archKeyOf(archPhi3, keySlidingWindow)); !ok || w.String() != fmt.Sprint(m.Config.Layers[0].Window) {
		t.Errorf("sliding window %v, want the fixture's %d", w, m.Config.Layers[0].Window)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	sameConfig(t, back.Config, m.Config)
	compareTensors(t, &m.Config, back.Tensors, m.Tensors)
}

// TestLlamaCppRefusesWhatItCannotRun: Save writes two things GGUF holds
// but the shared llama.cpp build does not run, on the grounds that
// llama.cpp refuses them loudly rather than computing something else: a
// qwen2 whose heads × head size differs from the hidden size (as after
// head pruning; this build sizes qwen2's attention by the hidden size)
// and a gemma2 of a layer count other than 26, 42 or 46 (this build picks
// Gemma 2's query scaling by layer count and aborts otherwise). Checked
// here so that the claim in Save's documentation stays true.
func TestLlamaCppRefusesWhatItCannotRun(t *testing.T) {
	bin := shareddata.LlamaCpp(t, "llama-logits")
	tok, err := tokenizer.LoadSentencePiece(filepath.Join(familiesDir, "qwen2", "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokPath := filepath.Join(dir, "tokens.npy")
	if err := npy.WriteInt32(tokPath, []int{1, 4}, []int32{5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	fams := irtest.Families()
	qwen2 := fams["qwen2"].Clone() // 4 heads of 6 in a hidden size of 16
	gemma2, _ := writableFamily("gemma2", fams["gemma2"])
	for name, c := range map[string]ir.Config{"qwen2": qwen2, "gemma2": gemma2} {
		t.Run(name, func(t *testing.T) {
			c.Vocab = tok.Size()
			m := randomModel(t, c)
			m.Tokenizer = tok
			path := filepath.Join(dir, name+".gguf")
			if err := Save(m, path, SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, path, tokPath).CombinedOutput(); err == nil {
				t.Errorf("llama.cpp ran %s:\n%s", name, out)
			}
		})
	}
}
