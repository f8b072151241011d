// Package modelio loads and saves models in every format whittle knows,
// choosing the format from the path and the file's first bytes.
package modelio

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/gguf"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/llama2c"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// Format is a model file format.
type Format string

const (
	HF      Format = "hf"      // Hugging Face directory: config.json + safetensors
	GGUF    Format = "gguf"    // llama.cpp's single-file format
	Llama2c Format = "llama2c" // llama2.c checkpoint plus tokenizer.bin
	// DeciLM is a Hugging Face directory whose config is
	// DeciLMForCausalLM's block_configs: the published form of a Llama
	// whose layers differ (Nemotron-51B's), for the sizes its rules can
	// express. It is written only; reading it is reading HF.
	DeciLM Format = "decilm"
)

// ParseFormat accepts a format name as written in recipes and flags.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case HF, GGUF, Llama2c, DeciLM:
		return f, nil
	case "safetensors", "huggingface":
		return HF, nil
	case "bin":
		return Llama2c, nil
	}
	return "", fmt.Errorf("unknown model format %q (want hf, gguf or llama2c)", s)
}

// Detect decides a path's format from what is there.
func Detect(path string) (Format, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.IsDir() {
		if _, err := os.Stat(filepath.Join(path, "config.json")); err == nil {
			return HF, nil
		}
		return "", fmt.Errorf("%s: a directory without config.json is not a Hugging Face model", path)
	}
	if strings.HasSuffix(path, ".safetensors") || filepath.Base(path) == "config.json" {
		return HF, nil
	}
	isGGUF, err := hasGGUFMagic(path)
	if err != nil {
		return "", err
	}
	if isGGUF {
		return GGUF, nil
	}
	if strings.HasSuffix(path, ".gguf") {
		return "", fmt.Errorf("%s: file does not start with the GGUF magic", path)
	}
	return Llama2c, nil
}

// LoadOptions tune Load.
type LoadOptions struct {
	// Format forces a format instead of detecting it.
	Format Format
	// Tokenizer is a llama2.c tokenizer.bin to attach; for llama2.c
	// checkpoints without one, Load looks for tokenizer.bin or
	// tok<vocab>.bin beside the checkpoint, as llama2.c names them.
	Tokenizer string
	// AllowConfigOnly loads a Hugging Face config.json that has no
	// safetensors beside it as a model without weights
	// (ir.Model.ConfigOnly), for inspecting and planning.
	AllowConfigOnly bool
}

// Load reads a model in any supported format.
func Load(path string, opts LoadOptions) (*ir.Model, error) {
	format := opts.Format
	if format == "" {
		var err error
		if format, err = Detect(path); err != nil {
			return nil, err
		}
	}
	var m *ir.Model
	var err error
	switch format {
	case HF, DeciLM:
		dir := path
		if st, serr := os.Stat(path); serr == nil && !st.IsDir() {
			dir = filepath.Dir(path)
		}
		if opts.AllowConfigOnly && !hf.HasWeights(dir) {
			m, err = hf.LoadConfigOnly(dir)
		} else {
			m, err = hf.Load(dir)
		}
	case GGUF:
		m, err = gguf.Load(path)
	case Llama2c:
		m, err = llama2c.Load(path)
	default:
		return nil, fmt.Errorf("unknown model format %q", format)
	}
	if err != nil {
		return nil, err
	}
	tokPath := opts.Tokenizer
	if tokPath == "" && format == Llama2c {
		tokPath = findLlama2cTokenizer(path, m.Config.Vocab)
	}
	if tokPath != "" {
		tok, err := LoadTokenizer(tokPath)
		if err != nil {
			m.Close()
			return nil, err
		}
		if tok.Size() != m.Config.Vocab {
			m.Close()
			return nil, fmt.Errorf("tokenizer %s has %d pieces, model %s has a vocabulary of %d", tokPath, tok.Size(), path, m.Config.Vocab)
		}
		m.Tokenizer = tok
	}
	return m, nil
}

