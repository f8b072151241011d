package hf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/safetensors"
)

// DefaultMaxShardBytes is transformers' default max_shard_size, "5GB".
const DefaultMaxShardBytes = 5_000_000_000

// SaveOptions tune Save.
type SaveOptions struct {
	// DType converts every tensor; nil keeps each tensor's dtype.
	DType *ir.DType
	// MaxShardBytes caps the tensor bytes of one safetensors file. A model
	// above it is split into model-0000i-of-0000n.safetensors shards
	// listed by model.safetensors.index.json, filled in tensor order as
	// transformers does (a tensor larger than the cap gets a shard of its
	// own). Zero means DefaultMaxShardBytes.
	MaxShardBytes int64
	// DeciLM writes the config as DeciLMForCausalLM with block_configs
	// (see MarshalDeciLMConfig), the published form of a Llama whose
	// layers differ in size, instead of the family's class (plus
	// whittle_layers when layers differ). Save fails, naming the layer,
	// for a model DeciLM cannot express (see CheckDeciLM).
	DeciLM bool
}

// Save writes m as a Hugging Face model directory that transformers loads
// with its family's class (see MarshalConfig): config.json,
// generation_config.json, the weights as safetensors (metadata
// {"format": "pt"}; no lm_head.weight when the embedding is tied; Phi-3's
// projections fused as its checkpoints store them), and,
// when m has a tokenizer, tokenizer.bin and tokenizer.model (see
// writeTokenizer).
//
// config.json has no per-layer sizes. For a non-uniform model (layers
// pruned to different widths) Save writes layer 0's sizes at the top level
// and every layer's under "whittle_layers", which Load honours but
// transformers ignores: transformers cannot load such a model. With
// opts.DeciLM, a Llama-family model whose sizes DeciLM's rules express
// is written as DeciLMForCausalLM instead, which vLLM and llama.cpp's
// converter read.
//
// The directory is built beside dir under a temporary name and renamed
// into place, so a crash never leaves a half-written model at dir. An
// existing dir is replaced whole, but only if it is empty or holds a
// config.json (so a mistyped path cannot delete unrelated files); m may be
// lazily loaded from dir itself, since the old files are read before they
// are removed. A crash between moving the old directory aside and moving
// the new one in leaves both beside dir, as .<name>.old-* and
// .<name>.tmp-*.
func Save(m *ir.Model, dir string, opts SaveOptions) (err error) {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("hf: saving %s: %w", dir, err)
	}
	if opts.DType != nil && opts.DType.Size() == 0 {
		return fmt.Errorf("hf: saving %s: unknown dtype %v", dir, *opts.DType)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("hf: %w", err)
	}
	// Through a symlink, replace the directory it points to, keeping the
	// link.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	parent, base := filepath.Dir(abs), filepath.Base(abs)
	if base == string(filepath.Separator) || base == "." || base == ".." {
		return fmt.Errorf("hf: cannot save a model as %s", dir)
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("hf: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("hf: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
			err = fmt.Errorf("hf: saving %s: %w", dir, err)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := writeModel(m, tmp, opts); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	return replaceDir(tmp, abs)
}

// writeModel writes every file of the model into dir.
func writeModel(m *ir.Model, dir string, opts SaveOptions) error {
	// The config first: a model its family cannot express fails before
	// any weights are written.
	dtype := m.Tensors[ir.NameEmbed].DType
	if opts.DType != nil {
		dtype = *opts.DType
	}
	marshal := MarshalConfig
	if opts.DeciLM {
		marshal = MarshalDeciLMConfig
	}
	cfg, err := marshal(&m.Config, dtype)
	if err != nil {
		return err
	}
	maxShard := opts.MaxShardBytes
	if maxShard <= 0 {
		maxShard = DefaultMaxShardBytes
	}
	names := m.TensorNames()
	srcs := make([]safetensors.Source, len(names))
	for i, name := range names {
		t := m.Tensors[name]
		d := t.DType
		if opts.DType != nil {
			d = *opts.DType
		}
		srcs[i] = safetensors.Source{Name: name, DType: d, Shape: t.Shape, Data: func() ([]byte, error) {
			c, err := t.Convert(d)
			if err != nil {
				return nil, err
			}
			return c.Bytes()
		}}
	}
	srcs, err = fuseSources(&m.Config, srcs)
	if err != nil {
		return err
	}
	if srcs, err = splitExperts(&m.Config, srcs); err != nil {
		return err
	}
	meta := map[string]string{"format": "pt"}
	shards := planShards(srcs, maxShard)
	if len(shards) == 1 {
		safetensors.SortSources(shards[0])
		if err := safetensors.WriteSources(filepath.Join(dir, safetensors.SingleFileName), shards[0], meta); err != nil {
			return err
		}
	} else {
		ix := safetensors.Index{Metadata: map[string]any{}, WeightMap: map[string]string{}}
		var total int64
		for i, shard := range shards {
			file := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
			for _, s := range shard {
				ix.WeightMap[s.Name] = file
				total += sourceBytes(s)
			}
			safetensors.SortSources(shard)
			if err := safetensors.WriteSources(filepath.Join(dir, file), shard, meta); err != nil {
				return err
			}
		}
		ix.Metadata["total_size"] = total
		data, err := marshalJSON(ix)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, safetensors.IndexFileName), data); err != nil {
			return err
		}
	}

	if err := writeFile(filepath.Join(dir, ConfigFile), cfg); err != nil {
		return err
	}
	gen, err := marshalGenerationConfig(&m.Config)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, GenerationConfigFile), gen); err != nil {
		return err
	}
	if m.Tokenizer != nil {
		return writeTokenizer(m.Tokenizer, dir, m.Config.MaxSeq)
	}
	return nil
}

