package pipeline

import (
	"reflect"
	"testing"

	"github.com/whittle-ml/whittle/core/recipe"
)

// TestReportRouting: every update reaches Events.Update; only those marked
// Log reach Events.Progress, which is how log-cadence consumers see them.
func TestReportRouting(t *testing.T) {
	p := &recipe.Pass{Name: "kd"}
	var updates []Update
	var lines []int
	rc := &RunContext{report: reporter(p, Events{
		Update: func(q *recipe.Pass, u Update) {
			if q != p {
				t.Errorf("update for pass %v", q)
			}
			updates = append(updates, u)
		},
		Progress: func(_ *recipe.Pass, done, total int, msg string) { lines = append(lines, done) },
	})}
	rc.Progress(0, 4, "before")
	for s := 1; s <= 4; s++ {
		rc.Report(Update{Done: s, Total: 4, Unit: UnitStep, Tokens: int64(64 * s), Log: s%2 == 0})
	}
	if len(updates) != 5 || updates[0] != (Update{Done: 0, Total: 4, Msg: "before", Log: true}) || updates[3].Tokens != 192 {
		t.Errorf("updates %+v", updates)
	}
	if !reflect.DeepEqual(lines, []int{0, 2, 4}) {
		t.Errorf("progress lines at %v, want 0 2 4", lines)
	}
	// A run without watchers reports to no one, without failing.
	(&RunContext{report: reporter(p, Events{})}).Progress(1, 2, "x")
}

func TestOutcome(t *testing.T) {
	cases := []struct {
		rec  PassRecord
		want string
	}{
		{PassRecord{Status: StatusDone, Seconds: 245}, "done in 4m05s"},
		{PassRecord{Status: StatusDone, Seconds: 245, Resumed: true}, "reused"},
		{PassRecord{Status: StatusFailed, Seconds: 0.25}, "failed after 0.2s"},
		{PassRecord{Status: StatusRunning}, "running"},
	}
	for _, tc := range cases {
		if got := tc.rec.Outcome(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.rec, got, tc.want)
		}
	}
}
