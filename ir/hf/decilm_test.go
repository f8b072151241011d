package hf

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// DeciLM's width rule against values worked by hand: int(2·m·h/3), then
// up to a multiple of 256. Llama-3.1-Nemotron-51B (hidden 8192) uses
// ffn_mult 5.25 for Llama-70B's 28672.
func TestDeciLMIntermediateSize(t *testing.T) {
	for _, tc := range []struct {
		mult   float64
		hidden int
		want   int
	}{
		{5.25, 8192, 28672},  // 28672.0, a multiple already
		{2.625, 8192, 14336}, // 14336.0
		{1.3125, 8192, 7168}, // 7168.0
		{1.0, 4096, 2816},    // 2730.67 → 2730 → 11·256
		{0.5, 64, 256},       // 21.33 → 21 → 256
		{6.5, 32, 256},       // 138.67 → 138 → 256 (the decilm fixture's layer 2)
		{24.0, 32, 512},      // 512.0
		{4.5, 3072, 9216},    // Minitron-4B-Width's MLP at its hidden size
	} {
		if got := DeciLMIntermediateSize(tc.mult, tc.hidden); got != tc.want {
			t.Errorf("DeciLMIntermediateSize(%g, %d) = %d, want %d", tc.mult, tc.hidden, got, tc.want)
		}
		// Every multiple of 256 has an ffn_mult that gives it back.
		if m, ok := deciFFNMult(tc.want, tc.hidden); !ok || DeciLMIntermediateSize(m, tc.hidden) != tc.want {
			t.Errorf("width %d at hidden %d: ffn_mult %g, %v", tc.want, tc.hidden, m, ok)
		}
	}
	for _, w := range []int{0, 255, 300, 9000} {
		if m, ok := deciFFNMult(w, 8192); ok {
			t.Errorf("width %d is not a multiple of 256, yet ffn_mult %g is offered", w, m)
		}
	}
}

