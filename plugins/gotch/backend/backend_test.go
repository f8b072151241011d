package backend

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// tinyDir writes a small random model and a token file.
func tinyDir(t *testing.T) (dir, tokens string) {
	t.Helper()
	cfg := ir.Config{Arch: "llama", Vocab: 16, Hidden: 8, Layers: ir.UniformLayers(2, ir.LayerConfig{Heads: 2, KVHeads: 1, HeadDim: 4, MLP: 12}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 8, BOS: 1, EOS: 2}
	names, shapes := cfg.ExpectedShapes()
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}}
	for i, name := range names {
		n := 1
		for _, d := range shapes[name] {
			n *= d
		}
		v := make([]float32, n)
		for j := range v {
			v[j] = float32(math.Sin(float64(i*131+j))) * 0.3
			if len(shapes[name]) == 1 {
				v[j] += 1
			}
		}
		m.Tensors[name] = ir.FromFloat32(ir.F32, shapes[name], v)
	}
	root := t.TempDir()
	dir = filepath.Join(root, "model")
	if err := hf.Save(m, dir, hf.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	tokens = filepath.Join(root, "tokens.npy")
	data := make([]int32, 4*8)
	for i := range data {
		data[i] = int32(i*7) % 16
	}
	if err := npy.WriteInt32(tokens, []int{4, 8}, data); err != nil {
		t.Fatal(err)
	}
	return dir, tokens
}

