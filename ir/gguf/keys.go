package gguf

import (
	"math"
)

// Metadata keys of the model mapping. The per-architecture keys are
// spelled with their prefix by archKeyOf (archKey for llama.*).
const (
	KeyArchitecture = "general.architecture"
	KeyName         = "general.name"
	KeyFileType     = "general.file_type"

	keyContext     = "context_length"
	keyEmbedding   = "embedding_length"
	keyBlocks      = "block_count"
	keyFFN         = "feed_forward_length"
	keyHeads       = "attention.head_count"
	keyKVHeads     = "attention.head_count_kv"
	keyKeyLength   = "attention.key_length"
	keyValueLength = "attention.value_length"
	keyRMSEps      = "attention.layer_norm_rms_epsilon"
	keyRopeDim     = "rope.dimension_count"
	keyRopeBase    = "rope.freq_base"
	keyRopeType    = "rope.scaling.type"
	keyRopeFactor  = "rope.scaling.factor"
	keyRopeOrigCtx = "rope.scaling.original_context_length"
	keyRopeLinear  = "rope.scale_linear" // older spelling of a linear factor
	keyVocabSize   = "vocab_size"

	// Mixtures of experts.
	keyExperts         = "expert_count"
	keyExpertsUsed     = "expert_used_count"
	keyExpertFFN       = "expert_feed_forward_length"
	keySharedExpertFFN = "expert_shared_feed_forward_length"

	KeyTokModel     = "tokenizer.ggml.model"
	KeyTokTokens    = "tokenizer.ggml.tokens"
	KeyTokScores    = "tokenizer.ggml.scores"
	KeyTokTypes     = "tokenizer.ggml.token_type"
	KeyTokBOS       = "tokenizer.ggml.bos_token_id"
	KeyTokEOS       = "tokenizer.ggml.eos_token_id"
	KeyTokUNK       = "tokenizer.ggml.unknown_token_id"
	KeyTokAddBOS    = "tokenizer.ggml.add_bos_token"
	KeyTokAddEOS    = "tokenizer.ggml.add_eos_token"
	KeyTokAddSpace  = "tokenizer.ggml.add_space_prefix"
	KeyTokFoldSpace = "tokenizer.ggml.remove_extra_whitespaces"
	archLlama       = "llama"
	tokModelLlama   = "llama" // SentencePiece BPE with byte fallback
	tokModelGPT2    = "gpt2"  // byte-level BPE (Llama 3, GPT-2, Qwen)
	KeyTokMerges    = "tokenizer.ggml.merges"
	KeyTokPre       = "tokenizer.ggml.pre"
	defaultRopeBase = 10000
)

// llama.cpp's LLAMA_FTYPE values for general.file_type.
const (
	fileTypeF32  = 0
	fileTypeF16  = 1
	fileTypeBF16 = 32
	fileTypeQ8_0 = 7 // LLAMA_FTYPE_MOSTLY_Q8_0
	fileTypeQ4_0 = 2 // LLAMA_FTYPE_MOSTLY_Q4_0
)

// archKey spells a llama.* key; archKeyOf one of any architecture.
func archKey(k string) string { return archKeyOf(archLlama, k) }

func archKeyOf(arch, k string) string { return arch + "." + k }

// maxSize bounds every size read from metadata, so that products of two
// sizes cannot overflow and a hostile file cannot make the loader
// allocate for absurd shapes before they are checked against the tensors.
const maxSize = math.MaxInt32
