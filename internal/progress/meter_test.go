package progress

import (
	"math"
	"testing"
	"time"
)

// report is one synthetic progress report: done units and tokens at an
// offset from the start.
type report struct {
	at     time.Duration
	done   int
	tokens int64
}

func TestMeterEstimate(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	// steady is 128 tokens per step, one step every 2 s.
	var steady []report
	for i := 1; i <= 10; i++ {
		steady = append(steady, report{time.Duration(i) * 2 * time.Second, i, int64(128 * i)})
	}
	// slowdown: 10 steps at 1 s, then 10 at 3 s; a 30 s window holds only
	// the slow ones.
	var slowdown []report
	for i := 1; i <= 10; i++ {
		slowdown = append(slowdown, report{time.Duration(i) * time.Second, i, 0})
	}
	for i := 1; i <= 10; i++ {
		slowdown = append(slowdown, report{10*time.Second + time.Duration(3*i)*time.Second, 10 + i, 0})
	}
	// resumed: training restarted from a checkpoint; its first report
	// counts the steps and tokens before the restart, which must not be
	// taken as done in no time.
	resumed := []report{{0, 50, 6400}, {4 * time.Second, 52, 6656}, {8 * time.Second, 54, 6912}}
	// restarted: the count goes back; only the reports after it count.
	restarted := []report{{0, 5, 0}, {time.Second, 10, 0}, {2 * time.Second, 1, 0}, {6 * time.Second, 3, 0}}

	cases := []struct {
		name    string
		window  time.Duration
		reports []report
		total   int
		want    Estimate
	}{
		{"none", 0, nil, 10, Estimate{}},
		{"one report", 0, steady[:1], 10, Estimate{}},
		{"no time passed", 0, []report{{time.Second, 1, 0}, {time.Second, 2, 0}}, 10, Estimate{}},
		{"no work done", 0, []report{{time.Second, 1, 0}, {5 * time.Second, 1, 0}}, 10, Estimate{}},
		// 9 steps in 18 s: 0.5 steps/s and 64 tok/s; 90 steps left take 180 s.
		{"steady", 0, steady, 100, Estimate{OK: true, UnitsPerS: 0.5, TokensPerS: 64, ETA: 180 * time.Second}},
		{"finished", 0, steady, 10, Estimate{OK: true, UnitsPerS: 0.5, TokensPerS: 64, ETA: 0}},
		// Window of 30 s ending at 40 s: from the sample at 10 s (step 10)
		// to 40 s (step 20) is 10 steps in 30 s; 10 left take 30 s.
		{"slowdown windowed", 30 * time.Second, slowdown, 30, Estimate{OK: true, UnitsPerS: 1.0 / 3, ETA: 30 * time.Second}},
		// The default minute holds everything: 19 steps in 39 s.
		{"slowdown whole", 0, slowdown, 30, Estimate{OK: true, UnitsPerS: 19.0 / 39, ETA: seconds(10 * 39.0 / 19)}},
		{"resumed", 0, resumed, 100, Estimate{OK: true, UnitsPerS: 0.5, TokensPerS: 64, ETA: 92 * time.Second}},
		{"restarted", 0, restarted, 11, Estimate{OK: true, UnitsPerS: 0.5, ETA: 16 * time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := Meter{Window: tc.window}
			for _, r := range tc.reports {
				m.Observe(t0.Add(r.at), r.done, r.tokens)
			}
			got := m.Estimate(tc.total)
			if got.OK != tc.want.OK || !near(got.UnitsPerS, tc.want.UnitsPerS) || !near(got.TokensPerS, tc.want.TokensPerS) ||
				(got.ETA-tc.want.ETA).Abs() > time.Millisecond {
				t.Errorf("estimate %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestMeterBounded: a long run keeps only the window's samples.
func TestMeterBounded(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	m := Meter{Window: 10 * time.Second}
	for i := 1; i <= 10000; i++ {
		m.Observe(t0.Add(time.Duration(i)*time.Second), i, 0)
	}
	if len(m.samples) > 12 {
		t.Errorf("%d samples kept for a 10 s window of 1 s reports", len(m.samples))
	}
	if e := m.Estimate(10000); !e.OK || !near(e.UnitsPerS, 1) || e.ETA != 0 {
		t.Errorf("estimate %+v, want 1 step/s and nothing left", e)
	}
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestEstimateString(t *testing.T) {
	cases := []struct {
		e    Estimate
		want string
	}{
		{Estimate{}, ""},
		{Estimate{OK: true, UnitsPerS: 0.5, TokensPerS: 1520, ETA: 245 * time.Second}, "1.52k tok/s, ETA 4m05s"},
		{Estimate{OK: true, UnitsPerS: 2.25, ETA: 3 * time.Second}, "2.25 steps/s, ETA 3.0s"},
		{Estimate{OK: true, UnitsPerS: 2.25, TokensPerS: 288}, "288 tok/s"},
	}
	for _, tc := range cases {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.e, got, tc.want)
		}
	}
}

func TestFormat(t *testing.T) {
	durations := []struct {
		d    time.Duration
		want string
	}{
		{400 * time.Millisecond, "0.4s"},
		{9940 * time.Millisecond, "9.9s"},
		{9960 * time.Millisecond, "10s"},
		{42 * time.Second, "42s"},
		{59600 * time.Millisecond, "1m00s"},
		{245 * time.Second, "4m05s"},
		{time.Hour - 400*time.Millisecond, "1h00m"},
		{2*time.Hour + 3*time.Minute + 20*time.Second, "2h03m"},
		{-3 * time.Second, "-3.0s"},
	}
	for _, tc := range durations {
		if got := FormatDuration(tc.d); got != tc.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	counts := []struct {
		x    float64
		want string
	}{{0.25, "0.25"}, {950, "950"}, {1520, "1.52k"}, {2.3e6, "2.3M"}, {4.56e9, "4.56G"}}
	for _, tc := range counts {
		if got := FormatCount(tc.x); got != tc.want {
			t.Errorf("FormatCount(%g) = %q, want %q", tc.x, got, tc.want)
		}
	}
}
