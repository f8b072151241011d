package hf

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/ir/safetensors"
)

// familiesDir holds one tiny checkpoint per family in its exact HF layout
// (see gen.py there).
const familiesDir = "../testdata/families"

var fixtureFamilies = []string{"llama3", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "mixtral", "qwen2_moe", "qwen3_moe"}

// savedConfigDiffers lists the fixture config.json keys Save writes with
// another value of the same meaning: Qwen2's sliding_window, unused with
// use_sliding_window false, is written null; Phi-3's pad id, which its
// class only uses as a padding_idx for training, is written null for a
// vocabulary without Phi3Config's default 32000.
// Qwen3-MoE's intermediate_size, read by no layer when every layer is
// sparse, is written as the top-k experts' width, as published configs have
// it.
var savedConfigDiffers = map[string][]string{
	"qwen2":     {"sliding_window"},
	"phi3":      {"pad_token_id"},
	"qwen2_moe": {"sliding_window"},
	"qwen3_moe": {"intermediate_size"},
}

// openSafetensors reads a single-file checkpoint's tensors directly.
func openSafetensors(t *testing.T, dir string) map[string]*ir.Tensor {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, safetensors.SingleFileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ts, err := f.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// fusedRow is where a canonical tensor lies in a Phi-3 fused tensor.
type fusedRow struct {
	src   string
	first int // first row
}

// fusedRows places each canonical tensor of a Phi-3 fixture in its fused
// source, from config.json's numbers: qkv_proj holds q (heads·head_dim
// rows), then k, then v (kv_heads·head_dim each); gate_up_proj holds
// gate, then up (intermediate_size each).
func fusedRows(t *testing.T, dir string) map[string]fusedRow {
	raw := readJSON(t, filepath.Join(dir, ConfigFile))
	num := func(k string) int { return int(raw[k].(float64)) }
	hd := num("hidden_size") / num("num_attention_heads")
	q, kv, mlp := num("num_attention_heads")*hd, num("num_key_value_heads")*hd, num("intermediate_size")
	out := map[string]fusedRow{}
	for i := range num("num_hidden_layers") {
		p := func(s string) string { return fmt.Sprintf("model.layers.%d.%s.weight", i, s) }
		qkv, gu := p("self_attn.qkv_proj"), p("mlp.gate_up_proj")
		out[p("self_attn.q_proj")] = fusedRow{qkv, 0}
		out[p("self_attn.k_proj")] = fusedRow{qkv, q}
		out[p("self_attn.v_proj")] = fusedRow{qkv, q + kv}
		out[p("mlp.gate_proj")] = fusedRow{gu, 0}
		out[p("mlp.up_proj")] = fusedRow{gu, mlp}
	}
	return out
}

func mustFloat32(t *testing.T, tt *ir.Tensor) []float32 {
	t.Helper()
	v, err := tt.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestFamilyFixtures loads each family's checkpoint and checks every
// tensor against the file read directly (Phi-3's split parts element by
// element against their fused source), then saves it and checks the
// files: the same tensor names and bytes as the original, a config.json
// with the family's class and keys that re-parses to the same config, and
// a bitwise round trip through Load.
func TestFamilyFixtures(t *testing.T) {
	for _, fam := range fixtureFamilies {
		t.Run(fam, func(t *testing.T) {
			dir := filepath.Join(familiesDir, fam)
			m, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			src := openSafetensors(t, dir)

			var fused map[string]fusedRow
			if fam == "phi3" {
				fused = fusedRows(t, dir)
			}
			used := map[string]bool{}
			for name, got := range m.Tensors {
				if f, ok := fused[name]; ok {
					whole := src[f.src]
					cols := whole.Shape[1]
					if got.DType != whole.DType || got.Shape[1] != cols {
						t.Fatalf("%s: %v %v, fused source %s is %v %v", name, got.DType, got.Shape, f.src, whole.DType, whole.Shape)
					}
					g, w := mustFloat32(t, got), mustFloat32(t, whole)
					for r := range got.Shape[0] {
						for c := range cols {
							if g[r*cols+c] != w[(f.first+r)*cols+c] {
								t.Fatalf("%s[%d,%d] = %g, %s[%d,%d] = %g", name, r, c, g[r*cols+c], f.src, f.first+r, c, w[(f.first+r)*cols+c])
							}
						}
					}
					used[f.src] = true
					continue
				}
				if e := expertsOf(m.Config, name); e > 0 {
					// A stacked expert tensor is the file's experts in order.
					var want []byte
					for j := range e {
						w, ok := src[expertName(name, j)]
						if !ok || w.DType != got.DType || !slices.Equal(w.Shape, got.Shape[1:]) {
							t.Fatalf("%s: %v %v, expert %d in the file: %v", name, got.DType, got.Shape, j, w)
						}
						want = append(want, mustBytes(t, w)...)
						used[expertName(name, j)] = true
					}
					if !bytes.Equal(mustBytes(t, got), want) {
						t.Fatalf("tensor %s differs from the file's experts", name)
					}
					continue
				}
				w, ok := src[name]
				if !ok {
					t.Fatalf("tensor %s is not in the file", name)
				}
				if got.DType != w.DType || !reflect.DeepEqual(got.Shape, w.Shape) || !bytes.Equal(mustBytes(t, got), mustBytes(t, w)) {
					t.Fatalf("tensor %s differs from the file's", name)
				}
				used[name] = true
			}
			for name := range src {
				if !used[name] {
					t.Errorf("file tensor %s was not loaded", name)
				}
			}

			out := filepath.Join(t.TempDir(), fam)
			if err := Save(m, out, SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			saved := openSafetensors(t, out)
			if got, want := sortedNames(saved), sortedNames(src); !slices.Equal(got, want) {
				t.Fatalf("saved tensors %v\nwant %v", got, want)
			}
			for name, w := range src {
				g := saved[name]
				if g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) || !bytes.Equal(mustBytes(t, g), mustBytes(t, w)) {
					t.Errorf("saved %s differs from the original", name)
				}
			}

			orig, again := readJSON(t, filepath.Join(dir, ConfigFile)), readJSON(t, filepath.Join(out, ConfigFile))
			for k, v := range orig {
				if slices.Contains(savedConfigDiffers[fam], k) {
					continue
				}
				if !reflect.DeepEqual(again[k], v) {
					t.Errorf("saved config.json has %s = %v, the original %v", k, again[k], v)
				}
			}
			data, err := os.ReadFile(filepath.Join(out, ConfigFile))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := ParseConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg, m.Config) {
				t.Errorf("saved config parses to %+v\nwant %+v", cfg, m.Config)
			}

			back, err := Load(out)
			if err != nil {
				t.Fatal(err)
			}
			defer back.Close()
			if !reflect.DeepEqual(back.Config, m.Config) {
				t.Errorf("reloaded config %+v\nwant %+v", back.Config, m.Config)
			}
			sameWeights(t, back, m, nil)

			only, err := LoadConfigOnly(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !only.ConfigOnly() || !reflect.DeepEqual(only.Config, m.Config) {
				t.Errorf("LoadConfigOnly: %d tensors, config %+v", len(only.Tensors), only.Config)
			}
		})
	}
}

// expertsOf is the number of experts stacked in the tensor name of cfg,
// or 0 when it is not a stacked expert tensor.
func expertsOf(cfg ir.Config, name string) int {
	for i, l := range cfg.Layers {
		lt := cfg.LayerTensors(i)
		if l.MoE() && slices.Contains([]string{lt.ExpertGate, lt.ExpertUp, lt.ExpertDown}, name) {
			return l.Experts
		}
	}
	return 0
}

func sortedNames(ts map[string]*ir.Tensor) []string {
	out := make([]string, 0, len(ts))
	for n := range ts {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// TestFamiliesRoundTrip saves a random model of every family's test
// config (irtest.Families: windows, biases, q/k norms, Gemma 2's scalars)
// and loads it back unchanged, also pruned to non-uniform sizes.
func TestFamiliesRoundTrip(t *testing.T) {
	for name, cfg := range irtest.Families() {
		narrow := cfg.Clone()
		narrow.Layers[1].MLP = 7
		narrow.Layers[2].Heads, narrow.Layers[2].KVHeads = 2, 1
		for _, c := range []struct {
			name string
			cfg  ir.Config
		}{{name, cfg}, {name + " non-uniform", narrow}} {
			t.Run(c.name, func(t *testing.T) {
				m := randomModel(c.cfg, ir.BF16, 3)
				dir := filepath.Join(t.TempDir(), "m")
				if err := Save(m, dir, SaveOptions{}); err != nil {
					t.Fatal(err)
				}
				back, err := Load(dir)
				if err != nil {
					t.Fatal(err)
				}
				defer back.Close()
				if !reflect.DeepEqual(back.Config, c.cfg) {
					t.Errorf("config = %+v\nwant %+v", back.Config, c.cfg)
				}
				sameWeights(t, back, m, nil)
				raw := readJSON(t, filepath.Join(dir, ConfigFile))
				f := families[c.cfg.Arch]
				if raw["model_type"] != f.arch || !reflect.DeepEqual(raw["architectures"], []any{f.architecture}) {
					t.Errorf("model_type %v, architectures %v", raw["model_type"], raw["architectures"])
				}
				if _, ok := raw[WhittleLayersKey]; ok == c.cfg.Uniform() {
					t.Errorf("%s written: %v, uniform: %v", WhittleLayersKey, ok, c.cfg.Uniform())
				}

				// Converted on the way out, in shards of a few tensors.
				conv := filepath.Join(t.TempDir(), "f32")
				if err := Save(m, conv, SaveOptions{DType: ptr(ir.F32), MaxShardBytes: 4096}); err != nil {
					t.Fatal(err)
				}
				wide, err := Load(conv)
				if err != nil {
					t.Fatal(err)
				}
				defer wide.Close()
				sameWeights(t, wide, m, ptr(ir.F32))
			})
		}
	}
}

// familyConfig is a minimal config.json of a family; kv adds or
// overrides keys as configWith does.
func familyConfig(t *testing.T, modelType string, kv map[string]any) []byte {
	t.Helper()
	base := map[string]any{"model_type": modelType, "architectures": []string{families[modelType].architecture}, "num_hidden_layers": 4}
	for k, v := range kv {
		base[k] = v
	}
	return configWith(t, base)
}

// windowsOf lists the layers' windows.
func windowsOf(c ir.Config) []int {
	out := make([]int, len(c.Layers))
	for i, l := range c.Layers {
		out[i] = l.Window
	}
	return out
}

// TestParseConfigFamilies checks each family's defaults for missing keys
// (its transformers config class's) and how its keys set the windows.
func TestParseConfigFamilies(t *testing.T) {
	cases := []struct {
		name    string
		typ     string
		kv      map[string]any
		windows []int
		check   func(c ir.Config) bool
	}{
		{"qwen2 defaults", "qwen2", nil, []int{0, 0, 0, 0}, func(c ir.Config) bool {
			return c.AttnBias && !c.Tied && c.BOS == -1 && c.EOS == -1 && c.MaxSeq == 32768 && c.NormEps == 1e-6
		}},
		{"qwen2 attention_bias ignored", "qwen2", map[string]any{"attention_bias": true}, []int{0, 0, 0, 0}, func(c ir.Config) bool { return c.AttnBias }},
		{"qwen2 sliding from max_window_layers", "qwen2", map[string]any{"use_sliding_window": true, "sliding_window": 9, "max_window_layers": 2}, []int{0, 0, 9, 9}, nil},
		{"qwen2 sliding default window and layers", "qwen2", map[string]any{"use_sliding_window": true, "num_hidden_layers": 30}, append(make([]int, 28), 4096, 4096), nil},
		{"qwen2 window unused", "qwen2", map[string]any{"use_sliding_window": false, "sliding_window": 9, "max_window_layers": 0}, []int{0, 0, 0, 0}, nil},
		{"qwen2 zero window unused", "qwen2", map[string]any{"sliding_window": 0}, []int{0, 0, 0, 0}, nil},
		{"qwen3 layer_types", "qwen3", map[string]any{"use_sliding_window": true, "sliding_window": 9,
			"layer_types": []string{"sliding_attention", "full_attention", "sliding_attention", "full_attention"}}, []int{9, 0, 9, 0}, nil},
		{"qwen3 defaults", "qwen3", nil, []int{0, 0, 0, 0}, func(c ir.Config) bool {
			return c.QKNorm && !c.AttnBias && c.Layers[0].HeadDim == 128 && c.BOS == -1
		}},
		{"mistral window", "mistral", map[string]any{"sliding_window": 3}, []int{3, 3, 3, 3}, nil},
		{"phi3 defaults", "phi3", map[string]any{"vocab_size": 32064}, []int{0, 0, 0, 0}, func(c ir.Config) bool {
			return c.EOS == 32000 && c.BOS == 1 && c.NormEps == 1e-5 && c.MaxSeq == 4096 && !c.Tied
		}},
		{"phi3 window", "phi3", map[string]any{"sliding_window": 3, "eos_token_id": 2, "rope_scaling": null, "partial_rotary_factor": 1.0}, []int{3, 3, 3, 3}, nil},
		{"gemma2 defaults", "gemma2", nil, []int{4096, 0, 4096, 0}, func(c ir.Config) bool {
			return c.Tied && c.BOS == 2 && c.EOS == 1 && c.Layers[0].HeadDim == 256 && c.AttnScalar == 256 &&
				c.AttnSoftCap == 50 && c.FinalSoftCap == 30 && c.NormOffset == 1 && c.EmbedScale && c.PostNorms && c.Act == ir.ActGELUTanh
		}},
		{"gemma2 null caps", "gemma2", map[string]any{"attn_logit_softcapping": null, "final_logit_softcapping": null, "query_pre_attn_scalar": 144},
			[]int{4096, 0, 4096, 0}, func(c ir.Config) bool { return c.AttnSoftCap == 0 && c.FinalSoftCap == 0 && c.AttnScalar == 144 }},
		{"gemma2 layer_types", "gemma2", map[string]any{"sliding_window": 6,
			"layer_types": []string{"full_attention", "sliding_attention", "sliding_attention", "full_attention"}}, []int{0, 6, 6, 0}, nil},
		{"gemma2 without sliding layers", "gemma2", map[string]any{"sliding_window": null,
			"layer_types": []string{"full_attention", "full_attention", "full_attention", "full_attention"}}, []int{0, 0, 0, 0}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseConfig(familyConfig(t, c.typ, c.kv))
			if err != nil {
				t.Fatal(err)
			}
			if got.Arch != c.typ || !slices.Equal(windowsOf(got), c.windows) {
				t.Errorf("arch %s, windows %v, want %s, %v", got.Arch, windowsOf(got), c.typ, c.windows)
			}
			if c.check != nil && !c.check(got) {
				t.Errorf("config %+v", got)
			}
			// Save writes what parses back the same.
			out, err := MarshalConfig(&got, ir.F32)
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseConfig(out)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, got) {
				t.Errorf("after MarshalConfig %+v\nwant %+v", again, got)
			}
		})
	}
}

func TestParseConfigFamilyErrors(t *testing.T) {
	cases := []struct {
		name string
		typ  string
		kv   map[string]any
		want string
	}{
		{"qwen3 attention_bias", "qwen3", map[string]any{"attention_bias": true}, "unsupported: attention_bias"},
		{"gemma2 attention_bias", "gemma2", map[string]any{"attention_bias": true}, "unsupported: attention_bias"},
		{"qwen2 mlp_bias", "qwen2", map[string]any{"mlp_bias": true}, "unsupported: mlp_bias"},
		{"phi3 longrope", "phi3", map[string]any{"eos_token_id": 2, "rope_scaling": map[string]any{"type": "longrope", "short_factor": []float64{1}, "long_factor": []float64{1}}}, `rope_scaling: unsupported rope scaling type "longrope"`},
		{"phi3 linear", "phi3", map[string]any{"eos_token_id": 2, "rope_scaling": map[string]any{"rope_type": "linear", "factor": 2.0}}, "unsupported: rope_scaling type \"linear\" on phi3"},
		{"phi3 partial rotary", "phi3", map[string]any{"eos_token_id": 2, "partial_rotary_factor": 0.75}, "unsupported: partial_rotary_factor 0.75"},
		{"phi3 gelu", "phi3", map[string]any{"eos_token_id": 2, "hidden_act": "gelu"}, `unsupported: hidden_act "gelu"`},
		{"gemma2 exact gelu", "gemma2", map[string]any{"hidden_activation": "gelu"}, `unsupported: hidden_activation "gelu"`},
		{"gemma2 silu hidden_act", "gemma2", map[string]any{"hidden_act": "silu"}, `unsupported: hidden_act "silu"`},
		{"gemma2 null scalar", "gemma2", map[string]any{"query_pre_attn_scalar": null}, "query_pre_attn_scalar is null"},
		{"gemma2 zero cap", "gemma2", map[string]any{"final_logit_softcapping": 0}, "final_logit_softcapping must be positive"},
		{"gemma2 sliding without window", "gemma2", map[string]any{"sliding_window": null}, "layer 0 is a sliding_attention layer but no sliding window"},
		{"gemma2 layer_types length", "gemma2", map[string]any{"layer_types": []string{"full_attention"}}, "layer_types has 1 entries for num_hidden_layers 4"},
		{"gemma2 layer_types value", "gemma2", map[string]any{"layer_types": []string{"full_attention", "chunked_attention", "full_attention", "full_attention"}}, `layer_types[1] is "chunked_attention"`},
		{"qwen2 layer_types without window", "qwen2", map[string]any{"layer_types": []string{"full_attention", "sliding_attention", "full_attention", "full_attention"}}, "layer 1 is a sliding_attention layer"},
		{"mistral zero window", "mistral", map[string]any{"sliding_window": 0}, "sliding_window must be positive or null"},
		{"mistral layer_types", "mistral", map[string]any{"layer_types": []string{"full_attention", "full_attention", "full_attention", "full_attention"}}, "unsupported: layer_types"},
		{"wrong class", "qwen2", map[string]any{"architectures": []string{"Qwen2ForSequenceClassification"}}, "unsupported architectures"},
		{"whittle_layers window disagrees", "mistral", map[string]any{"sliding_window": 3, "whittle_layers": []map[string]int{
			{"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 12, "sliding_window": 5},
			{"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 12},
			{"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 12},
			{"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 12},
		}}, "whittle_layers[0] has sliding_window 5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig(familyConfig(t, c.typ, c.kv))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want %q", err, c.want)
			}
		})
	}
}

// TestMarshalConfigWindows: windows in a family's own pattern are written
// with its keys, other sets of layers as layer_types, and windows its
// classes cannot express are refused; what is written parses back.
func TestMarshalConfigWindows(t *testing.T) {
	fams := irtest.Families()
	with := func(fam string, windows ...int) ir.Config {
		c := fams[fam].Clone()
		c.Layers = ir.UniformLayers(len(windows), c.Layers[0].Sizes())
		for i, w := range windows {
			c.Layers[i].Window = w
		}
		return c
	}
	cases := []struct {
		name       string
		cfg        ir.Config
		layerTypes bool   // written as layer_types
		err        string // refused with this error
	}{
		{"gemma2 alternating", with("gemma2", 4, 0, 4, 0, 4), false, ""},
		{"gemma2 depth-pruned", with("gemma2", 4, 4, 0, 4), true, ""},
		{"gemma2 global", with("gemma2", 0, 0, 0), true, ""},
		{"gemma2 two sizes", with("gemma2", 4, 0, 6, 0), false, "sliding windows 4 and 6"},
		{"qwen2 suffix", with("qwen2", 0, 0, 8, 8), false, ""},
		{"qwen3 all", with("qwen3", 8, 8, 8), false, ""},
		{"qwen3 other layers", with("qwen3", 8, 0, 8), true, ""},
		{"mistral all", with("mistral", 5, 5), false, ""},
		{"mistral some", with("mistral", 5, 0), false, "applies sliding_window to every layer"},
		{"phi3 some", with("phi3", 0, 5), false, "applies sliding_window to every layer"},
		{"llama window", with("llama", 5, 5), false, "no sliding-window attention"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := MarshalConfig(&c.cfg, ir.F32)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(out, []byte(`"layer_types"`)) != c.layerTypes {
				t.Errorf("layer_types written: %v, want %v\n%s", !c.layerTypes, c.layerTypes, out)
			}
			got, err := ParseConfig(out)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.cfg) {
				t.Errorf("parsed back %+v\nwant %+v", got, c.cfg)
			}
		})
	}
}

// TestMarshalConfigRefusesOtherOptions: a config whose options are not its
// family's cannot be written as that family.
func TestMarshalConfigRefusesOtherOptions(t *testing.T) {
	fams := irtest.Families()
	cases := []struct {
		name   string
		fam    string
		modify func(c *ir.Config)
		want   string
	}{
		{"llama with q/k norms", "llama", func(c *ir.Config) { c.QKNorm = true }, "options"},
		{"qwen2 without biases", "qwen2", func(c *ir.Config) { c.AttnBias = false }, "options"},
		{"mistral soft cap", "mistral", func(c *ir.Config) { c.FinalSoftCap = 30 }, "soft caps"},
		{"gemma2 without scalar", "gemma2", func(c *ir.Config) { c.AttnScalar = 0 }, "query_pre_attn_scalar"},
		{"phi3 scaled rope", "phi3", func(c *ir.Config) { c.RopeScaling = &ir.RopeScaling{Type: "linear", Factor: 2} }, "longrope"},
		{"unknown arch", "llama", func(c *ir.Config) { c.Arch = "gpt2" }, `architecture "gpt2"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := fams[c.fam].Clone()
			c.modify(&cfg)
			if _, err := MarshalConfig(&cfg, ir.F32); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want %q", err, c.want)
			}
			dir := filepath.Join(t.TempDir(), "m")
			if err := Save(randomModel(cfg, ir.F32, 1), dir, SaveOptions{}); err == nil {
				t.Fatal("Save succeeded")
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("Save left %s behind: %v", dir, err)
			}
		})
	}
}

// TestLoadPhi3FusedErrors: a Phi-3 checkpoint whose fused tensors are
// missing, misshapen, or duplicated by unfused ones is refused, naming the
// tensor.
func TestLoadPhi3FusedErrors(t *testing.T) {
	dir := filepath.Join(familiesDir, "phi3")
	cfg, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	src := openSafetensors(t, dir)
	qkv, gateUp := "model.layers.1.self_attn.qkv_proj.weight", "model.layers.0.mlp.gate_up_proj.weight"
	with := func(edit func(ts map[string]*ir.Tensor)) map[string]*ir.Tensor {
		out := map[string]*ir.Tensor{}
		for n, tt := range src {
			out[n] = tt
		}
		edit(out)
		return out
	}
	cases := []struct {
		name    string
		tensors map[string]*ir.Tensor
		want    string
	}{
		{"missing qkv", with(func(ts map[string]*ir.Tensor) { delete(ts, qkv) }), "missing tensor " + qkv},
		{"short gate_up", with(func(ts map[string]*ir.Tensor) {
			ts[gateUp] = ir.FromFloat32(ir.BF16, []int{95, 32}, make([]float32, 95*32))
		}), gateUp + " has shape [95 32], want [96 32]"},
		{"also unfused", with(func(ts map[string]*ir.Tensor) { ts["model.layers.1.self_attn.k_proj.weight"] = src[ir.NameFinalNorm] }),
			"model.layers.1.self_attn.k_proj.weight is stored both alone and in " + qkv},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := writeDir(t, cfg, c.tensors)
			_, err := Load(d)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), d) {
				t.Fatalf("error = %v, want %q", err, c.want)
			}
		})
	}
}
