// Package scores holds importance scores: what the score pass measures and
// the pruning passes consume. Higher always means more important.
package scores

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/whittle-ml/whittle/internal/fsutil"
)

// Table is one model's importance scores.
type Table struct {
	// Hidden is one global score per embedding channel.
	Hidden []float64 `json:"hidden,omitempty"`
	// Heads holds, per layer, one score per query head.
	Heads [][]float64 `json:"heads,omitempty"`
	// MLP holds, per layer, one score per intermediate neuron.
	MLP [][]float64 `json:"mlp,omitempty"`
	// Mixture-of-experts layers (entries of dense layers are nil; all nil
	// for a dense model, and in tables written before MoE support).
	//
	// Experts holds, per layer, one score per routed expert.
	Experts [][]float64 `json:"experts,omitempty"`
	// ExpertMLP holds, per layer and routed expert, one score per neuron
	// of that expert: experts are pruned to the same width, each keeping
	// its own best neurons.
	ExpertMLP [][][]float64 `json:"expert_mlp,omitempty"`
	// SharedMLP holds, per layer, one score per shared-expert neuron.
	SharedMLP [][]float64 `json:"shared_mlp,omitempty"`
	// Layers maps a metric name ("lm_loss", "block_influence", ...) to one
	// importance per layer.
	Layers map[string][]float64 `json:"layers,omitempty"`
	// Method records how the scores were obtained.
	Method  string `json:"method"`
	Samples int    `json:"samples,omitempty"`
}

// Save writes the table as JSON (temp file, then rename).
func (t *Table) Save(path string) error {
	b, err := json.MarshalIndent(t, "", " ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, b)
}

// Load reads a table written by Save.
func Load(path string) (*Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t Table
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &t, nil
}

// TopK returns the indices of the k highest scores in increasing index
// order; ties keep the lower index, so the choice is deterministic.
func TopK(s []float64, k int) []int {
	idx := make([]int, len(s))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return s[idx[a]] > s[idx[b]] })
	k = min(max(k, 0), len(idx))
	out := append([]int(nil), idx[:k]...)
	sort.Ints(out)
	return out
}
