// Package tokenizer implements the SentencePiece-BPE vocabularies used by
// Llama-family models: llama2.c's tokenizer.bin, SentencePiece's
// tokenizer.model (Hugging Face and Meta checkpoints) and the vocabulary
// GGUF files embed.
//
// Encoding and decoding follow llama2.c's run.c exactly (see Encode). Pieces
// may be stored either the llama2.c way (spaces as ' ', BOS as "\n<s>\n") or
// the SentencePiece/GGUF way (spaces as U+2581 '▁', BOS as "<s>"): the
// tokenizer works on each piece as llama2.c's tokenizer export writes it
// ('▁' read as a space, BOS/EOS in llama2.c's spelling), so both forms of a
// vocabulary encode identically.
package tokenizer

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
)

// TokenType follows SentencePiece's (and GGUF's) numbering.
type TokenType int32

const (
	Normal      TokenType = 1
	Unknown     TokenType = 2
	Control     TokenType = 3
	UserDefined TokenType = 4
	Unused      TokenType = 5
	Byte        TokenType = 6
)

// Tokenizer is a SentencePiece BPE vocabulary: pieces with merge scores.
//
// The exported fields may be filled directly, but must not be modified once
// the tokenizer has been used: Encode, Decode and ID build a lookup index on
// first use and rebuild it only when a slice is replaced, not when an element
// is changed in place.
type Tokenizer struct {
	Pieces []string
	Scores []float32
	Types  []TokenType
	BOS    int
	EOS    int
	UNK    int

	// The text normalization of a SentencePiece model's normalizer spec.
	// The zero value is llama2.c's encode and Llama's tokenizer.model: a
	// dummy-prefix space before the text, every space kept.
	//
	// NoDummyPrefix is add_dummy_prefix = false: nothing is put before the
	// text, and decoding after BOS keeps a leading space.
	NoDummyPrefix bool
	// FoldSpaces is remove_extra_whitespaces = true: leading and trailing
	// spaces are dropped and runs of spaces become one (other whitespace
	// is kept), as SentencePiece does.
	FoldSpaces bool

	// ByteLevel, when set, is a byte-level BPE model read from a Hugging
	// Face tokenizer.json, which encodes and decodes instead of the
	// SentencePiece algorithm.
	ByteLevel *ByteLevel

	// idx caches the lookup tables; atomic so that concurrent encoders may
	// race to build it harmlessly.
	idx atomic.Pointer[index]
}

// Size is the number of pieces.
func (t *Tokenizer) Size() int { return len(t.Pieces) }

// Check reports the first inconsistency between the fields.
func (t *Tokenizer) Check() error {
	n := len(t.Pieces)
	if n == 0 {
		return fmt.Errorf("tokenizer has no pieces")
	}
	if len(t.Scores) != n {
		return fmt.Errorf("tokenizer has %d pieces but %d scores", n, len(t.Scores))
	}
	if t.Types != nil && len(t.Types) != n {
		return fmt.Errorf("tokenizer has %d pieces but %d token types", n, len(t.Types))
	}
	for _, s := range []struct {
		name string
		id   int
	}{{"BOS", t.BOS}, {"EOS", t.EOS}, {"UNK", t.UNK}} {
		if s.id < -1 || s.id >= n {
			return fmt.Errorf("%s id %d outside the vocabulary of %d pieces", s.name, s.id, n)
		}
	}
	return nil
}

// Piece returns the stored piece of id, or "" when id is out of range.
func (t *Tokenizer) Piece(id int) string {
	if id < 0 || id >= len(t.Pieces) {
		return ""
	}
	return t.Pieces[id]
}

// ID returns the id of a piece: an exact match of the stored piece, else of
// its text form (so " the" finds "▁the" in a SentencePiece-style vocabulary).
// When a piece occurs more than once the lowest id wins.
func (t *Tokenizer) ID(piece string) (int, bool) {
	ix := t.index()
	if id, ok := ix.byPiece[piece]; ok {
		return int(id), true
	}
	if id, ok := ix.byText[piece]; ok {
		return int(id), true
	}
	return 0, false
}

// spaceMarker is SentencePiece's visible space, U+2581.
const spaceMarker = "\u2581"

// textForm is what a piece spells in text: SentencePiece writes spaces as
// '▁', llama2.c's export replaces them with ' '.
func textForm(p string) string {
	if strings.Contains(p, spaceMarker) {
		return strings.ReplaceAll(p, spaceMarker, " ")
	}
	return p
}

// llama2cPiece is piece i as llama2.c's tokenizer export writes it: its
// text form, with BOS and EOS spelled "\n<s>\n" and "\n</s>\n" when stored
// as "<s>" and "</s>". Encoding and decoding work on these strings, so a
// SentencePiece/GGUF vocabulary behaves exactly as run.c does with its
// tokenizer.bin.
func (t *Tokenizer) llama2cPiece(i int) string {
	p := textForm(t.Pieces[i])
	switch {
	case i == t.BOS && p == "<s>":
		return llama2cBOS
	case i == t.EOS && p == "</s>":
		return llama2cEOS
	}
	return p
}

