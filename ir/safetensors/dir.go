package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/whittle-ml/whittle/ir"
)

// File names Hugging Face uses for a model's weights.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
)

// Index is a sharded checkpoint's model.safetensors.index.json.
type Index struct {
	// Metadata is free-form; transformers writes {"total_size": bytes}.
	Metadata map[string]any `json:"metadata"`
	// WeightMap maps each tensor name to the shard file holding it.
	WeightMap map[string]string `json:"weight_map"`
}

// ParseIndex decodes and validates an index: every shard must be a plain
// file name in the same directory (no path components), so a hostile
// index cannot point outside the model directory.
func ParseIndex(data []byte) (*Index, error) {
	var ix Index
	if err := json.Unmarshal(data, &ix); err != nil {
		return nil, fmt.Errorf("invalid index JSON: %v", err)
	}
	if len(ix.WeightMap) == 0 {
		return nil, fmt.Errorf("index has no weight_map entries")
	}
	for _, name := range sortedKeys(ix.WeightMap) {
		shard := ix.WeightMap[name]
		if shard == "" || shard == "." || shard == ".." || strings.ContainsAny(shard, `/\`) || shard != filepath.Base(shard) {
			return nil, fmt.Errorf("tensor %q: shard %q is not a file name in the model directory", name, shard)
		}
	}
	return &ix, nil
}

// Shards lists the distinct shard files, sorted.
func (ix *Index) Shards() []string {
	set := map[string]bool{}
	for _, s := range ix.WeightMap {
		set[s] = true
	}
	return sortedKeys(set)
}

// OpenModelDir opens a Hugging Face model directory's weights: the single
// model.safetensors when present (transformers prefers it too), otherwise
// the shards listed by model.safetensors.index.json. Only the tensors the
// index lists are returned. The closers release the memory maps and must
// outlive every use of the tensors.
func OpenModelDir(dir string) (tensors map[string]*ir.Tensor, closers []io.Closer, err error) {
	defer func() {
		if err != nil {
			for _, c := range closers {
				c.Close()
			}
			tensors, closers = nil, nil
		}
	}()
	single := filepath.Join(dir, SingleFileName)
	if _, statErr := os.Stat(single); statErr == nil {
		f, err := Open(single)
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, f)
		tensors, err = f.Tensors()
		return tensors, closers, err
	} else if !errors.Is(statErr, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("safetensors: %w", statErr)
	}

	indexPath := filepath.Join(dir, IndexFileName)
	data, err := os.ReadFile(indexPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s: no %s or %s", dir, SingleFileName, IndexFileName)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	ix, err := ParseIndex(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", indexPath, err)
	}
	files := map[string]*File{}
	for _, shard := range ix.Shards() {
		f, err := Open(filepath.Join(dir, shard))
		if err != nil {
			return nil, closers, fmt.Errorf("%s: %w", indexPath, err)
		}
		closers = append(closers, f)
		files[shard] = f
	}
	tensors = make(map[string]*ir.Tensor, len(ix.WeightMap))
	for _, name := range sortedKeys(ix.WeightMap) {
		f := files[ix.WeightMap[name]]
		if _, ok := f.Info(name); !ok {
			return nil, closers, fmt.Errorf("%s: tensor %q is mapped to %s, which does not contain it", indexPath, name, f.Path)
		}
		t, err := f.Tensor(name)
		if err != nil {
			return nil, closers, err
		}
		tensors[name] = t
	}
	return tensors, closers, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
