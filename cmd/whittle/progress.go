package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/progress"
)

// display shows a run's progress: on a terminal, a live bar for the pass
// at work; elsewhere (tests, CI, pipes) plain lines at the pass's log
// cadence. Training shows its step, loss, tokens/s and ETA either way.
//
// The bar is mpb's rather than progressbar's: mpb's decorators render our
// own rate and ETA (progress.Meter, which is unit-tested) where
// progressbar computes its own, and writes to an mpb container land above
// the live bar, so log records printed meanwhile do not tear it.
type display struct {
	out io.Writer
	tty bool
	now func() time.Time

	wmu sync.Mutex // serializes writes to out

	mu      sync.Mutex // guards what the bar's decorators read
	pass    *recipe.Pass
	cur     pipeline.Update
	meter   progress.Meter
	started time.Time
	bars    *mpb.Progress

	bar *mpb.Bar // only the pass's goroutine touches it
}

func newDisplay(out io.Writer) *display {
	return &display{out: out, tty: isTerminal(out), now: time.Now}
}

// isTerminal tells whether w is a terminal that can redraw a bar: one
// with a size (mpb draws nothing on a terminal of zero rows).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || os.Getenv("TERM") == "dumb" {
		return false
	}
	cols, rows, err := term.GetSize(int(f.Fd()))
	return err == nil && cols > 0 && rows > 0
}

// Write prints log records: above the live bar when there is one.
func (d *display) Write(b []byte) (int, error) {
	d.mu.Lock()
	bars := d.bars
	d.mu.Unlock()
	if bars != nil {
		if n, err := bars.Write(b); err == nil {
			return n, nil
		}
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return d.out.Write(b)
}

func (d *display) printf(format string, args ...any) {
	fmt.Fprintf(d, format, args...)
}

// events wires the display to a run.
func (d *display) events() pipeline.Events {
	return pipeline.Events{PassStart: d.passStart, Update: d.update, PassEnd: d.passEnd}
}

func (d *display) passStart(i, n int, p *recipe.Pass) {
	d.mu.Lock()
	d.pass, d.cur, d.started = p, pipeline.Update{}, d.now()
	d.meter.Reset()
	d.mu.Unlock()
	d.printf("[%d/%d] %s (%s)\n", i+1, n, p.Name, p.Kind)
}

func (d *display) update(p *recipe.Pass, u pipeline.Update) {
	d.mu.Lock()
	d.cur = u
	if u.Unit != "" && u.Done > 0 {
		d.meter.Observe(d.now(), u.Done, u.Tokens)
	}
	count, detail := d.describe()
	d.mu.Unlock()

	if d.tty && u.Total > 0 {
		d.moveBar(u)
		return
	}
	if d.tty || u.Log {
		d.printf("      %s: %s\n", p.Name, strings.TrimSpace(count+" "+detail))
	}
}

// describe renders the current update as its count ("step 40/200", "1/3")
// and the rest: the message, then tokens/s and ETA for even units or the
// time elapsed for stages. The caller holds mu.
func (d *display) describe() (count, detail string) {
	u := d.cur
	if u.Total <= 0 {
		return "", u.Msg
	}
	count = fmt.Sprintf("%d/%d", u.Done, u.Total)
	if u.Unit != "" {
		count = u.Unit + " " + count
	} else if strings.Contains(u.Msg, count) {
		count = "" // the message says it already
	}
	detail = u.Msg
	if u.Unit != "" {
		if est := d.meter.Estimate(u.Total).String(); est != "" {
			detail += " (" + est + ")"
		}
	} else if d.bars != nil {
		detail += " (" + progress.FormatDuration(d.now().Sub(d.started)) + ")"
	}
	return count, strings.TrimSpace(detail)
}

// moveBar draws the update on the live bar, starting one for the pass on
// its first countable update.
func (d *display) moveBar(u pipeline.Update) {
	if d.bar == nil {
		bars := mpb.New(mpb.WithOutput(d.out), mpb.WithWidth(120))
		field := func(pick func(count, detail string) string) decor.Decorator {
			return decor.Any(func(decor.Statistics) string {
				d.mu.Lock()
				defer d.mu.Unlock()
				return pick(d.describe())
			})
		}
		d.bar = bars.AddBar(int64(u.Total), mpb.BarWidth(24), mpb.BarRemoveOnComplete(),
			mpb.PrependDecorators(decor.Name(d.pass.Name+" ", decor.WCSyncSpaceR), field(func(c, _ string) string { return c })),
			mpb.AppendDecorators(field(func(_, detail string) string { return detail })))
		d.mu.Lock()
		d.bars = bars
		d.mu.Unlock()
	}
	d.bar.SetTotal(int64(u.Total), false)
	d.bar.SetCurrent(int64(u.Done))
}

// stopBar takes the pass's bar off the screen.
func (d *display) stopBar() {
	if d.bar == nil {
		return
	}
	d.bar.Abort(true)
	d.mu.Lock()
	bars := d.bars
	d.bars = nil
	d.mu.Unlock()
	bars.Wait()
	d.bar = nil
}

func (d *display) passEnd(i int, p *recipe.Pass, rec pipeline.PassRecord) {
	d.stopBar()
	d.printf("[%d] %s: %s\n", i+1, p.Name, rec.Outcome())
}

// close takes down a bar left by a run that ended inside a pass.
func (d *display) close() { d.stopBar() }