// parseBytePiece recognises "<0xHH>" (either case of hex digit), the
// SentencePiece byte-fallback pieces.
func parseBytePiece(p string) (byte, bool) {
	if len(p) != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexVal(p[3])
	lo, ok2 := hexVal(p[4])
	if !ok1 || !ok2 {
		return 0, false
	}
	return hi<<4 | lo, true
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// index holds the tables Encode and Decode need, derived from the fields.
type index struct {
	// identity of the fields the index was built from
	pieces  *string
	nPieces int
	scores  *float32
	nScores int
	types   *TokenType
	nTypes  int
	bos     int
	eos     int

	// text is each piece as run.c sees it in the llama2.c export of the
	// vocabulary (see llama2cPiece).
	text    []string
	byPiece map[string]int32 // stored piece -> lowest id
	byText  map[string]int32 // text form -> lowest id
	byteID  [256]int32       // byte-fallback token of each byte
	// byteOf is the raw byte a "<0xHH>" piece decodes to, -1 for others.
	byteOf []int16
	// control marks pieces that Decode drops.
	control []bool
	// dummy is the dummy-prefix token(s): the piece " ", or its byte
	// fallback when the vocabulary has no such piece.
	dummy []int32
}

func (ix *index) current(t *Tokenizer) bool {
	return ix.pieces == first(t.Pieces) && ix.nPieces == len(t.Pieces) &&
		ix.scores == first(t.Scores) && ix.nScores == len(t.Scores) &&
		ix.types == first(t.Types) && ix.nTypes == len(t.Types) &&
		ix.bos == t.BOS && ix.eos == t.EOS
}

func first[T any](s []T) *T {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}

// minMergeScore mirrors run.c's initial best_score: a merge must score
// strictly above it (NaN scores never merge).
const minMergeScore = float32(-1e10)

func (t *Tokenizer) score(id int32) float32 {
	if int(id) < len(t.Scores) {
		return t.Scores[id]
	}
	return 0
}

func (t *Tokenizer) index() *index {
	if ix := t.idx.Load(); ix != nil && ix.current(t) {
		return ix
	}
	ix := t.buildIndex()
	t.idx.Store(ix)
	return ix
}

func (t *Tokenizer) buildIndex() *index {
	n := len(t.Pieces)
	ix := &index{
		pieces: first(t.Pieces), nPieces: n,
		scores: first(t.Scores), nScores: len(t.Scores),
		types: first(t.Types), nTypes: len(t.Types),
		bos:     t.BOS,
		eos:     t.EOS,
		text:    make([]string, n),
		byPiece: make(map[string]int32, n),
		byText:  make(map[string]int32, n),
		byteOf:  make([]int16, n),
		control: make([]bool, n),
	}
	for i, p := range t.Pieces {
		id := int32(i)
		tf := t.llama2cPiece(i)
		ix.text[i] = tf
		if _, ok := ix.byPiece[p]; !ok {
			ix.byPiece[p] = id
		}
		if _, ok := ix.byText[tf]; !ok {
			ix.byText[tf] = id
		}
		ix.byteOf[i] = -1
		if b, ok := parseBytePiece(p); ok {
			ix.byteOf[i] = int16(b)
		}
		if i < len(t.Types) {
			ix.control[i] = t.Types[i] == Control
		} else {
			ix.control[i] = i == t.BOS || i == t.EOS
		}
	}
	// Without a "<0xHH>" piece a byte falls back to UNK (run.c would
	// emit byte+3, which only means something in Llama's layout).
	unk := int32(t.UNK)
	if unk < 0 || int(unk) >= n {
		unk = 0
	}
	for b := range ix.byteID {
		ix.byteID[b] = unk
		if id, ok := ix.byPiece[fmt.Sprintf("<0x%02X>", b)]; ok {
			ix.byteID[b] = id
		}
	}
	if id, ok := ix.byText[" "]; ok {
		ix.dummy = []int32{id}
	} else {
		ix.dummy = []int32{ix.byteID[' ']}
	}
	return ix
}

// Fingerprint is a sha256 of what determines encoding and decoding: every
// piece in the form Encode works on (so the llama2.c, SentencePiece and
// GGUF spellings of one vocabulary agree), its score, and the BOS, EOS and
// UNK ids. Caches of tokenized data key on it.
func (t *Tokenizer) Fingerprint() string {
	h := sha256.New()
	var b [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	put(uint64(len(t.Pieces)))
	for i := range t.Pieces {
		p := t.llama2cPiece(i)
		put(uint64(len(p)))
		h.Write([]byte(p))
		put(uint64(math.Float32bits(t.score(int32(i)))))
	}
	for _, id := range []int{t.BOS, t.EOS, t.UNK} {
		put(uint64(int64(id)))
	}
	if bl := t.ByteLevel; bl != nil {
		fmt.Fprintf(h, "bytelevel pattern=%q prefix=%t nfc=%t ignore=%t\n", bl.patternSrc, bl.prefixSpace, bl.nfc, bl.ignoreMerges)
		// The rules in rank order: their order is what encoding depends on.
		put(uint64(len(bl.merges)))
		for _, m := range bl.merges {
			put(uint64(m[0]))
			put(uint64(m[1]))
		}
		for _, typ := range t.Types {
			put(uint64(typ))
		}
	}
	// Only when not the default, so that existing fingerprints (cache
	// keys) stay valid.
	if t.NoDummyPrefix || t.FoldSpaces {
		fmt.Fprintf(h, "normalizer dummy=%t fold=%t", !t.NoDummyPrefix, t.FoldSpaces)
	}
	return hex.EncodeToString(h.Sum(nil))
}
