package bench

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/plugins/cpu/engine"
)

// TestShapes checks the shapes' parameter counts, worked out by hand from
// torch_peer.py's table (the peer reports 260,032 for stories260K and
// llama2.c's stories15M checkpoint has 15,191,712 weights), and the
// distillation student's widths.
func TestShapes(t *testing.T) {
	for _, c := range []struct {
		shape   string
		params  int64
		student int64 // dim·3/4 rounded to heads, ffn·3/4
	}{
		// 512·64 + 5·(64·64 + 2·64·32 + 64·64 + 3·64·172 + 2·64) + 64
		{"stories260K", 260032, 512*48 + 5*(48*48+2*48*24+48*48+3*48*129+2*48) + 48},
		// 32000·288 + 6·(4·288² + 3·288·768 + 2·288) + 288
		{"stories15M", 15191712, 32000*216 + 6*(4*216*216+3*216*576+2*216) + 216},
		{"stories110M", 109529856, 32000*576 + 12*(4*576*576+3*576*1536+2*576) + 576},
	} {
		s, err := LookupShape(c.shape)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.Config(256)
		if err := cfg.Check(); err != nil {
			t.Fatalf("%s: %v", c.shape, err)
		}
		if got := cfg.Params().Total; got != c.params {
			t.Errorf("%s: %d parameters, want %d", c.shape, got, c.params)
		}
		st := s.Student().Config(256)
		if err := st.Check(); err != nil {
			t.Fatalf("%s student: %v", c.shape, err)
		}
		if got := st.Params().Total; got != c.student {
			t.Errorf("%s student: %d parameters, want %d", c.shape, got, c.student)
		}
	}
	if _, err := LookupShape("llama-7B"); err == nil || !strings.Contains(err.Error(), "stories15M") {
		t.Errorf("unknown shape: error %v should list the known ones", err)
	}
}

// TestForwardFLOPs checks the closed form against a sum over positions:
// the token at position i attends to i+1 keys.
func TestForwardFLOPs(t *testing.T) {
	s, _ := LookupShape("stories260K")
	cfg := s.Config(64)
	const b, tt = 3, 37
	var want float64
	for i := range tt {
		want += float64(cfg.FLOPsPerToken(i + 1))
	}
	want *= b
	if got := forwardFLOPs(&cfg, b, tt); got != want {
		t.Errorf("forwardFLOPs = %g, want %g", got, want)
	}
}

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
	s, _ := LookupShape("stories260K")
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
			o := Options{Shape: "stories260K", Workload: w, Batch: 2, Seq: 32, Seconds: 0, Threads: 2, Seed: 1}
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
	for _, o := range []Options{
		{Shape: "stories260K", Workload: "infer", Batch: 1, Seq: 1},
		{Shape: "gpt2", Workload: Train, Batch: 1, Seq: 1},
		{Shape: "stories260K", Workload: Train, Batch: 0, Seq: 1},
		{Shape: "stories260K", Workload: Train, Batch: 1, Seq: 1, Threads: -1},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v) succeeded", o)
		}
	}
}

