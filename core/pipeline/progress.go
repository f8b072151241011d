package pipeline

import (
	"time"

	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/progress"
)

// UnitStep is Update.Unit for training steps.
const UnitStep = "step"

// Update is one report of a pass's advance, for displays that draw a bar
// or estimate the time left.
type Update struct {
	// Done of Total units. Unit names them when they are even pieces of
	// work whose rate predicts the rest (UnitStep); it is empty for a
	// pass's stages, which differ in length.
	Done, Total int
	Unit        string
	// Tokens counts the tokens consumed so far, when the work counts them.
	Tokens int64
	Msg    string
	// Log marks the updates worth a line in a log (a training pass's
	// log_every cadence); the others only move a bar.
	Log bool
}

// Report reports progress within the pass: every update reaches
// Events.Update, those marked Log also Events.Progress.
func (rc *RunContext) Report(u Update) {
	if rc.report != nil {
		rc.report(u)
	}
}

// Progress reports a stage of the pass to whoever watches the run.
func (rc *RunContext) Progress(done, total int, msg string) {
	rc.Report(Update{Done: done, Total: total, Msg: msg, Log: true})
}

// reporter routes a pass's updates to the run's events.
func reporter(p *recipe.Pass, ev Events) func(Update) {
	if ev.Update == nil && ev.Progress == nil {
		return nil
	}
	return func(u Update) {
		if ev.Update != nil {
			ev.Update(p, u)
		}
		if u.Log && ev.Progress != nil {
			ev.Progress(p, u.Done, u.Total, u.Msg)
		}
	}
}

// Outcome says how a pass ended, for people: "reused" when its artifacts
// were kept from an earlier run (its recorded time is that run's), "done
// in 4m05s", "failed after 12s", or its status.
func (r PassRecord) Outcome() string {
	took := progress.FormatDuration(time.Duration(r.Seconds * float64(time.Second)))
	switch {
	case r.Status == StatusDone && r.Resumed:
		return "reused"
	case r.Status == StatusDone:
		return "done in " + took
	case r.Status == StatusFailed:
		return "failed after " + took
	}
	return r.Status
}
