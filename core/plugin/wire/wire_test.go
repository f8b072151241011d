package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/whittle-ml/whittle/core/backend"
)

// TestPluginSet: what a plugin of each version serves, and under which
// version, to hosts offering various versions; the host side then reads
// the negotiated version, or Describe's, to refuse a mismatch.
func TestPluginSet(t *testing.T) {
	full, describe := &Plugin{}, &Plugin{}
	for _, c := range []struct {
		name    string
		version int
		offered []int
		key     int
		served  *Plugin
	}{
		{"same version", 1, []int{1}, 1, full},
		{"host offers older ones too", 2, []int{1, 2}, 2, full},
		{"host says nothing", 3, nil, 3, full},
		{"newer plugin", 2, []int{1}, 1, describe},
		{"older plugin", 1, []int{2, 3}, 3, describe},
	} {
		t.Run(c.name, func(t *testing.T) {
			set := PluginSet(c.version, c.offered, full, describe)
			if len(set) != 1 || set[c.key][PluginName] != c.served {
				t.Errorf("PluginSet(%d, %v) = %v; want %s under %d", c.version, c.offered, set, map[bool]string{true: "full", false: "describe"}[c.served == full], c.key)
			}
		})
	}
	host := HostPluginSet(full)
	for v := 1; v <= ProtocolVersion; v++ {
		if host[v][PluginName] != full {
			t.Errorf("the host does not offer version %d", v)
		}
	}
	if len(host) != ProtocolVersion {
		t.Errorf("the host offers %d versions, want %d", len(host), ProtocolVersion)
	}
}

func TestVersionErrorMessage(t *testing.T) {
	for _, c := range []struct {
		plugin, host int
		want         []string
	}{
		{0, 1, []string{"version 0", "speaks version 1", "rebuild the plugin"}},
		{3, 2, []string{"version 3", "speaks version 2", "upgrade whittle", "protocol 2"}},
	} {
		msg := (&VersionError{Plugin: `plugin "x"`, PluginVersion: c.plugin, HostVersion: c.host}).Error()
		for _, w := range append(c.want, `plugin "x"`) {
			if !strings.Contains(msg, w) {
				t.Errorf("%q lacks %q", msg, w)
			}
		}
	}
}

// FuzzOfferedVersions: whatever the variable holds, parsing does not panic
// and returns exactly the fields that are integers.
func FuzzOfferedVersions(f *testing.F) {
	for _, s := range []string{"", "1", "1,2", " 3 ,x,4", ",,", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, env string) {
		got := OfferedVersions(env)
		var want []int
		for _, field := range strings.Split(env, ",") {
			if v, err := strconv.Atoi(strings.TrimSpace(field)); err == nil {
				want = append(want, v)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("OfferedVersions(%q) = %v, want %v", env, got, want)
		}
	})
}

func TestStatusRoundTrip(t *testing.T) {
	for _, c := range []struct {
		err    error
		target error
		code   codes.Code
	}{
		{fmt.Errorf("generate: %w", backend.ErrUnsupported), backend.ErrUnsupported, codes.Unimplemented},
		{fmt.Errorf("train: %w", context.Canceled), context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("plain"), nil, codes.Unknown},
		// A status from a further hop keeps its code.
		{fmt.Errorf("relayed: %w", &RemoteError{Code: codes.Unavailable, Msg: "gone"}), nil, codes.Unavailable},
	} {
		st := ToStatus(c.err)
		if s, _ := status.FromError(st); s.Code() != c.code {
			t.Errorf("%v: code %v, want %v", c.err, s.Code(), c.code)
		}
		back := FromStatus(st)
		if back.Error() != c.err.Error() {
			t.Errorf("message %q, want %q", back, c.err)
		}
		if c.target != nil && !errors.Is(back, c.target) {
			t.Errorf("%v: errors.Is(%v) lost across the wire", c.err, c.target)
		}
		if c.target == nil && (errors.Is(back, backend.ErrUnsupported) || errors.Is(back, context.Canceled)) {
			t.Errorf("%v: gained a sentinel", c.err)
		}
	}
	if ToStatus(nil) != nil || FromStatus(nil) != nil {
		t.Error("nil must stay nil")
	}
	if re := FromStatus(status.Error(codes.Unavailable, "x")).(*RemoteError); !re.Transport() {
		t.Error("Unavailable is a transport failure")
	}
}

// record captures slog records.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

type captureHandler struct{ out *[]record }

func (h captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h captureHandler) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, msg: r.Message, attrs: map[string]any{}}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.Any(); return true })
	*h.out = append(*h.out, rec)
	return nil
}
func (h captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h captureHandler) WithGroup(string) slog.Handler      { return h }

// TestLogRoundTrip sends records through the plugin-side handler's JSON
// lines and the host's parser, as go-plugin does between the two.
func TestLogRoundTrip(t *testing.T) {
	var lines bytes.Buffer
	plog := slog.New(NewStderrHandler(&lines, slog.LevelDebug))
	plog.Debug("d", "n", 3)
	plog.With("model", "m1").WithGroup("g").Warn("w", "x", "y", "err", errors.New("boom"))
	plog.Error("e", "nan", 0.0/zero(), "dur", time.Second)
	slog.New(NewStderrHandler(&lines, slog.LevelInfo)).Debug("filtered")

	var got []record
	w := &slogWriter{log: slog.New(captureHandler{&got})}
	// Arbitrary chunking, as a pipe delivers it.
	data := lines.Bytes()
	for len(data) > 0 {
		n := min(7, len(data))
		w.Write(data[:n])
		data = data[n:]
	}
	w.Write([]byte("not json\n"))
	want := []record{
		{slog.LevelDebug, "d", map[string]any{"n": 3.0}},
		{slog.LevelWarn, "w", map[string]any{"model": "m1", "g.x": "y", "g.err": "boom"}},
		{slog.LevelError, "e", map[string]any{"nan": "NaN", "dur": 1e9}},
		{slog.LevelDebug, "not json", map[string]any{}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records: %+v", len(got), got)
	}
	for i := range want {
		if got[i].level != want[i].level || got[i].msg != want[i].msg || !reflect.DeepEqual(got[i].attrs, want[i].attrs) {
			t.Errorf("record %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func zero() float64 { return 0 }

func TestLineLogger(t *testing.T) {
	var got []record
	w := LineLogger(slog.New(captureHandler{&got}), slog.LevelWarn, "out", "plugin", "p")
	w.Write([]byte("one\r\ntw"))
	w.Write([]byte("o\n\n"))
	if len(got) != 2 || got[0].attrs["line"] != "one" || got[1].attrs["line"] != "two" || got[1].attrs["plugin"] != "p" || got[0].level != slog.LevelWarn {
		t.Errorf("records = %+v", got)
	}
}

// FuzzSlogWriter feeds the parser of plugin log lines arbitrary bytes: a
// plugin's stderr is not trusted to be well formed.
func FuzzSlogWriter(f *testing.F) {
	f.Add([]byte(`{"@level":"info","@message":"m","k":[1,{"a":null}]}` + "\n"))
	f.Add([]byte(`{"@level":7,"@message":{},"@module":3}` + "\n"))
	f.Add([]byte("plain\n\n{\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got []record
		w := &slogWriter{log: slog.New(captureHandler{&got})}
		if n, err := w.Write(b); n != len(b) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if want := bytes.Count(b, []byte("\n")); len(got) > want {
			t.Fatalf("%d records from %d lines", len(got), want)
		}
	})
}
