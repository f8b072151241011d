package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultPython is Debian's interpreter, the one python3-torch installs
// into (a python3 earlier on PATH may lack torch).
const DefaultPython = "/usr/bin/python3"

// PeerScript is where the peer lives relative to the directory that holds
// the repository (next to shared/data).
const PeerScript = "shared/bench/torch_peer.py"

// FindPeerScript walks up from dir looking for shared/bench/torch_peer.py,
// looking no higher than stop ("" means up to the file-system root), so
// that callers (tests above all) can keep the search inside a tree they
// own.
func FindPeerScript(dir, stop string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	if stop != "" {
		if stop, err = filepath.Abs(stop); err != nil {
			return "", fmt.Errorf("bench: %w", err)
		}
	}
	for {
		p := filepath.Join(dir, filepath.FromSlash(PeerScript))
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
		up := filepath.Dir(dir)
		if up == dir || dir == stop {
			return "", fmt.Errorf("bench: %s not found above the working directory; pass --peer-script", PeerScript)
		}
		dir = up
	}
}

// PeerResult is the peer's JSON report plus what this process measured of
// it.
type PeerResult struct {
	Shape      string  `json:"shape"`
	Workload   string  `json:"workload"`
	Params     int64   `json:"params"`
	Tokens     int64   `json:"tokens"`
	Seconds    float64 `json:"seconds"`
	TokensPerS float64 `json:"tokens_per_s"`
	Device     string  `json:"device"`
	Torch      string  `json:"torch"`
	Threads    int     `json:"threads"`
	// PeakRSSBytes is the peer process's ru_maxrss as wait4 reports it.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
}

// RunPeer runs the PyTorch peer script with python on the same workload
// and thread count as o (o.Threads 0 lets torch choose), on device "cpu"
// or "cuda".
func RunPeer(ctx context.Context, python, script string, o Request, device string) (*PeerResult, error) {
	if device != "cpu" && device != "cuda" {
		return nil, fmt.Errorf("bench: the peer runs on cpu or cuda, not %q", device)
	}
	args := []string{script,
		"--shape", o.Shape, "--workload", o.Workload,
		"--batch", strconv.Itoa(o.Batch), "--seq", strconv.Itoa(o.Seq),
		"--seconds", strconv.FormatFloat(o.Seconds, 'g', -1, 64),
		"--threads", strconv.Itoa(o.Threads),
		"--device", device,
	}
	cmd := exec.CommandContext(ctx, python, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:] // the exception line of a traceback
		}
		return nil, fmt.Errorf("bench: peer %s %s: %w: %s", python, script, err, msg)
	}
	pr, err := parsePeerOutput(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("bench: peer %s: %w", script, err)
	}
	pr.Threads = o.Threads
	pr.PeakRSSBytes = childPeakRSS(cmd.ProcessState)
	return pr, nil
}

// parsePeerOutput decodes the last line of the peer's stdout that holds a
// JSON object; libraries may print warnings before it.
func parsePeerOutput(out []byte) (*PeerResult, error) {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var pr PeerResult
		if err := json.Unmarshal([]byte(line), &pr); err != nil {
			return nil, fmt.Errorf("output line %d is not the expected JSON: %w", i+1, err)
		}
		if !(pr.TokensPerS > 0) || !(pr.Seconds > 0) {
			return nil, fmt.Errorf("output line %d reports %g tokens/s over %g s", i+1, pr.TokensPerS, pr.Seconds)
		}
		return &pr, nil
	}
	return nil, errors.New("no JSON object in its output")
}

// PeerDevice is the peer's device for a backend's device name: "cuda"
// for any CUDA device, else "cpu".
func PeerDevice(device string) string {
	if strings.HasPrefix(device, "cuda") {
		return "cuda"
	}
	return "cpu"
}

// Comparison is a run of both benchmarks on one workload.
type Comparison struct {
	Whittle *Result     `json:"whittle"`
	Peer    *PeerResult `json:"peer"`
	// Ratio is whittle's tokens/s over the peer's (above 1: whittle is
	// faster); RSSRatio is whittle's peak RSS over the peer's.
	Ratio    float64 `json:"ratio"`
	RSSRatio float64 `json:"rss_ratio,omitempty"`
}

// Compare pairs two results.
func Compare(w *Result, p *PeerResult) *Comparison {
	c := &Comparison{Whittle: w, Peer: p}
	if p.TokensPerS > 0 {
		c.Ratio = w.TokensPerS / p.TokensPerS
	}
	if p.PeakRSSBytes > 0 {
		c.RSSRatio = float64(w.PeakRSSBytes) / float64(p.PeakRSSBytes)
	}
	return c
}
