package data

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// Schema is one of the llm-foundry task layouts.
type Schema string

const (
	// SchemaContextOptions: {"context_options": [..], "continuation": "..",
	// "gold": i} (Winogrande, WSC): each context option is followed by the
	// shared continuation.
	SchemaContextOptions Schema = "context_options"
	// SchemaQueryChoices: {"query": "..", "choices": [..], "gold": i}
	// (COPA, HellaSwag): each choice continues the shared query.
	SchemaQueryChoices Schema = "query_choices"
	// SchemaLastWord: {"context": "..", "continuation": ".."} (LAMBADA):
	// greedy decoding must reproduce the continuation.
	SchemaLastWord Schema = "last_word"
)

// Example is one task item in text form. Option i is Contexts[i] followed
// by Continuations[i] (joined by Join); a last-word item has one option.
type Example struct {
	Line          int // 1-based line in the source file
	Contexts      []string
	Continuations []string
	Gold          int
}

// TaskData is a parsed task file.
type TaskData struct {
	Path     string
	Schema   Schema
	Examples []Example
}

// ReadTask reads a task jsonl file; see ParseTask.
func ReadTask(path string) (*TaskData, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errorf("%v", err)
	}
	return ParseTask(path, b)
}

// ParseTask parses a task file in one of the llm-foundry schemas, detected
// from the file's first object; every line must follow the same schema.
// Unknown extra fields are ignored. file names the input in errors, which
// give file:line.
func ParseTask(file string, b []byte) (*TaskData, error) {
	lines, err := jsonLines(file, b)
	if err != nil {
		return nil, errorf("%w", err)
	}
	if len(lines) == 0 {
		return nil, errorf("%s: no task items", file)
	}
	d := &TaskData{Path: file, Schema: detectSchema(lines[0])}
	if d.Schema == "" {
		return nil, errorf("%w", lineErr(file, lines[0].Line,
			"unknown task schema (fields: %s); want context_options+continuation+gold, query+choices+gold or context+continuation",
			lines[0].keys()))
	}
	d.Examples = make([]Example, 0, len(lines))
	for _, l := range lines {
		ex, err := parseExample(file, d.Schema, l)
		if err != nil {
			return nil, errorf("%w", err)
		}
		d.Examples = append(d.Examples, ex)
	}
	return d, nil
}

func detectSchema(l jsonLine) Schema {
	switch {
	case l.has("context_options"):
		return SchemaContextOptions
	case l.has("query") && l.has("choices"):
		return SchemaQueryChoices
	case l.has("context") && l.has("continuation") && !l.has("gold"):
		return SchemaLastWord
	}
	return ""
}

func parseExample(file string, schema Schema, l jsonLine) (Example, error) {
	ex := Example{Line: l.Line}
	if got := detectSchema(l); got != schema {
		return ex, lineErr(file, l.Line, "fields (%s) do not follow the %s schema of the file's first item", l.keys(), schema)
	}
	switch schema {
	case SchemaContextOptions:
		ctxs, err := l.strs(file, "context_options")
		if err != nil {
			return ex, err
		}
		cont, err := l.str(file, "continuation")
		if err != nil {
			return ex, err
		}
		if ex.Gold, err = l.index(file, "gold", len(ctxs)); err != nil {
			return ex, err
		}
		ex.Contexts = ctxs
		for range ctxs {
			ex.Continuations = append(ex.Continuations, cont)
		}
	case SchemaQueryChoices:
		query, err := l.str(file, "query")
		if err != nil {
			return ex, err
		}
		choices, err := l.strs(file, "choices")
		if err != nil {
			return ex, err
		}
		if ex.Gold, err = l.index(file, "gold", len(choices)); err != nil {
			return ex, err
		}
		ex.Continuations = choices
		for range choices {
			ex.Contexts = append(ex.Contexts, query)
		}
	case SchemaLastWord:
		ctx, err := l.str(file, "context")
		if err != nil {
			return ex, err
		}
		cont, err := l.str(file, "continuation")
		if err != nil {
			return ex, err
		}
		ex.Contexts, ex.Continuations = []string{ctx}, []string{cont}
	}
	for i, c := range ex.Continuations {
		if strings.TrimSpace(c) == "" {
			return ex, lineErr(file, l.Line, "option %d has an empty continuation, which cannot be scored", i)
		}
	}
	return ex, nil
}

// TaskOptions control tokenization of a task.
type TaskOptions struct {
	// Limit keeps the first Limit items (0 = all).
	Limit int
	// FewShot prepends this many solved examples (context, delimiter, gold
	// continuation), separated by FewShotSeparator, to every option's
	// context. They are drawn from the same file, never the item itself,
	// seeded by Seed and the item's index: an item's shots do not depend on
	// Limit.
	FewShot int
	Seed    uint64
}

// FewShotSeparator separates few-shot examples from each other and from
// the item (lm-evaluation-harness's default).
const FewShotSeparator = "\n\n"

// Task is a tokenized evaluation set: Choices for the multiple-choice
// schemas, LastWord for SchemaLastWord.
type Task struct {
	Name     string
	Path     string
	Schema   Schema
	Choices  []backend.ChoiceItem
	LastWord []backend.LastWordItem
}

