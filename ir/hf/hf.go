// Package hf reads and writes Hugging Face checkpoints: a directory with
// config.json and safetensors weights (one model.safetensors, or shards
// listed by model.safetensors.index.json), as transformers saves its
// LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
// Qwen3ForCausalLM, Gemma2ForCausalLM and Phi3ForCausalLM, and the
// mixture-of-experts MixtralForCausalLM, Qwen2MoeForCausalLM and
// Qwen3MoeForCausalLM.
//
// Hugging Face's tensor names and layout are whittle's canonical ones, so
// weights pass through unchanged, except Phi-3's fused qkv_proj and
// gate_up_proj, split into Llama's q/k/v and gate/up on load and fused
// again on save, and the routed experts' one tensor per expert, stacked on
// load and split on save; config.json is translated per family.
package hf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/safetensors"
)

// Load opens a Hugging Face model directory. Tensors stay lazy views of
// memory-mapped safetensors files until used; Close on the model releases
// the maps.
//
// Buffers that older checkpoints saved (rotary_emb.inv_freq) are dropped.
// With tie_word_embeddings an lm_head.weight in the files is accepted only
// if it equals the embedding. A tokenizer is attached when the directory
// has one whittle reads: tokenizer.model (SentencePiece), else
// tokenizer.bin (llama2.c's format).
func Load(dir string) (*ir.Model, error) {
	cfg, err := readConfig(dir)
	if err != nil {
		return nil, err
	}
	tensors, closers, err := safetensors.OpenModelDir(dir)
	if err != nil {
		return nil, fmt.Errorf("hf: %w", err)
	}
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Source: dir}
	for _, c := range closers {
		m.AddCloser(c)
	}
	if err := fill(m, dir, tensors); err != nil {
		m.Close()
		return nil, fmt.Errorf("hf: %w", err)
	}
	return m, nil
}

// LoadConfigOnly reads a directory's config.json (and tokenizer, when
// there is one) without any weights: a model with no tensors, enough to
// inspect and plan (ir.Model.ConfigOnly).
func LoadConfigOnly(dir string) (*ir.Model, error) {
	cfg, err := readConfig(dir)
	if err != nil {
		return nil, err
	}
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Source: dir}
	if err := attachTokenizer(m, dir); err != nil {
		return nil, fmt.Errorf("hf: %w", err)
	}
	return m, nil
}

// HasWeights reports whether dir holds safetensors weights (a single file
// or a sharded index). A file it cannot stat counts as present, so that
// Load reports why it cannot be read.
func HasWeights(dir string) bool {
	for _, name := range []string{safetensors.SingleFileName, safetensors.IndexFileName} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}

func readConfig(dir string) (ir.Config, error) {
	cfgPath := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return ir.Config{}, fmt.Errorf("hf: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return ir.Config{}, fmt.Errorf("hf: %s: %w", cfgPath, err)
	}
	return cfg, nil
}

// fill puts the weights and the tokenizer into m and validates it.
func fill(m *ir.Model, dir string, tensors map[string]*ir.Tensor) error {
	for name, t := range tensors {
		if strings.HasSuffix(name, ".rotary_emb.inv_freq") {
			continue
		}
		m.Tensors[name] = t
	}
	if err := splitFused(m); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if err := stackExperts(m); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if cls, ok := m.Tensors[ir.NameClassifier]; ok && m.Config.Tied {
		if err := checkTiedClassifier(m.Tensors[ir.NameEmbed], cls); err != nil {
			return fmt.Errorf("%s: tie_word_embeddings is true but %w", dir, err)
		}
		delete(m.Tensors, ir.NameClassifier)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	return attachTokenizer(m, dir)
}

// attachTokenizer loads dir's tokenizer, if any, fitted to m's config.
func attachTokenizer(m *ir.Model, dir string) error {
	tok, tokPath, err := loadTokenizer(dir)
	if err != nil {
		return err
	}
	if tok != nil && tok.ByteLevel != nil {
		// tokenizer.json holds no EOS (tokenizer_config.json or config.json
		// does), and models pad vocab_size past the tokenizer's ids.
		if tok.EOS < 0 && m.Config.EOS >= 0 && m.Config.EOS < tok.Size() {
			tok.EOS = m.Config.EOS
		}
		if tok.BOS < 0 && m.Config.BOS >= 0 && m.Config.BOS < tok.Size() {
			tok.BOS = m.Config.BOS
		}
		tok.PadTo(m.Config.Vocab)
	}
	if tok != nil && tok.Size() != m.Config.Vocab {
		return fmt.Errorf("%s has %d pieces, but config.json's vocab_size is %d", tokPath, tok.Size(), m.Config.Vocab)
	}
	m.Tokenizer = tok
	return nil
}

// checkTiedClassifier accepts a classifier saved beside a tied embedding
// only when it is the same matrix: otherwise which one the model uses
// would depend on load order.
func checkTiedClassifier(embed, cls *ir.Tensor) error {
	if embed == nil {
		return nil // Validate reports the missing embedding
	}
	if cls.DType != embed.DType || fmt.Sprint(cls.Shape) != fmt.Sprint(embed.Shape) {
		return fmt.Errorf("%s (%v %v) differs from %s (%v %v)", ir.NameClassifier, cls.DType, cls.Shape, ir.NameEmbed, embed.DType, embed.Shape)
	}
	a, err := embed.Bytes()
	if err != nil {
		return fmt.Errorf("reading %s: %w", ir.NameEmbed, err)
	}
	b, err := cls.Bytes()
	if err != nil {
		return fmt.Errorf("reading %s: %w", ir.NameClassifier, err)
	}
	if !bytes.Equal(a, b) {
		return fmt.Errorf("%s holds different values from %s", ir.NameClassifier, ir.NameEmbed)
	}
	return nil
}