func TestParseVmHWM(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n", 2048 * 1024, true},
		{"VmHWM: 7 kB", 7 * 1024, true},
		{"VmRSS: 7 kB\n", 0, false},
		{"VmHWM: 7 MB\n", 0, false},
		{"VmHWM: -7 kB\n", 0, false},
		{"VmHWM: x kB\n", 0, false},
	} {
		got, ok := parseVmHWM([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("parseVmHWM(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func FuzzParseVmHWM(f *testing.F) {
	f.Add([]byte("VmHWM:\t    2048 kB\n"))
	f.Add([]byte("VmHWM: 99999999999999999999 kB\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if v, ok := parseVmHWM(data); ok && v < 0 {
			t.Fatalf("negative size %d", v)
		}
	})
}

const peerLine = `{"shape": "stories15M", "workload": "train", "params": 15191712, "tokens": 6144, "seconds": 7.5, "tokens_per_s": 819.2, "device": "cpu", "torch": "1.13.0a0"}`

func TestParsePeerOutput(t *testing.T) {
	pr, err := parsePeerOutput([]byte("UserWarning: something\n" + peerLine + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if pr.Params != 15191712 || pr.TokensPerS != 819.2 || pr.Torch != "1.13.0a0" || pr.Tokens != 6144 {
		t.Errorf("parsed %+v", pr)
	}
	for _, bad := range []string{"", "no json here\n", "{\"tokens_per_s\": \"fast\"}", `{"tokens_per_s": 0, "seconds": 1}`, "{"} {
		if _, err := parsePeerOutput([]byte(bad)); err == nil {
			t.Errorf("parsePeerOutput(%q) succeeded", bad)
		}
	}
}

func FuzzParsePeerOutput(f *testing.F) {
	f.Add([]byte(peerLine))
	f.Add([]byte("warning\n{\"tokens_per_s\": 1, \"seconds\": 2}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pr, err := parsePeerOutput(data)
		if err == nil && !(pr.TokensPerS > 0 && pr.Seconds > 0) {
			t.Fatalf("accepted %+v", pr)
		}
	})
}

func TestFindPeerScript(t *testing.T) {
	root := t.TempDir()
	script := filepath.Join(root, "shared", "bench", "torch_peer.py")
	deep := filepath.Join(root, "repo", "cmd", "whittle")
	for _, d := range []string{filepath.Dir(script), deep} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := FindPeerScript(deep); err == nil {
		t.Error("found a script that does not exist")
	}
	if err := os.WriteFile(script, []byte("print()\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := FindPeerScript(deep)
	if err != nil || got != script {
		t.Errorf("FindPeerScript = %q, %v; want %q", got, err, script)
	}
}

// TestRunPeerFake runs a stand-in peer through /bin/sh: arguments are
// passed through and the child's peak RSS is read from wait4.
func TestRunPeerFake(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil || runtime.GOOS == "windows" {
		t.Skip("no POSIX shell")
	}
	script := filepath.Join(t.TempDir(), "peer.sh")
	body := `case "$*" in *"--shape stories15M --workload train --batch 8 --seq 256 --seconds 2.5 --threads 2"*) ;; *) echo "bad args: $*" >&2; exit 3;; esac
echo 'a warning'
echo '` + peerLine + `'
`
	if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	o := Options{Shape: "stories15M", Workload: Train, Batch: 8, Seq: 256, Seconds: 2.5, Threads: 2}
	pr, err := RunPeer(context.Background(), sh, script, o)
	if err != nil {
		t.Fatal(err)
	}
	if pr.TokensPerS != 819.2 || pr.Threads != 2 || !(pr.PeakRSSBytes > 0) {
		t.Errorf("peer result %+v", pr)
	}
	c := Compare(&Result{TokensPerS: 1638.4, PeakRSSBytes: pr.PeakRSSBytes / 2}, pr)
	if c.Ratio != 2 || c.RSSRatio != 0.5 {
		t.Errorf("ratios %g, %g", c.Ratio, c.RSSRatio)
	}
	o.Batch = 4
	if _, err := RunPeer(context.Background(), sh, script, o); err == nil || !strings.Contains(err.Error(), "bad args") {
		t.Errorf("failing peer: error %v should carry its stderr", err)
	}
}

// TestRealPeer runs torch_peer.py when Debian's PyTorch and the script are
// both present, checking that both sides build the same model.
func TestRealPeer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PyTorch")
	}
	if _, err := os.Stat(DefaultPython); err != nil {
		t.Skip("no " + DefaultPython)
	}
	if err := exec.Command(DefaultPython, "-c", "import torch").Run(); err != nil {
		t.Skip("no torch under " + DefaultPython)
	}
	script, err := FindPeerScript(".")
	if err != nil {
		t.Skip(err)
	}
	for _, w := range []string{Forward, Distill} {
		o := Options{Shape: "stories260K", Workload: w, Batch: 1, Seq: 16, Seconds: 0, Threads: 1}
		pr, err := RunPeer(context.Background(), DefaultPython, script, o)
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
