package wire

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// go-plugin forwards a plugin's stderr to the host's hclog logger, parsing
// hclog's JSON lines. The host's logger writes JSON too, into a writer that
// hands each entry to slog, so plugin logs end up in whittle's log with
// their level and fields. Plugins write those JSON lines with StderrHandler.

// hostModule names go-plugin's own log entries; a plugin's are
// "plugin.<binary>".
const hostModule = "plugin"

// HostLogger returns the hclog logger a host gives go-plugin: entries go
// to log at their level, with hclog's module ("plugin.<binary>") as
// "module".
func HostLogger(log *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       hostModule,
		Level:      hclog.Debug,
		JSONFormat: true,
		Output:     &slogWriter{log: log},
	})
}

// slogWriter receives hclog JSON lines.
type slogWriter struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (w *slogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *slogWriter) emit(line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	var entry map[string]any
	if err := json.Unmarshal(line, &entry); err != nil {
		w.log.Debug(string(line))
		return
	}
	level := parseLevel(entry["@level"])
	msg, _ := entry["@message"].(string)
	var attrs []any
	m, _ := entry["@module"].(string)
	if m != "" {
		attrs = append(attrs, "module", m)
	}
	if m == hostModule && level > slog.LevelDebug {
		// go-plugin's own messages ("plugin process exited", "plugin
		// failed to exit gracefully") repeat what the host reports as
		// errors naming the plugin: a wall of them hid the reason.
		level = slog.LevelDebug
	}
	keys := make([]string, 0, len(entry))
	for k := range entry {
		if !strings.HasPrefix(k, "@") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		attrs = append(attrs, k, entry[k])
	}
	w.log.Log(context.Background(), level, msg, attrs...)
}

func parseLevel(v any) slog.Level {
	s, _ := v.(string)
	switch strings.ToLower(s) {
	case "trace", "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// StderrHandler is a slog.Handler writing hclog's JSON lines, which
// go-plugin parses on the host side (see HostLogger). Plugins log with it
// to their stderr.
type StderrHandler struct {
	w     io.Writer
	mu    *sync.Mutex
	level slog.Leveler
	attrs []slog.Attr
	group string
}

// NewStderrHandler writes entries at level and above to w.
func NewStderrHandler(w io.Writer, level slog.Leveler) *StderrHandler {
	return &StderrHandler{w: w, mu: &sync.Mutex{}, level: level}
}

// Enabled implements slog.Handler.
func (h *StderrHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Handle implements slog.Handler.
func (h *StderrHandler) Handle(_ context.Context, r slog.Record) error {
	entry := map[string]any{
		"@level":     hclogLevel(r.Level),
		"@message":   r.Message,
		"@timestamp": r.Time.Format(time.RFC3339Nano),
	}
	for _, a := range h.attrs {
		addAttr(entry, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addAttr(entry, h.group, a)
		return true
	})
	b, err := json.Marshal(entry)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err = h.w.Write(append(b, '\n'))
	return err
}

// AttrsJSON flattens slog attributes (groups as dotted keys) into a JSON
// object, the form the Host service's Log call carries.
func AttrsJSON(attrs []slog.Attr) []byte {
	m := map[string]any{}
	for _, a := range attrs {
		addAttr(m, "", a)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return []byte("{}")
	}
	return b
}

func addAttr(m map[string]any, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	key := a.Key
	if prefix != "" {
		key = prefix + "." + key
	}
	if v.Kind() == slog.KindGroup {
		p := key
		if a.Key == "" {
			p = prefix
		}
		for _, g := range v.Group() {
			addAttr(m, p, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	switch v.Kind() {
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			m[key] = err.Error()
			return
		}
		if _, err := json.Marshal(v.Any()); err != nil {
			m[key] = v.String()
			return
		}
		m[key] = v.Any()
	case slog.KindFloat64:
		// encoding/json refuses NaN and ±Inf.
		if f := v.Float64(); f != f || f > 1e308 || f < -1e308 {
			m[key] = v.String()
			return
		}
		m[key] = v.Float64()
	default:
		m[key] = v.Any()
	}
}

// WithAttrs implements slog.Handler.
func (h *StderrHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		if h.group != "" {
			a = slog.Group(h.group, a)
		}
		c.attrs = append(c.attrs, a)
	}
	return &c
}

// WithGroup implements slog.Handler.
func (h *StderrHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	if c.group != "" {
		c.group += "." + name
	} else {
		c.group = name
	}
	return &c
}

func hclogLevel(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}

// LineLogger returns a writer that logs each line written to it as one
// record at level, for a plugin's plain stdout and stderr output.
func LineLogger(log *slog.Logger, level slog.Level, msg string, args ...any) io.Writer {
	return &lineWriter{log: log, level: level, msg: msg, args: args}
}

type lineWriter struct {
	log   *slog.Logger
	level slog.Level
	msg   string
	args  []any
	mu    sync.Mutex
	buf   []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimRight(string(w.buf[:i]), "\r"); line != "" {
			w.log.Log(context.Background(), w.level, w.msg, append(append([]any(nil), w.args...), "line", line)...)
		}
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
