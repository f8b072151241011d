package backend

import (
	"math"
	"strings"
	"testing"
)

func TestGenerateRequestCheck(t *testing.T) {
	for _, c := range []struct {
		req  GenerateRequest
		want string // "" = valid
	}{
		{GenerateRequest{Prompts: [][]int{{1, 2}}, Temperature: 0.8}, ""},
		{GenerateRequest{Prompts: [][]int{{1}}, Temperature: -1}, "temperature"},
		{GenerateRequest{Prompts: [][]int{{1}}, Temperature: math.Inf(1)}, "temperature"},
		{GenerateRequest{Prompts: [][]int{{1}}, Temperature: math.NaN()}, "temperature"},
		{GenerateRequest{Prompts: [][]int{{1}}, Temperature: 1e-300, TopP: 1}, ""},
		{GenerateRequest{Prompts: [][]int{{1}}, Temperature: 1, TopP: math.NaN()}, "top_p NaN"},
		{GenerateRequest{Prompts: [][]int{{1}}, Temperature: 1, TopP: -0.5}, "top_p -0.5"},
		{GenerateRequest{Prompts: [][]int{{1}}, Temperature: 1, TopP: 1.5}, "top_p 1.5"},
		{GenerateRequest{Prompts: [][]int{{1}}, Temperature: 1, TopP: math.Inf(1)}, "top_p"},
		{GenerateRequest{Prompts: [][]int{{1}, {}}}, "prompt 1 is empty"},
		{GenerateRequest{Prompts: [][]int{{1, 2, 3, 4, 5}}}, "5 tokens, the model 4 positions"},
		{GenerateRequest{Prompts: [][]int{{1, 10}}}, "token 1 is 10, outside vocabulary of 10"},
		{GenerateRequest{Prompts: [][]int{{-1}}}, "outside vocabulary"},
	} {
		err := c.req.Check(10, 4)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Check(%+v) = %v, want %q", c.req, err, c.want)
		}
	}
}

func TestGenerateRequestLimit(t *testing.T) {
	for _, c := range []struct {
		maxTokens, n, maxSeq, want int
	}{
		{5, 3, 16, 5},  // fits
		{0, 3, 16, 14}, // as many as fit: positions 3..15 fed, the 14th token never fed
		{20, 3, 16, 14},
		{7, 3, 0, 7}, // no context length
		{1, 16, 16, 1},
	} {
		got, err := GenerateRequest{MaxTokens: c.maxTokens}.Limit(c.n, c.maxSeq)
		if err != nil || got != c.want {
			t.Errorf("Limit(max_tokens %d, prompt %d, max_seq %d) = %d, %v; want %d", c.maxTokens, c.n, c.maxSeq, got, err, c.want)
		}
	}
	if _, err := (GenerateRequest{}).Limit(3, 0); err == nil {
		t.Error("no limit at all was accepted")
	}
}
