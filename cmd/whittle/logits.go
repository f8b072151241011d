package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/spf13/cobra"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
)

func newLogitsCmd() *cobra.Command {
	var (
		mf      modelFlags
		threads int
		force   bool
	)
	cmd := &cobra.Command{
		Use:   "logits MODEL TOKENS.npy OUT.npy",
		Short: "Write a model's logits over a (rows, L) int32 token file, as llama.cpp's llama-logits does",
		Long: `logits runs the CPU engine's forward pass over every row of TOKENS.npy, a
C-order (rows, L) int32 (or int64) array whose rows are independent
sequences at positions 0..L-1, and writes every position's logits to
OUT.npy as float32 (rows, L, vocab). It prints the mean next-token
negative log-likelihood over positions 1..L-1, in the same line format
as llama.cpp's llama-logits, so the two can be compared directly.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			modelPath, tokPath, outPath := args[0], args[1], args[2]
			if threads < 0 {
				return usageErr("logits: --threads %d must be non-negative (0 = all CPUs)", threads)
			}
			if !force {
				if err := refuseExisting("logits", []string{outPath}); err != nil {
					return err
				}
			}
			m, err := mf.load(modelPath)
			if err != nil {
				return err
			}
			defer m.Close()
			cfg := m.Config
			toks, err := readTokens(tokPath, cfg.Vocab, cfg.MaxSeq)
			if err != nil {
				return err
			}
			p, err := engine.FromIR(m)
			if err != nil {
				return fmt.Errorf("logits: %s: %w", modelPath, err)
			}
			e, err := engine.New(p, engine.Options{Threads: threads, Inference: true})
			if err != nil {
				return fmt.Errorf("logits: %s: %w", modelPath, err)
			}
			nll, n, err := writeLogits(cmd.Context(), e, toks, outPath)
			if err != nil {
				return err
			}
			loss := nll / float64(n) // NaN when L = 1, as llama-logits prints
			fmt.Fprintf(cmd.OutOrStdout(), "rows %d L %d vocab %d targets %d loss %.6f ppl %.4f\n",
				toks.rows, toks.cols, cfg.Vocab, n, loss, math.Exp(loss))
			return nil
		},
	}
	mf.register(cmd)
	cmd.Flags().IntVar(&threads, "threads", 0, "goroutines for the forward pass (0 = all CPUs)")
	cmd.Flags().BoolVar(&force, "force", false, "replace OUT when it exists")
	return cmd
}

// tokenRows is a validated (rows, cols) token matrix, row-major.
type tokenRows struct {
	ids        []int32
	rows, cols int
}

// readTokens reads and validates a token file for a model with vocab
// tokens and maxSeq positions (0: unbounded).
func readTokens(path string, vocab, maxSeq int) (tokenRows, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return tokenRows{}, fmt.Errorf("logits: reading tokens: %w", err)
	}
	return parseTokens(path, data, vocab, maxSeq)
}

// parseTokens validates the .npy bytes of a token file; name is the file
// the errors name.
func parseTokens(name string, data []byte, vocab, maxSeq int) (tokenRows, error) {
	a, err := npy.Parse(data)
	if err != nil {
		return tokenRows{}, fmt.Errorf("logits: %s: %w", name, err)
	}
	if len(a.Shape) != 2 {
		return tokenRows{}, fmt.Errorf("logits: %s: shape %v; want 2-D (rows, L)", name, a.Shape)
	}
	t := tokenRows{rows: a.Shape[0], cols: a.Shape[1]}
	if t.rows == 0 || t.cols == 0 {
		return tokenRows{}, fmt.Errorf("logits: %s: shape %v is empty", name, a.Shape)
	}
	if maxSeq > 0 && t.cols > maxSeq {
		return tokenRows{}, fmt.Errorf("logits: %s: rows of %d tokens exceed the model's context of %d", name, t.cols, maxSeq)
	}
	var ids []int64
	switch a.Descr[1:] {
	case "i4":
		v, err := a.Int32()
		if err != nil {
			return tokenRows{}, fmt.Errorf("logits: %s: %w", name, err)
		}
		ids = make([]int64, len(v))
		for i, x := range v {
			ids[i] = int64(x)
		}
	case "i8":
		if ids, err = a.Int64(); err != nil {
			return tokenRows{}, fmt.Errorf("logits: %s: %w", name, err)
		}
	default:
		return tokenRows{}, fmt.Errorf("logits: %s: dtype %s; want int32 (<i4) or int64 (<i8)", name, a.Descr)
	}
	t.ids = make([]int32, len(ids))
	for i, id := range ids {
		if id < 0 || id >= int64(vocab) {
			return tokenRows{}, fmt.Errorf("logits: %s: row %d, column %d: token %d is outside the model's vocabulary of %d", name, i/t.cols, i%t.cols, id, vocab)
		}
		t.ids[i] = int32(id)
	}
	return t, nil
}

// batchTokens bounds the positions one Forward runs, and logitFloats the
// logits held at once, so memory stays small whatever the file's size.
const (
	batchTokens = 2048
	logitFloats = 8 << 20
)

// writeLogits runs every row through e, streams the logits to path as a
// float32 (rows, cols, vocab) .npy (atomically) and returns the summed
// next-token NLL and the number of targets, computed in float64 from the
// written logits as llama-logits does.
func writeLogits(ctx context.Context, e *engine.Engine, t tokenRows, path string) (float64, int, error) {
	v := e.Vocab()
	hdr, err := npy.EncodeHeader(npy.Header{Descr: "<f4", Shape: []int{t.rows, t.cols, v}})
	if err != nil {
		return 0, 0, fmt.Errorf("logits: %s: %w", path, err)
	}
	f, err := fsutil.Create(path)
	if err != nil {
		return 0, 0, fmt.Errorf("logits: %w", err)
	}
	defer f.Abort()
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := w.Write(hdr); err != nil {
		return 0, 0, fmt.Errorf("logits: writing %s: %w", path, err)
	}
	per := max(1, batchTokens/t.cols) // sequences per Forward
	chunk := max(1, logitFloats/v)    // positions per Logits call
	buf := make([]float32, min(chunk, per*t.cols)*v)
	raw := make([]byte, 4*len(buf))
	var nll float64
	n := 0
	for r0 := 0; r0 < t.rows; r0 += per {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		b := min(per, t.rows-r0)
		ids := t.ids[r0*t.cols : (r0+b)*t.cols]
		if err := e.Forward(ids, b, t.cols); err != nil {
			return 0, 0, fmt.Errorf("logits: rows %d–%d: %w", r0, r0+b-1, err)
		}
		for p0 := 0; p0 < b*t.cols; p0 += chunk {
			p1 := min(b*t.cols, p0+chunk)
			z := buf[:(p1-p0)*v]
			if err := e.Logits(p0, p1, z); err != nil {
				return 0, 0, fmt.Errorf("logits: rows %d–%d: %w", r0, r0+b-1, err)
			}
			for p := p0; p < p1; p++ {
				if p%t.cols+1 < t.cols {
					nll += nextNLL(z[(p-p0)*v:(p-p0+1)*v], ids[p+1])
					n++
				}
			}
			if err := writeFloats(w, raw, z); err != nil {
				return 0, 0, fmt.Errorf("logits: writing %s: %w", path, err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		return 0, 0, fmt.Errorf("logits: writing %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return 0, 0, fmt.Errorf("logits: writing %s: %w", path, err)
	}
	return nll, n, nil
}

// nextNLL is −log softmax(z)[target], in float64.
func nextNLL(z []float32, target int32) float64 {
	mx := float64(z[0])
	for _, x := range z[1:] {
		mx = max(mx, float64(x))
	}
	var s float64
	for _, x := range z {
		s += math.Exp(float64(x) - mx)
	}
	return mx + math.Log(s) - float64(z[target])
}

// writeFloats writes z little-endian through raw (at least 4·len(z) bytes).
func writeFloats(w io.Writer, raw []byte, z []float32) error {
	b := raw[:4*len(z)]
	for i, x := range z {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	_, err := w.Write(b)
	return err
}
