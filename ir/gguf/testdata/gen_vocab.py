#!/usr/bin/env python3
"""Writes the vocabulary-only GGUF fixtures in this directory with llama.cpp's
own writer (gguf-py), laid out as llama.cpp's models/ggml-vocab-*.gguf are:
the architecture's hyperparameters (block_count 32 and so on), the
tokenizer.ggml.* keys, and no tensors. Tokens, scores and types follow
convert_hf_to_gguf.py (_create_vocab_sentencepiece, get_vocab_base).

Run from the repository root (needs Debian's python3-numpy and
python3-sentencepiece):

  PYTHONPATH=../shared/tools/llamacpp/convert/gguf-py /usr/bin/python3 \
    ir/gguf/testdata/gen_vocab.py ../shared/data/models/stories260K/tok512.model \
    ir/tokenizer/testdata/llama3/tokenizer.json ir/gguf/testdata

Vocabularies:
  vocab-llama-spm.gguf  arch llama, SentencePiece ("llama") from tok512.model
  vocab-llama-bpe.gguf  arch llama, byte-level ("gpt2", pre llama-bpe) from the
                        Llama 3 test tokenizer.json
  vocab-gpt-2.gguf      arch gpt2, the same byte-level vocabulary with the
                        GPT-2 pre-tokenizer
The byte-level vocabularies renumber the added tokens (128000...) to follow
the 6000 merged ones, so the files stay small.
"""
import json
import sys

import gguf
from sentencepiece import SentencePieceProcessor


def llama_params(w, vocab):
    # Llama 2 7B's, as LlamaModel.set_gguf_parameters writes them.
    a = "llama"
    w.add_uint32(f"{a}.vocab_size", vocab)
    w.add_uint32(f"{a}.context_length", 4096)
    w.add_uint32(f"{a}.embedding_length", 4096)
    w.add_uint32(f"{a}.block_count", 32)
    w.add_uint32(f"{a}.feed_forward_length", 11008)
    w.add_uint32(f"{a}.rope.dimension_count", 128)
    w.add_uint32(f"{a}.attention.head_count", 32)
    w.add_uint32(f"{a}.attention.head_count_kv", 32)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_uint32("general.file_type", 1)


def gpt2_params(w):
    a = "gpt2"
    w.add_uint32(f"{a}.context_length", 1024)
    w.add_uint32(f"{a}.embedding_length", 768)
    w.add_uint32(f"{a}.feed_forward_length", 3072)
    w.add_uint32(f"{a}.block_count", 12)
    w.add_uint32(f"{a}.attention.head_count", 12)
    w.add_float32(f"{a}.attention.layer_norm_epsilon", 1e-5)
    w.add_uint32("general.file_type", 1)


def spm(path, out):
    sp = SentencePieceProcessor()
    sp.LoadFromFile(path)
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        t = gguf.TokenType.NORMAL
        if sp.IsUnknown(i):
            t = gguf.TokenType.UNKNOWN
        elif sp.IsControl(i):
            t = gguf.TokenType.CONTROL
        elif sp.IsUnused(i):
            t = gguf.TokenType.UNUSED
        elif sp.IsByte(i):
            t = gguf.TokenType.BYTE
        tokens.append(sp.IdToPiece(i).encode("utf-8"))
        scores.append(sp.GetScore(i))
        types.append(t)
    w = gguf.GGUFWriter(out, "llama")
    w.add_name("vocab-llama-spm")
    llama_params(w, len(tokens))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    finish(w)


def bpe(path, out, arch, pre):
    d = json.load(open(path, encoding="utf-8"))
    vocab = d["model"]["vocab"]
    tokens = [None] * len(vocab)
    for tok, i in vocab.items():
        tokens[i] = tok
    types = [gguf.TokenType.NORMAL] * len(tokens)
    ids = {}
    for a in d["added_tokens"]:
        ids[a["id"]] = len(tokens)
        tokens.append(a["content"])
        types.append(gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED)
    merges = d["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w = gguf.GGUFWriter(out, arch)
    w.add_name("vocab-" + pre)
    if arch == "llama":
        llama_params(w, len(tokens))
    else:
        gpt2_params(w)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ids[128000])  # <|begin_of_text|>
    w.add_eos_token_id(ids[128001])  # <|end_of_text|>
    w.add_add_bos_token(True)
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def main():
    spm_model, tokenizer_json, outdir = sys.argv[1:4]
    spm(spm_model, f"{outdir}/vocab-llama-spm.gguf")
    bpe(tokenizer_json, f"{outdir}/vocab-llama-bpe.gguf", "llama", "llama-bpe")
    bpe(tokenizer_json, f"{outdir}/vocab-gpt-2.gguf", "gpt2", "gpt-2")


if __name__ == "__main__":
    main()
