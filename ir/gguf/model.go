package gguf

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/ir"
)

// Load reads a GGUF file of the llama (Mixtral too), deci (as Llama with
// per-layer sizes), qwen2, qwen3, qwen2moe, qwen3moe, gemma2 or phi3
// architecture as an IR model. Tensors stay in the memory-mapped file
// until used; they are brought to Hugging Face's conventions when read
// (see Model). The map is released by the model's Close.
func Load(path string) (*ir.Model, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	m, err := f.Model()
	if err != nil {
		f.Close()
		return nil, err
	}
	m.AddCloser(f)
	return m, nil
}

// Model maps the file's metadata and tensors to an IR model whose tensors
// read from f, so f must stay open while the model is used. The family
// options come from the architecture as llama.cpp runs it: qwen2 has
// q/k/v biases, qwen3 q/k norms, gemma2 Gemma 2's norms, GeGLU, embedding
// scale, caps, windows and query scaling, phi3 one window for all layers.
// Tensors are converted to the IR's (Hugging Face's) conventions: llama's
// Q and K rows from the interleaved RoPE order to the half order (the
// other architectures use the half order already), gemma2's norm weights
// from the converter's 1 + w back to w, and phi3's fused attn_qkv and
// ffn_up (gate rows first) split into q/k/v and gate/up.
//
// Supported: F32, F16 and BF16 tensors; per-layer arrays of
// feed_forward_length, attention.head_count and attention.head_count_kv;
// RoPE unscaled, linearly scaled, or llama3-scaled through a rope_freqs
// tensor; SentencePiece ("llama") tokenizers.
// An output.weight byte-identical to token_embd.weight (as llama2.c's
// converter writes for tied models) is read as a tied classifier.
// Mixtures of experts (see experts) are read from the stacked
// ffn_*_exps tensors, or from the older one tensor per expert
// (blk.N.ffn_gate.J.weight), stacked when first read.
func (f *File) Model() (*ir.Model, error) {
	// Checked first: a vocabulary-only file's architecture keys describe
	// weights it does not hold (32 blocks and no tensors).
	if f.VocabOnly() {
		model, _ := f.str(KeyTokModel, false)
		return nil, fmt.Errorf("%s holds a vocabulary (tokenizer model %q) but no weights; use it as a tokenizer (--tokenizer, or whittle tokenize --model)", f.Path, model)
	}
	arch, err := f.str(KeyArchitecture, true)
	if err != nil {
		return nil, err
	}
	if !readableArch(arch) {
		return nil, f.keyErr(KeyArchitecture, "architecture %q is not supported (whittle reads %s)", arch, strings.Join(readableArchs, ", "))
	}
	cfg, err := f.config(arch)
	if err != nil {
		return nil, err
	}
	tok, err := f.tokenizer()
	if err != nil {
		return nil, err
	}
	if tok != nil {
		cfg.Vocab, cfg.BOS, cfg.EOS = tok.Size(), tok.BOS, tok.EOS
	} else {
		if cfg.BOS, err = f.tokenID(KeyTokBOS, -1); err != nil {
			return nil, err
		}
		if cfg.EOS, err = f.tokenID(KeyTokEOS, -1); err != nil {
			return nil, err
		}
	}

	// The tied flag decides whether the layout names output.weight; the
	// classifier is read as untied first and dropped below when tied.
	untied := cfg
	untied.Tied = false
	byName := map[string]layoutTensor{}
	for _, lt := range layout(&untied, arch) {
		byName[lt.name] = lt
	}
	tensors := make(map[string]*ir.Tensor, len(f.Tensors))
	split := map[string][]*ir.Tensor{} // stacked name: its experts, from the older layout
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		if ti.Name == tensorRopeFreqs && llamaLike(arch) {
			continue // read into the config's RoPE scaling
		}
		lt, ok := byName[ti.Name]
		if !ok {
			if name, j, isExpert := splitExpert(&cfg, ti.Name); isExpert {
				t, err := f.tensor(ti)
				if err != nil {
					return nil, err
				}
				if split[name] == nil {
					split[name] = make([]*ir.Tensor, cfg.Layers[0].Experts)
				}
				split[name][j] = t
				continue
			}
			if layer, isBlk := layerOf(ti.Name); isBlk && layer >= len(cfg.Layers) {
				return nil, fmt.Errorf("%s: offset %d: tensor %q belongs to layer %d, but %s is %d", f.Path, ti.InfoOffset, ti.Name, layer, archKeyOf(arch, keyBlocks), len(cfg.Layers))
			}
			return nil, fmt.Errorf("%s: offset %d: tensor %q is not part of the %s architecture whittle reads", f.Path, ti.InfoOffset, ti.Name, arch)
		}
		t, err := f.tensor(ti)
		if err != nil {
			return nil, err
		}
		if len(lt.parts) > 1 {
			// A fused projection: its rows are the parts' rows in order.
			total := 0
			for _, r := range lt.rows {
				total += r
			}
			if len(t.Shape) != 2 || t.Shape[0] != total || t.Shape[1] != cfg.Hidden {
				return nil, fmt.Errorf("%s: offset %d: tensor %q has shape %v, the architecture needs [%d %d] (%s stacked)", f.Path, ti.InfoOffset, ti.Name, t.Shape, total, cfg.Hidden, strings.Join(lt.parts, ", "))
			}
			from := 0
			for j, p := range lt.parts {
				tensors[p] = rowSlice(t, from, lt.rows[j])
				from += lt.rows[j]
			}
			continue
		}
		if lt.ropeHeads > 0 {
			t = permuted(t, lt.ropeHeads, lt.headDim, ir.RopeToHalf)
		}
		if lt.rowVector && len(t.Shape) == 1 {
			t = ir.LazyTensor(t.DType, []int{1, t.Shape[0]}, t.Bytes)
		}
		if lt.normOffset != 0 {
			t = offsetTensor(t, -lt.normOffset)
		}
		tensors[lt.parts[0]] = t
	}

	for name, parts := range split {
		if _, dup := tensors[name]; dup {
			return nil, fmt.Errorf("%s: the experts of %s are stored both stacked and one tensor each", f.Path, name)
		}
		t, err := stackExperts(parts)
		if err != nil {
			return nil, fmt.Errorf("%s: experts of %s: %w", f.Path, name, err)
		}
		tensors[name] = t
	}

	// Vocabulary without a tokenizer: llama.vocab_size, else the
	// embedding's rows.
	if tok == nil {
		v, ok, err := f.size(archKeyOf(arch, keyVocabSize))
		if err != nil {
			return nil, err
		}
		if !ok {
			if ti, found := f.Info(ggufGlobals[ir.NameEmbed]); found && len(ti.Dims) == 2 {
				v = int(ti.Dims[1])
			}
		}
		cfg.Vocab = v
	}

	if cfg.Tied, err = f.tied(); err != nil {
		return nil, err
	}
	if cfg.Tied {
		delete(tensors, ir.NameClassifier)
	}

	m := &ir.Model{Config: cfg, Tensors: tensors, Tokenizer: tok, Source: f.Path}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// splitExpertRE matches the older Mixtral layout of llama.cpp's files,
