package cpu

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

// printable mirrors run.c's safe_printf filter.
func printable(piece string) bool {
	if len(piece) != 1 {
		return piece != ""
	}
	c := piece[0]
	return (c >= 0x20 && c <= 0x7e) || (c >= '\t' && c <= '\r')
}

// TestGenerateMatchesLlama2c: greedy generation from BOS reproduces
// llama2.c's output, and sampling reproduces the reference's run.c loop
// with the same seed.
func TestGenerateMatchesLlama2c(t *testing.T) {
	f := loadStories(t)
	want, err := os.ReadFile(sharedData(t, "models/stories260K/expected_greedy_200.txt"))
	if err != nil {
		t.Fatal(err)
	}
	b := newBackend(t)
	id := load(t, b, f.dir)
	tok := f.m.Tokenizer
	decode := func(prompt, out []int) string {
		var sb strings.Builder
		prev := prompt[len(prompt)-1]
		for _, id := range out {
			if s := tok.DecodeToken(prev, id); printable(s) {
				sb.WriteString(s)
			}
			prev = id
		}
		return sb.String() + "\n"
	}
	bos := []int{tok.BOS}
	res, err := b.Generate(context.Background(), backend.GenerateRequest{Model: id, Prompts: [][]int{bos}, MaxTokens: 200, StopToken: tok.BOS})
	if err != nil {
		t.Fatal(err)
	}
	if got := decode(bos, res.Tokens[0]); got != string(want) {
		t.Errorf("greedy text differs\n got: %q\nwant: %q", got, want)
	}

	prompt := "Once upon a time, a cat"
	var ref strings.Builder
	err = f.ref.Generate(context.Background(), tok, prompt, 120, reference.NewSampler(0.9, 0.8, 42), func(s string) error {
		ref.WriteString(s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(prompt, true, false)
	// run.c's steps count positions: the prompt's and the sampled ones.
	res, err = b.Generate(context.Background(), backend.GenerateRequest{
		Model: id, Prompts: [][]int{ids, ids}, MaxTokens: 120 - len(ids) + 1, Temperature: 0.9, TopP: 0.8, Seed: 42, StopToken: tok.BOS,
	})
	if err != nil {
		t.Fatal(err)
	}
	promptText := decode(bos, ids[1:])
	if got := promptText[:len(promptText)-1] + decode(ids, res.Tokens[0]); got != ref.String() {
		t.Errorf("sampled text differs\n got: %q\nwant: %q", got, ref.String())
	}
	if slices.Equal(res.Tokens[0], res.Tokens[1]) {
		t.Error("the second prompt repeated the first's sample: the sampler was reseeded")
	}

	// Limits: MaxTokens, the context length, and StopToken excluded.
	res, err = b.Generate(context.Background(), backend.GenerateRequest{Model: id, Prompts: [][]int{bos, bos}, MaxTokens: 5, StopToken: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens[0]) != 5 {
		t.Errorf("%d tokens for max_tokens 5", len(res.Tokens[0]))
	}
	stop := res.Tokens[0][2]
	res, err = b.Generate(context.Background(), backend.GenerateRequest{Model: id, Prompts: [][]int{bos}, MaxTokens: 5, StopToken: stop})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.Tokens[0]); n > 2 {
		t.Errorf("generation went on past the stop token: %v", res.Tokens[0])
	}
	long := make([]int, 510)
	long[0] = tok.BOS
	for i := 1; i < len(long); i++ {
		long[i] = 300
	}
	res, err = b.Generate(context.Background(), backend.GenerateRequest{Model: id, Prompts: [][]int{long}, StopToken: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens[0]) != 3 {
		t.Errorf("%d tokens after a 510-token prompt in 512 positions, want 3", len(res.Tokens[0]))
	}
	for _, bad := range [][]int{{}, {512}, make([]int, 513)} {
		if _, err := b.Generate(context.Background(), backend.GenerateRequest{Model: id, Prompts: [][]int{bad}, MaxTokens: 2}); err == nil {
			t.Errorf("prompt of %d tokens accepted", len(bad))
		}
	}
}
