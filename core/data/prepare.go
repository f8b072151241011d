// Package data turns datasets and evaluation tasks into the token data the
// backends consume.
//
// A dataset (recipe `dataset` block) becomes a train and a validation
// token file: .npy int32 arrays [N, L] of N sequences of L tokens, plus,
// for instruction data, a .npy uint8 [N, L] loss mask (see
// backend.Sequences). A task (recipe `task` block, llm-foundry jsonl)
// becomes tokenized multiple-choice or last-word items.
//
// Everything is deterministic: the same inputs, seed and options give
// byte-identical files on every machine, and output file names carry a
// hash of those inputs, so a pipeline can reuse them and a changed input
// gets new files.
package data

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// Dataset formats (recipe.Dataset.Format).
const (
	FormatText     = "text"     // plain text, documents separated by blank lines
	FormatJSONL    = "jsonl"    // one {"text": ...} document per line
	FormatInstruct = "instruct" // one {"prompt": ..., "response": ...} pair per line
)

// version is part of every cache key: bump it when the bytes Prepare
// writes for the same inputs change.
const version = "whittle-data-1"

func errorf(format string, args ...any) error { return fmt.Errorf("data: "+format, args...) }

// Options control Prepare.
type Options struct {
	// Dir receives the token files (created if missing). The pipeline
	// points it at its cache, where files are reused by name.
	Dir string
	// SeqLen is L, the tokens per sequence (at least 2).
	SeqLen int
	// Packing (instruct only) concatenates examples into rows of L tokens,
	// an example continuing on the next row, the last row padded. Without
	// it each example gets its own row: cut to L tokens, or padded to L.
	// Text data is always packed.
	Packing bool
	// Template (instruct only) places each pair into text; "" means
	// DefaultTemplate.
	Template Template
}

// Prepared describes the token files Prepare produced (or found cached),
// in a form fit for a run manifest.
type Prepared struct {
	Name   string `json:"name"`
	Format string `json:"format"`
	SeqLen int    `json:"seq_len"`
	// Key is the sha256 of everything the files depend on; its first 16
	// hex digits are part of the file names.
	Key             string `json:"key"`
	Source          string `json:"source"`
	SourceSHA256    string `json:"source_sha256"`
	TokenizerSHA256 string `json:"tokenizer_sha256"`
	Seed            int64  `json:"seed"`
	// ValidationFraction is the requested fraction of documents.
	ValidationFraction float64 `json:"validation_fraction"`
	Packing            bool    `json:"packing,omitempty"`
	Template           string  `json:"template,omitempty"`

	Train backend.Sequences `json:"train"`
	// Validation has an empty Path when no document was held out.
	Validation backend.Sequences `json:"validation"`

	// Documents counts the documents (text) or pairs (instruct) read; the
	// split counts add up to it.
	Documents      int `json:"documents"`
	TrainDocuments int `json:"train_documents"`
	ValDocuments   int `json:"val_documents"`
	TrainRows      int `json:"train_rows"`
	ValRows        int `json:"val_rows"`
	// TrainTokens and ValTokens count the tokens written, padding excluded.
	TrainTokens int `json:"train_tokens"`
	ValTokens   int `json:"val_tokens"`
	// TrainTargets and ValTargets count the positions j ≥ 1 that are
	// prediction targets: rows·(L−1) for text, the mask's 1s (outside
	// position 0) for instruct data.
	TrainTargets int `json:"train_targets"`
	ValTargets   int `json:"val_targets"`
	// DroppedTokens (text) counts the tokens of each split's final,
	// partial row, which is not written.
	DroppedTokens int `json:"dropped_tokens,omitempty"`
	// Truncated (instruct, unpacked) counts examples cut to L tokens;
	// Skipped those left without any target in their row (a prompt of L
	// tokens or more), which are not written.
	Truncated int `json:"truncated,omitempty"`
	Skipped   int `json:"skipped,omitempty"`

	// Cached reports that the files were found in Dir, not written.
	Cached bool `json:"-"`
}

