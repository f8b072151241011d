package hf

import "github.com/whittle-ml/whittle/ir/tokenizer"

// tokenizerFiles are the tokenizer formats kept in a model directory, in
// the order Load prefers them. Save writes every one.
//
// TODO(sentencepiece): add {SentencePieceFile, tokenizer.LoadSentencePiece,
// tokenizer.WriteSentencePiece} first in this list once ir/tokenizer has
// them, so Load prefers the lossless SentencePiece model.
var tokenizerFiles = []struct {
	name  string
	load  func(path string) (*tokenizer.Tokenizer, error)
	write func(t *tokenizer.Tokenizer, path string) error
}{
	{Llama2cTokenizerFile, tokenizer.LoadLlama2c, tokenizer.WriteLlama2c},
}
