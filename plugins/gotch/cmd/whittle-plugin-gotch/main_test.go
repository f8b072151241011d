package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	cases := []struct {
		raw  string
		want config
		err  string
	}{
		{"", config{}, ""},
		{"null", config{}, ""},
		{`{}`, config{}, ""},
		{`{"device": "cuda:1", "precision": "fp32", "threads": 4, "loss_chunk": 2048}`, config{Device: "cuda:1", Precision: "fp32", Threads: 4, LossChunk: 2048}, ""},
		{`{"devcie": "cuda"}`, config{}, "unknown field"},
		{`{"threads": -1}`, config{}, "must not be negative"},
		{`{"threads": "4"}`, config{}, "cannot unmarshal"},
		{`{} {}`, config{}, "trailing data"},
	}
	for _, c := range cases {
		got, err := parseConfig(json.RawMessage(c.raw))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseConfig(%q) error %v, want one containing %q", c.raw, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseConfig(%q) = %+v, %v; want %+v", c.raw, got, err, c.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"device":"cpu"}`, `{"threads":2,"loss_chunk":1}`, `[1]`, `{"precision":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := parseConfig(raw)
		if err == nil && (c.Threads < 0 || c.LossChunk < 0) {
			t.Fatalf("accepted negative sizes: %+v", c)
		}
	})
}
