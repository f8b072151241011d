// Command whittle-plugin-wanda is an out-of-tree whittle pass plugin: the
// `wanda-score` pass scores MLP neurons, attention heads and hidden
// channels Wanda-style, by weight magnitude times input activation norm,
// producing a scores table that whittle's prune-width pass consumes.
//
// Wanda (Sun et al., 2023, "A Simple and Effective Pruning Approach for
// Large Language Models") scores a weight W[i,j] by |W[i,j]|·‖X_j‖, where
// X_j is input feature j of the layer over the calibration tokens. For
// structured pruning a unit's score is the sum over the weights it feeds:
// the "Wanda-sp" criterion (An et al., 2024, "Fluctuation-based Adaptive
// Structured Pruning for Large Language Models"):
//
//	MLP neuron j of layer l:  act_mlp[l][j] · Σ_i |W_down[i,j]|
//	head h of layer l:        Σ_{c ∈ h} act_o[l][c] · Σ_i |W_o[i,c]|
//	hidden channel d:         act_hidden[d] · Σ_l Σ_{W ∈ q,k,v,gate,up} Σ_i |W[i,d]|
//
// The activation norms come from the backend's Stats call (whittle's
// Minitron statistics: per channel, the L2 norm over sequences of the mean
// absolute activation), computed through whittle on the recipe's backend;
// the weights come from the model itself.
//
// Build: go build -o ~/.whittle/plugins/whittle-plugin-wanda .
package main

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/plugins/sdk"
)

// Config is the pass block's schema, derived by the SDK from the tags.
type Config struct {
	Model     sdk.Ref `hcl:"model" doc:"the model to score"`
	Dataset   sdk.Ref `hcl:"dataset" doc:"calibration text, tokenized with the model's tokenizer"`
	Samples   *int    `hcl:"samples,optional" doc:"calibration sequences (default 64)"`
	SeqLen    *int    `hcl:"seq_len,optional" doc:"tokens per sequence (default 128)"`
	BatchSize *int    `hcl:"batch_size,optional" doc:"sequences per forward pass (default 8)"`
}

func get(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

func (c *Config) check() error {
	for _, f := range []struct {
		name string
		v    *int
		min  int
	}{{"samples", c.Samples, 1}, {"seq_len", c.SeqLen, 2}, {"batch_size", c.BatchSize, 1}} {
		if f.v != nil && *f.v < f.min {
			return fmt.Errorf("%s = %d must be at least %d", f.name, *f.v, f.min)
		}
	}
	return nil
}

func main() {
	sdk.ServePass("wanda", "0.1.0", sdk.Kind[Config]{
		Name:        "wanda-score",
		Description: "Wanda-style |W|·‖X‖ importance of MLP neurons, heads and hidden channels",
		Produces:    sdk.ProducesScores,
		Plan: func(pc *sdk.PlanContext, c *Config) (*sdk.Config, error) {
			if _, err := pc.Model(c.Model); err != nil {
				return nil, err
			}
			return nil, c.check()
		},
		Run: run,
	})
}

func run(ctx context.Context, rc *sdk.RunContext, c *Config) error {
	if err := c.check(); err != nil {
		return err
	}
	be, err := rc.Backend()
	if err != nil {
		return err
	}
	dir, err := rc.ModelDir(c.Model)
	if err != nil {
		return err
	}
	data, err := rc.PrepareDataset(c.Dataset, c.Model, sdk.DataOptions{SeqLen: get(c.SeqLen, 128)})
	if err != nil {
		return err
	}
	id, err := be.Load(ctx, sdk.LoadRequest{Dir: dir})
	if err != nil {
		return err
	}
	defer be.Release(ctx, id)
	rc.Progress(0, 2, "collecting activation statistics")
	st, err := be.Stats(ctx, sdk.StatsRequest{
		Model:       id,
		Data:        sdk.Sequences{Path: data.Train.Path, MaskPath: data.Train.MaskPath, Limit: get(c.Samples, 64)},
		BatchSize:   get(c.BatchSize, 8),
		Activations: true,
	})
	if err != nil {
		return err
	}
	rc.Progress(1, 2, "weighting by weight magnitudes")
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	t, err := Score(m, st)
	if err != nil {
		return err
	}
	t.Samples = st.Sequences
	rc.Log.Info("scored", "sequences", st.Sequences, "tokens", st.Tokens)
	if err := rc.Metric("tokens", st.Tokens); err != nil {
		return err
	}
	rc.Progress(2, 2, "done")
	return rc.SetScores(t)
}

// colL1 adds Σ_i |W[i,j]| of a [rows, cols] matrix into sum[j].
func colL1(m *sdk.Model, name string, sum []float64) error {
	t, err := m.Tensor(name)
	if err != nil {
		return err
	}
	if len(t.Shape) != 2 || t.Shape[1] != len(sum) {
		return fmt.Errorf("%s has shape %v; want [*, %d]", name, t.Shape, len(sum))
	}
	v, err := t.Float32()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	cols := t.Shape[1]
	for i, x := range v {
		sum[i%cols] += math.Abs(float64(x))
	}
	return nil
}

// Score computes the Wanda-sp table from a model and its activation
// statistics.
func Score(m *sdk.Model, st *sdk.StatsResult) (*sdk.Scores, error) {
	cfg := m.Config
	L := len(cfg.Layers)
	if len(st.MLP) != L || len(st.Hidden) != cfg.Hidden {
		return nil, fmt.Errorf("statistics cover %d layers and %d hidden channels; the model has %d and %d", len(st.MLP), len(st.Hidden), L, cfg.Hidden)
	}
	if len(st.HeadChannels) != L && len(st.Heads) != L {
		return nil, errors.New("statistics have no attention-head activations")
	}
	t := &sdk.Scores{Method: "wanda-sp", Hidden: make([]float64, cfg.Hidden)}
	for l, lc := range cfg.Layers {
		if len(st.MLP[l]) != lc.MLP {
			return nil, fmt.Errorf("layer %d: statistics have %d MLP neurons, the model %d", l, len(st.MLP[l]), lc.MLP)
		}
		// Tensor names by function: every family names its norms its own
		// way, so the names come from the config, not from fixed roles.
		lt := cfg.LayerTensors(l)
		down := make([]float64, lc.MLP)
		if err := colL1(m, lt.Down, down); err != nil {
			return nil, err
		}
		mlp := make([]float64, lc.MLP)
		for j := range mlp {
			mlp[j] = st.MLP[l][j] * down[j]
		}
		t.MLP = append(t.MLP, mlp)

		q := lc.Heads * lc.HeadDim
		o := make([]float64, q)
		if err := colL1(m, lt.O, o); err != nil {
			return nil, err
		}
		heads := make([]float64, lc.Heads)
		for c := range o {
			h := c / lc.HeadDim
			switch {
			case len(st.HeadChannels) == L && len(st.HeadChannels[l]) == q:
				heads[h] += st.HeadChannels[l][c] * o[c]
			case len(st.Heads[l]) == lc.Heads:
				// Without per-channel statistics, the head's norm
				// stands in for each of its channels.
				heads[h] += st.Heads[l][h] * o[c]
			default:
				return nil, fmt.Errorf("layer %d: statistics do not match the model's %d heads", l, lc.Heads)
			}
		}
		t.Heads = append(t.Heads, heads)

		for _, name := range []string{lt.Q, lt.K, lt.V, lt.Gate, lt.Up} {
			if err := colL1(m, name, t.Hidden); err != nil {
				return nil, err
			}
		}
	}
	for d := range t.Hidden {
		t.Hidden[d] *= st.Hidden[d]
	}
	return t, nil
}
