package plugin

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
)

// tailLines and tailLineBytes bound what a start error quotes of a
// plugin's stderr.
const (
	tailLines     = 15
	tailLineBytes = 400
)

// stderrTail keeps the last lines a plugin wrote to its stderr, for the
// error when it fails to start. go-plugin hands it every line
// (ClientConfig.Stderr).
type stderrTail struct {
	mu    sync.Mutex
	part  []byte
	lines []string
}

func (t *stderrTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, p...)
	for {
		i := bytes.IndexByte(t.part, '\n')
		if i < 0 {
			break
		}
		t.add(string(t.part[:i]))
		t.part = t.part[i+1:]
	}
	if len(t.part) > tailLineBytes {
		t.add(string(t.part))
		t.part = t.part[:0]
	}
	return len(p), nil
}

func (t *stderrTail) add(line string) {
	line = readable(strings.TrimRight(line, "\r"))
	if strings.TrimSpace(line) == "" {
		return
	}
	if len(line) > tailLineBytes {
		line = line[:tailLineBytes] + "…"
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
}

// Lines returns the kept lines, oldest first.
func (t *stderrTail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.lines...)
	if len(t.part) > 0 {
		out = append(out, readable(string(t.part)))
	}
	return out
}

// readable turns an hclog JSON line (what plugins built with the SDK
// log) into "level: message"; other lines are kept as they are.
func readable(line string) string {
	var e struct {
		Level   string `json:"@level"`
		Message string `json:"@message"`
	}
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil || e.Message == "" {
		return line
	}
	if e.Level == "" {
		return e.Message
	}
	return e.Level + ": " + e.Message
}
