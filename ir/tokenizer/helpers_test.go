package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dataDir finds /work/shared/data-style test assets: ../shared/data beside
// the repository root (the directory holding go.mod).
func dataDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("repository root (go.mod) not found; shared test data unavailable")
		}
		dir = parent
	}
	data := filepath.Join(dir, "..", "shared", "data")
	if _, err := os.Stat(data); err != nil {
		t.Skipf("shared test data not found at %s: %v", data, err)
	}
	return data
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