// one tensor per expert (blk.N.ffn_gate.J.weight), which llama.cpp still
// reads.
var splitExpertRE = regexp.MustCompile(`^blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight$`)

// splitExpert is the stacked IR tensor and the expert a tensor of the
// older layout belongs to.
func splitExpert(c *ir.Config, gguf string) (string, int, bool) {
	m := splitExpertRE.FindStringSubmatch(gguf)
	if m == nil || !canonicalInt(m[1]) || !canonicalInt(m[3]) {
		return "", 0, false
	}
	l, _ := strconv.Atoi(m[1])
	j, _ := strconv.Atoi(m[3])
	if l >= len(c.Layers) || !c.Layers[l].MoE() || j >= c.Layers[l].Experts || c.Layers[l].Experts != c.Layers[0].Experts {
		return "", 0, false
	}
	lt := c.LayerTensors(l)
	return map[string]string{"gate": lt.ExpertGate, "up": lt.ExpertUp, "down": lt.ExpertDown}[m[2]], j, true
}

// stackExperts is the experts' matrices stacked along a new dimension 0,
// concatenated when first read.
func stackExperts(parts []*ir.Tensor) (*ir.Tensor, error) {
	for j, p := range parts {
		switch {
		case p == nil:
			return nil, fmt.Errorf("expert %d is missing", j)
		case len(p.Shape) != 2 || p.DType != parts[0].DType || !slices.Equal(p.Shape, parts[0].Shape):
			return nil, fmt.Errorf("expert %d is %s %v, expert 0 %s %v", j, p.DType, p.Shape, parts[0].DType, parts[0].Shape)
		}
	}
	shape := append([]int{len(parts)}, parts[0].Shape...)
	return ir.LazyTensor(parts[0].DType, shape, func() ([]byte, error) {
		var out []byte
		for _, p := range parts {
			b, err := p.Bytes()
			if err != nil {
				return nil, err
			}
			out = append(out, b...)
		}
		return out, nil
	}), nil
}

