// Package tokenizer implements the SentencePiece-BPE vocabularies used by
// Llama-family models: llama2.c's tokenizer.bin and the vocabulary GGUF
// files embed.
package tokenizer

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
type Tokenizer struct {
	Pieces []string
	Scores []float32
	Types  []TokenType
	BOS    int
	EOS    int
	UNK    int
}

// Size is the number of pieces.
func (t *Tokenizer) Size() int { return len(t.Pieces) }
