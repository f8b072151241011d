package decoder64

import (
	"encoding/json"
	"math"
	"math/cmplx"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/ir/safetensors"
)

// familiesDir holds one tiny checkpoint per family in its exact Hugging
// Face layout, and llama.cpp's own f32 conversions of some of them.
const familiesDir = "../../ir/testdata/families"

// hfConfigJSON is the part of a fixture's config.json the test reads.
type hfConfigJSON struct {
	ModelType    string          `json:"model_type"`
	Vocab        int             `json:"vocab_size"`
	Hidden       int             `json:"hidden_size"`
	Layers       int             `json:"num_hidden_layers"`
	Heads        int             `json:"num_attention_heads"`
	KVHeads      int             `json:"num_key_value_heads"`
	HeadDim      int             `json:"head_dim"`
	MLP          int             `json:"intermediate_size"`
	NormEps      float64         `json:"rms_norm_eps"`
	RopeTheta    float64         `json:"rope_theta"`
	MaxSeq       int             `json:"max_position_embeddings"`
	Tied         bool            `json:"tie_word_embeddings"`
	BOS          int             `json:"bos_token_id"`
	EOS          int             `json:"eos_token_id"`
	Window       *int            `json:"sliding_window"`
	UseWindow    *bool           `json:"use_sliding_window"`
	AttnScalar   float64         `json:"query_pre_attn_scalar"`
	AttnSoftCap  float64         `json:"attn_logit_softcapping"`
	FinalSoftCap float64         `json:"final_logit_softcapping"`
	RopeScaling  *ir.RopeScaling `json:"rope_scaling"`
	// Mixture of experts (Mixtral's num_local_experts, Qwen-MoE's
	// num_experts).
	LocalExperts int   `json:"num_local_experts"`
	Experts      int   `json:"num_experts"`
	PerToken     int   `json:"num_experts_per_tok"`
	NormTopK     bool  `json:"norm_topk_prob"`
	ExpertMLP    int   `json:"moe_intermediate_size"`
	SharedMLP    int   `json:"shared_expert_intermediate_size"`
	SparseStep   int   `json:"decoder_sparse_step"`
	MLPOnly      []int `json:"mlp_only_layers"`
}

// hfConfig reads a fixture's config.json into an ir.Config the way the
// Hugging Face model classes interpret it. It is a test-only reader for
// these fixtures (ir/hf is the real one), so that this check does not
// depend on the loader it will be used to test.
func hfConfig(t *testing.T, dir string) ir.Config {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c hfConfigJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("%s/config.json: %v", dir, err)
	}
	hd := c.HeadDim
	if hd == 0 {
		hd = c.Hidden / c.Heads
	}
	cfg := ir.Config{
		Arch: c.ModelType, Vocab: c.Vocab, Hidden: c.Hidden, NormEps: c.NormEps, RopeTheta: c.RopeTheta,
		RopeScaling: c.RopeScaling, MaxSeq: c.MaxSeq, Tied: c.Tied, BOS: c.BOS, EOS: c.EOS,
		Layers: ir.UniformLayers(c.Layers, ir.LayerConfig{Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: hd, MLP: c.MLP}),
	}
	window := 0
	if c.Window != nil && (c.UseWindow == nil || *c.UseWindow) {
		window = *c.Window
	}
	switch c.ModelType {
	case "llama", "mistral", "phi3":
		// Phi-3 masks with its sliding_window; Mistral's is null here.
		for i := range cfg.Layers {
			cfg.Layers[i].Window = window
		}
	case "qwen2":
		cfg.AttnBias = true // Qwen2's q/k/v projections always have biases
	case "qwen3":
		cfg.QKNorm = true
	case "mixtral":
		// MixtralSparseMoeBlock: every layer, always renormalized;
		// intermediate_size is each expert's width.
		cfg.ExpertsPerToken, cfg.NormTopK = c.PerToken, true
		for i := range cfg.Layers {
			cfg.Layers[i].MLP, cfg.Layers[i].Experts, cfg.Layers[i].ExpertMLP = 0, c.LocalExperts, c.MLP
		}
	case "qwen2_moe", "qwen3_moe":
		// Qwen2MoeDecoderLayer: sparse unless in mlp_only_layers, and
		// only every decoder_sparse_step-th layer.
		cfg.AttnBias, cfg.QKNorm = c.ModelType == "qwen2_moe", c.ModelType == "qwen3_moe"
		cfg.ExpertsPerToken, cfg.NormTopK = c.PerToken, c.NormTopK
		for i := range cfg.Layers {
			if !slices.Contains(c.MLPOnly, i) && c.Experts > 0 && (i+1)%c.SparseStep == 0 {
				cfg.Layers[i].MLP, cfg.Layers[i].Experts, cfg.Layers[i].ExpertMLP = 0, c.Experts, c.ExpertMLP
				cfg.Layers[i].SharedMLP = c.SharedMLP
			}
		}
	case "gemma2":
		cfg.NormOffset, cfg.EmbedScale, cfg.Act, cfg.PostNorms = 1, true, ir.ActGELUTanh, true
		cfg.AttnScalar, cfg.AttnSoftCap, cfg.FinalSoftCap = c.AttnScalar, c.AttnSoftCap, c.FinalSoftCap
		for i := range cfg.Layers {
			if i%2 == 0 { // Gemma2Attention.is_sliding
				cfg.Layers[i].Window = window
			}
		}
	default:
		t.Fatalf("%s: model_type %q", dir, c.ModelType)
	}
	if err := cfg.Check(); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return cfg
}