// tied reports whether the classifier is the embedding: output.weight is
// absent, or holds exactly the embedding's bytes.
func (f *File) tied() (bool, error) {
	out, ok := f.Info(ggufGlobals[ir.NameClassifier])
	if !ok {
		return true, nil
	}
	emb, ok := f.Info(ggufGlobals[ir.NameEmbed])
	if !ok || emb.Type != out.Type || !slices.Equal(emb.Dims, out.Dims) {
		return false, nil
	}
	a, err := f.raw(emb)
	if err != nil {
		return false, err
	}
	b, err := f.raw(out)
	if err != nil {
		return false, err
	}
	return bytes.Equal(a, b), nil
}

// config reads the architecture (everything but the vocabulary, special
// tokens and tying, which come from elsewhere).
func (f *File) config(arch string) (ir.Config, error) {
	ak := func(k string) string { return archKeyOf(arch, k) }
	cfg := ir.Config{Arch: irArch(arch)}
	setFamily(&cfg, arch)
	var err error
	req := func(key string) int {
		if err != nil {
			return 0
		}
		v, ok, e := f.size(ak(key))
		switch {
		case e != nil:
			err = e
		case !ok:
			err = fmt.Errorf("%s: missing metadata key %q", f.Path, ak(key))
		}
		return v
	}
	cfg.MaxSeq = req(keyContext)
	cfg.Hidden = req(keyEmbedding)
	n := req(keyBlocks)
	if err != nil {
		return cfg, err
	}
	if n == 0 {
		return cfg, f.keyErr(ak(keyBlocks), "the model has no blocks")
	}
	// Every layer has nine tensors: refuse a count the file cannot hold
	// before allocating per-layer state for it.
	if n > len(f.Tensors) {
		return cfg, f.keyErr(ak(keyBlocks), "%d blocks, but the file holds only %d tensors", n, len(f.Tensors))
	}
	heads, err := f.perLayer(ak(keyHeads), n, nil)
	if err != nil {
		return cfg, err
	}
	kvHeads, err := f.perLayer(ak(keyKVHeads), n, heads)
	if err != nil {
		return cfg, err
	}
	mlp, err := f.perLayer(ak(keyFFN), n, nil)
	if err != nil {
		return cfg, err
	}

	// llama.cpp derives the head size from layer 0 unless key_length
	// says otherwise.
	headDim, ok, err := f.size(ak(keyKeyLength))
	if err != nil {
		return cfg, err
	}
	if !ok {
		if heads[0] == 0 || cfg.Hidden%heads[0] != 0 {
			return cfg, fmt.Errorf("%s: cannot derive the head size: %s %d is not a multiple of %s %v and %s is absent",
				f.Path, ak(keyEmbedding), cfg.Hidden, ak(keyHeads), heads, ak(keyKeyLength))
		}
		headDim = cfg.Hidden / heads[0]
	}
	if v, ok, err := f.size(ak(keyValueLength)); err != nil {
		return cfg, err
	} else if ok && v != headDim {
		return cfg, f.keyErr(ak(keyValueLength), "value head size %d differs from the key head size %d; whittle needs them equal", v, headDim)
	}
	if r, ok, err := f.size(ak(keyRopeDim)); err != nil {
		return cfg, err
	} else if ok && r != headDim {
		return cfg, f.keyErr(ak(keyRopeDim), "RoPE rotates %d of the %d dimensions of each head; whittle supports only full rotation", r, headDim)
	}
	if arch == archDeci {
		for i := range n {
			if heads[i] == 0 || kvHeads[i] == 0 || mlp[i] == 0 {
				return cfg, fmt.Errorf("%s: layer %d has %d heads, %d KV heads and FFN width %d: a deci layer without attention, with linear attention or without FFN is not something whittle runs", f.Path, i, heads[i], kvHeads[i], mlp[i])
			}
		}
	}
	cfg.Layers = make([]ir.LayerConfig, n)
	for i := range cfg.Layers {
		cfg.Layers[i] = ir.LayerConfig{Heads: heads[i], KVHeads: kvHeads[i], HeadDim: headDim, MLP: mlp[i]}
	}

	eps, ok, err := f.float(ak(keyRMSEps))
	if err != nil {
		return cfg, err
	}
	if !ok {
		return cfg, fmt.Errorf("%s: missing metadata key %q", f.Path, ak(keyRMSEps))
	}
	if !(eps > 0) || math.IsInf(eps, 0) {
		return cfg, f.keyErr(ak(keyRMSEps), "RMS norm epsilon %g must be positive and finite", eps)
	}
	cfg.NormEps = eps
	cfg.RopeTheta = defaultRopeBase
	if base, ok, err := f.float(ak(keyRopeBase)); err != nil {
		return cfg, err
	} else if ok {
		if !(base > 0) || math.IsInf(base, 0) {
			return cfg, f.keyErr(ak(keyRopeBase), "RoPE base %g must be positive and finite", base)
		}
		cfg.RopeTheta = base
	}
	if cfg.RopeScaling, err = f.ropeScaling(arch); err != nil {
		return cfg, err
	}
	if err := f.familyValues(arch, &cfg); err != nil {
		return cfg, err
	}
	if err := f.experts(arch, &cfg); err != nil {
		return cfg, err
	}
	if _, ok := f.Info(tensorRopeFreqs); ok && llamaLike(arch) {
		if cfg.RopeScaling != nil {
			return cfg, fmt.Errorf("%s: both %s scaling metadata and a %s tensor; llama.cpp would apply both, whittle applies one", f.Path, cfg.RopeScaling.Type, tensorRopeFreqs)
		}
		cfg.RopeScaling, err = f.ropeFreqs(arch, cfg.RopeTheta, headDim)
	}
	return cfg, err
}

