package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// llama2.c's control pieces are wrapped in newlines; GGUF and SentencePiece
// spell them "<s>" and "</s>".
const (
	llama2cBOS = "\n<s>\n"
	llama2cEOS = "\n</s>\n"
)

// LoadLlama2c reads a llama2.c tokenizer.bin. The file does not record its
// vocabulary size, so every entry up to the end of the file is read.
func LoadLlama2c(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ParseLlama2c(data, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// ParseLlama2c parses a llama2.c tokenizer.bin: an int32 max_token_length,
// then per piece a float32 score, an int32 length and the piece's bytes,
// all little-endian. With vocabSize <= 0 it reads entries until the end of
// data; otherwise exactly vocabSize entries, and bytes left over are an
// error (the file belongs to a larger vocabulary).
//
// As in llama2.c, id 0 is UNK, 1 BOS and 2 EOS; pieces spelled "<0xHH>"
// are byte tokens.
func ParseLlama2c(data []byte, vocabSize int) (*Tokenizer, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("tokenizer.bin is %d bytes, too short for its 4-byte max_token_length header", len(data))
	}
	maxLen := int32(binary.LittleEndian.Uint32(data))
	if maxLen < 0 {
		return nil, fmt.Errorf("max_token_length %d at offset 0 is negative", maxLen)
	}
	const entryHeader = 8
	t := &Tokenizer{BOS: 1, EOS: 2, UNK: 0}
	if vocabSize > 0 {
		// Every entry takes at least its 8-byte header: refuse sizes the
		// data cannot hold before allocating for them.
		if avail := (len(data) - 4) / entryHeader; vocabSize > avail {
			return nil, fmt.Errorf("%d entries need at least %d bytes, the file has %d", vocabSize, 4+vocabSize*entryHeader, len(data))
		}
		t.Pieces = make([]string, 0, vocabSize)
		t.Scores = make([]float32, 0, vocabSize)
	}
	off := 4
	for i := 0; ; i++ {
		if vocabSize > 0 && i == vocabSize {
			break
		}
		if vocabSize <= 0 && off == len(data) {
			break
		}
		if left := len(data) - off; left < entryHeader {
			return nil, fmt.Errorf("entry %d at offset %d: %d bytes left, an entry header needs %d", i, off, left, entryHeader)
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int32(binary.LittleEndian.Uint32(data[off+4:]))
		switch left := len(data) - off - entryHeader; {
		case n < 0:
			return nil, fmt.Errorf("entry %d at offset %d: negative piece length %d", i, off, n)
		case n > maxLen:
			return nil, fmt.Errorf("entry %d at offset %d: piece length %d exceeds the header's max_token_length %d", i, off, n, maxLen)
		case int(n) > left:
			return nil, fmt.Errorf("entry %d at offset %d: piece of %d bytes runs past the end of the file (%d bytes left)", i, off, n, left)
		}
		start := off + entryHeader
		t.Pieces = append(t.Pieces, string(data[start:start+int(n)]))
		t.Scores = append(t.Scores, score)
		off = start + int(n)
	}
	if off != len(data) {
		return nil, fmt.Errorf("%d bytes after entry %d at offset %d: the file holds more than %d entries", len(data)-off, vocabSize-1, off, vocabSize)
	}
	if len(t.Pieces) < 3 {
		return nil, fmt.Errorf("tokenizer.bin holds %d entries; llama2.c needs at least <unk>, BOS and EOS", len(t.Pieces))
	}
	t.Types = make([]TokenType, len(t.Pieces))
	for i, p := range t.Pieces {
		switch _, isByte := parseBytePiece(p); {
		case i == t.UNK:
			t.Types[i] = Unknown
		case i == t.BOS || i == t.EOS:
			t.Types[i] = Control
		case isByte:
			t.Types[i] = Byte
		default:
			t.Types[i] = Normal
		}
	}
	return t, nil
}

// MarshalLlama2c encodes t as a llama2.c tokenizer.bin. Pieces are written
// in their text form ('▁' as ' ', as llama2.c's export does), and BOS/EOS
// stored as "<s>"/"</s>" get llama2.c's newline-wrapped spelling, so run.c
// reads a GGUF vocabulary correctly. max_token_length is the longest piece.
//
// The format has no normalizer: run.c always puts the dummy prefix before
// the text and keeps every space. A vocabulary without the dummy prefix is
// refused (run.c would encode every text differently); FoldSpaces is
// dropped, as llama2.c's own export of a tokenizer.model drops it (the two
// differ only on texts with extra spaces).
func MarshalLlama2c(t *Tokenizer) ([]byte, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	if t.ByteLevel != nil {
		return nil, fmt.Errorf("a byte-level BPE vocabulary (tokenizer.json) cannot be written as llama2.c's tokenizer.bin: run.c encodes with SentencePiece's algorithm")
	}
	if t.NoDummyPrefix {
		return nil, fmt.Errorf("the vocabulary encodes without a dummy-prefix space (add_dummy_prefix = false), which llama2.c's tokenizer.bin cannot express: run.c would tokenize every text differently; keep the tokenizer.model or GGUF vocabulary")
	}
	pieces := make([]string, len(t.Pieces))
	size, maxLen := 4, 0
	for i := range t.Pieces {
		p := t.llama2cPiece(i)
		if len(p) > math.MaxInt32 {
			return nil, fmt.Errorf("piece %d is %d bytes, too long for tokenizer.bin", i, len(p))
		}
		pieces[i] = p
		maxLen = max(maxLen, len(p))
		size += 8 + len(p)
	}
	out := make([]byte, 0, size)
	out = binary.LittleEndian.AppendUint32(out, uint32(maxLen))
	for i, p := range pieces {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(t.Scores[i]))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p)))
		out = append(out, p...)
	}
	return out, nil
}

// WriteLlama2c writes t as a llama2.c tokenizer.bin (see MarshalLlama2c),
// through a temporary file in the same directory that is renamed into
// place, so readers never see a partial file.
func WriteLlama2c(t *Tokenizer, path string) error {
	data, err := MarshalLlama2c(t)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return writeFileAtomic(path, data)
}

func writeFileAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
