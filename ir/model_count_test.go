package ir_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

// refParams is Params as it was written by hand before it was derived
// from the graph, kept as the reference the derivation must reproduce.
func refParams(c *ir.Config) ir.ParamCounts {
	var p ir.ParamCounts
	h := int64(c.Hidden)
	p.Embedding = int64(c.Vocab) * h
	for _, l := range c.Layers {
		q, kv := int64(l.Heads*l.HeadDim), int64(l.KVHeads*l.HeadDim)
		p.Attention += 2*q*h + 2*kv*h
		p.MLP += 3 * int64(l.MLP) * h
		p.Norms += 2 * h
	}
	p.Norms += h
	if !c.Tied {
		p.Classifier = int64(c.Vocab) * h
	}
	p.Total = p.Embedding + p.Attention + p.MLP + p.Norms + p.Classifier
	return p
}

// refFLOPsPerToken is the hand-written FLOPsPerToken, kept likewise.
func refFLOPsPerToken(c *ir.Config, ctx int) int64 {
	var f int64
	h := int64(c.Hidden)
	for _, l := range c.Layers {
		q, kv := int64(l.Heads*l.HeadDim), int64(l.KVHeads*l.HeadDim)
		f += 2 * (2*q*h + 2*kv*h + 3*int64(l.MLP)*h)
		f += 2 * 2 * int64(ctx) * q
	}
	f += 2 * int64(c.Vocab) * h
	return f
}

func TestCountsMatchHandWrittenFormulas(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "cmd", "whittle", "testdata", "llama-3.1-8b", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	llama8B, err := hf.ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	with := func(mutate func(c *ir.Config)) ir.Config {
		c := stories260K()
		mutate(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  ir.Config
	}{
		{"tied GQA", stories260K()},
		{"untied", with(func(c *ir.Config) { c.Tied = false })},
		{"multi-head", with(func(c *ir.Config) {
			c.Layers = ir.UniformLayers(3, ir.LayerConfig{Heads: 4, KVHeads: 4, HeadDim: 16, MLP: 96})
		})},
		{"head_dim independent of hidden", with(func(c *ir.Config) {
			c.Layers = ir.UniformLayers(2, ir.LayerConfig{Heads: 6, KVHeads: 2, HeadDim: 24, MLP: 100})
		})},
		{"per-layer sizes", with(func(c *ir.Config) {
			c.Tied = false
			c.Layers = []ir.LayerConfig{
				{Heads: 8, KVHeads: 4, HeadDim: 8, MLP: 172},
				{Heads: 4, KVHeads: 2, HeadDim: 8, MLP: 64},
				{Heads: 2, KVHeads: 1, HeadDim: 8, MLP: 7},
			}
		})},
		{"zero layers tied", with(func(c *ir.Config) { c.Layers = nil })},
		{"zero layers untied", with(func(c *ir.Config) { c.Layers, c.Tied = nil, false })},
		{"Llama-3.1-8B", llama8B},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := refParams(&tt.cfg)
			want.Active = want.Total // dense
			if got := tt.cfg.Params(); got != want {
				t.Errorf("Params = %+v, want %+v", got, want)
			}
			for _, ctx := range []int{0, 1, 7, 8192} {
				if got, want := tt.cfg.FLOPsPerToken(ctx), refFLOPsPerToken(&tt.cfg, ctx); got != want {
					t.Errorf("FLOPsPerToken(%d) = %d, want %d", ctx, got, want)
				}
			}
		})
	}
	if got := llama8B.Params().Total; got != 8_030_261_248 {
		t.Errorf("Llama-3.1-8B: %d parameters, want 8,030,261,248", got)
	}
}