// familyValues reads what an architecture's metadata adds to its fixed
// options, with llama.cpp's defaults: Gemma 2's caps, window (on layers
// 0, 2, 4, ..., as llama.cpp's gemma2 graph applies it) and query
// scaling (implied by the layer count), Phi-3's window (every layer; 0 is
// none).
func (f *File) familyValues(arch string, cfg *ir.Config) error {
	ak := func(k string) string { return archKeyOf(arch, k) }
	num := func(key string, def float64) (float64, error) {
		v, ok, err := f.float(ak(key))
		switch {
		case err != nil:
			return 0, err
		case !ok:
			return def, nil
		case !finiteNonNeg(v):
			return 0, f.keyErr(ak(key), "%g must be finite and not negative", v)
		}
		return v, nil
	}
	var err error
	switch arch {
	case archGemma2:
		if cfg.AttnSoftCap, err = num(keyAttnSoftCap, gemma2DefaultAttnCap); err != nil {
			return err
		}
		if cfg.FinalSoftCap, err = num(keyFinalSoftCap, gemma2DefaultFinalCap); err != nil {
			return err
		}
		cfg.AttnScalar = gemma2AttnScalar(cfg)
		w, ok, err := f.size(ak(keySlidingWindow))
		if err != nil {
			return err
		}
		if !ok {
			w = gemma2DefaultWindow
		}
		for i := 0; i < len(cfg.Layers); i += 2 {
			cfg.Layers[i].Window = w
		}
	case archPhi3:
		w, _, err := f.size(ak(keySlidingWindow))
		if err != nil {
			return err
		}
		for i := range cfg.Layers {
			cfg.Layers[i].Window = w
		}
	}
	return nil
}

