package bench

import (
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
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
		// untied: 2·32000·2048 + 16·(2·2048² + 2·2048·512 + 3·2048·8192 + 2·2048) + 2048
		{"llama-1B", 2*32000*2048 + 16*(2*2048*2048+2*2048*512+3*2048*8192+2*2048) + 2048,
			2*32000*1536 + 16*(2*1536*1536+2*1536*384+3*1536*6144+2*1536) + 1536},
		// 8 experts of stories15M's MLP and a router [8, 288] per layer.
		{"moe-15M", 32000*288 + 6*(4*288*288+8*3*288*768+8*288+2*288) + 288,
			32000*216 + 6*(4*216*216+8*3*216*576+8*216+2*216) + 216},
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
	// moe-15M's active FLOPs are stories15M's plus one more expert (top-2)
	// and the router, per token and layer.
	dense, _ := LookupShape("stories15M")
	moe, _ := LookupShape("moe-15M")
	const b, tt = 2, 64
	dc, mc := dense.Config(tt), moe.Config(tt)
	if got, want := ForwardFLOPs(&mc, b, tt)-ForwardFLOPs(&dc, b, tt), float64(b*tt*6*2*(3*288*768+8*288)); got != want {
		t.Errorf("moe-15M forward FLOPs exceed stories15M's by %g, want %g", got, want)
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
	if got := ForwardFLOPs(&cfg, b, tt); got != want {
		t.Errorf("ForwardFLOPs = %g, want %g", got, want)
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

// TestFindPeerScript searches only inside its own temp dir (stop = the
// temp dir), so a torch_peer.py above it on this machine cannot matter.
func TestFindPeerScript(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "repo", "cmd", "whittle")
	at := func(dir string) string { return filepath.Join(dir, "shared", "bench", "torch_peer.py") }
	for _, c := range []struct {
		name   string
		script string // "" writes none
		stop   string
		want   string // "" wants not found
	}{
		{"none", "", root, ""},
		{"at the stop dir", at(root), root, at(root)},
		{"on the way up", at(filepath.Join(root, "repo")), root, at(filepath.Join(root, "repo"))},
		{"above the stop dir", at(root), filepath.Join(root, "repo"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.RemoveAll(filepath.Join(root, "shared")); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(root, "repo", "shared")); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(deep, 0o755); err != nil {
				t.Fatal(err)
			}
			if c.script != "" {
				if err := os.MkdirAll(filepath.Dir(c.script), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(c.script, []byte("print()\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := FindPeerScript(deep, c.stop)
			if c.want == "" {
				if err == nil {
					t.Fatalf("found %q, want none", got)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("FindPeerScript = %q, %v; want %q", got, err, c.want)
			}
		})
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
	body := `case "$*" in *"--shape stories15M --workload train --batch 8 --seq 256 --seconds 2.5 --threads 2 --device cpu"*) ;; *) echo "bad args: $*" >&2; exit 3;; esac
echo 'a warning'
echo '` + peerLine + `'
`
	if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	o := Request{Shape: "stories15M", Workload: Train, Batch: 8, Seq: 256, Seconds: 2.5, Threads: 2}
	pr, err := RunPeer(context.Background(), sh, script, o, "cpu")
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
	if _, err := RunPeer(context.Background(), sh, script, o, "cpu"); err == nil || !strings.Contains(err.Error(), "bad args") {
		t.Errorf("failing peer: error %v should carry its stderr", err)
	}
}

// TestStepFLOPs checks the llama-1B counts against a hand count: 2 FLOPs
// per weight of every matrix product (the classifier included, the
// embedding lookup not) plus 4·head_dim·heads FLOPs per attended key per
// layer (q·k and p·v), a token attending to (T+1)/2 keys on average.
func TestStepFLOPs(t *testing.T) {
	s, err := LookupShape("llama-1B")
	if err != nil {
		t.Fatal(err)
	}
	const seq = 2048
	perLayer := 2*2048*2048 + 2*2048*512 + 3*2048*8192
	matmul := float64(16*perLayer + 32000*2048)
	attn := 16 * 4 * 2048 * float64(seq+1) / 2
	fwd := 2*matmul + attn
	st := s.Student()
	stMatmul := float64(16*(2*1536*1536+2*1536*384+3*1536*6144) + 32000*1536)
	stFwd := 2*stMatmul + 16*4*1536*float64(seq+1)/2
	for _, c := range []struct {
		workload string
		perToken float64
	}{
		{Forward, fwd}, {Importance, fwd}, {Train, 3 * fwd}, {Distill, fwd + 3*stFwd},
	} {
		got, err := StepFLOPs(s, c.workload, 2, seq)
		if err != nil {
			t.Fatal(err)
		}
		if want := 2 * seq * c.perToken; math.Abs(got-want) > 1e-9*want {
			t.Errorf("%s: %g FLOPs per step, want %g", c.workload, got, want)
		}
	}
	if st.Dim != 1536 || st.FFN != 6144 {
		t.Fatalf("student %+v", st)
	}
	if _, err := StepFLOPs(s, "sgemm", 1, 1); err == nil {
		t.Error("unknown workload accepted")
	}
}

func TestRequestCheck(t *testing.T) {
	good := Request{Shape: "stories15M", Workload: Train, Batch: 1, Seq: 8}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []func(*Request){
		func(r *Request) { r.Shape = "gpt2" },
		func(r *Request) { r.Workload = "sgemm" },
		func(r *Request) { r.Batch = 0 },
		func(r *Request) { r.Seq = -1 },
		func(r *Request) { r.Seconds = math.NaN() },
		func(r *Request) { r.Threads = -2 },
	} {
		r := good
		mod(&r)
		if err := r.Check(); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
}

func TestFinishAndMFU(t *testing.T) {
	r := Result{Batch: 4, Seq: 256, FLOPsPerStep: 2e12}
	r.Finish(10, 4)
	if r.Tokens != 10240 || r.TokensPerS != 2560 || r.GFLOPS != 5000 {
		t.Errorf("finished %+v", r)
	}
	if got := r.MFU(10); got != 0.5 {
		t.Errorf("MFU = %g, want 0.5", got)
	}
	if r.MFU(0) != 0 {
		t.Error("MFU without a peak")
	}
}

func TestPeakTFLOPS(t *testing.T) {
	for card, want := range map[string]float64{
		"NVIDIA H200":           989.4,
		"NVIDIA H100 80GB HBM3": 989.4,
		"NVIDIA H100 PCIe":      756.5,
		"NVIDIA A100-SXM4-80GB": 312,
		"Tesla T4":              0,
		"":                      0,
	} {
		if got := PeakTFLOPS(card); got != want {
			t.Errorf("PeakTFLOPS(%q) = %g, want %g", card, got, want)
		}
	}
}

func TestMarkdown(t *testing.T) {
	ok := Request{Shape: "llama-1B", Workload: Train, Batch: 8, Seq: 2048}
	res := &Result{Shape: "llama-1B", Workload: Train, Batch: 8, Seq: 2048, FLOPsPerStep: 1e15, Device: "cuda:0", Kernel: "libtorch 2.11.0, BFloat16"}
	res.Finish(2, 1) // 32768 tokens/s, 2000 TFLOP/s
	rows := []Row{
		{Request: ok, Result: res, Peer: &PeerResult{TokensPerS: 16384, Device: "cuda", Torch: "2.11.0"}},
		{Request: Request{Shape: "stories110M", Workload: Distill, Batch: 16, Seq: 1024}, Err: errors.New("out of\nmemory | really")},
	}
	got := Markdown(rows, TableInfo{Backend: "gotch", Card: "NVIDIA H200", PeakTFLOPS: 4000})
	for _, want := range []string{
		"| llama-1B | train | 8×2048 | 32768 | 2000.0 | 50.0% | 16384 | 25.0% | 2.00× |",
		"| stories110M | distill | 16×1024 | error: out of memory / really | | | | | |",
		"| TFLOP/s | MFU |",
		"whittle: backend gotch on cuda:0 (NVIDIA H200), libtorch 2.11.0, BFloat16",
		"MFU against 4000.0 dense bf16 TFLOP/s",
		"torch 2.11.0 (cuda), bf16 autocast, fused AdamW",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	cpu := &Result{Batch: 1, Seq: 10, FLOPsPerStep: 5e9, Device: "cpu", Kernel: "avx2", Threads: 2}
	cpu.Finish(4, 1)
	got = Markdown([]Row{{Request: Request{Shape: "stories15M", Workload: Forward, Batch: 1, Seq: 10}, Result: cpu}}, TableInfo{Backend: "cpu"})
	if !strings.Contains(got, "| GFLOP/s | MFU |") || !strings.Contains(got, "| stories15M | forward | 1×10 | 40 | 20.0 | – | – | – | – |") {
		t.Errorf("CPU table:\n%s", got)
	}
}
