package bench

import (
	"fmt"
	"strings"
)

// Row is one benchmark of a table: the request, what whittle measured or
// why it failed, and the peer's figure or why it failed.
type Row struct {
	Request Request
	Result  *Result
	Err     error
	Peer    *PeerResult
	PeerErr error
}

// TableInfo describes the runs of a table for its notes.
type TableInfo struct {
	// Backend names the backend that ran ("cpu", "gotch").
	Backend string
	// Card is the accelerator's name, "" on a CPU.
	Card string
	// PeakTFLOPS is the MFU denominator; 0 leaves the MFU columns empty.
	PeakTFLOPS float64
}

// Markdown renders rows as the table docs/benchmarks.md holds, with a
// note saying what ran where. Peer MFU uses whittle's FLOP count per
// token, so the two MFU columns compare like with like.
func Markdown(rows []Row, info TableInfo) string {
	// TFLOP/s for accelerators, GFLOP/s where no run reaches one TFLOP/s.
	unit, scale := "GFLOP/s", 1.0
	for _, r := range rows {
		if r.Result != nil && r.Result.GFLOPS >= 1e3 {
			unit, scale = "TFLOP/s", 1e-3
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "| shape | workload | batch×seq | whittle %s tokens/s | %s | MFU | PyTorch eager tokens/s | peer MFU | ratio |\n", info.Backend, unit)
	sb.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		q := r.Request
		if r.Err != nil || r.Result == nil {
			fmt.Fprintf(&sb, "| %s | %s | %d×%d | error: %s | | | | | |\n", q.Shape, q.Workload, q.Batch, q.Seq, cell(r.Err))
			continue
		}
		res := r.Result
		mfu, peerTPS, peerMFU, ratio := "–", "–", "–", "–"
		if info.PeakTFLOPS > 0 {
			mfu = fmt.Sprintf("%.1f%%", 100*res.MFU(info.PeakTFLOPS))
		}
		if r.Peer != nil && r.Peer.TokensPerS > 0 {
			peerTPS = fmt.Sprintf("%.0f", r.Peer.TokensPerS)
			ratio = fmt.Sprintf("%.2f×", res.TokensPerS/r.Peer.TokensPerS)
			if info.PeakTFLOPS > 0 && res.Tokens > 0 {
				perToken := res.FLOPsPerStep * float64(res.Steps) / float64(res.Tokens)
				peerMFU = fmt.Sprintf("%.1f%%", 100*perToken*r.Peer.TokensPerS/1e12/info.PeakTFLOPS)
			}
		} else if r.PeerErr != nil {
			peerTPS = "error: " + cell(r.PeerErr)
		}
		fmt.Fprintf(&sb, "| %s | %s | %d×%d | %.0f | %.1f | %s | %s | %s | %s |\n", q.Shape, q.Workload, q.Batch, q.Seq,
			res.TokensPerS, res.GFLOPS*scale, mfu, peerTPS, peerMFU, ratio)
	}
	sb.WriteString("\n")
	for _, r := range rows {
		if r.Result == nil {
			continue
		}
		where := r.Result.Device
		if info.Card != "" {
			where += " (" + info.Card + ")"
		}
		fmt.Fprintf(&sb, "whittle: backend %s on %s, %s, %d threads.", info.Backend, where, r.Result.Kernel, r.Result.Threads)
		if info.PeakTFLOPS > 0 {
			fmt.Fprintf(&sb, " MFU against %.1f dense bf16 TFLOP/s.", info.PeakTFLOPS)
		}
		sb.WriteString("\n")
		break
	}
	for _, r := range rows {
		if r.Peer == nil {
			continue
		}
		how := "float32"
		if r.Peer.Device == "cuda" {
			how = "bf16 autocast, fused AdamW"
		}
		fmt.Fprintf(&sb, "Peer: shared/bench/torch_peer.py on torch %s (%s), %s.\n", r.Peer.Torch, r.Peer.Device, how)
		break
	}
	return sb.String()
}

// cell flattens an error into one table cell.
func cell(err error) string {
	if err == nil {
		return ""
	}
	s := strings.ReplaceAll(err.Error(), "\n", " ")
	return strings.ReplaceAll(s, "|", "/")
}