// experts reads the mixture-of-experts keys as llama.cpp's loader does:
// expert_count experts in every layer (none: a dense llama), each token
// routed to expert_used_count; each expert feed_forward_length wide in
// llama (Mixtral), expert_feed_forward_length in qwen2moe and qwen3moe
// (default feed_forward_length / expert_used_count), qwen2moe's shared
// expert expert_shared_feed_forward_length (default
// feed_forward_length). The Arch becomes the IR's MoE family.
func (f *File) experts(arch string, cfg *ir.Config) error {
	ak := func(k string) string { return archKeyOf(arch, k) }
	n, _, err := f.size(ak(keyExperts))
	if err != nil {
		return err
	}
	if n == 0 {
		if moeArch(arch) {
			return fmt.Errorf("%s: missing metadata key %q (llama.cpp's %s routes every layer)", f.Path, ak(keyExperts), arch)
		}
		return nil
	}
	if arch != archLlama && !moeArch(arch) {
		return f.keyErr(ak(keyExperts), "%d experts, but llama.cpp's %s has no mixture of experts", n, arch)
	}
	used, ok, err := f.size(ak(keyExpertsUsed))
	if err != nil {
		return err
	}
	if !ok || used == 0 || used > n {
		return f.keyErr(ak(keyExpertsUsed), "%d experts used per token (of %d): want between 1 and %d", used, n, n)
	}
	cfg.Arch, cfg.ExpertsPerToken, cfg.NormTopK = irArchOf(arch, true), used, normTopK(arch)
	expertFFN, hasExpertFFN, err := f.size(ak(keyExpertFFN))
	if err != nil {
		return err
	}
	shared, hasShared, err := f.size(ak(keySharedExpertFFN))
	if err != nil {
		return err
	}
	for i := range cfg.Layers {
		l := &cfg.Layers[i]
		l.Experts = n
		switch {
		case arch == archLlama:
			l.ExpertMLP = l.MLP
		case hasExpertFFN:
			l.ExpertMLP = expertFFN
		default:
			l.ExpertMLP = l.MLP / used
		}
		if arch == archQwen2MoE {
			l.SharedMLP = l.MLP
			if hasShared {
				l.SharedMLP = shared
			}
		}
		if l.ExpertMLP == 0 {
			return fmt.Errorf("%s: layer %d: experts of width 0", f.Path, i)
		}
		l.MLP = 0
	}
	return nil
}

// ropeFreqs reads the rope_freqs tensor (llama.cpp's form of Llama 3.1's
// scaling) back into llama3 parameters; see llama3FromFreqFactors for
// what is recovered exactly. All-ones divisors are no scaling. The IR
// cannot hold arbitrary per-pair divisors, so a tensor that no llama3
// scaling reproduces is refused rather than run with other frequencies.
func (f *File) ropeFreqs(arch string, theta float64, headDim int) (*ir.RopeScaling, error) {
	ak := func(k string) string { return archKeyOf(arch, k) }
	ti, _ := f.Info(tensorRopeFreqs)
	if ti.Type != GGMLF32 || len(ti.Dims) != 1 || ti.Dims[0] != uint64(headDim/2) {
		return nil, fmt.Errorf("%s: offset %d: tensor %q must be F32 of %d (half the head size), got %s %v", f.Path, ti.InfoOffset, ti.Name, headDim/2, ti.Type, ti.Dims)
	}
	t, err := f.tensor(ti)
	if err != nil {
		return nil, err
	}
	ff, err := t.Float32()
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.Path, ti.Name, err)
	}
	if !slices.ContainsFunc(ff, func(x float32) bool { return x != 1 }) {
		return nil, nil
	}
	orig, _, err := f.size(ak(keyRopeOrigCtx))
	if err != nil {
		return nil, err
	}
	s, ok := llama3FromFreqFactors(theta, headDim, orig, ff)
	if !ok {
		return nil, fmt.Errorf("%s: offset %d: tensor %q holds RoPE divisors %v that no llama3 scaling (factor, low/high frequency factors) reproduces; whittle cannot run them", f.Path, ti.InfoOffset, ti.Name, ff)
	}
	return s, nil
}

// ropeScaling reads llama.rope.scaling.*; as in llama.cpp a factor
// without a type is linear, and the old rope.scale_linear key is read
// too.
func (f *File) ropeScaling(arch string) (*ir.RopeScaling, error) {
	ak := func(k string) string { return archKeyOf(arch, k) }
	typ, err := f.str(ak(keyRopeType), false)
	if err != nil {
		return nil, err
	}
	factor, hasFactor, err := f.float(ak(keyRopeFactor))
	if err != nil {
		return nil, err
	}
	if !hasFactor {
		if factor, hasFactor, err = f.float(ak(keyRopeLinear)); err != nil {
			return nil, err
		}
	}
	orig, _, err := f.size(ak(keyRopeOrigCtx))
	if err != nil {
		return nil, err
	}
	switch typ {
	case "none":
		return nil, nil
	case "", "linear":
		// llama.cpp treats a factor of 0 as "no scaling".
		if !hasFactor || factor == 0 || (typ == "" && factor == 1) {
			return nil, nil
		}
		if !(factor > 0) || math.IsInf(factor, 0) {
			return nil, f.keyErr(ak(keyRopeFactor), "RoPE scaling factor %g must be positive", factor)
		}
		return &ir.RopeScaling{Type: "linear", Factor: factor, OriginalMaxPos: orig}, nil
	}
	return nil, f.keyErr(ak(keyRopeType), "RoPE scaling type %q is not supported (whittle reads none and linear)", typ)
}
