package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corebench "github.com/whittle-ml/whittle/core/bench"
)

func TestBenchJSON(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	out := mustWhittle(t, "bench", "--shape", "stories260K", "--workload", "forward", "--batch", "2", "--seq", "8",
		"--seconds", "0", "--threads", "1", "--json", "--profile", prof)
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	for _, k := range []string{"tokens_per_s", "params", "peak_rss_bytes", "tokens", "seconds", "threads", "gflops", "kernel"} {
		if _, ok := r[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, out)
		}
	}
	if r["params"].(float64) != 260032 || r["tokens"].(float64) != 48 || r["threads"].(float64) != 1 {
		t.Errorf("unexpected result %s", out)
	}
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Errorf("profile not written: %v", err)
	}
}

// TestBenchPeer drives --peer with a stand-in peer script run by sh.
func TestBenchPeer(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no POSIX shell")
	}
	script := filepath.Join(t.TempDir(), "peer.sh")
	line := `{"shape": "stories260K", "workload": "train", "params": 260032, "tokens": 48, "seconds": 1, "tokens_per_s": 48, "device": "cpu", "torch": "x"}`
	if err := os.WriteFile(script, []byte("echo '"+line+"'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"bench", "--shape", "stories260K", "--workload", "train", "--batch", "2", "--seq", "8",
		"--seconds", "0", "--threads", "1", "--peer", "--python", sh, "--peer-script", script}
	out := mustWhittle(t, append(args, "--json")...)
	var c struct {
		Whittle struct {
			TokensPerS float64 `json:"tokens_per_s"`
		} `json:"whittle"`
		Peer struct {
			TokensPerS float64 `json:"tokens_per_s"`
		} `json:"peer"`
		Ratio float64 `json:"ratio"`
	}
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	if c.Peer.TokensPerS != 48 || c.Ratio != c.Whittle.TokensPerS/48 {
		t.Errorf("comparison %s", out)
	}
	text := mustWhittle(t, args...)
	for _, want := range []string{"whittle", "peer", "ratio"} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--workload", "infer"},
		{"bench", "--shape", "gpt2"},
		{"bench", "--batch", "0"},
		{"bench", "--workload", "sgemm", "--peer"},
		{"bench", "--workload", "sgemm", "--backend", "self"},
		{"bench", "--workload", "train,infer"},
		{"bench", "--shape", "stories260K,gpt2"},
		{"bench", "--set", "threads=1"},
		{"bench", "--shape", "stories260K,stories15M", "--profile", "x.pprof"},
		{"bench", "--backend", "self", "--set", "threads"},
		{"bench", "--peak-tflops", "-1"},
	} {
		_, _, err := whittle(t, args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("whittle %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
}

// TestBenchBackendPlugin times two workloads on the built-in backend
// served as a plugin (this test binary re-executed, plugin = "self"),
// passing a backend attribute with --set, and writes the markdown table.
func TestBenchBackendPlugin(t *testing.T) {
	md := filepath.Join(t.TempDir(), "table.md")
	out := mustWhittle(t, "bench", "--backend", "self", "--set", "threads=1", "--shape", "stories260K", "--workload", "train,distill",
		"--batch", "2", "--seq", "8", "--seconds", "0", "--json", "--markdown", md)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one JSON line per run, got:\n%s", out)
	}
	for i, want := range []struct {
		workload string
		params   float64
	}{{"train", 260032}, {"distill", 152544}} {
		var r map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &r); err != nil {
			t.Fatalf("line %d %q: %v", i, lines[i], err)
		}
		if r["workload"] != want.workload || r["params"] != want.params || r["threads"] != 1.0 || r["device"] != "cpu" {
			t.Errorf("run %d: %s", i, lines[i])
		}
	}
	table, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| stories260K | train | 2×8 |", "| stories260K | distill | 2×8 |", "backend self on cpu"} {
		if !strings.Contains(string(table), want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	// A misspelt attribute is an error, not ignored.
	if _, stderr, err := whittle(t, "bench", "--backend", "self", "--set", "thread=1", "--shape", "stories260K", "--batch", "1", "--seq", "4", "--seconds", "0"); err == nil || !strings.Contains(err.Error()+stderr, `unknown field "thread"`) {
		t.Errorf("misspelt attribute: %v", err)
	}
}

// TestBenchTextPerRank: a result of several ranks prints one memory line
// per rank, with what each holds of parameters, gradients and optimizer
// state; a single-process result prints none.
func TestBenchTextPerRank(t *testing.T) {
	r := &corebench.Result{Shape: "stories15M", Workload: "train", Batch: 4, Seq: 64, Steps: 3, Seconds: 1, TokensPerS: 768,
		PeakRSSBytes: 700 << 20, Kernel: "torch", Device: "cpu",
		PerRank: []corebench.RankMemory{
			{Rank: 0, PeakRSSBytes: 700 << 20, ParamBytes: 58 << 20, GradBytes: 58 << 20, OptimStateBytes: 70 << 20},
			{Rank: 1, PeakRSSBytes: 690 << 20, PeakDeviceMemBytes: 3 << 30, ParamBytes: 58 << 20, GradBytes: 58 << 20, OptimStateBytes: 46 << 20},
		}}
	var sb strings.Builder
	writeBenchText(&sb, "whittle", r, 0)
	for _, want := range []string{
		"rank 0: peak RSS 700 MiB; parameters 58 MiB, gradients 58 MiB, optimizer state 70 MiB",
		"rank 1: peak device memory 3072 MiB; parameters 58 MiB, gradients 58 MiB, optimizer state 46 MiB",
	} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("bench text lacks %q:\n%s", want, sb.String())
		}
	}
	sb.Reset()
	r.PerRank = r.PerRank[:1]
	writeBenchText(&sb, "whittle", r, 0)
	if strings.Contains(sb.String(), "rank 0") {
		t.Errorf("a single rank printed a per-rank line:\n%s", sb.String())
	}
}
