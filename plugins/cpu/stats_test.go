package cpu

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// TestStatsStories260K compares every statistic with the definitions of
// minitron.md evaluated over a float64 forward pass, sequence by sequence.
func TestStatsStories260K(t *testing.T) {
	f := loadStories(t)
	const n, l = 5, 24
	path, rows := f.sequences(t, n, l)
	b, id := checkStats(t, f.m, f.dir, path, rows)
	cfg := f.m.Config
	bi, err := b.Stats(context.Background(), backend.StatsRequest{Model: id, Data: backend.Sequences{Path: path, Limit: 2}, BlockInfluence: true})
	if err != nil {
		t.Fatal(err)
	}
	if bi.MLP != nil || bi.Hidden != nil || len(bi.BlockInfluence) != len(cfg.Layers) || bi.Sequences != 2 {
		t.Errorf("block-influence-only result: %+v", bi)
	}
	if _, err := b.Stats(context.Background(), backend.StatsRequest{Model: id, Data: backend.Sequences{Path: path}}); err == nil {
		t.Error("Stats with nothing requested succeeded")
	}
}

// TestStatsFamilies runs the same comparison on every family's fixture
// checkpoint (Gemma 2's block-input norms are input_layernorm and
// pre_feedforward_layernorm; its post norms feed no block).
func TestStatsFamilies(t *testing.T) {
	for _, fam := range []string{"llama3", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "mixtral", "qwen2_moe", "qwen3_moe"} {
		t.Run(fam, func(t *testing.T) {
			dir := filepath.Join("..", "..", "ir", "testdata", "families", fam)
			m, err := hf.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			const n, l = 3, 12
			r := rand.New(rand.NewPCG(uint64(len(fam)), 1))
			rows := make([][]int, n)
			flat := make([]int32, n*l)
			for i := range rows {
				rows[i] = make([]int, l)
				for j := range rows[i] {
					rows[i][j] = r.IntN(m.Config.Vocab)
					flat[i*l+j] = int32(rows[i][j])
				}
			}
			path := filepath.Join(t.TempDir(), "tokens.npy")
			if err := npy.WriteInt32(path, []int{n, l}, flat); err != nil {
				t.Fatal(err)
			}
			checkStats(t, m, dir, path, rows)
		})
	}
}

// checkStats loads the model saved in dir into a backend and compares its
// Stats over the sequences in path (rows) with the definitions evaluated
// over decoder64's forward pass of m, at two batch sizes.
func checkStats(t *testing.T, m *ir.Model, dir, path string, rows [][]int) (*Backend, backend.ModelID) {
	t.Helper()
	return checkStatsWith(t, m, func(b *Backend) backend.ModelID { return load(t, b, dir) }, path, rows)
}

