// Package progress estimates the speed of long, evenly divided work (such
// as training steps) and the time it has left, from reports of how far it
// has come. It reads no clock: callers pass the time of each report, so the
// arithmetic is testable with a fake one.
package progress

import (
	"fmt"
	"math"
	"time"
)

// DefaultWindow is how far back a Meter looks: long enough to smooth over
// the occasional slow step (an evaluation, a checkpoint), short enough to
// follow a lasting change in speed.
const DefaultWindow = time.Minute

// Meter turns reports of units done (and tokens consumed) into rates and
// an ETA over a sliding window. The zero value is ready to use.
type Meter struct {
	// Window is the span the rates cover; 0 means DefaultWindow.
	Window  time.Duration
	samples []sample
}

type sample struct {
	at     time.Time
	done   int
	tokens int64
}

// Observe records that done units and tokens (both counted from the start
// of the work) were reached at time at. A report that goes back in count
// or time (the work restarted) starts the measurement afresh.
func (m *Meter) Observe(at time.Time, done int, tokens int64) {
	if n := len(m.samples); n > 0 && (done < m.samples[n-1].done || at.Before(m.samples[n-1].at)) {
		m.samples = m.samples[:0]
	}
	m.samples = append(m.samples, sample{at, done, tokens})
	w := m.Window
	if w <= 0 {
		w = DefaultWindow
	}
	// Keep the newest sample at or before the window's start, so that the
	// rates span the whole window once there is that much history.
	cut := at.Add(-w)
	i := 0
	for i+2 < len(m.samples) && !m.samples[i+1].at.After(cut) {
		i++
	}
	if i > 0 {
		m.samples = append(m.samples[:0], m.samples[i:]...)
	}
}

// Reset forgets every report.
func (m *Meter) Reset() { m.samples = m.samples[:0] }

// Estimate is a Meter's reading.
type Estimate struct {
	// OK is false until two reports some time and some work apart.
	OK bool
	// UnitsPerS and TokensPerS are the rates over the window; TokensPerS
	// is 0 when the work counts no tokens.
	UnitsPerS  float64
	TokensPerS float64
	// ETA is the time left, from the last report, to finish total units
	// at UnitsPerS.
	ETA time.Duration
}

// Estimate reads the rates and the time left to reach total units.
func (m *Meter) Estimate(total int) Estimate {
	if len(m.samples) < 2 {
		return Estimate{}
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	dt := last.at.Sub(first.at).Seconds()
	dd := last.done - first.done
	if dt <= 0 || dd <= 0 {
		return Estimate{}
	}
	e := Estimate{OK: true, UnitsPerS: float64(dd) / dt}
	if dtok := last.tokens - first.tokens; dtok > 0 {
		e.TokensPerS = float64(dtok) / dt
	}
	left := float64(max(total-last.done, 0)) / e.UnitsPerS
	if left >= math.MaxInt64/float64(time.Second) {
		e.ETA = math.MaxInt64
	} else {
		e.ETA = time.Duration(left * float64(time.Second))
	}
	return e
}

// String reads as "1.52k tok/s, ETA 4m05s" (steps per second stand in
// for tokens when none are counted; no ETA once nothing is left), or ""
// before there is an estimate.
func (e Estimate) String() string {
	if !e.OK {
		return ""
	}
	rate := FormatCount(e.UnitsPerS) + " steps/s"
	if e.TokensPerS > 0 {
		rate = FormatCount(e.TokensPerS) + " tok/s"
	}
	if e.ETA <= 0 {
		return rate // finished
	}
	return rate + ", ETA " + FormatDuration(e.ETA)
}

// FormatCount writes a rate with three significant digits and an SI
// suffix: 950, 1.52k, 2.3M.
func FormatCount(x float64) string {
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if math.Abs(x) >= u.div {
			return fmt.Sprintf("%.3g%s", x/u.div, u.suffix)
		}
	}
	return fmt.Sprintf("%.3g", x)
}

// FormatDuration writes a duration as people read it: 0.4s, 42s, 4m05s,
// 2h03m.
func FormatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + FormatDuration(-d)
	// Each bound is where rounding would carry into the next format.
	case d < 10*time.Second-50*time.Millisecond:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute-500*time.Millisecond:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour-500*time.Millisecond:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}
