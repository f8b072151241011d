package data

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"\n\n  \n", nil},
		{"one", []string{"one"}},
		{"a\nb\n\nc", []string{"a\nb", "c"}},
		{"  a  \n\n\n\n b\n", []string{"a", "b"}},
		{"a\r\n\r\nb\r\nc\r\n", []string{"a", "b\nc"}},
		{"a\n \t \nb", []string{"a", "b"}},
		{"x\n  indented\n\ny", []string{"x\n  indented", "y"}},
	}
	for _, tt := range tests {
		if got := SplitDocuments(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("SplitDocuments(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseInstruct(t *testing.T) {
	in := `{"prompt": "p1", "response": "r1", "source": "x"}` + "\n\n" + `{"response": "r2", "prompt": ""}` + "\n"
	got, err := ParseInstruct("i.jsonl", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Pair{{Line: 1, Prompt: "p1", Response: "r1"}, {Line: 3, Prompt: "", Response: "r2"}}
	if !slices.Equal(got, want) {
		t.Errorf("ParseInstruct = %+v, want %+v", got, want)
	}
	for _, tt := range []struct {
		in   string
		line int
		msg  string
	}{
		{`{"prompt": "p"}`, 1, `missing field "response"`},
		{`{"prompt": "p", "response": "r"}` + "\n" + `{"prompt": 1, "response": "r"}`, 2, `field "prompt": want a string, got 1`},
		{`{"prompt": "p", "response": "r"} x`, 1, "not a JSON object"},
	} {
		_, err := ParseInstruct("i.jsonl", []byte(tt.in))
		var le *LineError
		if !errors.As(err, &le) || le.Line != tt.line || !strings.Contains(le.Msg, tt.msg) {
			t.Errorf("ParseInstruct(%q): err = %v, want line %d: %s", tt.in, err, tt.line, tt.msg)
		}
	}
}
