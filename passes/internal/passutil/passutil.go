// Package passutil holds what the compute passes (correct, score,
// distill, instruction-tune, eval) share: attribute positions for errors,
// defaults, seeded row sampling of token files, loading and saving models
// through a backend, and the training loop driver.
package passutil

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// DefaultSeqLen is the sequence length passes use when the recipe sets
// none: 256 tokens, or the model's context when shorter.
func DefaultSeqLen(cfg ir.Config) int {
	if cfg.MaxSeq > 0 && cfg.MaxSeq < 256 {
		return cfg.MaxSeq
	}
	return 256
}

// EvalSizes are the options that passes scoring a model on data share:
// how many sequences (0 = all), of how many tokens, in batches of how
// many, and the seed of anything drawn.
type EvalSizes struct {
	Sequences, SeqLen, Batch int
	Seed                     int64
}

// ResolveEvalSizes checks the recipe's values against cfg and fills in
// the defaults (DefaultSeqLen, DefaultBatch, seed 0).
func ResolveEvalSizes(p *recipe.Pass, cfg ir.Config, sequences, seqLen, batch *int, seed *int64) (EvalSizes, error) {
	s := EvalSizes{SeqLen: DefaultSeqLen(cfg), Batch: DefaultBatch}
	if sequences != nil {
		if s.Sequences = *sequences; s.Sequences < 0 {
			return s, Errorf(p, "sequences", "sequences = %d must not be negative (0 = all)", s.Sequences)
		}
	}
	if seqLen != nil {
		s.SeqLen = *seqLen
		if s.SeqLen < 2 || (cfg.MaxSeq > 0 && s.SeqLen > cfg.MaxSeq) {
			return s, Errorf(p, "seq_len", "seq_len = %d must be between 2 and the model's context of %d tokens", s.SeqLen, cfg.MaxSeq)
		}
	}
	if batch != nil {
		if s.Batch = *batch; s.Batch < 1 {
			return s, Errorf(p, "batch", "batch = %d must be at least 1", s.Batch)
		}
	}
	if seed != nil {
		s.Seed = *seed
	}
	return s, nil
}

// AttrPos renders the position of attribute name of a pass block as
// file:line:col, or "" when the block does not set it.
func AttrPos(p *recipe.Pass, name string) string {
	if p == nil || p.Body == nil {
		return ""
	}
	// The config bodies are attributes only; diagnostics about blocks do
	// not matter here.
	attrs, _ := p.Body.JustAttributes()
	if a, ok := attrs[name]; ok {
		return pipeline.At(a.Expr.Range())
	}
	return ""
}

// Errorf is an error about attribute attr of pass p, prefixed with the
// attribute's position when the block sets it. (The pipeline prefixes
// every pass error with the block's position, which is where a default
// that is at fault comes from.)
func Errorf(p *recipe.Pass, attr, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if at := AttrPos(p, attr); at != "" {
		return fmt.Errorf("%s: %s", at, msg)
	}
	return errors.New(msg)
}

// HasAttr reports whether the pass block sets attribute name.
func HasAttr(p *recipe.Pass, name string) bool {
	if p == nil || p.Body == nil {
		return false
	}
	attrs, _ := p.Body.JustAttributes()
	_, ok := attrs[name]
	return ok
}

// Perplexity is exp(loss), or +Inf (JSON-unsafe) capped to MaxFloat64.
func Perplexity(loss float64) float64 {
	p := math.Exp(loss)
	if math.IsInf(p, 1) {
		return math.MaxFloat64
	}
	return p
}

// SameVocabulary reports whether two tokenizers encode text identically,
// comparing what each token decodes to rather than the stored spelling: a
// vocabulary read from llama2.c's tokenizer.bin and the same one read from
// tokenizer.model spell spaces and control tokens differently.
func SameVocabulary(a, b *tokenizer.Tokenizer) error {
	if len(a.Pieces) != len(b.Pieces) {
		return fmt.Errorf("vocabularies have %d and %d tokens", len(a.Pieces), len(b.Pieces))
	}
	if a.BOS != b.BOS || a.EOS != b.EOS {
		return fmt.Errorf("BOS/EOS ids differ: %d/%d and %d/%d", a.BOS, a.EOS, b.BOS, b.EOS)
	}
	for id := range a.Pieces {
		if id == a.BOS || id == a.EOS || id == a.UNK {
			continue
		}
		if x, y := a.DecodeToken(-1, id), b.DecodeToken(-1, id); x != y {
			return fmt.Errorf("token %d is %q in one and %q in the other", id, x, y)
		}
	}
	return nil
}