// Len is the number of items.
func (t *Task) Len() int { return len(t.Choices) + len(t.LastWord) }

// PrepareTask reads and tokenizes a recipe task with its limit and few-shot
// count; seed picks the few-shot examples.
func PrepareTask(rt *recipe.Task, tok *tokenizer.Tokenizer, seed uint64) (*Task, error) {
	d, err := ReadTask(rt.Path)
	if err != nil {
		return nil, fmt.Errorf("task %q: %w", rt.Name, err)
	}
	t, err := d.Tokenize(tok, TaskOptions{Limit: rt.Limit, FewShot: rt.FewShot, Seed: seed})
	if err != nil {
		return nil, fmt.Errorf("task %q: %w", rt.Name, err)
	}
	t.Name = rt.Name
	return t, nil
}

// Tokenize turns the examples into backend items. Option i's context is
// BOS plus the few-shot prefix and Contexts[i]; its continuation is the
// delimiter (see Join) and Continuations[i], split from the context by
// SplitTokens, so context ⧺ continuation tokens are exactly the
// tokenization of the joined text. Whitespace ending the context moves to
// the start of the continuation, as lm-evaluation-harness's _encode_pair
// does (n_spaces = len(context) - len(context.rstrip())), so a context
// ending in a space does not end in a lone space token. Each choice
// option records its continuation's length in characters (without the
// delimiter) for acc_norm.
func (d *TaskData) Tokenize(tok *tokenizer.Tokenizer, opts TaskOptions) (*Task, error) {
	if opts.Limit < 0 || opts.FewShot < 0 {
		return nil, errorf("%s: negative limit or few-shot count", d.Path)
	}
	if opts.FewShot > 0 && opts.FewShot >= len(d.Examples) {
		return nil, errorf("%s: %d few-shot examples need more than the file's %d items", d.Path, opts.FewShot, len(d.Examples))
	}
	n := len(d.Examples)
	if opts.Limit > 0 {
		n = min(n, opts.Limit)
	}
	t := &Task{Path: d.Path, Schema: d.Schema}
	for i, ex := range d.Examples[:n] {
		prefix := d.fewShotPrefix(i, opts)
		if d.Schema == SchemaLastWord {
			ctx, cont := splitPair(tok, prefix+ex.Contexts[0], delimiter(ex.Contexts[0], ex.Continuations[0])+ex.Continuations[0])
			t.LastWord = append(t.LastWord, backend.LastWordItem{Context: ctx, Continuation: cont})
			continue
		}
		item := backend.ChoiceItem{Gold: ex.Gold}
		for j, c := range ex.Contexts {
			ctx, cont := splitPair(tok, prefix+c, delimiter(c, ex.Continuations[j])+ex.Continuations[j])
			item.Contexts = append(item.Contexts, ctx)
			item.Continuations = append(item.Continuations, cont)
			item.ContinuationChars = append(item.ContinuationChars, utf8.RuneCountInString(ex.Continuations[j]))
		}
		t.Choices = append(t.Choices, item)
	}
	return t, nil
}

// encodePair moves the whitespace that ends context to the start of
// continuation (lm-evaluation-harness's _encode_pair; Go's unicode.IsSpace
// stands in for Python's str.isspace, which agrees on every character but
// the ASCII separators U+001C–U+001F).
func encodePair(context, continuation string) (string, string) {
	trimmed := strings.TrimRightFunc(context, unicode.IsSpace)
	return trimmed, context[len(trimmed):] + continuation
}

// splitPair is SplitTokens of the pair as encodePair rearranges it.
func splitPair(tok *tokenizer.Tokenizer, context, continuation string) (ctx, cont []int) {
	context, continuation = encodePair(context, continuation)
	return SplitTokens(tok, context, continuation)
}

// fewShotPrefix is the text of item i's few-shot examples followed by the
// separator, or "" without few-shot.
func (d *TaskData) fewShotPrefix(i int, opts TaskOptions) string {
	if opts.FewShot == 0 {
		return ""
	}
	shots := pickShots(len(d.Examples), i, opts.FewShot, opts.Seed)
	var b strings.Builder
	for _, s := range shots {
		ex := d.Examples[s]
		b.WriteString(Join(ex.Contexts[ex.Gold], ex.Continuations[ex.Gold]))
		b.WriteString(FewShotSeparator)
	}
	return b.String()
}

// pickShots draws k distinct indices from [0, n) without item, in draw
// order, from a PCG stream seeded by (seed, item): a partial Fisher–Yates
// over the other n−1 indices.
func pickShots(n, item, k int, seed uint64) []int {
	r := rand.NewPCG(seed^streamFewShot, uint64(item))
	// pool maps a position in the virtual array [0, n−1) of the other
	// items to its current value; untouched positions hold themselves.
	pool := map[int]int{}
	get := func(p int) int {
		if v, ok := pool[p]; ok {
			return v
		}
		return p
	}
	m := n - 1
	out := make([]int, 0, k)
	for j := range k {
		p := j + int(below(r, uint64(m-j)))
		v := get(p)
		pool[p] = get(j)
		pool[j] = v
		if v >= item {
			v++ // skip the item itself
		}
		out = append(out, v)
	}
	return out
}
