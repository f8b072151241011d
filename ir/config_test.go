package ir_test

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// stories260K is Karpathy's tiny llama2.c model: dim 64, hidden 172,
// 5 layers, 8 heads over 4 KV heads, vocab 512, tied classifier.
func stories260K() ir.Config {
	return ir.Config{
		Arch: "llama", Vocab: 512, Hidden: 64,
		Layers:  ir.UniformLayers(5, ir.LayerConfig{Heads: 8, KVHeads: 4, HeadDim: 8, MLP: 172}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 512, Tied: true, BOS: 1, EOS: 2,
	}
}

func TestParamsStories260K(t *testing.T) {
	c := stories260K()
	p := c.Params()
	// Per layer: attention 2·64·64 + 2·32·64 = 12288, MLP 3·172·64 = 33024,
	// norms 128; plus the 512·64 embedding and the final norm.
	want := ir.ParamCounts{Embedding: 32768, Attention: 61440, MLP: 165120, Norms: 704, Classifier: 0, Total: 260032, Active: 260032}
	if p != want {
		t.Errorf("Params = %+v, want %+v", p, want)
	}
	c.Tied = false
	if got := c.Params(); got.Classifier != 32768 || got.Total != 260032+32768 {
		t.Errorf("untied Params = %+v", got)
	}
}

// Params must equal counting the elements of the tensors the config
// implies, component by component.
func TestParamsMatchExpectedShapes(t *testing.T) {
	nonUniform := stories260K()
	nonUniform.Layers[1] = ir.LayerConfig{Heads: 4, KVHeads: 1, HeadDim: 16, MLP: 7}
	nonUniform.Layers[3].MLP = 1
	untied := nonUniform
	untied.Tied = false
	small := ir.Config{Vocab: 13, Hidden: 12, Layers: ir.UniformLayers(3, ir.LayerConfig{Heads: 4, KVHeads: 2, HeadDim: 4, MLP: 10}), NormEps: 1e-5, RopeTheta: 1e4}
	for name, c := range map[string]ir.Config{"stories260K": stories260K(), "non-uniform": nonUniform, "untied": untied, "small": small} {
		names, shapes := c.ExpectedShapes()
		if len(names) != len(shapes) {
			t.Fatalf("%s: %d names but %d shapes", name, len(names), len(shapes))
		}
		var got ir.ParamCounts
		for _, n := range names {
			k := int64(1)
			for _, s := range shapes[n] {
				k *= int64(s)
			}
			switch {
			case n == ir.NameEmbed:
				got.Embedding += k
			case n == ir.NameClassifier:
				got.Classifier += k
			case strings.HasSuffix(n, "norm.weight"):
				got.Norms += k
			case strings.Contains(n, ".self_attn."):
				got.Attention += k
			case strings.Contains(n, ".mlp."):
				got.MLP += k
			default:
				t.Fatalf("%s: unclassified tensor %s", name, n)
			}
			got.Total += k
		}
		got.Active = got.Total // a dense model computes with every parameter
		if p := c.Params(); p != got {
			t.Errorf("%s: Params = %+v, counting tensors gives %+v", name, p, got)
		}
		if want := 2 + 9*len(c.Layers); !c.Tied && len(names) != want+1 || c.Tied && len(names) != want {
			t.Errorf("%s: %d tensors, tied=%v, layers=%d", name, len(names), c.Tied, len(c.Layers))
		}
	}
}

func TestExpectedShapesLayout(t *testing.T) {
	c := stories260K()
	c.Tied = false
	names, shapes := c.ExpectedShapes()
	want := map[string][]int{
		ir.NameEmbed:                             {512, 64},
		ir.LayerName(0, ir.RoleAttnNorm):         {64},
		ir.LayerName(2, ir.RoleQ):                {64, 64},
		ir.LayerName(2, ir.RoleK):                {32, 64},
		ir.LayerName(2, ir.RoleV):                {32, 64},
		ir.LayerName(2, ir.RoleO):                {64, 64},
		ir.LayerName(4, ir.RoleGate):             {172, 64},
		ir.LayerName(4, ir.RoleUp):               {172, 64},
		ir.LayerName(4, ir.RoleDown):             {64, 172},
		ir.LayerName(4, ir.RoleMLPNorm):          {64},
		ir.NameFinalNorm:                         {64},
		ir.NameClassifier:                        {512, 64},
		"model.layers.3.self_attn.k_proj.weight": {32, 64},
	}
	for n, s := range want {
		if got := shapes[n]; !reflect.DeepEqual(got, s) {
			t.Errorf("%s: shape %v, want %v", n, got, s)
		}
	}
	if names[0] != ir.NameEmbed || names[1] != "model.layers.0.input_layernorm.weight" || names[len(names)-1] != ir.NameClassifier {
		t.Errorf("order: first %q, %q, last %q", names[0], names[1], names[len(names)-1])
	}
}

func TestFLOPsPerToken(t *testing.T) {
	c := stories260K()
	// 2·(attention + MLP weights) per layer, 2·vocab·hidden for the
	// classifier, plus 2·2·ctx·q_dim per layer for scores and mixing.
	if got := c.FLOPsPerToken(0); got != 2*(61440+165120)+2*32768 {
		t.Errorf("FLOPsPerToken(0) = %d", got)
	}
	if got := c.FLOPsPerToken(10); got != 518656+5*4*10*64 {
		t.Errorf("FLOPsPerToken(10) = %d", got)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *ir.Config)
		want   string // "" means valid
	}{
		{"valid", func(c *ir.Config) {}, ""},
		{"no special tokens", func(c *ir.Config) { c.BOS, c.EOS = -1, -1 }, ""},
		{"linear scaling", func(c *ir.Config) { c.RopeScaling = &ir.RopeScaling{Type: "linear", Factor: 2} }, ""},
		{"llama3 scaling", func(c *ir.Config) {
			c.RopeScaling = &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPos: 8192}
		}, ""},
		{"default scaling", func(c *ir.Config) { c.RopeScaling = &ir.RopeScaling{Type: "default"} }, ""},
		{"zero vocab", func(c *ir.Config) { c.Vocab = 0 }, "vocab_size"},
		{"negative hidden", func(c *ir.Config) { c.Hidden = -1 }, "hidden_size"},
		{"no layers", func(c *ir.Config) { c.Layers = nil }, "no layers"},
		{"zero eps", func(c *ir.Config) { c.NormEps = 0 }, "rms_norm_eps"},
		{"NaN eps", func(c *ir.Config) { c.NormEps = math.NaN() }, "rms_norm_eps"},
		{"zero theta", func(c *ir.Config) { c.RopeTheta = 0 }, "rope_theta"},
		{"NaN theta", func(c *ir.Config) { c.RopeTheta = math.NaN() }, "rope_theta"},
		{"heads not divisible", func(c *ir.Config) { c.Layers[2].Heads = 6 }, "layer 2"},
		{"kv heads above heads", func(c *ir.Config) { c.Layers[0].KVHeads = 16 }, "KV groups"},
		{"zero kv heads", func(c *ir.Config) { c.Layers[1].KVHeads = 0 }, "layer 1"},
		{"odd head_dim", func(c *ir.Config) { c.Layers[4].HeadDim = 7 }, "even"},
		{"zero mlp", func(c *ir.Config) { c.Layers[3].MLP = 0 }, "intermediate"},
		{"bos past vocab", func(c *ir.Config) { c.BOS = 512 }, "512"},
		{"eos below -1", func(c *ir.Config) { c.EOS = -2 }, "-2"},
		{"unknown scaling", func(c *ir.Config) { c.RopeScaling = &ir.RopeScaling{Type: "yarn", Factor: 4} }, "yarn"},
		{"linear without factor", func(c *ir.Config) { c.RopeScaling = &ir.RopeScaling{Type: "linear"} }, "factor"},
		{"llama3 without original", func(c *ir.Config) {
			c.RopeScaling = &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4}
		}, "original_max_position"},
		{"llama3 equal factors", func(c *ir.Config) {
			c.RopeScaling = &ir.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 2, HighFreqFactor: 2, OriginalMaxPos: 8192}
		}, "low_freq_factor"},
		{"llama3 zero low factor", func(c *ir.Config) {
			c.RopeScaling = &ir.RopeScaling{Type: "llama3", Factor: 8, HighFreqFactor: 4, OriginalMaxPos: 8192}
		}, "low_freq_factor"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := stories260K()
			tc.mutate(&c)
			err := c.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Check() = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestCloneIsDeep(t *testing.T) {
	c := stories260K()
	c.RopeScaling = &ir.RopeScaling{Type: "linear", Factor: 2}
	d := c.Clone()
	d.Layers[0].MLP = 1
	d.RopeScaling.Factor = 9
	if c.Layers[0].MLP != 172 || c.RopeScaling.Factor != 2 {
		t.Error("Clone shares layers or rope scaling with the original")
	}
}

func TestUniformAndGroupSize(t *testing.T) {
	c := stories260K()
	if !c.Uniform() {
		t.Error("stories260K reported non-uniform")
	}
	c.Layers[4].MLP = 100
	if c.Uniform() {
		t.Error("differing MLP widths reported uniform")
	}
	for _, tc := range []struct {
		l    ir.LayerConfig
		want int
	}{
		{ir.LayerConfig{Heads: 8, KVHeads: 4}, 2},
		{ir.LayerConfig{Heads: 32, KVHeads: 8}, 4},
		{ir.LayerConfig{Heads: 8, KVHeads: 8}, 1},
		{ir.LayerConfig{Heads: 8}, 0},
	} {
		if got := tc.l.GroupSize(); got != tc.want {
			t.Errorf("GroupSize(%+v) = %d, want %d", tc.l, got, tc.want)
		}
	}
}

func TestCouplingsErrors(t *testing.T) {
	c := stories260K()
	for _, tc := range []struct {
		axis  ir.AxisKind
		layer int
	}{{ir.AxisMLP, 5}, {ir.AxisHeads, -1}, {ir.AxisKVHeads, 99}, {"depth", 0}} {
		if _, err := c.Couplings(tc.axis, tc.layer); err == nil {
			t.Errorf("Couplings(%q, %d) succeeded", tc.axis, tc.layer)
		}
	}
	// The hidden axis runs through every tensor: 9 per layer, embedding,
	// final norm (and the classifier when untied).
	cs, err := c.Couplings(ir.AxisHidden, 42)
	if err != nil || len(cs) != 2+9*5 {
		t.Errorf("hidden couplings: %d, %v", len(cs), err)
	}
}