// hfWeights reads a fixture's model.safetensors, widened to float64, under
// the file's own names (Phi-3's projections stay fused).
func hfWeights(t *testing.T, dir string) map[string][]float64 {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts, err := f.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	w := map[string][]float64{}
	for name, tt := range ts {
		v, err := tt.Float32()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w[name] = widen(v)
	}
	return w
}

// hfExpertRE matches one expert's tensor in Hugging Face's MoE layouts:
// the module, the expert and the projection.
var hfExpertRE = regexp.MustCompile(`^(.*\.experts)\.(\d+)\.(\w+)\.weight$`)

// stackExperts replaces the per-expert tensors of a mixture of experts
// (…experts.{j}.w1.weight) by decoder64's stacked ones (…experts.w1.weight,
// expert j's rows at j), in expert order.
func stackExperts(t *testing.T, w map[string][]float64) map[string][]float64 {
	t.Helper()
	parts := map[string]map[int][]float64{}
	out := map[string][]float64{}
	for name, v := range w {
		m := hfExpertRE.FindStringSubmatch(name)
		if m == nil {
			out[name] = v
			continue
		}
		j, err := strconv.Atoi(m[2])
		if err != nil {
			t.Fatal(err)
		}
		stacked := m[1] + "." + m[3] + ".weight"
		if parts[stacked] == nil {
			parts[stacked] = map[int][]float64{}
		}
		parts[stacked][j] = v
	}
	for name, p := range parts {
		for j := range len(p) {
			if p[j] == nil {
				t.Fatalf("%s: expert %d missing", name, j)
			}
			out[name] = append(out[name], p[j]...)
		}
	}
	return out
}