// Prepare tokenizes a dataset into train and validation token files in
// opts.Dir, or returns the files a previous call made from the same
// inputs.
//
// Documents (text: paragraphs separated by blank lines; jsonl: one per
// line; instruct: one pair per line) are split by a seeded permutation:
// the first ⌈fraction·N⌉ documents of it are validation (never all N).
// Each split keeps the documents in file order.
//
// Text: each document is encoded with BOS (no EOS, as Llama pretraining
// data is), the documents concatenated, and the stream cut into rows of L
// tokens. The final partial row of each split is dropped rather than
// padded, so text files need no mask and every position is a real target.
// A split with documents but fewer than L tokens is an error.
//
// Instruct: each pair becomes BOS, the tokens of prompt+response, EOS,
// with the mask 1 on the response's tokens and EOS (see SplitTokens for
// where the response starts); rows are packed or padded (Options.Packing),
// padding being EOS tokens with mask 0.
//
// Files: <Dir>/<name>-<split>-L<L>-<key>.npy, masks with .mask.npy, and a
// <name>-L<L>-<key>.json description written last, whose presence (with
// the files it names) marks a complete, reusable result.
func Prepare(ds *recipe.Dataset, tok *tokenizer.Tokenizer, opts Options) (*Prepared, error) {
	if ds == nil || tok == nil {
		return nil, errorf("Prepare needs a dataset and a tokenizer")
	}
	p, err := describe(ds, tok, opts)
	if err != nil {
		return nil, err
	}
	base := fmt.Sprintf("%s-L%d-%s", safeName(ds.Name), opts.SeqLen, p.Key[:16])
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, errorf("dataset %q: %v", ds.Name, err)
	}
	descPath := filepath.Join(dir, base+".json")
	if cached, ok := loadCached(descPath, p.Key); ok {
		cached.Source = ds.Path
		return cached, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, errorf("dataset %q: %v", ds.Name, err)
	}

	raw, err := os.ReadFile(ds.Path)
	if err != nil {
		return nil, errorf("dataset %q: %v", ds.Name, err)
	}
	if fsutil.HashBytes(raw) != p.SourceSHA256 {
		return nil, errorf("dataset %q: %s changed while being read", ds.Name, ds.Path)
	}
	var train, val *split
	switch p.Format {
	case FormatText, FormatJSONL:
		var docs []string
		if p.Format == FormatText {
			docs = SplitDocuments(string(raw))
		} else if docs, err = ParseTextJSONL(ds.Path, raw); err != nil {
			return nil, errorf("dataset %q: %w", ds.Name, err)
		}
		train, val = packText(docs, tok, p)
	case FormatInstruct:
		pairs, err := ParseInstruct(ds.Path, raw)
		if err != nil {
			return nil, errorf("dataset %q: %w", ds.Name, err)
		}
		train, val = packInstruct(pairs, tok, p)
	}
	if train.docs == 0 {
		return nil, errorf("dataset %q: %s holds no documents", ds.Name, ds.Path)
	}
	for _, s := range []*split{train, val} {
		if s.docs > 0 && s.skipped == s.docs {
			return nil, errorf("dataset %q: every example of the %s split has a prompt of L=%d tokens or more", ds.Name, s.name, p.SeqLen)
		}
		if s.docs > 0 && s.rows == 0 {
			return nil, errorf("dataset %q: the %s split has %d tokens, fewer than one row of L=%d; lower seq_len or raise validation_fraction",
				ds.Name, s.name, s.tokens, p.SeqLen)
		}
	}

	if p.Train, err = train.write(dir, safeName(ds.Name), p); err != nil {
		return nil, errorf("dataset %q: %w", ds.Name, err)
	}
	if val.docs > 0 {
		if p.Validation, err = val.write(dir, safeName(ds.Name), p); err != nil {
			return nil, errorf("dataset %q: %w", ds.Name, err)
		}
	}
	p.Documents = train.docs + val.docs
	p.TrainDocuments, p.ValDocuments = train.docs, val.docs
	p.TrainRows, p.ValRows = train.rows, val.rows
	p.TrainTokens, p.ValTokens = train.tokens, val.tokens
	p.TrainTargets, p.ValTargets = train.targets(), val.targets()
	p.DroppedTokens = train.dropped + val.dropped
	p.Truncated = train.truncated + val.truncated
	p.Skipped = train.skipped + val.skipped

	desc, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, errorf("dataset %q: %v", ds.Name, err)
	}
	if err := fsutil.WriteFile(descPath, append(desc, '\n')); err != nil {
		return nil, errorf("dataset %q: %v", ds.Name, err)
	}
	return p, nil
}