// CheckCaps fails when the backend lacks a capability a pass needs.
func CheckCaps(ctx context.Context, be backend.Backend, caps ...string) (backend.Info, error) {
	info, err := be.Info(ctx)
	if err != nil {
		return info, fmt.Errorf("asking the backend what it supports: %w", err)
	}
	for _, c := range caps {
		if !info.Has(c) {
			return info, fmt.Errorf("backend %q does not offer %q (it offers %v): %w", info.Name, c, info.Capabilities, backend.ErrUnsupported)
		}
	}
	return info, nil
}

// LoadModel loads a model slot into the backend from its Hugging Face
// directory. The returned release function frees it, even after the run's
// context is cancelled.
func LoadModel(ctx context.Context, rc *pipeline.RunContext, be backend.Backend, ref recipe.Ref, trainable bool) (backend.ModelID, string, func(), error) {
	dir, err := rc.ModelDir(ref)
	if err != nil {
		return "", "", nil, err
	}
	id, err := be.Load(ctx, backend.LoadRequest{Dir: dir, Trainable: trainable})
	if err != nil {
		return "", "", nil, fmt.Errorf("loading %s (%s) into the backend: %w", ref, dir, err)
	}
	release := func() {
		if err := be.Release(context.WithoutCancel(ctx), id); err != nil {
			rc.Log.Warn("releasing a model", "model", ref.String(), "err", err)
		}
	}
	return id, dir, release, nil
}

// tokenizerFiles are what a model directory may carry besides weights;
// backends save weights and config only.
var tokenizerFiles = []string{hf.SentencePieceFile, hf.Llama2cTokenizerFile, hf.TokenizerConfigFile, "tokenizer.json", "special_tokens_map.json"}

// SaveModel has the backend save a trained model into the pass's model
// directory, copies the tokenizer files of the model it started from when
// the backend did not write them, and publishes the result.
func SaveModel(ctx context.Context, rc *pipeline.RunContext, be backend.Backend, id backend.ModelID, srcDir string) error {
	out := rc.OutputModelDir()
	if err := be.Save(ctx, backend.SaveRequest{Model: id, Dir: out}); err != nil {
		return fmt.Errorf("saving the trained model to %s: %w", out, err)
	}
	for _, name := range tokenizerFiles {
		dst := filepath.Join(out, name)
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(srcDir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("copying the tokenizer: %w", err)
		}
		if err := fsutil.WriteFile(dst, b); err != nil {
			return fmt.Errorf("copying the tokenizer to %s: %w", dst, err)
		}
	}
	if err := rc.SetModelDir(out); err != nil {
		return fmt.Errorf("reading back the model the backend saved in %s: %w", out, err)
	}
	return nil
}

// CheckDataset checks that the dataset attribute attr names a declared
// dataset of the right kind: instruction pairs when instruct is set, plain
// text (text or jsonl) otherwise.
func CheckDataset(p *recipe.Pass, r *recipe.Recipe, attr string, ref recipe.Ref, instruct bool) error {
	for _, d := range r.Datasets {
		if d.Name != ref.Name {
			continue
		}
		isInstruct := d.Format == data.FormatInstruct
		switch {
		case instruct && !isInstruct:
			return Errorf(p, attr, "%s is %s data; this pass needs prompt/response pairs (a dataset with format = \"instruct\")", ref, formatName(d.Format))
		case !instruct && isInstruct:
			return Errorf(p, attr, "%s is instruction data; this pass needs plain text (use instruction-tune for prompt/response pairs)", ref)
		}
		return nil
	}
	return Errorf(p, attr, "%s is not declared", ref)
}

func formatName(f string) string {
	if f == "" {
		return data.FormatText
	}
	return f
}