func sourceBytes(s safetensors.Source) int64 {
	n := int64(s.DType.Size())
	for _, d := range s.Shape {
		n *= int64(d)
	}
	return n
}

// planShards splits the sources, in order, into runs of at most max
// bytes, starting a new shard when the next tensor would overflow a
// non-empty one (transformers' rule).
func planShards(srcs []safetensors.Source, max int64) [][]safetensors.Source {
	var shards [][]safetensors.Source
	var cur []safetensors.Source
	var size int64
	for _, s := range srcs {
		n := sourceBytes(s)
		if len(cur) > 0 && size+n > max {
			shards = append(shards, cur)
			cur, size = nil, 0
		}
		cur = append(cur, s)
		size += n
	}
	return append(shards, cur)
}

// replaceDir moves the finished directory tmp to dir, moving an existing
// model at dir aside first and deleting it only once the new one is in
// place.
func replaceDir(tmp, dir string) error {
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	st, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(tmp, dir); err != nil {
			return err
		}
		return syncDir(parent)
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	if err := checkReplaceable(dir); err != nil {
		return err
	}
	old, err := os.MkdirTemp(parent, "."+base+".old-*")
	if err != nil {
		return err
	}
	aside := filepath.Join(old, base)
	if err := os.Rename(dir, aside); err != nil {
		os.Remove(old)
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if os.Rename(aside, dir) == nil {
			os.Remove(old)
		}
		return err
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	// The new model is complete and in place; failing to delete the old
	// copy loses nothing.
	os.RemoveAll(old)
	return nil
}

// checkReplaceable allows replacing only an empty directory or a model
// directory.
func checkReplaceable(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		return nil
	}
	return fmt.Errorf("refusing to replace %s: it is not empty and has no %s, so it does not look like a model directory", dir, ConfigFile)
}

// syncDir flushes a directory's entries, so renames into it survive a
// crash.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// writeFile writes data to path atomically, readable by all like the
// files transformers writes (temp files start private).
func writeFile(path string, data []byte) error {
	f, err := fsutil.Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	return f.Commit()
}
