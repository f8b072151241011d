package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
	"golang.org/x/text/unicode/norm"
)

// ByteLevel is the byte-level BPE model of a Hugging Face tokenizer.json,
// as GPT-2, Llama 3 and Qwen use: added tokens are cut out of the text
// first, the rest is split by a regular expression, each piece's UTF-8
// bytes are spelled with GPT-2's byte-to-character table, and adjacent
// tokens merge by the rank of their pair in the merges list (lowest first,
// leftmost on ties). With ignore_merges a piece that is itself a token is
// emitted whole.
//
// A Tokenizer with ByteLevel set encodes and decodes through it; its
// Pieces are the tokens in byte-level spelling, every one typed Normal
// except the special added tokens (Control) and gaps in the id space
// (Unused).
type ByteLevel struct {
	// Raw is the tokenizer.json as read; Hugging Face exports write it back.
	Raw []byte

	pattern      *regexp2.Regexp // the pre-tokenizer's split, nil for none
	patternSrc   string
	prefixSpace  bool // ByteLevel add_prefix_space
	nfc          bool // an NFC normalizer
	ignoreMerges bool
	ranks        map[[2]int32]mergeRule
	merges       [][2]int32 // the rules in rank order
	vocab        map[string]int32
	byteIDs      [256]int32     // each byte's single-character token
	added        *regexp.Regexp // the added tokens, longest first
	addedIDs     map[string]int32

	mu    sync.Mutex
	cache map[string][]int32 // pre-token → ids, bounded
}

type mergeRule struct{ rank, id int32 }

// GPT2Pattern is GPT-2's split, which a ByteLevel pre-tokenizer with
// use_regex applies (llama.cpp's "gpt-2" pre-tokenizer).
const GPT2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// Llama3Pattern is Llama 3's split (llama.cpp's "llama-bpe").
const Llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// Pattern is the pre-tokenizer's split expression ("" for none), and
// IgnoreMerges whether a pre-token that is a token is emitted whole.
func (bl *ByteLevel) Pattern() string { return bl.patternSrc }

// IgnoreMerges reports the model's ignore_merges.
func (bl *ByteLevel) IgnoreMerges() bool { return bl.ignoreMerges }

// Merges lists the merge rules in rank order, each as two tokens.
func (bl *ByteLevel) Merges(t *Tokenizer) [][2]string {
	out := make([][2]string, len(bl.merges))
	for i, m := range bl.merges {
		out[i] = [2]string{t.Pieces[m[0]], t.Pieces[m[1]]}
	}
	return out
}

// byteChars is GPT-2's bytes_to_unicode: printable bytes stand for
// themselves, the others for the code points from 256 up, in order.
var byteChars, charBytes = func() ([256]rune, map[rune]byte) {
	var fwd [256]rune
	back := map[rune]byte{}
	n := 0
	for b := 0; b < 256; b++ {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE {
			fwd[b] = rune(b)
		} else {
			fwd[b] = rune(256 + n)
			n++
		}
		back[fwd[b]] = byte(b)
	}
	return fwd, back
}()