// describe checks the inputs and fills in everything Prepared records about
// them, including the cache key; nothing is read but the source's hash.
func describe(ds *recipe.Dataset, tok *tokenizer.Tokenizer, opts Options) (*Prepared, error) {
	format := ds.Format
	if format == "" {
		format = FormatText
		if ext := strings.ToLower(filepath.Ext(ds.Path)); ext == ".jsonl" || ext == ".json" {
			format = FormatJSONL
		}
	}
	switch format {
	case FormatText, FormatJSONL, FormatInstruct:
	default:
		return nil, errorf("dataset %q: unknown format %q (want text, jsonl or instruct)", ds.Name, format)
	}
	if opts.SeqLen < 2 {
		return nil, errorf("dataset %q: sequence length %d is less than 2", ds.Name, opts.SeqLen)
	}
	if opts.Dir == "" {
		return nil, errorf("dataset %q: no output directory", ds.Name)
	}
	if ds.ValidationFraction < 0 || ds.ValidationFraction >= 1 {
		return nil, errorf("dataset %q: validation fraction %g is outside [0, 1)", ds.Name, ds.ValidationFraction)
	}
	if tok.BOS < 0 {
		return nil, errorf("dataset %q: the tokenizer has no BOS token to start documents with", ds.Name)
	}
	p := &Prepared{
		Name:               ds.Name,
		Format:             format,
		SeqLen:             opts.SeqLen,
		Source:             ds.Path,
		TokenizerSHA256:    TokenizerHash(tok),
		Seed:               ds.Seed,
		ValidationFraction: ds.ValidationFraction,
	}
	if format == FormatInstruct {
		p.Packing = opts.Packing
		p.Template = string(opts.Template)
		if p.Template == "" {
			p.Template = string(DefaultTemplate)
		}
		if err := Template(p.Template).check(); err != nil {
			return nil, errorf("dataset %q: %w", ds.Name, err)
		}
	}
	sum, err := fsutil.HashFile(ds.Path)
	if err != nil {
		return nil, errorf("dataset %q: %v", ds.Name, err)
	}
	p.SourceSHA256 = sum
	key := strings.Join([]string{
		version, p.Format, p.SourceSHA256, p.TokenizerSHA256,
		strconv.Itoa(p.SeqLen), strconv.FormatInt(p.Seed, 10),
		strconv.FormatFloat(p.ValidationFraction, 'g', -1, 64),
		strconv.FormatBool(p.Packing), p.Template,
	}, "\x00")
	h := sha256.Sum256([]byte(key))
	p.Key = hex.EncodeToString(h[:])
	return p, nil
}

// loadCached returns the description at path when it is complete: the same
// key, and every file it names present with the shape it records.
func loadCached(path, key string) (*Prepared, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	var p Prepared
	if err := json.Unmarshal(b, &p); err != nil || p.Key != key {
		return nil, false
	}
	// The files sit beside the description, wherever the cache now is.
	dir := filepath.Dir(path)
	for _, f := range []*string{&p.Train.Path, &p.Train.MaskPath, &p.Validation.Path, &p.Validation.MaskPath} {
		if *f != "" {
			*f = filepath.Join(dir, filepath.Base(*f))
		}
	}
	check := func(file string, rows int) bool {
		f, err := npy.Open(file)
		if err != nil {
			return false
		}
		defer f.Close()
		return len(f.Shape) == 2 && f.Shape[0] == rows && f.Shape[1] == p.SeqLen
	}
	for _, s := range []struct {
		seq  backend.Sequences
		rows int
	}{{p.Train, p.TrainRows}, {p.Validation, p.ValRows}} {
		if s.seq.Path == "" {
			if s.rows != 0 {
				return nil, false
			}
			continue
		}
		if !check(s.seq.Path, s.rows) || (s.seq.MaskPath != "" && !check(s.seq.MaskPath, s.rows)) {
			return nil, false
		}
	}
	p.Cached = true
	return &p, true
}

// safeName keeps a dataset name usable in a file name.
func safeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "dataset"
	}
	return b.String()
}

// split accumulates one split's rows.
type split struct {
	name      string // "train" or "validation"
	seqLen    int
	ids       []int32
	mask      []uint8 // nil for text
	docs      int
	rows      int
	tokens    int // real tokens written
	dropped   int
	truncated int
	skipped   int
}

func (s *split) targets() int {
	if s.mask == nil {
		return s.rows * (s.seqLen - 1)
	}
	n := 0
	for i, m := range s.mask {
		if m != 0 && i%s.seqLen != 0 {
			n++
		}
	}
	return n
}

func (s *split) write(dir, name string, p *Prepared) (backend.Sequences, error) {
	stem := filepath.Join(dir, fmt.Sprintf("%s-%s-L%d-%s", name, s.name, p.SeqLen, p.Key[:16]))
	shape := []int{s.rows, s.seqLen}
	seq := backend.Sequences{Path: stem + ".npy"}
	if err := npy.WriteInt32(seq.Path, shape, s.ids); err != nil {
		return seq, err
	}
	if s.mask != nil {
		seq.MaskPath = stem + ".mask.npy"
		if err := npy.WriteUint8(seq.MaskPath, shape, s.mask); err != nil {
			return seq, err
		}
	}
	return seq, nil
}

