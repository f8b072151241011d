package bench

import (
	"context"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"

	corebench "github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
)

// TestAccumulate checks the Minitron statistic on a hand-worked example
// and that it does not depend on the thread count.
func TestAccumulate(t *testing.T) {
	// b=2 sequences of t=2 tokens, 3 channels.
	x := []float32{
		1, -2, 0,
		3, 2, -4, // sequence 0: mean |.| = 2, 2, 2
		-1, 0, 1,
		-1, 0, 3, // sequence 1: mean |.| = 1, 0, 2
	}
	acc := []float64{10, 0, 0}
	accumulate(acc, x, 2, 2, 4)
	want := []float64{10 + 4 + 1, 4 + 0, 4 + 4}
	for i := range want {
		if acc[i] != want[i] {
			t.Errorf("acc = %v, want %v", acc, want)
			break
		}
	}

	// 130 channels: three column blocks, split differently by 1 and 3
	// threads.
	const w, b, tt = 130, 3, 5
	big := make([]float32, b*tt*w)
	for i := range big {
		big[i] = float32(math.Sin(float64(i)*0.37)) * 3
	}
	one, three := make([]float64, w), make([]float64, w)
	accumulate(one, big, b, tt, 1)
	accumulate(three, big, b, tt, 3)
	for i := range one {
		if one[i] != three[i] {
			t.Fatalf("channel %d: %v with 1 thread, %v with 3", i, one[i], three[i])
		}
		var ref float64
		for s := range b {
			var m float64
			for r := s * tt; r < (s+1)*tt; r++ {
				m += math.Abs(float64(big[r*w+i]))
			}
			ref += (m / tt) * (m / tt)
		}
		if math.Abs(one[i]-ref) > 1e-12*ref {
			t.Fatalf("channel %d: %v, want %v", i, one[i], ref)
		}
	}
}

// TestStatsHook checks that Stats.Add, fed by the engine's layer hook,
// reads the four activations the statistics are defined over: the hidden
// accumulator is the sum of both norms' terms, and widths match the layer.
func TestStatsHook(t *testing.T) {
	s, _ := corebench.LookupShape("stories260K")
	cfg := s.Config(16)
	p, err := engine.NewParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.InitRandom(3)
	stats := NewStats(&cfg)
	var ln1, ln2 [][]float64
	const b, tt = 2, 16
	e, err := engine.New(p, engine.Options{Threads: 2, Inference: true, OnLayer: func(l int, a *engine.Activations) error {
		stats.Add(l, a, b, tt, 2)
		x, y := make([]float64, cfg.Hidden), make([]float64, cfg.Hidden)
		accumulate(x, a.AttnNormOut, b, tt, 1)
		accumulate(y, a.MLPNormOut, b, tt, 1)
		ln1, ln2 = append(ln1, x), append(ln2, y)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]int32, b*tt)
	for i := range tokens {
		tokens[i] = int32(i * 7 % cfg.Vocab)
	}
	if err := e.Forward(tokens, b, tt); err != nil {
		t.Fatal(err)
	}
	for l := range cfg.Layers {
		if len(stats.Head[l]) != s.Heads*(s.Dim/s.Heads) || len(stats.Neuron[l]) != s.FFN {
			t.Fatalf("layer %d: widths %d, %d", l, len(stats.Head[l]), len(stats.Neuron[l]))
		}
		for c := range stats.Emb[l] {
			if want := ln1[l][c] + ln2[l][c]; math.Abs(stats.Emb[l][c]-want) > 1e-12*want {
				t.Fatalf("layer %d channel %d: %v, want %v", l, c, stats.Emb[l][c], want)
			}
		}
		for _, v := range append(append([]float64{}, stats.Head[l]...), stats.Neuron[l]...) {
			if !(v > 0) {
				t.Fatalf("layer %d: a zero or NaN statistic %v", l, v)
			}
		}
	}
}

// TestRun runs every workload briefly on the smallest shape.
func TestRun(t *testing.T) {
	for _, w := range Workloads {
		t.Run(w, func(t *testing.T) {
			o := Options{Request: corebench.Request{Shape: "stories260K", Workload: w, Batch: 2, Seq: 32, Seconds: 0, Threads: 2, Seed: 1}}
			var prof strings.Builder
			if w == Train {
				o.Profile = &prof
			}
			if w == Sgemm && testing.Short() {
				t.Skip("1024³ products")
			}
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if r.Steps != 3 || r.Threads != 2 || !(r.Seconds > 0) || !(r.GFLOPS > 0) || r.Kernel == "" {
				t.Errorf("result %+v", r)
			}
			if !(r.PeakRSSBytes > 1<<20) {
				t.Errorf("peak RSS %d bytes", r.PeakRSSBytes)
			}
			if w == Sgemm {
				if r.Tokens != 0 || r.FLOPsPerStep != 2*SgemmSize*SgemmSize*SgemmSize {
					t.Errorf("sgemm result %+v", r)
				}
				return
			}
			if r.Tokens != 3*2*32 || math.Abs(r.TokensPerS-float64(r.Tokens)/r.Seconds) > 1e-9*r.TokensPerS {
				t.Errorf("tokens %d in %g s, %g tokens/s", r.Tokens, r.Seconds, r.TokensPerS)
			}
			switch w {
			case Train:
				// Random targets over 512 ids: about ln 512 nats.
				if math.Abs(r.Loss-math.Log(512)) > 0.5 {
					t.Errorf("train loss %g, want about ln 512 = %.2f", r.Loss, math.Log(512))
				}
				if prof.Len() == 0 {
					t.Error("no CPU profile written")
				}
				if r.Params != 260032 {
					t.Errorf("params %d", r.Params)
				}
			case Distill:
				if !(r.Loss > 0) || r.Params >= 260032 {
					t.Errorf("distill loss %g, student params %d", r.Loss, r.Params)
				}
			}
		})
	}
	for _, q := range []corebench.Request{
		{Shape: "stories260K", Workload: "infer", Batch: 1, Seq: 1},
		{Shape: "gpt2", Workload: Train, Batch: 1, Seq: 1},
		{Shape: "stories260K", Workload: Train, Batch: 0, Seq: 1},
		{Shape: "stories260K", Workload: Train, Batch: 1, Seq: 1, Threads: -1},
		{Workload: Sgemm, Threads: -1},
	} {
		if _, err := Run(context.Background(), Options{Request: q}); err == nil {
			t.Errorf("Run(%+v) succeeded", q)
		}
	}
}

// TestRealPeer runs torch_peer.py when Debian's PyTorch and the script are
// both present, checking that both sides build the same model.
func TestRealPeer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PyTorch")
	}
	if _, err := os.Stat(corebench.DefaultPython); err != nil {
		t.Skip("no " + corebench.DefaultPython)
	}
	if err := exec.Command(corebench.DefaultPython, "-c", "import torch").Run(); err != nil {
		t.Skip("no torch under " + corebench.DefaultPython)
	}
	script, err := corebench.FindPeerScript(".", "")
	if err != nil {
		t.Skip(err)
	}
	for _, w := range []string{Forward, Distill} {
		o := Options{Request: corebench.Request{Shape: "stories260K", Workload: w, Batch: 1, Seq: 16, Seconds: 0, Threads: 1}}
		pr, err := corebench.RunPeer(context.Background(), corebench.DefaultPython, script, o.Request, "cpu")
		if err != nil {
			t.Fatal(err)
		}
		r, err := Run(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if pr.Params != r.Params || pr.Tokens != 3*16 || pr.Shape != "stories260K" || pr.Workload != w {
			t.Errorf("%s: peer %+v, whittle params %d", w, pr, r.Params)
		}
	}
}

