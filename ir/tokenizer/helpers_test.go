package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"
)

// dataDir finds /work/shared/data-style test assets: ../shared/data beside
// the repository root (the directory holding go.mod).
func dataDir(t testing.TB) string {
	t.Helper()
	return shareddata.Dir(t)
}

func dataFile(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(dataDir(t), rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("test asset %s not found: %v", p, err)
	}
	return p
}

func tok512(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := LoadLlama2c(dataFile(t, "models/stories260K/tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func readText(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(dataFile(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// paragraphs splits a corpus at blank lines, as the corpora README
// describes them.
func paragraphs(text string) []string {
	var out []string
	for _, p := range strings.Split(text, "\n\n") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// chunks cuts text into pieces of about n bytes, on UTF-8 boundaries.
func chunks(text string, n, count int) []string {
	var out []string
	for len(text) > 0 && len(out) < count {
		k := min(n, len(text))
		for k < len(text) && text[k]&0xC0 == 0x80 {
			k++
		}
		out = append(out, text[:k])
		text = text[k:]
	}
	return out
}

// naiveEncode is a deliberately literal port of llama2.c run.c's encode
// (ids 1 and 2 for BOS/EOS, byte+3 fallback, a full rescan after every
// merge), used as the independent reference for the fast encoder. Piece
// lookup is by exact string, the lowest id on duplicates.
func naiveEncode(pieces []string, scores []float32, text string, bos, eos bool) []int {
	lookupTable := map[string]int{}
	for i := len(pieces) - 1; i >= 0; i-- {
		lookupTable[pieces[i]] = i
	}
	strLookup := func(s string) int {
		if id, ok := lookupTable[s]; ok {
			return id
		}
		return -1
	}
	var tokens []int
	if bos {
		tokens = append(tokens, 1)
	}
	if text != "" {
		tokens = append(tokens, strLookup(" "))
	}
	var buf []byte
	for c := 0; c < len(text); c++ {
		if text[c]&0xC0 != 0x80 {
			buf = buf[:0]
		}
		buf = append(buf, text[c])
		if c+1 < len(text) && text[c+1]&0xC0 == 0x80 && len(buf) < 4 {
			continue
		}
		if id := strLookup(string(buf)); id != -1 {
			tokens = append(tokens, id)
		} else {
			for _, b := range buf {
				tokens = append(tokens, int(b)+3)
			}
		}
		buf = buf[:0]
	}
	for {
		bestScore := float32(-1e10)
		bestID, bestIdx := -1, -1
		for i := 0; i < len(tokens)-1; i++ {
			id := strLookup(pieces[tokens[i]] + pieces[tokens[i+1]])
			if id != -1 && scores[id] > bestScore {
				bestScore = scores[id]
				bestID = id
				bestIdx = i
			}
		}
		if bestIdx == -1 {
			break
		}
		tokens[bestIdx] = bestID
		tokens = append(tokens[:bestIdx+1], tokens[bestIdx+2:]...)
	}
	if eos {
		tokens = append(tokens, 2)
	}
	if tokens == nil {
		tokens = []int{}
	}
	return tokens
}

// tinyVocab is a small vocabulary in llama2.c's layout (<unk>, BOS, EOS,
// the 256 byte pieces at byte+3, then pieces with descending scores), so
// that tests and fuzz targets run without the shared data.
func tinyVocab() *Tokenizer {
	t := &Tokenizer{BOS: 1, EOS: 2, UNK: 0}
	add := func(p string, s float32, typ TokenType) {
		t.Pieces = append(t.Pieces, p)
		t.Scores = append(t.Scores, s)
		t.Types = append(t.Types, typ)
	}
	add("<unk>", 0, Unknown)
	add(llama2cBOS, 0, Control)
	add(llama2cEOS, 0, Control)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), 0, Byte)
	}
	for i, p := range []string{
		" t", "he", " a", "in", " the", "an", " s", "er", " w", "ou", "on",
		" b", "at", " ", "e", "t", "a", "h", "n", "i", "s", "r", "w", "o",
		"u", "b", "é", "€", "<", ">", "<s", "s>", "  ",
	} {
		add(p, float32(-i), Normal)
	}
	return t
}

// ggufForm rewrites a llama2.c-style vocabulary the way GGUF and
// SentencePiece store it: spaces as '▁', BOS/EOS as "<s>"/"</s>".
func ggufForm(t *Tokenizer) *Tokenizer {
	g := &Tokenizer{
		Pieces: make([]string, len(t.Pieces)),
		Scores: append([]float32(nil), t.Scores...),
		Types:  append([]TokenType(nil), t.Types...),
		BOS:    t.BOS, EOS: t.EOS, UNK: t.UNK,
	}
	for i, p := range t.Pieces {
		switch {
		case i == t.BOS:
			g.Pieces[i] = "<s>"
		case i == t.EOS:
			g.Pieces[i] = "</s>"
		default:
			g.Pieces[i] = strings.ReplaceAll(p, " ", spaceMarker)
		}
	}
	return g
}

// corpusSample is a bounded sample of corpus paragraphs: every step-th of
// the first limit*step, so that the sample spans the file.
func corpusSample(t testing.TB, name string, limit, step int) []string {
	t.Helper()
	var out []string
	for i, p := range paragraphs(readText(t, "corpora/"+name)) {
		if len(out) == limit {
			break
		}
		if i%step == 0 {
			out = append(out, p)
		}
	}
	return out
}

// dataAvailable reports whether the shared test data is present, for
// tests that use it when they can but also run without it.
func dataAvailable(t testing.TB) bool {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		return false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			_, err := os.Stat(filepath.Join(dir, "..", "shared", "data", "models", "stories260K", "tok512.bin"))
			return err == nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return false
		}
		dir = parent
	}
}
