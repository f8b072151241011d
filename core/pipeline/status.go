package pipeline

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/whittle-ml/whittle/core/recipe"
)

// Pass states as `whittle report` shows them.
const (
	StateDone    = "done"
	StateReused  = "reused"
	StateFailed  = "failed"
	StateNotRun  = "not run"
	StateRunning = "running"
)

func plannedNames(r *recipe.Recipe) []string {
	names := make([]string, len(r.Passes))
	for i, p := range r.Passes {
		names[i] = p.Name
	}
	return names
}

// PassState is one planned pass's outcome in a run directory.
type PassState struct {
	Name, Kind string
	State      string
	Error      string // for failed passes
	Seconds    float64
}

// PassStates lists every planned pass with its outcome: done, reused (an
// earlier run's artifacts kept), failed, or not run. Manifests written
// before the plan was recorded list only the passes that ran.
func (m *Manifest) PassStates() []PassState {
	byName := map[string]PassRecord{}
	for _, p := range m.Passes {
		byName[p.Name] = p
	}
	names := m.Planned
	if len(names) == 0 {
		for _, p := range m.Passes {
			names = append(names, p.Name)
		}
	}
	out := make([]PassState, 0, len(names))
	for _, name := range names {
		rec, ok := byName[name]
		st := PassState{Name: name, Kind: rec.Kind, State: StateNotRun, Seconds: rec.Seconds}
		switch {
		case !ok:
		case rec.Status == StatusDone && rec.Resumed:
			st.State = StateReused
		case rec.Status == StatusDone:
			st.State = StateDone
		case rec.Status == StatusFailed:
			st.State, st.Error = StateFailed, rec.Error
		default:
			st.State = StateRunning
		}
		out = append(out, st)
	}
	return out
}

// Incomplete reports why the run did not finish, or nil when it did.
func (m *Manifest) Incomplete() error {
	for _, p := range m.PassStates() {
		if p.State == StateFailed {
			return fmt.Errorf("the run failed at pass %q: %s", p.Name, p.Error)
		}
	}
	switch m.Status {
	case StatusDone:
		return nil
	case StatusFailed:
		return errors.New("the run failed writing its outputs")
	case "":
		// A manifest from before runs recorded their status: passes only.
		for _, p := range m.PassStates() {
			if p.State != StateDone && p.State != StateReused {
				return fmt.Errorf("pass %q did not run", p.Name)
			}
		}
		return nil
	}
	return errors.New("the run did not finish: it is still running, or was killed; run it again with the same --out to resume")
}

// WritePassStates prints one line per planned pass: name, kind, state and
// time, with the error of a failed pass.
func (m *Manifest) WritePassStates(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PASS\tKIND\tSTATUS\tSECONDS")
	for _, p := range m.PassStates() {
		secs := "-"
		if p.State == StateDone || p.State == StateFailed {
			secs = fmt.Sprintf("%.1f", p.Seconds)
		}
		kind := p.Kind
		if kind == "" {
			kind = "-"
		}
		state := p.State
		if state == StateRunning {
			// The manifest cannot tell a live run from a killed one.
			state = "running (or killed while running)"
		}
		if p.Error != "" {
			state += ": " + strings.Join(strings.Fields(p.Error), " ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, kind, state, secs)
	}
	return tw.Flush()
}