func widen(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// phi3Fused and phi3Split name Phi-3's fused projections and convert
// between them and the separate ones, as Phi3Attention and Phi3MLP slice
// them: q, k, v rows in that order; gate rows before up rows.
func phi3Fused(l int) (qkv, gateUp string) {
	p := "model.layers." + strconv.Itoa(l) + "."
	return p + "self_attn.qkv_proj.weight", p + "mlp.gate_up_proj.weight"
}

func phi3Split(cfg ir.Config, w map[string][]float64) map[string][]float64 {
	out := map[string][]float64{}
	for k, v := range w {
		out[k] = v
	}
	for l, lc := range cfg.Layers {
		n := cfg.LayerTensors(l)
		qkv, gu := phi3Fused(l)
		q, kv, d := lc.Heads*lc.HeadDim*cfg.Hidden, lc.KVHeads*lc.HeadDim*cfg.Hidden, lc.MLP*cfg.Hidden
		out[n.Q], out[n.K], out[n.V] = w[qkv][:q], w[qkv][q:q+kv], w[qkv][q+kv:]
		out[n.Gate], out[n.Up] = w[gu][:d], w[gu][d:]
		delete(out, qkv)
		delete(out, gu)
	}
	return out
}

func phi3Fuse(cfg ir.Config, w map[string][]float64) map[string][]float64 {
	out := map[string][]float64{}
	for k, v := range w {
		out[k] = v
	}
	for l := range cfg.Layers {
		n := cfg.LayerTensors(l)
		qkv, gu := phi3Fused(l)
		out[qkv] = slices.Concat(w[n.Q], w[n.K], w[n.V])
		out[gu] = slices.Concat(w[n.Gate], w[n.Up])
		for _, name := range []string{n.Q, n.K, n.V, n.Gate, n.Up} {
			delete(out, name)
		}
	}
	return out
}

var llamaLossRE = regexp.MustCompile(`targets (\d+) loss ([0-9.eE+-]+)`)

// TestMatchesLlamaCpp checks every family llama.cpp runs against it, the
// independent external reference: decoder64 built from the Hugging Face
// checkpoint, llama.cpp from its own converter's f32 GGUF of it, on the
// same (2, 16) tokens. llama.cpp keeps K and V in f16 (and multiplies
// Q·K and the probabilities·V in f16), which bounds the agreement: Gemma 2,
// 26 layers deep, is the loosest (max |Δ| 0.089, at one position; rounding
// q, k, v and the probabilities to f16 in decoder64 brings it to 0.029).
// Mixtral's mixture of experts (top-2 of 4, renormalized) is checked the
// same way. A plausible mistake in each family's config (the Llama 3 scaling's
// context, rope_theta, the biases, the renormalization, the window) is also tried, to show
// that the bounds see it.
func TestMatchesLlamaCpp(t *testing.T) {
	bin := shareddata.LlamaCpp(t, "llama-logits")
	const rows, length = 2, 16
	rng := rand.New(rand.NewPCG(11, 12))
	toks := make([]int32, rows*length)
	for i := range toks {
		toks[i] = int32(3 + rng.IntN(509)) // past stories260K's specials
	}
	tokPath := filepath.Join(t.TempDir(), "tokens.npy")
	if err := npy.WriteInt32(tokPath, []int{rows, length}, toks); err != nil {
		t.Fatal(err)
	}
	// compare runs decoder64 on the tokens: mean next-token NLL and the
	// largest logit difference with want, llama.cpp's (rows, L, vocab).
	compare := func(cfg ir.Config, w map[string][]float64, want []float32) (nll, worst float64) {
		g := New(cfg, w)
		for r := range rows {
			seq := make([]int, length)
			for j := range seq {
				seq[j] = int(toks[r*length+j])
			}
			for p, z := range g.Forward(seq, nil, nil) {
				for i, v := range z {
					worst = max(worst, math.Abs(v-float64(want[(r*length+p)*cfg.Vocab+i])))
				}
				if p+1 < length {
					nll += logSumExp(z) - z[seq[p+1]]
				}
			}
		}
		return nll / (rows * (length - 1)), worst
	}
	for _, tc := range []struct {
		fam string
		// wrong perturbs the config into a plausible mistake.
		wrong func(c *ir.Config)
	}{
		{"llama3", func(c *ir.Config) {
			// The other of the two readings of the scaling's context
			// (see below): rope_scaling's 64 or the converter's 8192.
			if s := c.RopeScaling; s.OriginalMaxPos == 8192 {
				s.OriginalMaxPos = 64
			} else {
				s.OriginalMaxPos = 8192
			}
		}},
		{"mistral", func(c *ir.Config) { c.RopeTheta = 10000 }},
		{"qwen2", func(c *ir.Config) { c.AttnBias = false }},
		{"mixtral", func(c *ir.Config) { c.NormTopK = false }},
		{"gemma2", func(c *ir.Config) {
			for i := range c.Layers {
				if c.Layers[i].Window > 0 {
					c.Layers[i].Window++
				}
			}
		}},
	} {
		t.Run(tc.fam, func(t *testing.T) {
			dir := filepath.Join(familiesDir, tc.fam)
			cfg, w := hfConfig(t, dir), stackExperts(t, hfWeights(t, dir))
			if s := cfg.RopeScaling; s != nil && s.Type == "llama3" {
				// llama.cpp's converter (convert_hf_to_gguf.py,
				// LlamaModel) computes the Llama 3 rope_freqs with the
				// top-level original_max_position_embeddings, 8192 when
				// absent, not rope_scaling's (which transformers uses).
				// Real Llama 3.1 configs have 8192 in both; a fixture
				// with only rope_scaling's gets 8192's factors.
				s.OriginalMaxPos = topLevelOrigMaxPos(t, dir, 8192)
			}

			out := filepath.Join(t.TempDir(), "logits.npy")
			b, err := exec.CommandContext(t.Context(), bin, filepath.Join(familiesDir, tc.fam+"-llamacpp.gguf"), tokPath, out, "1").CombinedOutput()
			if err != nil {
				t.Fatalf("llama-logits: %v\n%s", err, b)
			}
			m := llamaLossRE.FindSubmatch(b)
			if m == nil {
				t.Fatalf("no loss in llama-logits output:\n%s", b)
			}
			wantLoss, err := strconv.ParseFloat(string(m[2]), 64)
			if err != nil {
				t.Fatal(err)
			}
			a, err := npy.Read(out)
			if err != nil {
				t.Fatal(err)
			}
			want, err := a.Float32()
			if err != nil {
				t.Fatal(err)
			}
			if shape := []int{rows, length, cfg.Vocab}; !slices.Equal(a.Shape, shape) {
				t.Fatalf("llama.cpp logits shape %v, want %v", a.Shape, shape)
			}

			nll, worst := compare(cfg, w, want)
			t.Logf("mean NLL %.6f (llama.cpp %.6f, Δ %.2g); max |Δlogit| %.3g", nll, wantLoss, nll-wantLoss, worst)
			if !(math.Abs(nll-wantLoss) <= 1e-3) {
				t.Errorf("mean NLL %.6f, llama.cpp %.6f", nll, wantLoss)
			}
			if !(worst <= 0.1) {
				t.Errorf("max |Δlogit| %.3g with llama.cpp, want ≤ 0.1", worst)
			}

			bad := cfg.Clone()
			tc.wrong(&bad)
			if _, worst := compare(bad, w, want); !(worst > 0.5) {
				t.Errorf("perturbed config: max |Δlogit| %.3g, want > 0.5", worst)
			} else {
				t.Logf("perturbed config: max |Δlogit| %.3g", worst)
			}
		})
	}
}

// topLevelOrigMaxPos is config.json's top-level
// original_max_position_embeddings, or def.
func topLevelOrigMaxPos(t *testing.T, dir string, def int) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		N *int `json:"original_max_position_embeddings"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("%s/config.json: %v", dir, err)
	}
	if c.N == nil {
		return def
	}
	return *c.N
}

func logSumExp(z []float64) float64 {
	mx := slices.Max(z)
	var s float64
	for _, v := range z {
		s += math.Exp(v - mx)
	}
	return mx + math.Log(s)
}

// TestNaiveQwen3Phi3 checks the paths of the two families llama.cpp
// cannot run, where decoder64 is the reference itself, against a second,
// deliberately different formulation (naiveForward): whole-sequence
// matrices, an explicit causal/window mask, RoPE as complex rotation,
// Phi-3's fused projections sliced on the fly. The fixtures test the
// checkpoints' layout; the irtest configs grouped heads and windows.
func TestNaiveQwen3Phi3(t *testing.T) {
	fams := irtest.Families()
	phi3Windowed := fams["phi3"].Clone()
	for i := range phi3Windowed.Layers {
		phi3Windowed.Layers[i].Window = 3 + i
	}
	for _, tc := range []struct {
		name    string
		fixture string    // a checkpoint directory, or
		cfg     ir.Config // a config with random weights
	}{
		{name: "qwen3 checkpoint", fixture: "qwen3"},
		{name: "phi3 checkpoint", fixture: "phi3"},
		{name: "qwen3 random", cfg: fams["qwen3"]},
		{name: "phi3 random", cfg: fams["phi3"]},
		{name: "phi3 random windowed", cfg: phi3Windowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg ir.Config
			var w map[string][]float64 // decoder64's (split) names
			if tc.fixture != "" {
				dir := filepath.Join(familiesDir, tc.fixture)
				cfg, w = hfConfig(t, dir), hfWeights(t, dir)
				if cfg.Arch == "phi3" {
					w = phi3Split(cfg, w)
				}
			} else {
				cfg = tc.cfg
				m, err := Load(irtest.RandomModel(t, cfg, rand.New(rand.NewPCG(3, 4))))
				if err != nil {
					t.Fatal(err)
				}
				w = m.W
			}
			hf := w
			if cfg.Arch == "phi3" {
				hf = phi3Fuse(cfg, w)
			}
			rng := rand.New(rand.NewPCG(5, 6))
			tokens := make([]int, 12)
			for i := range tokens {
				tokens[i] = rng.IntN(cfg.Vocab)
			}
			got := New(cfg, w).Forward(tokens, nil, nil)
			want := naiveForward(t, cfg, hf, tokens)
			for p := range want {
				for i := range want[p] {
					if d := math.Abs(got[p][i] - want[p][i]); !(d <= 1e-12*math.Max(1, math.Abs(want[p][i]))) {
						t.Fatalf("position %d logit %d: %.17g, naive %.17g", p, i, got[p][i], want[p][i])
					}
				}
			}
		})
	}
}

// naiveForward is Qwen3's and Phi-3's forward pass over the whole
// sequence at once, written as the Hugging Face modules compute it on a
// [T, features] batch. It takes Hugging Face's own tensor names (Phi-3's
// fused qkv_proj and gate_up_proj) and implements only what those two
// families use.
func naiveForward(t *testing.T, cfg ir.Config, w map[string][]float64, tokens []int) [][]float64 {
	t.Helper()
	if cfg.AttnBias || cfg.NormOffset != 0 || cfg.EmbedScale || cfg.Activation() != ir.ActSiLU || cfg.PostNorms ||
		cfg.AttnScalar != 0 || cfg.AttnSoftCap != 0 || cfg.FinalSoftCap != 0 || cfg.RopeScaling != nil {
		t.Fatalf("naiveForward implements Qwen3's and Phi-3's options only, not %+v", cfg)
	}
	d, T := cfg.Hidden, len(tokens)
	get := func(name string) []float64 {
		v, ok := w[name]
		if !ok {
			t.Fatalf("no tensor %s", name)
		}
		return v
	}
	// x @ W.T for x [T, in] and W [out, in].
	proj := func(x [][]float64, name string) [][]float64 {
		wt := get(name)
		in := len(x[0])
		out := make([][]float64, len(x))
		for r := range x {
			out[r] = make([]float64, len(wt)/in)
			for o := range out[r] {
				for i := range in {
					out[r][o] += x[r][i] * wt[o*in+i]
				}
			}
		}
		return out
	}
	// RMSNorm over the last dimension of each row's groups of size n.
	norm := func(x [][]float64, name string, n int) [][]float64 {
		wt := get(name)
		out := make([][]float64, len(x))
		for r := range x {
			out[r] = make([]float64, len(x[r]))
			for g := 0; g < len(x[r]); g += n {
				var ms float64
				for _, v := range x[r][g : g+n] {
					ms += v * v / float64(n)
				}
				for i := range n {
					out[r][g+i] = wt[i] * (x[r][g+i] / math.Sqrt(ms+cfg.NormEps))
				}
			}
		}
		return out
	}
	cols := func(x [][]float64, from, to int) [][]float64 {
		out := make([][]float64, len(x))
		for r := range x {
			out[r] = x[r][from:to]
		}
		return out
	}
	emb := get(ir.NameEmbed)
	x := make([][]float64, T)
	for r, id := range tokens {
		x[r] = slices.Clone(emb[id*d : (id+1)*d])
	}
	for l, lc := range cfg.Layers {
		pre := "model.layers." + strconv.Itoa(l) + "."
		hd, qd, kvd := lc.HeadDim, lc.Heads*lc.HeadDim, lc.KVHeads*lc.HeadDim
		h := norm(x, pre+"input_layernorm.weight", d)
		var q, k, v [][]float64
		if cfg.Arch == "phi3" {
			qkv := proj(h, pre+"self_attn.qkv_proj.weight")
			q, k, v = cols(qkv, 0, qd), cols(qkv, qd, qd+kvd), cols(qkv, qd+kvd, qd+2*kvd)
		} else {
			q, k, v = proj(h, pre+"self_attn.q_proj.weight"), proj(h, pre+"self_attn.k_proj.weight"), proj(h, pre+"self_attn.v_proj.weight")
		}
		if cfg.QKNorm {
			q, k = norm(q, pre+"self_attn.q_norm.weight", hd), norm(k, pre+"self_attn.k_norm.weight", hd)
		}
		// RoPE: pair (i, i+hd/2) of a head is the complex number
		// x_i + i·x_{i+hd/2}, turned by pos·θ^(-2i/hd).
		for _, m := range [][][]float64{q, k} {
			for pos, row := range m {
				for h0 := 0; h0 < len(row); h0 += hd {
					for i := range hd / 2 {
						c := complex(row[h0+i], row[h0+i+hd/2]) * cmplx.Rect(1, float64(pos)*math.Pow(cfg.RopeTheta, -float64(2*i)/float64(hd)))
						row[h0+i], row[h0+i+hd/2] = real(c), imag(c)
					}
				}
			}
		}
		attn := make([][]float64, T)
		for r := range attn {
			attn[r] = make([]float64, qd)
		}
		for hh := range lc.Heads {
			kv := hh / (lc.Heads / lc.KVHeads) * hd
			qh, kh, vh := cols(q, hh*hd, (hh+1)*hd), cols(k, kv, kv+hd), cols(v, kv, kv+hd)
			for i := range T {
				// Row i of softmax(Q Kᵀ/√hd + mask) V.
				s := make([]float64, T)
				for j := range T {
					s[j] = math.Inf(-1)
					if j <= i && (lc.Window == 0 || i-j < lc.Window) {
						s[j] = 0
						for c := range hd {
							s[j] += qh[i][c] * kh[j][c]
						}
						s[j] /= math.Sqrt(float64(hd))
					}
				}
				z := logSumExp(s)
				for j := range T {
					p := math.Exp(s[j] - z)
					for c := range hd {
						attn[i][hh*hd+c] += p * vh[j][c]
					}
				}
			}
		}
		o := proj(attn, pre+"self_attn.o_proj.weight")
		for r := range x {
			for i := range x[r] {
				x[r][i] += o[r][i]
			}
		}
		h = norm(x, pre+"post_attention_layernorm.weight", d)
		var gate, up [][]float64
		if cfg.Arch == "phi3" {
			gu := proj(h, pre+"mlp.gate_up_proj.weight")
			gate, up = cols(gu, 0, lc.MLP), cols(gu, lc.MLP, 2*lc.MLP)
		} else {
			gate, up = proj(h, pre+"mlp.gate_proj.weight"), proj(h, pre+"mlp.up_proj.weight")
		}
		for r := range gate {
			a := make([]float64, lc.MLP)
			for i := range a {
				a[i] = gate[r][i] * (1 / (1 + math.Exp(-gate[r][i]))) * up[r][i]
			}
			gate[r] = a
		}
		dn := proj(gate, pre+"mlp.down_proj.weight")
		for r := range x {
			for i := range x[r] {
				x[r][i] += dn[r][i]
			}
		}
	}
	cls := ir.NameClassifier
	if cfg.Tied {
		cls = ir.NameEmbed
	}
	return proj(norm(x, ir.NameFinalNorm, d), cls)
}