// packText encodes and packs text documents into the two splits.
func packText(docs []string, tok *tokenizer.Tokenizer, p *Prepared) (train, val *split) {
	isVal := splitValidation(len(docs), p.ValidationFraction, p.Seed)
	train = &split{name: "train", seqLen: p.SeqLen}
	val = &split{name: "validation", seqLen: p.SeqLen}
	encoded := encodeAll(docs, tok)
	for i, ids := range encoded {
		s := train
		if isVal[i] {
			s = val
		}
		s.docs++
		s.ids = append(s.ids, ids...)
	}
	for _, s := range []*split{train, val} {
		s.rows = len(s.ids) / s.seqLen
		keep := s.rows * s.seqLen
		s.dropped = len(s.ids) - keep
		s.tokens = keep
		if s.rows == 0 {
			s.tokens = len(s.ids) // reported in the error
		}
		s.ids = s.ids[:keep]
	}
	return train, val
}

// encodeAll encodes documents (with BOS) on every core. Tokenizers are safe
// for concurrent use, and each document's ids land in its own slot, so the
// result does not depend on the scheduling.
func encodeAll(docs []string, tok *tokenizer.Tokenizer) [][]int32 {
	out := make([][]int32, len(docs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(1, len(docs))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(docs) {
					return
				}
				ids := tok.Encode(docs[i], true, false)
				out[i] = make([]int32, len(ids))
				for j, id := range ids {
					out[i][j] = int32(id)
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// EncodePair tokenizes one instruction pair placed by tmpl: BOS, the
// tokens of prompt+response (SplitTokens decides where the response
// starts), then EOS when the tokenizer has one. mask is 1 on the
// response's tokens and EOS, 0 on BOS and the prompt.
func EncodePair(tok *tokenizer.Tokenizer, tmpl Template, pair Pair) (ids []int32, mask []uint8, err error) {
	if tmpl == "" {
		tmpl = DefaultTemplate
	}
	if err := tmpl.check(); err != nil {
		return nil, nil, errorf("%w", err)
	}
	prompt, response := tmpl.split(pair.Prompt, pair.Response)
	ctx, cont := SplitTokens(tok, prompt, response)
	if tok.EOS >= 0 {
		cont = append(cont, tok.EOS)
	}
	ids = make([]int32, 0, len(ctx)+len(cont))
	mask = make([]uint8, len(ctx), len(ctx)+len(cont))
	for _, id := range ctx {
		ids = append(ids, int32(id))
	}
	for _, id := range cont {
		ids = append(ids, int32(id))
		mask = append(mask, 1)
	}
	return ids, mask, nil
}

// packInstruct encodes pairs and packs or pads them into the two splits.
func packInstruct(pairs []Pair, tok *tokenizer.Tokenizer, p *Prepared) (train, val *split) {
	isVal := splitValidation(len(pairs), p.ValidationFraction, p.Seed)
	L := p.SeqLen
	pad := int32(max(tok.EOS, 0))
	train = &split{name: "train", seqLen: L, mask: []uint8{}}
	val = &split{name: "validation", seqLen: L, mask: []uint8{}}
	for i, pair := range pairs {
		s := train
		if isVal[i] {
			s = val
		}
		s.docs++
		// The template was checked in describe, so this cannot fail.
		ids, mask, _ := EncodePair(tok, Template(p.Template), pair)
		if p.Packing {
			s.ids = append(s.ids, ids...)
			s.mask = append(s.mask, mask...)
			s.tokens += len(ids)
			continue
		}
		if len(ids) > L {
			ids, mask = ids[:L], mask[:L]
			s.truncated++
		}
		target := false
		for j := 1; j < len(mask); j++ {
			target = target || mask[j] != 0
		}
		if !target {
			s.skipped++
			continue
		}
		s.tokens += len(ids)
		s.ids = append(s.ids, ids...)
		s.mask = append(s.mask, mask...)
		for range L - len(ids) {
			s.ids = append(s.ids, pad)
			s.mask = append(s.mask, 0)
		}
	}
	for _, s := range []*split{train, val} {
		for len(s.ids)%L != 0 {
			s.ids = append(s.ids, pad)
			s.mask = append(s.mask, 0)
		}
		s.rows = len(s.ids) / L
	}
	return train, val
}
