#!/usr/bin/env python3
"""Writes a tiny random checkpoint in Llama 3.1's Hugging Face layout
(rope_scaling llama3, tied embeddings as Llama 3.2 has them) and llama.cpp's
own conversion of it, for the llama3 RoPE scaling tests in ../llama3_test.go.

Run from the repository root (needs Debian's python3-torch, python3-numpy and
python3-sentencepiece):

  /usr/bin/python3 ir/gguf/testdata/gen_llama31.py \
    ../shared/data/models/stories260K/tok512.model ir/gguf/testdata/llama31
  ../shared/tools/llamacpp/convert-hf-to-gguf ir/gguf/testdata/llama31 \
    ir/gguf/testdata/llama31-llamacpp.gguf --outtype f32

The converter needs a SentencePiece tokenizer.model (its byte-level paths
import transformers), so the vocabulary is stories260K's 512 pieces. Head
size 32 with rope_theta 500000 puts the 16 rotated pairs in all three
branches of the llama3 scaling (unscaled, smoothed, divided by factor).
Weights are stored as bfloat16 to keep the fixture small; both converters
widen them to float32 exactly.
"""
import json
import os
import shutil
import struct
import sys

import torch

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}


def tensors(cfg):
    g = torch.Generator().manual_seed(31)
    h, i, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    out = {"model.embed_tokens.weight": rnd(cfg["vocab_size"], h), "model.norm.weight": 1 + rnd(h) * 0.5}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out[p + "input_layernorm.weight"] = 1 + rnd(h) * 0.5
        out[p + "post_attention_layernorm.weight"] = 1 + rnd(h) * 0.5
        out[p + "self_attn.q_proj.weight"] = rnd(q, h)
        out[p + "self_attn.k_proj.weight"] = rnd(kv, h)
        out[p + "self_attn.v_proj.weight"] = rnd(kv, h)
        out[p + "self_attn.o_proj.weight"] = rnd(h, q)
        out[p + "mlp.gate_proj.weight"] = rnd(i, h)
        out[p + "mlp.up_proj.weight"] = rnd(i, h)
        out[p + "mlp.down_proj.weight"] = rnd(h, i)
    return {k: v.to(torch.bfloat16) for k, v in out.items()}


def write_safetensors(path, ts):
    """The safetensors layout, written directly (the package is not in Debian 12)."""
    header, blobs, off = {}, [], 0
    for name in sorted(ts):
        raw = ts[name].contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(ts[name].shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hdr = json.dumps(header, separators=(",", ":")).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gen_llama31.py TOKENIZER.model OUT_DIR")
    tok, out = sys.argv[1:]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    shutil.copyfile(tok, os.path.join(out, "tokenizer.model"))
    write_safetensors(os.path.join(out, "model.safetensors"), tensors(CONFIG))


if __name__ == "__main__":
    main()
