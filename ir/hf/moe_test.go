package hf

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// TestMoEFamiliesRoundTrip saves a random model of each mixture-of-experts
// test config and loads it back unchanged: as its family's keys express it
// (Qwen2-MoE's dense layer through mlp_only_layers), and pruned to sizes
// they cannot express (fewer experts in one layer, narrower experts in
// another), which go to whittle_layers. The files hold one tensor per
// expert, as transformers' classes name them.
func TestMoEFamiliesRoundTrip(t *testing.T) {
	fams := irtest.MoEFamilies()
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		cfg := fams[name]
		pruned := cfg.Clone()
		pruned.Layers[0].Experts = 3
		pruned.Layers[2].ExpertMLP = 5
		for _, c := range []struct {
			name     string
			cfg      ir.Config
			perLayer bool
		}{{name, cfg, false}, {name + " pruned", pruned, true}} {
			t.Run(c.name, func(t *testing.T) {
				m := randomModel(c.cfg, ir.BF16, 5)
				dir := filepath.Join(t.TempDir(), "m")
				if err := Save(m, dir, SaveOptions{MaxShardBytes: 2048}); err != nil {
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
				if _, ok := raw[WhittleLayersKey]; ok != c.perLayer {
					t.Errorf("%s written: %v, want %v", WhittleLayersKey, ok, c.perLayer)
				}
				index := readJSON(t, filepath.Join(dir, "model.safetensors.index.json"))["weight_map"].(map[string]any)
				for i, l := range c.cfg.Layers {
					if !l.MoE() {
						continue
					}
					lt := c.cfg.LayerTensors(i)
					for _, stacked := range []string{lt.ExpertGate, lt.ExpertUp, lt.ExpertDown} {
						if _, ok := index[stacked]; ok {
							t.Errorf("stacked %s saved", stacked)
						}
						for j := range l.Experts + 1 {
							if _, ok := index[expertName(stacked, j)]; ok != (j < l.Experts) {
								t.Errorf("%s saved: %v (layer %d has %d experts)", expertName(stacked, j), ok, i, l.Experts)
							}
						}
					}
				}
			})
		}
	}
}

// TestParseConfigMoE checks the MoE families' defaults (their
// transformers config classes') and which layers their keys make sparse.
func TestParseConfigMoE(t *testing.T) {
	type layer struct{ experts, expertMLP, shared, mlp int }
	cases := []struct {
		name   string
		typ    string
		kv     map[string]any
		layers []layer
		topK   int
		norm   bool
	}{
		{"mixtral defaults", "mixtral", nil, slices.Repeat([]layer{{8, 12, 0, 0}}, 4), 2, true},
		{"mixtral ignores norm_topk_prob", "mixtral", map[string]any{"norm_topk_prob": false, "num_local_experts": 3, "num_experts_per_tok": 1},
			slices.Repeat([]layer{{3, 12, 0, 0}}, 4), 1, true},
		{"qwen2_moe defaults", "qwen2_moe", nil, slices.Repeat([]layer{{60, 1408, 5632, 0}}, 4), 4, false},
		{"qwen2_moe sparse step and dense layers", "qwen2_moe", map[string]any{"num_experts": 4, "num_experts_per_tok": 2,
			"moe_intermediate_size": 6, "shared_expert_intermediate_size": 10, "decoder_sparse_step": 2, "mlp_only_layers": []int{3}, "norm_topk_prob": true},
			[]layer{{0, 0, 0, 12}, {4, 6, 10, 0}, {0, 0, 0, 12}, {0, 0, 0, 12}}, 2, true},
		{"qwen2_moe without experts", "qwen2_moe", map[string]any{"num_experts": 0}, slices.Repeat([]layer{{0, 0, 0, 12}}, 4), 4, false},
		{"qwen3_moe defaults", "qwen3_moe", map[string]any{"mlp_only_layers": []int{0}},
			append([]layer{{0, 0, 0, 12}}, slices.Repeat([]layer{{128, 768, 0, 0}}, 3)...), 8, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseConfig(familyConfig(t, c.typ, c.kv))
			if err != nil {
				t.Fatal(err)
			}
			var layers []layer
			for _, l := range got.Layers {
				layers = append(layers, layer{l.Experts, l.ExpertMLP, l.SharedMLP, l.MLP})
			}
			if !slices.Equal(layers, c.layers) || got.ExpertsPerToken != c.topK || got.NormTopK != c.norm {
				t.Errorf("layers %v, top-%d, norm %v\nwant %v, top-%d, norm %v", layers, got.ExpertsPerToken, got.NormTopK, c.layers, c.topK, c.norm)
			}
			// What MarshalConfig writes reads back the same.
			out, err := MarshalConfig(&got, ir.BF16)
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseConfig(out)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, got) {
				t.Errorf("after MarshalConfig: %+v\nwant %+v", again, got)
			}
		})
	}
}

// TestMoEConfigErrors checks the configs the MoE families refuse to read
// or write, with messages naming the key.
func TestMoEConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name, typ string
		kv        map[string]any
		want      string
	}{
		{"sparse step 0", "qwen2_moe", map[string]any{"decoder_sparse_step": 0}, "decoder_sparse_step"},
		{"negative experts", "qwen3_moe", map[string]any{"num_experts": -1}, "num_experts"},
		{"more per token than experts", "mixtral", map[string]any{"num_local_experts": 2, "num_experts_per_tok": 3}, "num_experts_per_tok"},
		{"mixtral without experts", "mixtral", map[string]any{"num_local_experts": 0}, "num_local_experts"},
		{"experts on a dense family", "llama", map[string]any{"num_local_experts": 8}, "num_local_experts"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig(familyConfig(t, c.typ, c.kv))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one naming %s", err, c.want)
			}
		})
	}
	fams := irtest.MoEFamilies()
	for _, c := range []struct {
		name   string
		mutate func(c *ir.Config)
		want   string
	}{
		{"mixtral without renormalization", func(c *ir.Config) { *c = fams["mixtral"]; c.NormTopK = false }, "norm_topk_prob"},
		{"qwen3_moe with a shared expert", func(c *ir.Config) { *c = fams["qwen3_moe"]; c.Layers[0].SharedMLP = 4 }, "shared expert"},
		{"llama with experts", func(c *ir.Config) { *c = fams["mixtral"]; c.Arch = "llama" }, "mixture-of-experts"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg ir.Config
			c.mutate(&cfg)
			if _, err := MarshalConfig(&cfg, ir.BF16); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one about %s", err, c.want)
			}
		})
	}
}

// TestLoadMoEExpertErrors checks that a checkpoint missing an expert, or
// holding one more than its config says, is refused naming the tensor.
func TestLoadMoEExpertErrors(t *testing.T) {
	cfg := irtest.MoEFamilies()["mixtral"]
	m := randomModel(cfg, ir.BF16, 7)
	dir := filepath.Join(t.TempDir(), "m")
	if err := Save(m, dir, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	// The same files under a config with one expert fewer, then more.
	for _, c := range []struct {
		experts int
		want    string
	}{{3, "no such expert in the config"}, {5, "missing tensor model.layers.0.block_sparse_moe.experts.4."}} {
		raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(raw), `"num_local_experts": 4`, `"num_local_experts": `+string(rune('0'+c.experts)), 1)
		d := filepath.Join(t.TempDir(), "e")
		if err := os.CopyFS(d, os.DirFS(dir)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, ConfigFile), []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(d); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%d experts: error %v, want %q", c.experts, err, c.want)
		}
	}
}