// checkStatsWith is checkStats with the model loaded into the backend by
// load; mixture-of-experts statistics are checked too.
func checkStatsWith(t *testing.T, m *ir.Model, load func(*Backend) backend.ModelID, path string, rows [][]int) (*Backend, backend.ModelID) {
	t.Helper()
	n, l := len(rows), len(rows[0])
	cfg := m.Config
	// Float64 accumulators as minitron.md defines them.
	mlp, head := make([][]float64, len(cfg.Layers)), make([][]float64, len(cfg.Layers))
	norms := make([][]float64, 2*len(cfg.Layers))
	cosSum := make([]float64, len(cfg.Layers))
	accumulate := func(acc []float64, rows [][]float64) {
		for c := range acc {
			var s float64
			for _, r := range rows {
				s += math.Abs(r[c])
			}
			acc[c] += (s / float64(len(rows))) * (s / float64(len(rows)))
		}
	}
	nl := len(cfg.Layers)
	expertMLP, expertProb, expertOut := make([][][]float64, nl), make([][]float64, nl), make([][]float64, nl)
	expertTokens, shared := make([][]int, nl), make([][]float64, nl)
	for li, lc := range cfg.Layers {
		mlp[li], head[li] = make([]float64, lc.MLP), make([]float64, lc.Heads*lc.HeadDim)
		norms[2*li], norms[2*li+1] = make([]float64, cfg.Hidden), make([]float64, cfg.Hidden)
		if lc.MoE() {
			expertMLP[li] = make([][]float64, lc.Experts)
			for e := range expertMLP[li] {
				expertMLP[li][e] = make([]float64, lc.ExpertMLP)
			}
			expertProb[li], expertOut[li], expertTokens[li] = make([]float64, lc.Experts), make([]float64, lc.Experts), make([]int, lc.Experts)
			shared[li] = make([]float64, lc.SharedMLP)
		}
	}
	ref, err := decoder64.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range rows {
		a := make([]decoder64.LayerActs, len(cfg.Layers))
		ref.Forward(seq, nil, a)
		for li := range cfg.Layers {
			accumulate(mlp[li], a[li].MLPAct)
			if lc := cfg.Layers[li]; lc.MoE() {
				// Per expert over the sequence's tokens routed to it.
				var sharedRows [][]float64
				for _, pa := range a[li].MoE {
					for e, p := range pa.Probs {
						expertProb[li][e] += p
					}
					for k, e := range pa.Chosen {
						expertTokens[li][e]++
						var ss float64
						for _, v := range pa.ExpertOut[e] {
							ss += v * v
						}
						expertOut[li][e] += pa.Weights[k] * math.Sqrt(ss)
					}
					sharedRows = append(sharedRows, pa.SharedAct)
				}
				for e := range expertMLP[li] {
					var routed [][]float64
					for _, pa := range a[li].MoE {
						if pa.ExpertAct[e] != nil {
							routed = append(routed, pa.ExpertAct[e])
						}
					}
					if len(routed) > 0 {
						accumulate(expertMLP[li][e], routed)
					}
				}
				if lc.SharedMLP > 0 {
					accumulate(shared[li], sharedRows)
				}
			}
			accumulate(head[li], a[li].AttnOut)
			accumulate(norms[2*li], a[li].AttnNormOut)
			accumulate(norms[2*li+1], a[li].MLPNormOut)
			for p := range seq {
				x, y := a[li].In[p], a[li].Out[p]
				var xy, xx, yy float64
				for i := range x {
					xy, xx, yy = xy+x[i]*y[i], xx+x[i]*x[i], yy+y[i]*y[i]
				}
				cosSum[li] += xy / math.Sqrt(xx*yy)
			}
		}
	}

	b := newBackend(t)
	id := load(b)
	var results []*backend.StatsResult
	for _, bs := range []int{2, 5} {
		res, err := b.Stats(context.Background(), backend.StatsRequest{
			Model: id, Data: backend.Sequences{Path: path}, BatchSize: bs, Activations: true, BlockInfluence: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
	}
	res := results[0]
	if res.Sequences != n || res.Tokens != n*l {
		t.Errorf("%d sequences, %d tokens; want %d, %d", res.Sequences, res.Tokens, n, n*l)
	}
	check := func(what string, got, want []float64, tol float64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
		}
		for i := range want {
			if math.Abs(got[i]-want[i]) > tol*math.Abs(want[i])+1e-7 {
				t.Fatalf("%s[%d] = %v, float64 definition %v", what, i, got[i], want[i])
			}
		}
	}
	hidden := make([]float64, cfg.Hidden)
	for _, acc := range norms {
		for c, v := range acc {
			hidden[c] += math.Sqrt(v)
		}
	}
	check("hidden", res.Hidden, hidden, 1e-4)
	moe := false
	for li, lc := range cfg.Layers {
		if !lc.MoE() {
			if res.ExpertMLP != nil && (res.ExpertMLP[li] != nil || res.ExpertProb[li] != nil || res.SharedMLP[li] != nil) {
				t.Errorf("dense layer %d has expert statistics", li)
			}
			continue
		}
		moe = true
		if res.MLP[li] != nil {
			t.Errorf("MoE layer %d has MLP statistics", li)
		}
		for e := range expertMLP[li] {
			check("expert mlp", res.ExpertMLP[li][e], sqrtAll(expertMLP[li][e]), 1e-4)
		}
		check("expert probability mass", res.ExpertProb[li], expertProb[li], 1e-5)
		check("expert output", res.ExpertOutput[li], expertOut[li], 1e-4)
		for e, c := range expertTokens[li] {
			if res.ExpertTokens[li][e] != c {
				t.Errorf("layer %d expert %d: %d tokens, float64 routing %d", li, e, res.ExpertTokens[li][e], c)
			}
		}
		if lc.SharedMLP > 0 {
			check("shared mlp", res.SharedMLP[li], sqrtAll(shared[li]), 1e-4)
		} else if res.SharedMLP[li] != nil {
			t.Errorf("layer %d without a shared expert has shared statistics", li)
		}
	}
	if !moe && (res.ExpertMLP != nil || res.ExpertProb != nil || res.ExpertOutput != nil || res.ExpertTokens != nil || res.SharedMLP != nil) {
		t.Errorf("a dense model has expert statistics: %+v", res)
	}
	for li, lc := range cfg.Layers {
		if !lc.MoE() {
			check("mlp", res.MLP[li], sqrtAll(mlp[li]), 1e-4)
		}
		check("head channels", res.HeadChannels[li], sqrtAll(head[li]), 1e-4)
		heads := make([]float64, lc.Heads)
		for h := range heads {
			var s float64
			for _, v := range head[li][h*lc.HeadDim : (h+1)*lc.HeadDim] {
				s += v
			}
			heads[h] = math.Sqrt(s)
		}
		check("heads", res.Heads[li], heads, 1e-4)
		want := 1 - cosSum[li]/float64(n*l)
		if math.Abs(res.BlockInfluence[li]-want) > 1e-5 {
			t.Errorf("block influence of layer %d: %v, float64 definition %v", li, res.BlockInfluence[li], want)
		}
	}
	// The aggregation is per sequence: the batch size does not matter.
	other := results[1]
	for li, lc := range cfg.Layers {
		check("mlp (batch 5)", other.MLP[li], res.MLP[li], 1e-6)
		if lc.MoE() {
			for e := range res.ExpertMLP[li] {
				check("expert mlp (batch 5)", other.ExpertMLP[li][e], res.ExpertMLP[li][e], 1e-6)
			}
			check("expert output (batch 5)", other.ExpertOutput[li], res.ExpertOutput[li], 1e-6)
		}
		check("heads (batch 5)", other.Heads[li], res.Heads[li], 1e-6)
	}
	check("hidden (batch 5)", other.Hidden, res.Hidden, 1e-6)
	check("block influence (batch 5)", other.BlockInfluence, res.BlockInfluence, 1e-6)
	return b, id
}

// TestStatsMoE: the statistics of random mixture-of-experts models (every
// MoE family, a dense layer among them in qwen2_moe) through the backend
// equal minitron.md's definitions and the expert fields' documented ones
// over decoder64's forward pass and routing.
func TestStatsMoE(t *testing.T) {
	for name, cfg := range irtest.MoEFamilies() {
		t.Run(name, func(t *testing.T) {
			m := irtest.RandomModel(t, cfg, rand.New(rand.NewPCG(uint64(len(name)), 2)))
			const n, l = 5, 9
			r := rand.New(rand.NewPCG(uint64(len(name)), 3))
			rows := make([][]int, n)
			flat := make([]int32, n*l)
			for i := range rows {
				rows[i] = make([]int, l)
				for j := range rows[i] {
					rows[i][j] = r.IntN(cfg.Vocab)
					flat[i*l+j] = int32(rows[i][j])
				}
			}
			path := filepath.Join(t.TempDir(), "tokens.npy")
			if err := npy.WriteInt32(path, []int{n, l}, flat); err != nil {
				t.Fatal(err)
			}
			checkStatsWith(t, m, func(b *Backend) backend.ModelID { return loadModel(t, b, m) }, path, rows)
		})
	}
}