func findLlama2cTokenizer(modelPath string, vocab int) string {
	dir := filepath.Dir(modelPath)
	for _, name := range []string{fmt.Sprintf("tok%d.bin", vocab), "tokenizer.bin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// SaveOptions tune Save.
type SaveOptions struct {
	// DType converts every tensor; nil keeps each tensor's dtype
	// (llama2.c checkpoints are always float32).
	DType *ir.DType
	// Quantize is a GGUF block quantization of the matrices ("q8_0",
	// "q4_0").
	Quantize string
}

// ParseStorage reads a storage name for format: a dtype (f32, f16, bf16)
// for any format, or a quantization (q8_0, q4_0) for GGUF.
func ParseStorage(format Format, s string) (SaveOptions, error) {
	var o SaveOptions
	if s == "" {
		return o, nil
	}
	if q := strings.ToLower(s); slices.Contains(gguf.Quantizations, q) {
		if format != GGUF {
			return o, fmt.Errorf("%s is a GGUF quantization; %s files hold f32, f16 or bf16", q, format)
		}
		o.Quantize = q
		return o, nil
	}
	d, err := ir.ParseDType(s)
	if err != nil {
		return o, fmt.Errorf("%w, or %s for gguf", err, strings.Join(gguf.Quantizations, " or "))
	}
	o.DType = &d
	return o, nil
}

// Save writes m to path in the given format. For llama2.c a tokenizer is
// written beside the checkpoint as tok<vocab>.bin when m has one, so Load
// finds it again.
func Save(m *ir.Model, path string, format Format, opts SaveOptions) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	switch format {
	case HF:
		if opts.Quantize != "" {
			return fmt.Errorf("%s quantization is for GGUF files only", opts.Quantize)
		}
		return hf.Save(m, path, hf.SaveOptions{DType: opts.DType})
	case DeciLM:
		if opts.Quantize != "" {
			return fmt.Errorf("%s quantization is for GGUF files only", opts.Quantize)
		}
		return hf.Save(m, path, hf.SaveOptions{DType: opts.DType, DeciLM: true})
	case GGUF:
		return gguf.Save(m, path, gguf.SaveOptions{DType: opts.DType, Quantize: opts.Quantize})
	case Llama2c:
		if err := llama2c.Save(m, path); err != nil {
			return err
		}
		if m.Tokenizer != nil {
			return tokenizer.WriteLlama2c(m.Tokenizer, filepath.Join(filepath.Dir(path), fmt.Sprintf("tok%d.bin", m.Config.Vocab)))
		}
		return nil
	}
	return fmt.Errorf("unknown model format %q", format)
}

// LoadTokenizer reads a tokenizer file: any GGUF file's vocabulary
// (recognized by its magic, whatever the name: a model or a
// vocabulary-only file), a SentencePiece tokenizer.model, a Hugging Face
// byte-level BPE tokenizer.json, or a llama2.c tokenizer.bin. Without the
// GGUF magic it goes by extension for ".model" and ".json", else tries
// llama2.c first and SentencePiece when that fails (neither format has a
// magic number).
func LoadTokenizer(path string) (*tokenizer.Tokenizer, error) {
	isGGUF, err := hasGGUFMagic(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	switch {
	case isGGUF:
		return gguf.LoadTokenizer(path)
	case strings.HasSuffix(path, ".gguf"):
		return nil, fmt.Errorf("tokenizer %s: file does not start with the GGUF magic", path)
	case strings.HasSuffix(path, ".model"):
		return tokenizer.LoadSentencePiece(path)
	case strings.HasSuffix(path, ".json"):
		return tokenizer.LoadTokenizerJSON(path)
	}
	t, err := tokenizer.LoadLlama2c(path)
	if err == nil {
		return t, nil
	}
	if t2, err2 := tokenizer.LoadSentencePiece(path); err2 == nil {
		return t2, nil
	}
	return nil, err
}

// VocabOnly reports whether path is a GGUF file holding a vocabulary and
// no weights (llama.cpp's ggml-vocab-*.gguf); false when it cannot tell.
func VocabOnly(path string) bool {
	if ok, err := hasGGUFMagic(path); err != nil || !ok {
		return false
	}
	f, err := gguf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.VocabOnly()
}

// hasGGUFMagic reports whether the file at path starts with "GGUF".
func hasGGUFMagic(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	magic := make([]byte, len(gguf.Magic))
	n, err := io.ReadFull(f, magic)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return string(magic[:n]) == gguf.Magic, nil
}
