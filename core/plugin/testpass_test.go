package plugin

import (
	"context"
	"errors"
	"os"
	"strings"

	"github.com/whittle-ml/whittle/plugins/sdk"
)

// The pass plugin the tests serve (mode "pass"), written against the SDK
// as a third party would.

type echoConfig struct {
	Model  sdk.Ref   `hcl:"model" doc:"the model whose statistics are echoed"`
	Factor float64   `hcl:"factor" doc:"scales every hidden score"`
	Tags   []string  `hcl:"tags,optional"`
	Limit  *int      `hcl:"limit,optional"`
	Crash  bool      `hcl:"crash,optional" doc:"exit mid-pass, as a crash would"`
	Extra  []sdk.Ref `hcl:"extra,optional" ref:"model,scores"`
}

type halveConfig struct {
	Model sdk.Ref `hcl:"model"`
}

func testPassPlugin() sdk.Plugin {
	return sdk.Plugin{Name: "testpass", Version: "1.2.3", Passes: []sdk.Pass{
		sdk.Kind[echoConfig]{
			Name:        "echo-score",
			Description: "scores hidden channels by the backend's statistics",
			Produces:    sdk.ProducesScores,
			Plan: func(pc *sdk.PlanContext, c *echoConfig) (*sdk.Config, error) {
				if _, err := pc.Model(c.Model); err != nil {
					return nil, err
				}
				if c.Factor <= 0 {
					return nil, errors.New("factor must be positive")
				}
				return nil, nil
			},
			Run: runEcho,
		},
		sdk.Kind[halveConfig]{
			Name:        "halve-mlp",
			Description: "keeps the first half of every layer's MLP neurons",
			Produces:    sdk.ProducesModel,
			Plan: func(pc *sdk.PlanContext, c *halveConfig) (*sdk.Config, error) {
				cfg, err := pc.Model(c.Model)
				if err != nil {
					return nil, err
				}
				for i := range cfg.Layers {
					cfg.Layers[i].MLP /= 2
				}
				return &cfg, nil
			},
			Run: func(ctx context.Context, rc *sdk.RunContext, c *halveConfig) error {
				m, err := rc.Model(c.Model)
				if err != nil {
					return err
				}
				out := m
				for l, lc := range m.Config.Layers {
					keep := make([]int, lc.MLP/2)
					for i := range keep {
						keep[i] = i
					}
					if out, err = out.KeepMLP(l, keep); err != nil {
						return err
					}
				}
				return rc.SetModel(out)
			},
		},
	}}
}

func runEcho(ctx context.Context, rc *sdk.RunContext, c *echoConfig) error {
	be, err := rc.Backend()
	if err != nil {
		return err
	}
	dir, err := rc.ModelDir(c.Model)
	if err != nil {
		return err
	}
	id, err := be.Load(ctx, sdk.LoadRequest{Dir: dir})
	if err != nil {
		return err
	}
	limit := 3
	if c.Limit != nil {
		limit = *c.Limit
	}
	st, err := be.Stats(ctx, sdk.StatsRequest{Model: id, Data: sdk.Sequences{Path: "unused.npy", Limit: limit}, Activations: true})
	if err != nil {
		return err
	}
	if err := be.Release(ctx, id); err != nil {
		return err
	}
	if c.Crash {
		os.Exit(3)
	}
	t := &sdk.Scores{Method: "echo " + strings.Join(c.Tags, ","), Samples: st.Sequences}
	for _, v := range st.Hidden {
		t.Hidden = append(t.Hidden, v*c.Factor)
	}
	rc.Log.Info("echoed", "model", c.Model.Name, "extra", len(c.Extra))
	rc.Progress(1, 1, "done")
	if err := rc.Metric("factor", c.Factor); err != nil {
		return err
	}
	return rc.SetScores(t)
}
