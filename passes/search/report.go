package search

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/whittle-ml/whittle/core/curves"
	"github.com/whittle-ml/whittle/core/pipeline"
)

// Kind is the pass kind, as manifests record it.
const Kind = "search"

// FormatPlan is the plan's listing of a search: every candidate meeting
// the budget, closest first, the top k marked as the ones to score, or,
// when picked ≥ 0 (pick = "random"), the one drawn among them.
func FormatPlan(spaceSize int, fit []Candidate, k, picked int, b Budget) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "  %d candidates in the space, %d within %g%% below the budget (%s); ",
		spaceSize, len(fit), 100*b.Tolerance, b.String())
	if picked >= 0 {
		fmt.Fprintf(&sb, "rank %d (*), drawn at random among the first %d, is the only one scored\n", picked+1, min(k, len(fit)))
	} else {
		fmt.Fprintf(&sb, "the first %d (*) are scored\n", min(k, len(fit)))
	}
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  \tRANK\tHIDDEN\tMLP\tHEADS\tKV\tLAYERS\tPARAMS\tMEMORY\tFLOPS/TOKEN\tUSAGE\t")
	for i, c := range fit {
		mark := ""
		if (picked < 0 && i < k) || i == picked {
			mark = "*"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%.2f%%\t\n", mark, i+1, c.Hidden, c.MLP, c.Heads, c.KVHeads, c.Layers,
			pipeline.FormatCount(c.Params), FormatBytes(c.Memory), pipeline.FormatCount(c.FLOPs), 100*c.Usage)
	}
	tw.Flush()
	return sb.String()
}

// String describes the budget.
func (b Budget) String() string {
	var parts []string
	if b.Params > 0 {
		parts = append(parts, "params ≤ "+pipeline.FormatCount(b.Params))
	}
	if b.ActiveParams > 0 {
		parts = append(parts, "active params ≤ "+pipeline.FormatCount(b.ActiveParams))
	}
	if b.Memory > 0 {
		parts = append(parts, fmt.Sprintf("memory ≤ %s at %d tokens × %d", FormatBytes(b.Memory), b.SeqLen, b.Batch))
	}
	if b.FLOPs > 0 {
		parts = append(parts, fmt.Sprintf("FLOPs/token ≤ %s at %d tokens", pipeline.FormatCount(b.FLOPs), b.SeqLen))
	}
	return strings.Join(parts, ", ")
}

// FormatBytes prints a byte count in decimal units (as memory budgets
// like "12GB" are written).
func FormatBytes(n int64) string {
	f := float64(n)
	for _, u := range []string{"B", "KB", "MB", "GB"} {
		if f < 1000 {
			return fmt.Sprintf("%.4g%s", f, u)
		}
		f /= 1000
	}
	return fmt.Sprintf("%.4gTB", f)
}

// WriteTable prints a search's scored candidates and its winner.
func WriteTable(w io.Writer, pass string, r *Results) error {
	dir := "lower is better"
	if !r.LowerIsBetter {
		dir = "higher is better"
	}
	retrain := ""
	if r.RetrainTokens > 0 {
		retrain = fmt.Sprintf(" after distilling %s tokens", pipeline.FormatCount(r.RetrainTokens))
	}
	scored := 0
	for _, row := range r.Rows {
		if row.Scored {
			scored++
		}
	}
	picked := ""
	if r.Pick == PickRandom {
		picked = fmt.Sprintf(", picked at random among the first %d (seed %d)", r.PickedFrom, r.Seed)
	}
	fmt.Fprintf(w, "search %s: %d candidates in the space, %d meet the budget, %d scored by %s%s (%s)%s\n",
		pass, r.SpaceSize, len(r.Rows), scored, r.Objective, retrain, dir, picked)
	// A random pick is no winner: nothing was compared.
	winWord := "winner"
	if r.Pick == PickRandom {
		winWord = "picked"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tRANK\tHIDDEN\tMLP\tHEADS\tKV\tLAYERS\tPARAMS\tMEMORY\tSCORE\tDROPPED\t")
	for _, row := range r.Rows {
		if !row.Scored || row.Score == nil {
			continue
		}
		mark := ""
		if row.Winner {
			mark = winWord
		}
		dropped := "-"
		if len(row.Score.Dropped) > 0 {
			dropped = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(row.Score.Dropped)), ","), "[]")
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%.4f\t%s\t\n", mark, row.Rank, row.Hidden, row.MLP, row.Heads, row.KVHeads, row.Layers,
			pipeline.FormatCount(row.Params), FormatBytes(row.Memory), row.Score.Value, dropped)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if win := r.Winner(); win != nil {
		_, err := fmt.Fprintf(w, "%s: %s, %s parameters, %s = %.4f\n", winWord, win.Sizes, pipeline.FormatCount(win.Params), r.Objective, win.Score.Value)
		return err
	}
	return nil
}

// Run is a finished search pass of a run directory.
type Run struct {
	Pass    string
	Results *Results
}

// ReadRun collects the results of every finished search pass of a run.
func ReadRun(runDir string, man *pipeline.Manifest) ([]Run, error) {
	var out []Run
	for _, p := range man.Passes {
		if p.Kind != Kind || p.Status != pipeline.StatusDone {
			continue
		}
		r, err := ReadResults(filepath.Join(pipeline.PassDir(runDir, p.Index, p.Name), ResultsFile))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Run{Pass: p.Name, Results: r})
	}
	return out, nil
}

// Draw plots the scored candidates' score against their parameter count,
// the winner marked, and writes the image to path (its extension picks
// the format) atomically.
func Draw(r *Results, title, path string, width, height vg.Length) error {
	var pts, win plotter.XYs
	for _, row := range r.Rows {
		if row.Score == nil {
			continue
		}
		xy := plotter.XY{X: float64(row.Params), Y: row.Score.Value}
		if row.Winner {
			win = append(win, xy)
		} else {
			pts = append(pts, xy)
		}
	}
	if len(pts)+len(win) == 0 {
		return errors.New("the search scored no candidate")
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "parameters"
	p.Y.Label.Text = r.Objective
	if r.RetrainTokens > 0 {
		p.Y.Label.Text += fmt.Sprintf(" after %d retraining tokens", r.RetrainTokens)
	}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	for _, s := range []struct {
		xys   plotter.XYs
		label string
		c     color.Color
		r     vg.Length
	}{{pts, "candidates", color.RGBA{B: 200, A: 255}, 3}, {win, "winner", color.RGBA{R: 220, A: 255}, 5}} {
		if len(s.xys) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(s.xys)
		if err != nil {
			return err
		}
		sc.Color, sc.Shape, sc.Radius = s.c, draw.CircleGlyph{}, vg.Points(float64(s.r))
		p.Add(sc)
		p.Legend.Add(s.label, sc)
	}
	return curves.Save(p, path, width, height)
}
