package gguf

import (
	"bytes"
	"fmt"
	"math"
	"slices"

	"github.com/whittle-ml/whittle/ir"
)

// Load reads a GGUF file of the llama architecture as an IR model. Tensors
// stay in the memory-mapped file until used; Q and K rows are permuted
// from GGUF's interleaved RoPE order to the IR's half order when read.
// The map is released by the model's Close.
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

// Model maps the file's llama metadata and tensors to an IR model whose
// tensors read from f, so f must stay open while the model is used.
//
// Supported: F32, F16 and BF16 tensors; per-layer arrays of
// feed_forward_length, attention.head_count and attention.head_count_kv;
// RoPE unscaled, linearly scaled, or llama3-scaled through a rope_freqs
// tensor; SentencePiece ("llama") tokenizers.
// An output.weight byte-identical to token_embd.weight (as llama2.c's
// converter writes for tied models) is read as a tied classifier.
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
	if arch != archLlama {
		return nil, f.keyErr(KeyArchitecture, "architecture %q is not supported (whittle reads %q)", arch, archLlama)
	}
	cfg, err := f.config()
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

	tensors := make(map[string]*ir.Tensor, len(f.Tensors))
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		if ti.Name == tensorRopeFreqs {
			continue // read into the config's RoPE scaling
		}
		name, layer, ok := CanonicalName(ti.Name)
		if !ok {
			return nil, fmt.Errorf("%s: offset %d: tensor %q is not part of the llama architecture whittle reads", f.Path, ti.InfoOffset, ti.Name)
		}
		if layer >= len(cfg.Layers) {
			return nil, fmt.Errorf("%s: offset %d: tensor %q belongs to layer %d, but %s is %d", f.Path, ti.InfoOffset, ti.Name, layer, archKey(keyBlocks), len(cfg.Layers))
		}
		t, err := f.tensor(ti)
		if err != nil {
			return nil, err
		}
		switch {
		case name == ir.LayerName(layer, ir.RoleQ):
			t = permuted(t, cfg.Layers[layer].Heads, cfg.Layers[layer].HeadDim, ir.RopeToHalf)
		case name == ir.LayerName(layer, ir.RoleK):
			t = permuted(t, cfg.Layers[layer].KVHeads, cfg.Layers[layer].HeadDim, ir.RopeToHalf)
		}
		tensors[name] = t
	}

	// Vocabulary without a tokenizer: llama.vocab_size, else the
	// embedding's rows.
	if tok == nil {
		v, ok, err := f.size(archKey(keyVocabSize))
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
func (f *File) config() (ir.Config, error) {
	cfg := ir.Config{Arch: archLlama}
	var err error
	req := func(key string) int {
		if err != nil {
			return 0
		}
		v, ok, e := f.size(archKey(key))
		switch {
		case e != nil:
			err = e
		case !ok:
			err = fmt.Errorf("%s: missing metadata key %q", f.Path, archKey(key))
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
		return cfg, f.keyErr(archKey(keyBlocks), "the model has no blocks")
	}
	// Every layer has nine tensors: refuse a count the file cannot hold
	// before allocating per-layer state for it.
	if n > len(f.Tensors) {
		return cfg, f.keyErr(archKey(keyBlocks), "%d blocks, but the file holds only %d tensors", n, len(f.Tensors))
	}
	heads, err := f.perLayer(archKey(keyHeads), n, nil)
	if err != nil {
		return cfg, err
	}
	kvHeads, err := f.perLayer(archKey(keyKVHeads), n, heads)
	if err != nil {
		return cfg, err
	}
	mlp, err := f.perLayer(archKey(keyFFN), n, nil)
	if err != nil {
		return cfg, err
	}

	// llama.cpp derives the head size from layer 0 unless key_length
	// says otherwise.
	headDim, ok, err := f.size(archKey(keyKeyLength))
	if err != nil {
		return cfg, err
	}
	if !ok {
		if heads[0] == 0 || cfg.Hidden%heads[0] != 0 {
			return cfg, fmt.Errorf("%s: cannot derive the head size: %s %d is not a multiple of %s %v and %s is absent",
				f.Path, archKey(keyEmbedding), cfg.Hidden, archKey(keyHeads), heads, archKey(keyKeyLength))
		}
		headDim = cfg.Hidden / heads[0]
	}
	if v, ok, err := f.size(archKey(keyValueLength)); err != nil {
		return cfg, err
	} else if ok && v != headDim {
		return cfg, f.keyErr(archKey(keyValueLength), "value head size %d differs from the key head size %d; whittle needs them equal", v, headDim)
	}
	if r, ok, err := f.size(archKey(keyRopeDim)); err != nil {
		return cfg, err
	} else if ok && r != headDim {
		return cfg, f.keyErr(archKey(keyRopeDim), "RoPE rotates %d of the %d dimensions of each head; whittle supports only full rotation", r, headDim)
	}
	cfg.Layers = make([]ir.LayerConfig, n)
	for i := range cfg.Layers {
		cfg.Layers[i] = ir.LayerConfig{Heads: heads[i], KVHeads: kvHeads[i], HeadDim: headDim, MLP: mlp[i]}
	}

	eps, ok, err := f.float(archKey(keyRMSEps))
	if err != nil {
		return cfg, err
	}
	if !ok {
		return cfg, fmt.Errorf("%s: missing metadata key %q", f.Path, archKey(keyRMSEps))
	}
	if !(eps > 0) || math.IsInf(eps, 0) {
		return cfg, f.keyErr(archKey(keyRMSEps), "RMS norm epsilon %g must be positive and finite", eps)
	}
	cfg.NormEps = eps
	cfg.RopeTheta = defaultRopeBase
	if base, ok, err := f.float(archKey(keyRopeBase)); err != nil {
		return cfg, err
	} else if ok {
		if !(base > 0) || math.IsInf(base, 0) {
			return cfg, f.keyErr(archKey(keyRopeBase), "RoPE base %g must be positive and finite", base)
		}
		cfg.RopeTheta = base
	}
	if cfg.RopeScaling, err = f.ropeScaling(); err != nil {
		return cfg, err
	}
	if _, ok := f.Info(tensorRopeFreqs); ok {
		if cfg.RopeScaling != nil {
			return cfg, fmt.Errorf("%s: both %s scaling metadata and a %s tensor; llama.cpp would apply both, whittle applies one", f.Path, cfg.RopeScaling.Type, tensorRopeFreqs)
		}
		cfg.RopeScaling, err = f.ropeFreqs(cfg.RopeTheta, headDim)
	}
	return cfg, err
}

// ropeFreqs reads the rope_freqs tensor (llama.cpp's form of Llama 3.1's
// scaling) back into llama3 parameters; see llama3FromFreqFactors for
// what is recovered exactly. All-ones divisors are no scaling. The IR
// cannot hold arbitrary per-pair divisors, so a tensor that no llama3
// scaling reproduces is refused rather than run with other frequencies.
func (f *File) ropeFreqs(theta float64, headDim int) (*ir.RopeScaling, error) {
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
	orig, _, err := f.size(archKey(keyRopeOrigCtx))
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
func (f *File) ropeScaling() (*ir.RopeScaling, error) {
	typ, err := f.str(archKey(keyRopeType), false)
	if err != nil {
		return nil, err
	}
	factor, hasFactor, err := f.float(archKey(keyRopeFactor))
	if err != nil {
		return nil, err
	}
	if !hasFactor {
		if factor, hasFactor, err = f.float(archKey(keyRopeLinear)); err != nil {
			return nil, err
		}
	}
	orig, _, err := f.size(archKey(keyRopeOrigCtx))
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
			return nil, f.keyErr(archKey(keyRopeFactor), "RoPE scaling factor %g must be positive", factor)
		}
		return &ir.RopeScaling{Type: "linear", Factor: factor, OriginalMaxPos: orig}, nil
	}
	return nil, f.keyErr(archKey(keyRopeType), "RoPE scaling type %q is not supported (whittle reads none and linear)", typ)
}