// LoadTokenizerJSON reads a Hugging Face tokenizer.json; see
// ParseTokenizerJSON.
func LoadTokenizerJSON(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ParseTokenizerJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// tokenizerJSON is the part of tokenizer.json that encoding depends on.
type tokenizerJSON struct {
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer    *jsonStep       `json:"normalizer"`
	PreTokenizer  *jsonStep       `json:"pre_tokenizer"`
	PostProcessor *jsonStep       `json:"post_processor"`
	Model         json.RawMessage `json:"model"`
}

// jsonStep is one normalizer, pre-tokenizer or post-processor, possibly a
// Sequence of them.
type jsonStep struct {
	Type          string     `json:"type"`
	Normalizers   []jsonStep `json:"normalizers"`
	Pretokenizers []jsonStep `json:"pretokenizers"`
	Processors    []jsonStep `json:"processors"`
	Pattern       *struct {
		Regex  *string `json:"Regex"`
		String *string `json:"String"`
	} `json:"pattern"`
	Behavior       string `json:"behavior"`
	Invert         bool   `json:"invert"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	UseRegex       *bool  `json:"use_regex"`
	Single         []struct {
		SpecialToken *struct {
			ID string `json:"id"`
		} `json:"SpecialToken"`
	} `json:"single"`
}

func (s *jsonStep) flatten() []jsonStep {
	if s == nil {
		return nil
	}
	var out []jsonStep
	for _, sub := range [][]jsonStep{s.Normalizers, s.Pretokenizers, s.Processors} {
		for i := range sub {
			out = append(out, sub[i].flatten()...)
		}
	}
	if s.Type != "Sequence" {
		out = append(out, *s)
	}
	return out
}

// ParseTokenizerJSON reads a Hugging Face tokenizer.json holding a
// byte-level BPE model (GPT-2, Llama 3, Qwen). Other models, and BPE
// models converted from SentencePiece (a Metaspace pre-tokenizer, byte
// fallback: read their tokenizer.model instead), are refused with the
// reason. Supported steps: no normalizer or NFC; Split (regex, isolated)
// and ByteLevel pre-tokenizers; a TemplateProcessing post-processor, whose
// leading special token becomes BOS. EOS is not in tokenizer.json: it is
// -1 unless the caller sets it (from config.json).
func ParseTokenizerJSON(data []byte) (*Tokenizer, error) {
	var doc tokenizerJSON
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, jsonErr(data, err, 0)
	}
	var model struct {
		Type         string          `json:"type"`
		Vocab        map[string]int  `json:"vocab"`
		Merges       json.RawMessage `json:"merges"`
		ByteFallback bool            `json:"byte_fallback"`
		IgnoreMerges bool            `json:"ignore_merges"`
		Continuing   *string         `json:"continuing_subword_prefix"`
		EndOfWord    *string         `json:"end_of_word_suffix"`
		Dropout      *float64        `json:"dropout"`
	}
	if len(doc.Model) == 0 {
		return nil, fmt.Errorf("tokenizer.json has no model")
	}
	if err := json.Unmarshal(doc.Model, &model); err != nil {
		// doc.Model aliases data, so its offset within data locates it.
		return nil, jsonErr(data, err, int64(bytes.Index(data, doc.Model)))
	}
	if model.Type != "BPE" {
		return nil, fmt.Errorf("tokenizer.json model type %q is not supported: whittle reads byte-level BPE (or a tokenizer.model)", model.Type)
	}
	if model.ByteFallback {
		return nil, fmt.Errorf("tokenizer.json holds a BPE model with byte fallback, converted from SentencePiece: read its tokenizer.model instead")
	}
	if model.Continuing != nil && *model.Continuing != "" || model.EndOfWord != nil && *model.EndOfWord != "" {
		return nil, fmt.Errorf("tokenizer.json BPE models with subword prefixes or suffixes are not supported")
	}
	if model.Dropout != nil && *model.Dropout != 0 {
		return nil, fmt.Errorf("tokenizer.json BPE dropout %g is not supported (encoding must be deterministic)", *model.Dropout)
	}
	bl := &ByteLevel{Raw: bytes.Clone(data), ignoreMerges: model.IgnoreMerges, vocab: map[string]int32{}, addedIDs: map[string]int32{},
		ranks: map[[2]int32]mergeRule{}, cache: map[string][]int32{}}

	// Normalizer.
	for _, s := range doc.Normalizer.flatten() {
		switch s.Type {
		case "NFC":
			bl.nfc = true
		default:
			return nil, fmt.Errorf("tokenizer.json normalizer %q is not supported (only NFC)", s.Type)
		}
	}
	// Pre-tokenizer: a Split by regex and/or a ByteLevel step.
	byteLevel := false
	for _, s := range doc.PreTokenizer.flatten() {
		switch s.Type {
		case "Split":
			if bl.patternSrc != "" {
				return nil, fmt.Errorf("tokenizer.json has more than one Split pre-tokenizer, which is not supported")
			}
			if s.Pattern == nil || s.Pattern.Regex == nil || s.Behavior != "Isolated" || s.Invert {
				return nil, fmt.Errorf("tokenizer.json Split pre-tokenizer: only a regex pattern with behavior Isolated is supported")
			}
			bl.patternSrc = *s.Pattern.Regex
		case "ByteLevel":
			if byteLevel {
				return nil, fmt.Errorf("tokenizer.json has two ByteLevel pre-tokenizers")
			}
			byteLevel = true
			bl.prefixSpace = s.AddPrefixSpace
			if s.UseRegex == nil || *s.UseRegex {
				if bl.patternSrc != "" {
					return nil, fmt.Errorf("tokenizer.json splits both by a Split regex and by ByteLevel's own, which is not supported")
				}
				bl.patternSrc = GPT2Pattern
			}
		default:
			return nil, fmt.Errorf("tokenizer.json pre-tokenizer %q is not supported (whittle reads byte-level BPE: Split and ByteLevel)", s.Type)
		}
	}
	if !byteLevel {
		return nil, fmt.Errorf("tokenizer.json has no ByteLevel pre-tokenizer: only byte-level BPE is supported (for SentencePiece-style BPE read tokenizer.model)")
	}
	if bl.patternSrc != "" {
		re, err := regexp2.Compile(bl.patternSrc, regexp2.Unicode)
		if err != nil {
			return nil, fmt.Errorf("tokenizer.json pre-tokenizer pattern %q: %w", bl.patternSrc, err)
		}
		bl.pattern = re
	}

	// Vocabulary, with gaps in the id space (and past the model's ids, the
	// added tokens) filled by unused pieces.
	size := 0
	for tok, id := range model.Vocab {
		if id < 0 || id > maxVocab {
			return nil, fmt.Errorf("tokenizer.json token %q has id %d", tok, id)
		}
		size = max(size, id+1)
	}
	for _, a := range doc.AddedTokens {
		if a.ID < 0 || a.ID > maxVocab || a.Content == "" {
			return nil, fmt.Errorf("tokenizer.json added token %q has id %d", a.Content, a.ID)
		}
		size = max(size, a.ID+1)
	}
	t := &Tokenizer{Pieces: make([]string, size), Scores: make([]float32, size), Types: make([]TokenType, size), BOS: -1, EOS: -1, UNK: -1, ByteLevel: bl}
	for id := range t.Types {
		t.Types[id] = Unused
	}
	for tok, id := range model.Vocab {
		if t.Types[id] != Unused {
			return nil, fmt.Errorf("tokenizer.json gives id %d to both %q and %q", id, t.Pieces[id], tok)
		}
		t.Pieces[id], t.Types[id] = tok, Normal
		bl.vocab[tok] = int32(id)
	}
	for _, a := range doc.AddedTokens {
		if t.Types[a.ID] == Normal && t.Pieces[a.ID] != a.Content {
			return nil, fmt.Errorf("tokenizer.json added token %q takes id %d from %q", a.Content, a.ID, t.Pieces[a.ID])
		}
		t.Pieces[a.ID] = a.Content
		t.Types[a.ID] = Normal
		if a.Special {
			t.Types[a.ID] = Control
		}
		bl.addedIDs[a.Content] = int32(a.ID)
	}
	for id, typ := range t.Types {
		if typ == Unused {
			t.Pieces[id] = fmt.Sprintf("<unused_%d>", id)
		}
	}
	for b := 0; b < 256; b++ {
		id, ok := bl.vocab[string(byteChars[b])]
		bl.byteIDs[b] = id
		if !ok {
			return nil, fmt.Errorf("tokenizer.json vocabulary lacks the token for byte 0x%02X (%q): not a byte-level BPE", b, string(byteChars[b]))
		}
	}
	if len(bl.addedIDs) > 0 {
		names := make([]string, 0, len(bl.addedIDs))
		for s := range bl.addedIDs {
			names = append(names, regexp.QuoteMeta(s))
		}
		// Longest first, so that the alternation matches the longest token.
		sort.Slice(names, func(i, j int) bool {
			if len(names[i]) != len(names[j]) {
				return len(names[i]) > len(names[j])
			}
			return names[i] < names[j]
		})
		bl.added = regexp.MustCompile(strings.Join(names, "|"))
	}

	// Merges: "a b" strings or [a, b] pairs, in rank order.
	var pairs [][2]string
	var asStrings []string
	if err := json.Unmarshal(model.Merges, &asStrings); err == nil {
		for i, m := range asStrings {
			a, b, ok := strings.Cut(m, " ")
			if !ok {
				return nil, fmt.Errorf("tokenizer.json merge %d %q is not two tokens", i, m)
			}
			pairs = append(pairs, [2]string{a, b})
		}
	} else if err := json.Unmarshal(model.Merges, &pairs); err != nil {
		return nil, fmt.Errorf("tokenizer.json merges: want strings or pairs of strings: %w", err)
	}
	for rank, p := range pairs {
		a, okA := bl.vocab[p[0]]
		b, okB := bl.vocab[p[1]]
		id, okC := bl.vocab[p[0]+p[1]]
		if !okA || !okB || !okC {
			return nil, fmt.Errorf("tokenizer.json merge %d (%q, %q) uses or makes a token outside the vocabulary", rank, p[0], p[1])
		}
		if _, dup := bl.ranks[[2]int32{a, b}]; !dup {
			bl.ranks[[2]int32{a, b}] = mergeRule{rank: int32(rank), id: id}
			bl.merges = append(bl.merges, [2]int32{a, b})
		}
	}

	// BOS: the special token a TemplateProcessing puts first.
	for _, s := range doc.PostProcessor.flatten() {
		if s.Type == "TemplateProcessing" && len(s.Single) > 0 && s.Single[0].SpecialToken != nil {
			if id, ok := bl.addedIDs[s.Single[0].SpecialToken.ID]; ok {
				t.BOS = int(id)
			}
		}
	}
	if err := t.Check(); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	return t, nil
}

// PadTo appends unused pieces up to n (models often round vocab_size up
// past the tokenizer's ids). It must be called before the tokenizer is
// used.
func (t *Tokenizer) PadTo(n int) {
	for id := len(t.Pieces); id < n; id++ {
		t.Pieces = append(t.Pieces, fmt.Sprintf("<unused_%d>", id))
		t.Scores = append(t.Scores, 0)
		t.Types = append(t.Types, Unused)
	}
}

// jsonErr places a JSON decoding error in the file: line, column and byte
// offset (base is where the decoded part starts in data). A type error is
// placed just after the value at fault, where encoding/json reports it.
func jsonErr(data []byte, err error, base int64) error {
	var off int64 = -1
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		off = base + max(0, syn.Offset-1) // Offset counts the offending byte

	case errors.As(err, &typ):
		off = base + typ.Offset
	}
	if off < 0 || off > int64(len(data)) {
		return fmt.Errorf("tokenizer.json: %w", err)
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(data[:off], '\n'))
	return fmt.Errorf("tokenizer.json:%d:%d (byte %d): %w", line, col, off, err)
}

// maxVocab bounds token ids read from files.
const maxVocab = 1 << 24

// encode is Encode for a byte-level tokenizer.
func (bl *ByteLevel) encode(t *Tokenizer, text string, bos, eos bool) []int {
	var out []int
	if bos && t.BOS >= 0 {
		out = append(out, t.BOS)
	}
	emit := func(seg string) {
		if seg == "" {
			return
		}
		for _, id := range bl.encodeText(seg) {
			out = append(out, int(id))
		}
	}
	rest := text
	if bl.added != nil {
		for _, loc := range bl.added.FindAllStringIndex(text, -1) {
			emit(text[len(text)-len(rest) : loc[0]])
			out = append(out, int(bl.addedIDs[text[loc[0]:loc[1]]]))
			rest = text[loc[1]:]
		}
	}
	emit(rest)
	if eos && t.EOS >= 0 {
		out = append(out, t.EOS)
	}
	if out == nil {
		out = []int{}
	}
	return out
}

// encodeText encodes text that holds no added token.
func (bl *ByteLevel) encodeText(text string) []int32 {
	if bl.nfc {
		text = norm.NFC.String(text)
	}
	if bl.prefixSpace && !strings.HasPrefix(text, " ") {
		text = " " + text
	}
	var out []int32
	if bl.pattern == nil {
		return bl.encodePiece(text, out)
	}
	// regexp2 works on runes; pieces are cut from the text by byte
	// offsets, so invalid UTF-8 (one U+FFFD rune per bad byte to the
	// matcher) keeps its bytes.
	runes := make([]rune, 0, len(text))
	offs := make([]int, 0, len(text)+1)
	for i := 0; i < len(text); {
		r, w := utf8.DecodeRuneInString(text[i:])
		runes, offs = append(runes, r), append(offs, i)
		i += w
	}
	offs = append(offs, len(text))
	// Split's "Isolated" behavior: every match is a piece, and so is the
	// text between matches (Llama 3's and GPT-2's patterns leave none).
	// Without a match timeout, regexp2 returns no error.
	end := 0
	m, _ := bl.pattern.FindRunesMatch(runes)
	for m != nil {
		if m.Length > 0 {
			if m.Index > end {
				out = bl.encodePiece(text[offs[end]:offs[m.Index]], out)
			}
			out = bl.encodePiece(text[offs[m.Index]:offs[m.Index+m.Length]], out)
			end = m.Index + m.Length
		}
		m, _ = bl.pattern.FindNextMatch(m)
	}
	if end < len(runes) {
		out = bl.encodePiece(text[offs[end]:], out)
	}
	return out
}

// encodePiece appends the ids of one pre-token.
func (bl *ByteLevel) encodePiece(piece string, out []int32) []int32 {
	var sb strings.Builder
	for i := 0; i < len(piece); i++ {
		sb.WriteRune(byteChars[piece[i]])
	}
	mapped := sb.String()
	if bl.ignoreMerges {
		if id, ok := bl.vocab[mapped]; ok {
			return append(out, id)
		}
	}
	bl.mu.Lock()
	cached, ok := bl.cache[mapped]
	bl.mu.Unlock()
	if ok {
		return append(out, cached...)
	}
	syms := make([]int32, len(piece))
	for i := 0; i < len(piece); i++ {
		syms[i] = bl.byteIDs[piece[i]]
	}
	// Merge the lowest-ranked adjacent pair, leftmost first, until none
	// merges. Pre-tokens are short (words, digit triples, whitespace runs),
	// so the quadratic scan costs less than a queue would.
	for len(syms) > 1 {
		best, at := mergeRule{rank: -1}, -1
		for i := 0; i+1 < len(syms); i++ {
			if r, ok := bl.ranks[[2]int32{syms[i], syms[i+1]}]; ok && (at < 0 || r.rank < best.rank) {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		syms[at] = best.id
		syms = append(syms[:at+1], syms[at+2:]...)
	}
	bl.mu.Lock()
	if len(bl.cache) < 1<<16 {
		bl.cache[mapped] = syms
	}
	bl.mu.Unlock()
	return append(out, syms...)
}

// tokenBytes is the text of a token: a byte-level token's bytes, an added
// token's content.
func (bl *ByteLevel) tokenBytes(t *Tokenizer, id int) []byte {
	p := t.Pieces[id]
	if added, ok := bl.addedIDs[p]; ok && added == int32(id) {
		return []byte(p)
	}
	out := make([]byte, 0, len(p))
	for _, r := range p {
		if b, ok := charBytes[r]; ok {
			out = append(out, b)
		} else {
			out = append(out, string(r)...)
		}
	}
	return out
}

// NewByteLevel builds a byte-level BPE tokenizer from its parts, as a GGUF
// "gpt2" vocabulary holds them: tokens by id in byte-level spelling (Control
// ones are special added tokens, Unused ones placeholders), merge rules in
// rank order, the pre-tokenizer's split pattern, ignore_merges, and BOS/EOS
// (-1: none). It goes through the same checks as a tokenizer.json.
func NewByteLevel(pieces []string, types []TokenType, merges [][2]string, pattern string, ignoreMerges bool, bos, eos int) (*Tokenizer, error) {
	if len(types) != len(pieces) {
		return nil, fmt.Errorf("byte-level vocabulary: %d pieces but %d types", len(pieces), len(types))
	}
	doc := byteLevelDoc(pieces, types, merges, pattern, ignoreMerges, false, bos)
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	t, err := ParseTokenizerJSON(raw)
	if err != nil {
		return nil, err
	}
	t.PadTo(len(pieces))
	if eos >= 0 && eos < t.Size() {
		t.EOS = eos
	}
	return t, nil
}

// MarshalTokenizerJSON writes a byte-level tokenizer as a Hugging Face
// tokenizer.json: the file it was read from when there is one, else one
// built from its parts.
func MarshalTokenizerJSON(t *Tokenizer) ([]byte, error) {
	bl := t.ByteLevel
	if bl == nil {
		return nil, fmt.Errorf("only byte-level BPE vocabularies are written as tokenizer.json")
	}
	if bl.Raw != nil {
		return bl.Raw, nil
	}
	return json.Marshal(byteLevelDoc(t.Pieces, t.Types, bl.Merges(t), bl.patternSrc, bl.ignoreMerges, bl.nfc, t.BOS))
}

// byteLevelDoc is a tokenizer.json document in the layout of Meta's Llama
// 3 file.
func byteLevelDoc(pieces []string, types []TokenType, merges [][2]string, pattern string, ignoreMerges, nfc bool, bos int) map[string]any {
	vocab := map[string]int{}
	var added []map[string]any
	for id, p := range pieces {
		switch types[id] {
		case Unused:
		case Control:
			added = append(added, map[string]any{"id": id, "content": p, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
		default:
			vocab[p] = id
		}
	}
	ms := make([]string, len(merges))
	for i, m := range merges {
		ms[i] = m[0] + " " + m[1]
	}
	pre := []any{}
	if pattern != "" {
		pre = append(pre, map[string]any{"type": "Split", "pattern": map[string]any{"Regex": pattern}, "behavior": "Isolated", "invert": false})
	}
	pre = append(pre, map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false})
	doc := map[string]any{
		"version":       "1.0",
		"added_tokens":  added,
		"normalizer":    nil,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": pre},
		"decoder":       map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil, "end_of_word_suffix": nil,
			"fuse_unk": false, "byte_fallback": false, "ignore_merges": ignoreMerges, "vocab": vocab, "merges": ms},
	}
	if nfc {
		doc["normalizer"] = map[string]any{"type": "NFC"}
	}
	if bos >= 0 && bos < len(pieces) && types[bos] == Control {
		name := pieces[bos]
		doc["post_processor"] = map[string]any{"type": "TemplateProcessing",
			"single":         []any{map[string]any{"SpecialToken": map[string]any{"id": name, "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
			"special_tokens": map[string]any{name: map[string]any{"id": name, "ids": []int{bos}, "tokens": []string{name}}},
		}
	}
	return doc
}
