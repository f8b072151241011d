package data

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/recipe"
)

func TestShippedTasks(t *testing.T) {
	tok := tok512(t)
	dir := filepath.Join(sharedData(t), "evals")
	tests := []struct {
		file    string
		schema  Schema
		items   int
		options int // options per item (0: varies)
	}{
		{"winogrande.jsonl", SchemaContextOptions, 1267, 2},
		{"winograd_wsc.jsonl", SchemaContextOptions, 273, 0},
		{"copa.jsonl", SchemaQueryChoices, 100, 2},
		{"hellaswag_small.jsonl", SchemaQueryChoices, 4, 4},
		{"lambada_openai.jsonl", SchemaLastWord, 5153, 1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			d, err := ReadTask(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if d.Schema != tt.schema || len(d.Examples) != tt.items {
				t.Fatalf("schema %s with %d items, want %s with %d", d.Schema, len(d.Examples), tt.schema, tt.items)
			}
			task, err := d.Tokenize(tok, TaskOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if task.Len() != tt.items {
				t.Fatalf("%d tokenized items, want %d", task.Len(), tt.items)
			}
			straddles := 0
			for i, ex := range d.Examples {
				var ctxs, conts [][]int
				if tt.schema == SchemaLastWord {
					it := task.LastWord[i]
					ctxs, conts = [][]int{it.Context}, [][]int{it.Continuation}
				} else {
					it := task.Choices[i]
					if it.Gold != ex.Gold || len(it.Contexts) != len(ex.Contexts) || len(it.Continuations) != len(ex.Contexts) {
						t.Fatalf("item %d: gold %d with %d/%d options, want %d with %d", i, it.Gold, len(it.Contexts), len(it.Continuations), ex.Gold, len(ex.Contexts))
					}
					ctxs, conts = it.Contexts, it.Continuations
				}
				if tt.schema != SchemaLastWord {
					want := make([]int, len(ex.Continuations))
					for j, c := range ex.Continuations {
						want[j] = len([]rune(c))
					}
					if got := task.Choices[i].ContinuationChars; !slices.Equal(got, want) {
						t.Fatalf("item %d: continuation characters %v, want %v", i, got, want)
					}
				}
				if tt.options > 0 && len(ctxs) != tt.options {
					t.Fatalf("item %d has %d options, want %d", i, len(ctxs), tt.options)
				}
				for j := range ctxs {
					joined := Join(ex.Contexts[j], ex.Continuations[j])
					// Context ⧺ continuation is the joined text's tokenization.
					if !slices.Equal(slices.Concat(ctxs[j], conts[j]), tok.Encode(joined, true, false)) {
						t.Fatalf("item %d option %d: tokens are not those of %q", i, j, joined)
					}
					if ctxs[j][0] != tok.BOS || len(conts[j]) == 0 {
						t.Fatalf("item %d option %d: context without BOS or empty continuation", i, j)
					}
					// The continuation tokens spell the continuation.
					if got, want := tok.Decode(conts[j]), delimiter(ex.Contexts[j], ex.Continuations[j])+ex.Continuations[j]; got != want {
						if !strings.HasSuffix(got, want) {
							t.Fatalf("item %d option %d: continuation decodes to %q, want %q", i, j, got, want)
						}
						straddles++
					}
				}
			}
			// tok512's pieces carry a space only at their start, so a boundary
			// at a space is never crossed by a merge.
			if straddles != 0 {
				t.Errorf("%d continuations took tokens from their context", straddles)
			}
		})
	}
}

// TestTokenizeWhitespace checks items whose context ends in whitespace
// against lm-evaluation-harness's _encode_pair, written out here: the
// context's trailing whitespace moves to the continuation, context_enc =
// encode(context), continuation_enc = encode(context + continuation)
// [len(context_enc):].
func TestTokenizeWhitespace(t *testing.T) {
	tok := tok512(t)
	for _, tt := range []struct {
		name, line      string
		context, cont   string // the pair before the move
		movedWhitespace string
		chars           int // of the gold choice
	}{
		{"space", `{"query": "The cat sat on the ", "choices": ["mat.", "moon."], "gold": 0}`, "The cat sat on the ", "mat.", " ", 4},
		{"newline and spaces", `{"query": "Question: Where is Lily?\nAnswer: \n ", "choices": ["park", "Zoo ü"], "gold": 1}`, "Question: Where is Lily?\nAnswer: \n ", "Zoo ü", " \n ", 5},
		{"last word", `{"context": "Once upon a time there was a ", "continuation": "dog"}`, "Once upon a time there was a ", "dog", " ", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ParseTask("t.jsonl", []byte(tt.line+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			task, err := d.Tokenize(tok, TaskOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ctxText := strings.TrimRight(tt.context, " \n")
			if ctxText+tt.movedWhitespace != tt.context {
				t.Fatalf("bad test: %q + %q != %q", ctxText, tt.movedWhitespace, tt.context)
			}
			wantCtx := tok.Encode(ctxText, true, false)
			wantCont := tok.Encode(tt.context+tt.cont, true, false)[len(wantCtx):]
			var gotCtx, gotCont []int
			if d.Schema == SchemaLastWord {
				gotCtx, gotCont = task.LastWord[0].Context, task.LastWord[0].Continuation
			} else {
				it := task.Choices[0]
				gotCtx, gotCont = it.Contexts[it.Gold], it.Continuations[it.Gold]
				if it.ContinuationChars[it.Gold] != tt.chars {
					t.Errorf("continuation characters %d, want %d", it.ContinuationChars[it.Gold], tt.chars)
				}
			}
			if !slices.Equal(gotCtx, wantCtx) || !slices.Equal(gotCont, wantCont) {
				t.Errorf("split %v | %v, want %v | %v", gotCtx, gotCont, wantCtx, wantCont)
			}
			if got := tok.Decode(gotCont); !strings.HasSuffix(got, tt.cont) || !strings.Contains(got, strings.Trim(tt.movedWhitespace, " ")) {
				t.Errorf("continuation %q does not carry the moved whitespace %q before %q", got, tt.movedWhitespace, tt.cont)
			}
		})
	}
}

func TestSplitTokens(t *testing.T) {
	tok := tok512(t)
	// The continuation after a space is the continuation's own encoding,
	// dummy-prefix space included: that space stands for the delimiter.
	for _, tt := range []struct{ ctx, cont string }{
		{"Once upon a time", "there was a dog."},
		{"The cat sat on the", "mat"},
		{"Lily said", "\"Hello!\""},
	} {
		ctx, cont := SplitTokens(tok, tt.ctx, " "+tt.cont)
		if !slices.Equal(ctx, tok.Encode(tt.ctx, true, false)) {
			t.Errorf("%q: context %v, want %v", tt.ctx, ctx, tok.Encode(tt.ctx, true, false))
		}
		if !slices.Equal(cont, tok.Encode(tt.cont, false, false)) {
			t.Errorf("%q: continuation %v, want %v", tt.cont, cont, tok.Encode(tt.cont, false, false))
		}
	}
	// Without a space the boundary falls inside a word: "hap"+"py" merges
	// across it, and the merged token goes to the continuation.
	ctx, cont := SplitTokens(tok, "They were hap", "py")
	whole := tok.Encode("They were happy", true, false)
	if !slices.Equal(slices.Concat(ctx, cont), whole) || !strings.HasSuffix(tok.Decode(cont), "py") ||
		len(cont) == 0 {
		t.Errorf("split %v | %v of %v", ctx, cont, whole)
	}
}

func TestJoin(t *testing.T) {
	for _, tt := range []struct{ ctx, cont, want string }{
		{"a", "b", "a b"},
		{"a ", "b", "a b"},
		{"a", " b", "a b"},
		{"a\n", "b", "a\nb"},
		{"", "b", "b"},
		{"Then", ", the man", "Then , the man"},
	} {
		if got := Join(tt.ctx, tt.cont); got != tt.want {
			t.Errorf("Join(%q, %q) = %q, want %q", tt.ctx, tt.cont, got, tt.want)
		}
	}
}

func TestFewShot(t *testing.T) {
	tok := tok512(t)
	src := filepath.Join(sharedData(t), "evals", "copa.jsonl")
	d, err := ReadTask(src)
	if err != nil {
		t.Fatal(err)
	}
	opts := TaskOptions{FewShot: 3, Seed: 5, Limit: 10}
	task, err := d.Tokenize(tok, opts)
	if err != nil {
		t.Fatal(err)
	}
	if task.Len() != 10 {
		t.Fatalf("%d items, want the limit 10", task.Len())
	}
	solved := map[string]int{}
	for i, ex := range d.Examples {
		solved[Join(ex.Contexts[ex.Gold], ex.Continuations[ex.Gold])] = i
	}
	differs := false
	for i, it := range task.Choices {
		text := tok.Decode(it.Contexts[0])
		parts := strings.Split(text, FewShotSeparator)
		if len(parts) != 4 || parts[3] != d.Examples[i].Contexts[0] {
			t.Fatalf("item %d: context %q is not 3 shots and the query", i, text)
		}
		seen := map[int]bool{}
		for _, shot := range parts[:3] {
			j, ok := solved[shot]
			if !ok || j == i || seen[j] {
				t.Fatalf("item %d: shot %q is not a distinct solved example other than the item", i, shot)
			}
			seen[j] = true
		}
		// Every option shares the prefix.
		for j := range it.Contexts {
			if got := tok.Decode(it.Contexts[j]); got != text {
				t.Errorf("item %d option %d: context %q differs from option 0's", i, j, got)
			}
		}
		if i > 0 && !slices.Equal(it.Contexts[0][:20], task.Choices[0].Contexts[0][:20]) {
			differs = true
		}
	}
	if !differs {
		t.Error("every item got the same shots")
	}
	// Deterministic, independent of Limit, and seed-dependent.
	again, _ := d.Tokenize(tok, TaskOptions{FewShot: 3, Seed: 5, Limit: 20})
	for i := range task.Choices {
		if !slices.Equal(again.Choices[i].Contexts[1], task.Choices[i].Contexts[1]) {
			t.Errorf("item %d changed with the limit", i)
		}
	}
	other, _ := d.Tokenize(tok, TaskOptions{FewShot: 3, Seed: 6, Limit: 10})
	same := 0
	for i := range task.Choices {
		if slices.Equal(other.Choices[i].Contexts[0], task.Choices[i].Contexts[0]) {
			same++
		}
	}
	if same == 10 {
		t.Error("another seed chose the same shots")
	}
	if _, err := d.Tokenize(tok, TaskOptions{FewShot: 100}); err == nil {
		t.Error("100 shots from 100 items accepted")
	}
}

func TestPickShots(t *testing.T) {
	// All others are drawn when k = n−1; draws are distinct and never the item.
	for item := range 7 {
		got := pickShots(7, item, 6, 1)
		slices.Sort(got)
		want := []int{}
		for i := range 7 {
			if i != item {
				want = append(want, i)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("pickShots(7, %d, 6) = %v, want %v", item, got, want)
		}
	}
	// Uniform: over many seeds each other index is drawn k/(n−1) of the time.
	counts := make([]int, 10)
	const seeds = 20000
	for s := range seeds {
		for _, j := range pickShots(10, 4, 3, uint64(s)) {
			counts[j]++
		}
	}
	for j, c := range counts {
		want := 3.0 / 9
		if j == 4 {
			want = 0
		}
		if f := float64(c) / seeds; f < want-0.015 || f > want+0.015 {
			t.Errorf("index %d drawn %.3f of the time, want %.3f", j, f, want)
		}
	}
}

func TestParseTaskErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
		line int
		msg  string
	}{
		{"not json", `{"query": "a", "choices": ["b"], "gold": 0}` + "\n\n" + `{"query": "a", "choices": ["b"]`, 3, "not a JSON object"},
		{"array line", `[1, 2]`, 1, "not a JSON object"},
		{"unknown schema", `{"question": "a", "answer": "b"}`, 1, "unknown task schema (fields: answer, question)"},
		{"mixed", `{"query": "a", "choices": ["b"], "gold": 0}` + "\n" + `{"context": "a", "continuation": "b"}`, 2, "do not follow the query_choices schema"},
		{"gold range", `{"context_options": ["a", "b"], "continuation": "c", "gold": 2}`, 1, `"gold" = 2 is not an option index (2 options)`},
		{"gold type", `{"query": "a", "choices": ["b"], "gold": "0"}`, 1, `field "gold": want an integer`},
		{"gold float", `{"query": "a", "choices": ["b"], "gold": 0.5}`, 1, `want an integer`},
		{"missing gold", `{"context_options": ["a"], "continuation": "c"}`, 1, `missing field "gold"`},
		{"empty choices", `{"query": "a", "choices": [], "gold": 0}`, 1, `"choices" is empty`},
		{"choice type", `{"query": "a", "choices": ["b", 3], "gold": 0}`, 1, `want an array of strings`},
		{"empty continuation", `{"context": "a", "continuation": " "}`, 1, "empty continuation"},
		{"null", `null`, 1, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTask("t.jsonl", []byte(tt.data))
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want a *LineError", err)
			}
			if le.File != "t.jsonl" || le.Line != tt.line || !strings.Contains(le.Msg, tt.msg) {
				t.Errorf("err = %v, want t.jsonl:%d: …%s", err, tt.line, tt.msg)
			}
		})
	}
	if _, err := ParseTask("t.jsonl", []byte("\n\n")); err == nil {
		t.Error("an empty task file was accepted")
	}
}

func TestPrepareTask(t *testing.T) {
	tok := tok512(t)
	rt := &recipe.Task{Name: "wg", Path: filepath.Join(sharedData(t), "evals", "winogrande.jsonl"), Limit: 50}
	task, err := PrepareTask(rt, tok, 0)
	if err != nil {
		t.Fatal(err)
	}
	if task.Name != "wg" || len(task.Choices) != 50 || task.Schema != SchemaContextOptions {
		t.Errorf("task %q with %d items, schema %s", task.Name, len(task.Choices), task.Schema)
	}
	// Winogrande's options differ in the context; the continuation is shared.
	it := task.Choices[0]
	if slices.Equal(it.Contexts[0], it.Contexts[1]) || !slices.Equal(it.Continuations[0], it.Continuations[1]) {
		t.Error("want distinct contexts and a shared continuation")
	}
	rt.Path = filepath.Join(t.TempDir(), "missing.jsonl")
	if _, err := PrepareTask(rt, tok, 0); err == nil || !strings.Contains(err.Error(), `task "wg"`) {
		t.Errorf("err = %v, want the task named", err)
	}
}