// The fixture (gen_decilm.py, Nemotron-51B's config layout) reads as the
// per-layer sizes its block_configs give by the rule, which its tensors'
// shapes (written by Python with the same rule) confirm in Load.
func TestDeciLMFixture(t *testing.T) {
	m, err := Load(filepath.Join(familiesDir, "decilm"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := []ir.LayerConfig{
		{Heads: 4, KVHeads: 2, HeadDim: 8, MLP: 256}, // n_heads_in_group 2, ffn_mult 12
		{Heads: 4, KVHeads: 1, HeadDim: 8, MLP: 512}, // 4, 24
		{Heads: 4, KVHeads: 4, HeadDim: 8, MLP: 256}, // 1, 6.5 rounded up
	}
	c := m.Config
	if c.Arch != "llama" || c.Hidden != 32 || !reflect.DeepEqual(c.Layers, want) {
		t.Errorf("arch %q hidden %d layers %+v, want llama 32 %+v", c.Arch, c.Hidden, c.Layers, want)
	}
	if s := c.RopeScaling; s == nil || s.Type != "llama3" || s.Factor != 8 || c.RopeTheta != 500000 || c.Tied {
		t.Errorf("rope %+v theta %g tied %v", s, c.RopeTheta, c.Tied)
	}
}

// Written as DeciLM, a model reads back the same (config and tensors),
// with the fixture's block configs wherever ffn_mult has one spelling,
// ffn_mult always a float literal (the converter asserts float), and
// llama.cpp's converter keys for the rest.
func TestDeciLMRoundTrip(t *testing.T) {
	src := filepath.Join(familiesDir, "decilm")
	m, err := Load(src)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir := filepath.Join(t.TempDir(), "decilm")
	if err := Save(m, dir, SaveOptions{DeciLM: true}); err != nil {
		t.Fatal(err)
	}
	back, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if !reflect.DeepEqual(back.Config, m.Config) {
		t.Errorf("config %+v\nwant %+v", back.Config, m.Config)
	}
	sameWeights(t, back, m, nil)

	got, orig := readJSON(t, filepath.Join(dir, ConfigFile)), readJSON(t, filepath.Join(src, ConfigFile))
	for _, k := range []string{"architectures", "model_type", "hidden_size", "num_attention_heads", "num_hidden_layers", "rope_scaling", "original_max_position_embeddings"} {
		if !reflect.DeepEqual(got[k], orig[k]) {
			t.Errorf("%s = %v, fixture %v", k, got[k], orig[k])
		}
	}
	for _, k := range []string{"intermediate_size", "num_key_value_heads", "head_dim", WhittleLayersKey} {
		if _, ok := got[k]; ok {
			t.Errorf("%s written; block_configs sizes the layers", k)
		}
	}
	gb, ob := got["block_configs"].([]any), orig["block_configs"].([]any)
	if len(gb) != len(ob) {
		t.Fatalf("%d block configs, fixture %d", len(gb), len(ob))
	}
	for i := range ob {
		g, o := gb[i].(map[string]any), ob[i].(map[string]any)
		if !reflect.DeepEqual(g["attention"], o["attention"]) {
			t.Errorf("block %d attention %v, fixture %v", i, g["attention"], o["attention"])
		}
		gm := g["ffn"].(map[string]any)["ffn_mult"].(float64)
		if DeciLMIntermediateSize(gm, 32) != m.Config.Layers[i].MLP {
			t.Errorf("block %d ffn_mult %g gives width %d, want %d", i, gm, DeciLMIntermediateSize(gm, 32), m.Config.Layers[i].MLP)
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"ffn_mult": 12.0`) || !strings.Contains(string(raw), `"ffn_mult": 24.0`) {
		t.Errorf("ffn_mult not written as float literals:\n%s", raw)
	}
}

// What DeciLM cannot express is refused, naming the layer and the format
// that can hold it; Save without the option writes whittle_layers as ever.
func TestDeciLMRefuses(t *testing.T) {
	base := ir.Config{
		Arch: "llama", Vocab: 16, Hidden: 16, NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 32, BOS: 1, EOS: 2,
		Layers: []ir.LayerConfig{{Heads: 4, KVHeads: 2, HeadDim: 4, MLP: 256}, {Heads: 4, KVHeads: 1, HeadDim: 4, MLP: 512}},
	}
	if err := CheckDeciLM(&base); err != nil {
		t.Fatalf("expressible config refused: %v", err)
	}
	edit := func(f func(c *ir.Config)) ir.Config {
		c := base.Clone()
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  ir.Config
		want []string
	}{
		{"width", edit(func(c *ir.Config) { c.Layers[1].MLP = 320 }), []string{"layer 1", "320", WhittleLayersKey}},
		{"query heads differ", edit(func(c *ir.Config) { c.Layers[1].Heads, c.Layers[1].KVHeads = 2, 1 }), []string{"layer 1", "query heads", WhittleLayersKey}},
		{"head size", edit(func(c *ir.Config) {
			for i := range c.Layers {
				c.Layers[i].HeadDim = 8
			}
		}), []string{"hidden_size / num_attention_heads"}},
		{"family", edit(func(c *ir.Config) { c.Arch, c.AttnBias = "qwen2", true }), []string{"qwen2"}},
		{"window", edit(func(c *ir.Config) { c.Arch, c.Layers[0].Window = "mistral", 8 }), []string{"sliding window"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDeciLM(&tc.cfg)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("CheckDeciLM: %v; want an error mentioning %q", err, w)
				}
			}
		})
	}
	m := randomModel(edit(func(c *ir.Config) { c.Layers[1].MLP = 320 }), ir.F32, 3)
	dir := filepath.Join(t.TempDir(), "m")
	if err := Save(m, dir, SaveOptions{DeciLM: true}); err == nil || !strings.Contains(err.Error(), "layer 1") {
		t.Errorf("Save as DeciLM: %v", err)
	}
	if err := Save(m, dir, SaveOptions{}); err != nil {
		t.Fatalf("Save with whittle_layers: %v", err)
	}
	if raw := readJSON(t, filepath.Join(dir, ConfigFile)); raw[WhittleLayersKey] == nil || raw["model_type"] != "llama" {
		t.Errorf("default save of a non-uniform model: model_type %v, %s %v", raw["model_type"], WhittleLayersKey, raw[WhittleLayersKey])
	}
}

// Block variants whittle does not run are refused by name.
func TestParseDeciLMErrors(t *testing.T) {
	block := func(g any, mult any, extra map[string]any) map[string]any {
		a := map[string]any{"n_heads_in_group": g, "no_op": false, "replace_with_linear": false}
		f := map[string]any{"ffn_mult": mult, "no_op": false, "replace_with_linear": false}
		for k, v := range extra {
			if strings.HasPrefix(k, "ffn.") {
				f[strings.TrimPrefix(k, "ffn.")] = v
			} else {
				a[k] = v
			}
		}
		return map[string]any{"attention": a, "ffn": f}
	}
	cfg := func(blocks ...map[string]any) []byte {
		b, err := json.Marshal(map[string]any{
			"architectures": []string{DeciLMArchitecture}, "model_type": DeciLMModelType,
			"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": len(blocks), "vocab_size": 16,
			"block_configs": blocks,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := block(2, 12.0, nil)
	if c, err := ParseConfig(cfg(good, block(4, 24.0, nil))); err != nil || c.Layers[1].KVHeads != 1 || c.Layers[1].MLP != 512 {
		t.Fatalf("ParseConfig = %+v, %v", c.Layers, err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"no-op attention", cfg(good, block(nil, 12.0, map[string]any{"no_op": true})), "block_configs[1].attention"},
		{"linear ffn", cfg(block(2, 12.0, map[string]any{"ffn.replace_with_linear": true})), "block_configs[0].ffn"},
		{"window", cfg(block(2, 12.0, map[string]any{"window_length": 64})), "window"},
		{"sparse", cfg(block(2, 12.0, map[string]any{"sparsify": []string{"x"}})), "sparsified"},
		{"group does not divide", cfg(block(3, 12.0, nil)), "does not divide"},
		{"no ffn_mult", cfg(block(2, nil, nil)), "ffn_mult"},
		{"count", func() []byte {
			var m map[string]any
			json.Unmarshal(cfg(good), &m)
			m["num_hidden_layers"] = 2
			b, _ := json.Marshal(m)
			return b
		}(), "1 entries for num_hidden_layers 2"},
		{"block_configs elsewhere", []byte(`{"model_type":"llama","hidden_size":32,"num_attention_heads":4,"intermediate_size":8,"num_hidden_layers":1,"vocab_size":16,"block_configs":[]}`), "block_configs in a llama config"},
		{"no block_configs", []byte(`{"model_type":"nemotron-nas","hidden_size":32,"num_attention_heads":4,"num_hidden_layers":1,"vocab_size":16}`), "without block_configs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseConfig(tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig: %v; want an error mentioning %q", err, tc.want)
			}
		})
	}
}
