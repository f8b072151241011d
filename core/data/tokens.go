package data

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// SplitTokens tokenizes context followed by continuation (the two strings
// concatenated as given, nothing inserted) and returns the tokens in two
// parts: ctx starts with BOS, ctx ⧺ cont is exactly
// tok.Encode(context+continuation, true, false), and cont begins at the
// first token where that encoding departs from tok.Encode(context, true,
// false).
//
// Why this split: Llama's tokenizer adds a dummy-prefix space to the start
// of any non-empty text, so encoding the continuation on its own would add
// a space that the joined text does not have (or mis-tokenize one it does
// have), and a model never sees the parts tokenized apart. Scoring the
// tokenization of the joined text is what lm-evaluation-harness does
// (whole = encode(context+continuation), continuation = whole[len(encode(
// context)):]); taking the longest common prefix instead of
// len(encode(context)) keeps ctx ⧺ cont equal to the joined tokenization
// even when a merge straddles the boundary. Such a token goes to cont, so
// the continuation is always scored whole (plus, then, a few characters of
// the context). With SentencePiece vocabularies, whose pieces carry a space
// only at their start and never span a newline, a boundary at a space or
// after a newline is exact.
func SplitTokens(tok *tokenizer.Tokenizer, context, continuation string) (ctx, cont []int) {
	whole := tok.Encode(context+continuation, true, false)
	alone := tok.Encode(context, true, false)
	k := 0
	for k < len(whole) && k < len(alone) && whole[k] == alone[k] {
		k++
	}
	if k == len(whole) && k > 0 && continuation != "" {
		// Only a lossy vocabulary (text decoding to nothing) gets here;
		// keep the continuation non-empty so it can be scored.
		k--
	}
	return whole[:k:k], whole[k:]
}

// Join is how a task's context and continuation become one text: with a
// single space between them, unless the context already ends in whitespace
// or the continuation starts with whitespace (llm-foundry's and
// lm-evaluation-harness's " " continuation delimiter, without doubling it).
func Join(context, continuation string) string {
	return context + delimiter(context, continuation) + continuation
}

func delimiter(context, continuation string) string {
	if context == "" || continuation == "" {
		return ""
	}
	last, _ := utf8.DecodeLastRuneInString(context)
	first, _ := utf8.DecodeRuneInString(continuation)
	if unicode.IsSpace(last) || unicode.IsSpace(first) {
		return ""
	}
	return " "
}

// TokenizerHash identifies a vocabulary by what it encodes
// (tokenizer.Fingerprint): the llama2.c and SentencePiece spellings of one
// vocabulary hash alike. Two tokenizers with the same hash encode every
// text identically.
func TokenizerHash(tok *tokenizer.Tokenizer) string { return tok.Fingerprint() }

// Template places an instruction pair into text. It holds "{prompt}" and
// "{response}" once each, the prompt first; text before "{response}" is
// the (unscored) prompt part, the response and any text after it the
// scored part.
type Template string

// DefaultTemplate uses the prompt and response as given: the shipped
// instruction data already carries its Alpaca-style template in the prompt.
const DefaultTemplate Template = "{prompt}{response}"

// split applies the template to a pair: the prompt part and the response
// part. Placeholders are substituted in the template only, never inside
// the data, so braces in a prompt are harmless.
func (t Template) split(prompt, response string) (string, string) {
	s := string(t)
	r := strings.Index(s, "{response}")
	p := strings.Index(s, "{prompt}")
	return s[:p] + prompt + s[p+len("{prompt}"):r], response + s[r+len("{response}"):]
}

func (t Template) check() error {
	s := string(t)
	if strings.Count(s, "{prompt}") != 1 || strings.Count(s, "{response}") != 1 {
		return fmt.Errorf("template %q must contain {prompt} and {response} exactly once each", s)
	}
	if strings.Index(s, "{prompt}") > strings.Index(s, "{response}") {
		return fmt.Errorf("template %q puts {response} before {prompt}", s)
	}
	return nil
}
