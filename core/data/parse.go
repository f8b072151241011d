package data

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// LineError reports a malformed line of a jsonl file.
type LineError struct {
	File string
	Line int // 1-based
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

func lineErr(file string, line int, format string, args ...any) error {
	return &LineError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// jsonLine is one non-blank line of a jsonl file.
type jsonLine struct {
	Line   int
	Fields map[string]json.RawMessage
}

// jsonLines splits a jsonl file into objects, skipping blank lines. Each
// line must be exactly one JSON object.
func jsonLines(file string, data []byte) ([]jsonLine, error) {
	var out []jsonLine
	for n, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if n == 0 {
			line = bytes.TrimPrefix(line, []byte("\ufeff")) // a UTF-8 byte-order mark
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(line, &fields); err != nil || fields == nil {
			if err == nil {
				err = fmt.Errorf("null")
			}
			return nil, lineErr(file, n+1, "not a JSON object: %v", err)
		}
		out = append(out, jsonLine{Line: n + 1, Fields: fields})
	}
	return out, nil
}

func (l jsonLine) has(key string) bool { _, ok := l.Fields[key]; return ok }

func (l jsonLine) keys() string {
	k := make([]string, 0, len(l.Fields))
	for key := range l.Fields {
		k = append(k, key)
	}
	sort.Strings(k)
	return strings.Join(k, ", ")
}

// str decodes a required string field.
func (l jsonLine) str(file, key string) (string, error) {
	raw, ok := l.Fields[key]
	if !ok {
		return "", lineErr(file, l.Line, "missing field %q (the line has: %s)", key, l.keys())
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", lineErr(file, l.Line, "field %q: want a string, got %s", key, clip(raw))
	}
	return s, nil
}

// strs decodes a required non-empty array of strings.
func (l jsonLine) strs(file, key string) ([]string, error) {
	raw, ok := l.Fields[key]
	if !ok {
		return nil, lineErr(file, l.Line, "missing field %q (the line has: %s)", key, l.keys())
	}
	var s []string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, lineErr(file, l.Line, "field %q: want an array of strings, got %s", key, clip(raw))
	}
	if len(s) == 0 {
		return nil, lineErr(file, l.Line, "field %q is empty", key)
	}
	return s, nil
}

// index decodes a required integer field in [0, n).
func (l jsonLine) index(file, key string, n int) (int, error) {
	raw, ok := l.Fields[key]
	if !ok {
		return 0, lineErr(file, l.Line, "missing field %q (the line has: %s)", key, l.keys())
	}
	var v int
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, lineErr(file, l.Line, "field %q: want an integer, got %s", key, clip(raw))
	}
	if v < 0 || v >= n {
		return 0, lineErr(file, l.Line, "field %q = %d is not an option index (%d options)", key, v, n)
	}
	return v, nil
}

func clip(raw []byte) string {
	const max = 40
	if len(raw) <= max {
		return string(raw)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(raw[cut]) {
		cut--
	}
	return string(raw[:cut]) + "…"
}

// SplitDocuments splits plain text into documents at blank lines (lines of
// only whitespace). Each document is trimmed of surrounding whitespace;
// lines inside it are kept as they are, less trailing carriage returns.
func SplitDocuments(text string) []string {
	var docs []string
	var cur []string
	flush := func() {
		if d := strings.TrimSpace(strings.Join(cur, "\n")); d != "" {
			docs = append(docs, d)
		}
		cur = cur[:0]
	}
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

// ParseTextJSONL reads documents from jsonl: one {"text": "..."} object per
// line (other fields are ignored). Blank lines and whitespace-only texts
// are skipped. file names the input in errors.
func ParseTextJSONL(file string, data []byte) ([]string, error) {
	lines, err := jsonLines(file, data)
	if err != nil {
		return nil, err
	}
	var docs []string
	for _, l := range lines {
		if !l.has("text") && l.has("prompt") && l.has("response") {
			return nil, lineErr(file, l.Line, `no "text" field: this looks like instruction data (prompt/response); use format = "instruct"`)
		}
		s, err := l.str(file, "text")
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(s) != "" {
			docs = append(docs, s)
		}
	}
	return docs, nil
}

// Pair is one instruction-tuning example.
type Pair struct {
	Line     int // 1-based line in the source file
	Prompt   string
	Response string
}

// ParseInstruct reads {"prompt": "...", "response": "..."} objects, one per
// line (other fields are ignored; blank lines are skipped).
func ParseInstruct(file string, data []byte) ([]Pair, error) {
	lines, err := jsonLines(file, data)
	if err != nil {
		return nil, err
	}
	pairs := make([]Pair, 0, len(lines))
	for _, l := range lines {
		p := Pair{Line: l.Line}
		if p.Prompt, err = l.str(file, "prompt"); err != nil {
			return nil, err
		}
		if p.Response, err = l.str(file, "response"); err != nil {
			return nil, err
		}
		pairs = append(pairs, p)
	}
	return pairs, nil
}