// TestStatsHookMoE: on a mixture-of-experts model the expert accumulators
// equal the statistic recomputed row by row from each row's chosen
// experts (a sequence's mean over its rows routed to the expert).
func TestStatsHookMoE(t *testing.T) {
	cfg := irtest.MoEFamilies()["qwen2_moe"]
	p, err := engine.NewParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.InitRandom(4)
	stats := NewStats(&cfg)
	const b, tt = 3, 8
	want := make([][][]float64, len(cfg.Layers))
	e, err := engine.New(p, engine.Options{Threads: 2, Inference: true, OnLayer: func(l int, a *engine.Activations) error {
		stats.Add(l, a, b, tt, 3)
		m := a.MoE
		if m == nil {
			return nil
		}
		w := cfg.Layers[l].ExpertMLP
		want[l] = make([][]float64, m.Experts)
		for ex := range want[l] {
			want[l][ex] = make([]float64, w)
			for seq := 0; seq < b; seq++ {
				sum, n := make([]float64, w), 0
				for r := seq * tt; r < (seq+1)*tt; r++ {
					for s := 0; s < m.TopK; s++ {
						if int(m.Selected[r*m.TopK+s]) == ex {
							j := int(m.Pos[r*m.TopK+s])
							for i, v := range m.Act[j*w : (j+1)*w] {
								sum[i] += math.Abs(float64(v))
							}
							n++
						}
					}
				}
				for i := range sum {
					if n > 0 {
						want[l][ex][i] += (sum[i] / float64(n)) * (sum[i] / float64(n))
					}
				}
			}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]int32, b*tt)
	for i := range tokens {
		tokens[i] = int32(i * 5 % cfg.Vocab)
	}
	if err := e.Forward(tokens, b, tt); err != nil {
		t.Fatal(err)
	}
	for l, lc := range cfg.Layers {
		if !lc.MoE() {
			if stats.Expert[l] != nil {
				t.Errorf("dense layer %d has expert statistics", l)
			}
			continue
		}
		for ex, acc := range stats.Expert[l] {
			for i, v := range acc {
				if math.Abs(v-want[l][ex][i]) > 1e-12*math.Max(1, want[l][ex][i]) {
					t.Fatalf("layer %d expert %d neuron %d: %v, recomputed %v", l, ex, i, v, want[l][ex][i])
				}
			}
		}
	}
}
