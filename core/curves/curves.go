// Package curves draws the training curves of a run directory: each
// training pass's history.csv (training loss at every step, validation
// loss where it was measured) against the tokens seen, with gonum/plot.
// `whittle report RUN --plot FILE` is its command line.
package curves

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/internal/fsutil"
)

// HistoryFile is the per-step log training passes write in their
// directory (passes/internal/passutil).
const HistoryFile = "history.csv"

// Series is one training pass's curve.
type Series struct {
	Pass string
	// Tokens and Loss are the training loss after each step.
	Tokens, Loss []float64
	// ValTokens and ValLoss are the validation measurements.
	ValTokens, ValLoss []float64
}

// Read collects the curves of every finished pass of man that wrote a
// history.csv under runDir, in pass order.
func Read(runDir string, man *pipeline.Manifest) ([]Series, error) {
	var out []Series
	for _, p := range man.Passes {
		path := filepath.Join(pipeline.PassDir(runDir, p.Index, p.Name), HistoryFile)
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s, err := parse(f, path)
		f.Close()
		if err != nil {
			return nil, err
		}
		s.Pass = p.Name
		out = append(out, s)
	}
	return out, nil
}

// parse reads a history.csv: a header naming at least tokens and loss
// (val_loss optional), then one row per step; empty cells are missing
// values. Errors name the file and line.
func parse(r io.Reader, path string) (Series, error) {
	var s Series
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if err != nil {
		return s, fmt.Errorf("%s:1: %w", path, err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	ti, okT := col["tokens"]
	li, okL := col["loss"]
	if !okT || !okL {
		return s, fmt.Errorf("%s:1: the header %q lacks tokens or loss", path, strings.Join(header, ","))
	}
	vi, okV := col["val_loss"]
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return s, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		num := func(i int, name string) (float64, bool, error) {
			if rec[i] == "" {
				return 0, false, nil
			}
			v, err := strconv.ParseFloat(rec[i], 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return 0, false, fmt.Errorf("%s:%d: %s %q is not a finite number", path, line, name, rec[i])
			}
			return v, true, nil
		}
		tok, okTok, err := num(ti, "tokens")
		if err != nil {
			return s, err
		}
		if !okTok {
			return s, fmt.Errorf("%s:%d: no tokens", path, line)
		}
		if l, ok, err := num(li, "loss"); err != nil {
			return s, err
		} else if ok {
			s.Tokens, s.Loss = append(s.Tokens, tok), append(s.Loss, l)
		}
		if okV {
			if v, ok, err := num(vi, "val_loss"); err != nil {
				return s, err
			} else if ok {
				s.ValTokens, s.ValLoss = append(s.ValTokens, tok), append(s.ValLoss, v)
			}
		}
	}
}

// Draw plots the curves, the training objective as lines (cross-entropy,
// or the KL mix for distillation) and validation loss as
// points of the same color, and writes the image to path (its extension
// picks the format: .png, .svg, .pdf, ...) atomically.
func Draw(series []Series, title, path string, width, height vg.Length) error {
	if len(series) == 0 {
		return errors.New("the run has no training curves (no pass wrote a history.csv)")
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "tokens"
	p.Y.Label.Text = "nats/token (objective: KL for distill)"
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	for i, s := range series {
		c := plotutil.Color(i)
		if len(s.Loss) > 0 {
			line, err := plotter.NewLine(xys(s.Tokens, s.Loss))
			if err != nil {
				return fmt.Errorf("%s: %w", s.Pass, err)
			}
			line.Color = c
			line.Width = vg.Points(1)
			p.Add(line)
			p.Legend.Add(s.Pass+" objective", line)
		}
		if len(s.ValLoss) > 0 {
			pts, err := plotter.NewScatter(xys(s.ValTokens, s.ValLoss))
			if err != nil {
				return fmt.Errorf("%s: %w", s.Pass, err)
			}
			pts.Color = c
			pts.Shape = draw.CircleGlyph{}
			pts.Radius = vg.Points(3)
			p.Add(pts)
			p.Legend.Add(s.Pass+" val loss", pts)
		}
	}
	return Save(p, path, width, height)
}

// Save writes a plot to path in the format its extension names (.png,
// .svg, .pdf), through a temporary file renamed into place.
func Save(p *plot.Plot, path string, width, height vg.Length) error {
	ext := strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	if ext == "" {
		return fmt.Errorf("%s: give the file an extension (.png, .svg, .pdf) to pick the format", path)
	}
	w, err := p.WriterTo(width, height, ext)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	f, err := fsutil.Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := w.WriteTo(f); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Commit()
}

func xys(x, y []float64) plotter.XYs {
	out := make(plotter.XYs, len(x))
	for i := range x {
		out[i] = plotter.XY{X: x[i], Y: y[i]}
	}
	return out
}