func newCPU(t *testing.T, precision string) *Backend {
	t.Helper()
	b, err := New(Options{Device: "cpu", Precision: precision, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestBadRequests: invalid requests are errors that say what is wrong,
// never panics, and leave the backend usable.
func TestBadRequests(t *testing.T) {
	ctx := context.Background()
	b := newCPU(t, "")
	dir, tokens := tinyDir(t)
	id, err := b.Load(ctx, api.LoadRequest{Dir: dir, Trainable: true})
	if err != nil {
		t.Fatal(err)
	}
	data := api.Sequences{Path: tokens}
	opt := api.OptimConfig{LR: 1e-3}
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"load missing dir", func() error { _, err := b.Load(ctx, api.LoadRequest{Dir: filepath.Join(dir, "nope")}); return err }, "nope"},
		{"unknown model", func() error { _, err := b.Evaluate(ctx, api.EvalRequest{Model: "m99", LM: &data}); return err }, "m99"},
		{"nothing to evaluate", func() error { _, err := b.Evaluate(ctx, api.EvalRequest{Model: id}); return err }, "nothing to evaluate"},
		{"skip past last layer", func() error {
			_, err := b.Evaluate(ctx, api.EvalRequest{Model: id, LM: &data, SkipLayers: [][]int{{2}}})
			return err
		}, "layer 2"},
		{"missing tokens", func() error {
			_, err := b.Evaluate(ctx, api.EvalRequest{Model: id, LM: &api.Sequences{Path: filepath.Join(dir, "x.npy")}})
			return err
		}, "x.npy"},
		{"choice gold out of range", func() error {
			_, err := b.Evaluate(ctx, api.EvalRequest{Model: id, Choices: []api.ChoiceItem{{Contexts: [][]int{{1}}, Continuations: [][]int{{2}}, Gold: 3}}})
			return err
		}, "gold 3"},
		{"token outside vocabulary", func() error {
			_, err := b.Evaluate(ctx, api.EvalRequest{Model: id, LastWord: []api.LastWordItem{{Context: []int{1}, Continuation: []int{99}}}})
			return err
		}, "token 99"},
		{"stats nothing asked", func() error { _, err := b.Stats(ctx, api.StatsRequest{Model: id, Data: data}); return err }, "neither"},
		{"train zero steps", func() error {
			_, err := b.Train(ctx, api.TrainRequest{Model: id, Objective: "ce", Data: data, BatchSize: 1, Optim: opt}, nil)
			return err
		}, "steps 0"},
		{"train unknown mode", func() error {
			_, err := b.Train(ctx, api.TrainRequest{Model: id, Objective: "ce", Mode: "half", Data: data, Steps: 1, BatchSize: 1, Optim: opt}, nil)
			return err
		}, `mode "half"`},
		{"kl without teacher", func() error {
			_, err := b.Train(ctx, api.TrainRequest{Model: id, Objective: "kl", Data: data, Steps: 1, BatchSize: 1, Optim: opt}, nil)
			return err
		}, "teacher"},
		{"negative lr", func() error {
			_, err := b.Train(ctx, api.TrainRequest{Model: id, Objective: "ce", Data: data, Steps: 1, BatchSize: 1, Optim: api.OptimConfig{LR: -1}}, nil)
			return err
		}, "learning rate"},
		{"empty prompt", func() error {
			_, err := b.Generate(ctx, api.GenerateRequest{Model: id, Prompts: [][]int{{}}, MaxTokens: 2})
			return err
		}, "empty"},
		{"bad save dtype", func() error { return b.Save(ctx, api.SaveRequest{Model: id, Dir: t.TempDir(), DType: "q4"}) }, "q4"},
	}
	for _, c := range cases {
		err := c.call()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	// Still usable.
	if _, err := b.Evaluate(ctx, api.EvalRequest{Model: id, LM: &data}); err != nil {
		t.Fatalf("after the bad requests: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Info(ctx); !errors.Is(err, errClosed) {
		t.Errorf("Info after Close: %v, want errClosed", err)
	}
}

// TestInferenceModelTrains: a model loaded for inference in bfloat16 is
// reloaded in float32 when trained, and its loss then matches a model
// loaded for training.
func TestInferenceModelTrains(t *testing.T) {
	ctx := context.Background()
	b := newCPU(t, "bf16")
	dir, tokens := tinyDir(t)
	inf, err := b.Load(ctx, api.LoadRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.models[inf].store; got != torch.BFloat16 {
		t.Fatalf("inference model stored as %v, want bfloat16", got)
	}
	req := api.TrainRequest{Model: inf, Objective: "ce", Data: api.Sequences{Path: tokens}, Steps: 1, BatchSize: 2, Optim: api.OptimConfig{LR: 1e-3}}
	res, err := b.Train(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.models[inf].store; got != torch.Float32 {
		t.Errorf("after training the model is stored as %v, want float32", got)
	}
	tr, err := b.Load(ctx, api.LoadRequest{Dir: dir, Trainable: true})
	if err != nil {
		t.Fatal(err)
	}
	req.Model = tr
	want, err := b.Train(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.FinalLoss != want.FinalLoss {
		t.Errorf("first-step loss %g after promotion, %g when loaded for training", res.FinalLoss, want.FinalLoss)
	}
}

func TestParseDevice(t *testing.T) {
	for in, want := range map[string]string{"cpu": "cpu", "CPU": "cpu", "auto": "", "": ""} {
		d, err := parseDevice(in)
		if err != nil {
			t.Errorf("parseDevice(%q): %v", in, err)
			continue
		}
		if want != "" && d.String() != want {
			t.Errorf("parseDevice(%q) = %v, want %s", in, d, want)
		}
	}
	for _, in := range []string{"tpu", "cuda:x", "cuda:-1", "cuda:"} {
		if _, err := parseDevice(in); err == nil {
			t.Errorf("parseDevice(%q) accepted", in)
		}
	}
	if !torch.CUDAAvailable() {
		if _, err := parseDevice("cuda"); err == nil || !strings.Contains(err.Error(), "no CUDA device") {
			t.Errorf("parseDevice(cuda) without a GPU: %v", err)
		}
	}
}

func TestLRSchedule(t *testing.T) {
	o := api.OptimConfig{LR: 1, MinLR: 0.1, WarmupSteps: 2}
	want := []float64{0.5, 1, 1, 0.55, 0.1, 0.1} // warm-up, then cosine over steps 2..4
	for step, w := range want {
		if got := lrAt(o, step, 4); math.Abs(got-w) > 1e-12 {
			t.Errorf("lrAt(step %d) = %g, want %g", step, got, w)
		}
	}
}

// TestKVCache: decoding token by token against the KV cache gives the
// logits of a full forward over the whole sequence (grouped-query
// attention, a RoPE table longer than the sequence), and the cache
// refuses what it cannot decode.
func TestKVCache(t *testing.T) {
	ctx := context.Background()
	b := newCPU(t, "fp32")
	dir, _ := tinyDir(t)
	id, err := b.Load(ctx, api.LoadRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	seq := []int64{1, 5, 9, 3, 14, 7, 2}
	err = b.do(ctx, func() error {
		m, err := b.model(id)
		if err != nil {
			return err
		}
		cache := newKVCache(len(m.cfg.Layers), 8)
		defer cache.free()
		for _, prompt := range []int{1, 3} {
			cache.free()
			for n := prompt; n <= len(seq); n++ {
				feed := seq[n-1 : n]
				if n == prompt {
					feed = seq[:n]
				}
				got, err := b.lastLogits(m, feed, cache)
				if err != nil {
					return err
				}
				want, err := b.lastLogits(m, seq[:n], nil)
				if err != nil {
					return err
				}
				for i := range want {
					if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
						t.Errorf("prompt %d, %d tokens: logit %d cached %g, full %g", prompt, n, i, got[i], want[i])
					}
				}
			}
			if cache.pos != len(seq) {
				t.Errorf("cache holds %d positions, want %d", cache.pos, len(seq))
			}
		}
		if _, err := b.lastLogits(m, seq[:2], cache); err == nil || !strings.Contains(err.Error(), "one token at a time") {
			t.Errorf("two tokens after the prompt: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
