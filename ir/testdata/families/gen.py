#!/usr/bin/env python3
"""Writes one tiny random checkpoint per model family in that family's exact
Hugging Face layout (config.json keys, tensor names, fused tensors), and, for
the families the shared llama.cpp runs, llama.cpp's own GGUF conversion of it.
Tests across the repository (ir/hf, ir/gguf, the backends) read them.

Run from the repository root (needs Debian's python3-torch, python3-numpy and
python3-sentencepiece, and ../shared/tools/llamacpp for the conversions):

  /usr/bin/python3 ir/testdata/families/gen.py \
    ../shared/data/models/stories260K/tok512.model ir/testdata/families

The converter needs a SentencePiece tokenizer.model (its byte-level paths
import transformers), so every vocabulary is stories260K's 512 pieces. Sizes
are chosen so that each family's options matter: head_dim independent of
hidden, grouped-query attention, a sliding window shorter than the test
sequences, soft caps the logits reach. Gemma 2 has 26 layers because this
llama.cpp picks Gemma 2's query scaling by layer count (26 = 2B:
1/sqrt(head_dim)); query_pre_attn_scalar = head_dim agrees with it. Weights
are bfloat16 to keep the files small; every reader widens them exactly.

The mixture-of-experts families (mixtral, qwen2_moe, qwen3_moe) store one
tensor per expert, as Hugging Face does; qwen2_moe has a dense layer among
its sparse ones. Of them, this llama.cpp converts only Mixtral (Qwen2-MoE's
conversion imports transformers for its tokenizer; Qwen3 is too new).
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import torch

COMMON = {
    "vocab_size": 512,
    "max_position_embeddings": 256,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
    "hidden_act": "silu",
}

FAMILIES = {
    "llama3": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64, "rope_type": "llama3"},
        # llama.cpp's converter reads the llama3 context from this top-level
        # key (default 8192), not from rope_scaling; transformers ignores it.
        "original_max_position_embeddings": 64,
    },
    "mistral": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "sliding_window": None,
    },
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": True,
        "use_sliding_window": False, "sliding_window": 256, "max_window_layers": 2,
    },
    "qwen3": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": True,
        "attention_bias": False, "use_sliding_window": False, "sliding_window": None,
        "max_window_layers": 2,
    },
    "gemma2": {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 26,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
        "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": 16, "attn_logit_softcapping": 4.0,
        "final_logit_softcapping": 6.0, "sliding_window": 5, "attention_bias": False,
        "pad_token_id": 0,
    },
    "phi3": {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "rope_scaling": None, "sliding_window": 255, "original_max_position_embeddings": 256,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0, "pad_token_id": 0,
    },
    # Mixture of experts: every layer routed, renormalized top-2 of 4
    # (MixtralSparseMoeBlock always renormalizes).
    "mixtral": {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "hidden_size": 32, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_local_experts": 4, "num_experts_per_tok": 2, "output_router_logits": False,
        "router_aux_loss_coef": 0.02, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
        "tie_word_embeddings": False, "sliding_window": None,
    },
    # A shared expert with its sigmoid gate, top-k probabilities used as they
    # are, and layer 1 dense (mlp_only_layers) with its own width.
    "qwen2_moe": {
        "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
        "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
        "shared_expert_intermediate_size": 24, "norm_topk_prob": False,
        "decoder_sparse_step": 1, "mlp_only_layers": [1], "output_router_logits": False,
        "router_aux_loss_coef": 0.001, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": 256,
        "max_window_layers": 3,
    },
    # q/k norms and a renormalized top-2 of 6.
    "qwen3_moe": {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "num_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
        "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "output_router_logits": False, "router_aux_loss_coef": 0.001,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "attention_bias": False, "use_sliding_window": False, "sliding_window": None,
        "max_window_layers": 2,
    },
}

# The dense families' seeds are their places in this list, as before the
# MoE families came, so that regenerating leaves their files unchanged.
DENSE = ["gemma2", "llama3", "mistral", "phi3", "qwen2", "qwen3"]

# llama.cpp converts and runs these (see ../shared/tools/llamacpp/README.md).
LLAMACPP = ["llama3", "mistral", "qwen2", "gemma2", "mixtral"]


def moe_layer(name, cfg, l):
    """Whether layer l is a mixture of experts, as the models decide it."""
    if name in DENSE:
        return False
    if name == "mixtral":
        return True
    step = cfg.get("decoder_sparse_step", 1)
    return l not in cfg.get("mlp_only_layers", []) and cfg["num_experts"] > 0 and (l + 1) % step == 0


def tensors(name, cfg, seed):
    g = torch.Generator().manual_seed(seed)
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def rnd(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    # Gemma's norms apply 1 + w, so its weights sit around 0.
    def norm(n):
        return rnd(n, scale=0.3) if name == "gemma2" else 1 + rnd(n, scale=0.3)

    out = {"model.embed_tokens.weight": rnd(cfg["vocab_size"], h), "model.norm.weight": norm(h)}
    if not cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = rnd(cfg["vocab_size"], h)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out[p + "input_layernorm.weight"] = norm(h)
        out[p + "post_attention_layernorm.weight"] = norm(h)
        if name == "phi3":
            out[p + "self_attn.qkv_proj.weight"] = rnd(q + 2 * kv, h)
            out[p + "mlp.gate_up_proj.weight"] = rnd(2 * i, h)
        else:
            out[p + "self_attn.q_proj.weight"] = rnd(q, h)
            out[p + "self_attn.k_proj.weight"] = rnd(kv, h)
            out[p + "self_attn.v_proj.weight"] = rnd(kv, h)
            if not moe_layer(name, cfg, l):
                out[p + "mlp.gate_proj.weight"] = rnd(i, h)
                out[p + "mlp.up_proj.weight"] = rnd(i, h)
        out[p + "self_attn.o_proj.weight"] = rnd(h, q)
        if not moe_layer(name, cfg, l):
            out[p + "mlp.down_proj.weight"] = rnd(h, i)
        elif name == "mixtral":
            m = p + "block_sparse_moe."
            out[m + "gate.weight"] = rnd(cfg["num_local_experts"], h, scale=1.0)
            for j in range(cfg["num_local_experts"]):
                out[m + f"experts.{j}.w1.weight"] = rnd(i, h)
                out[m + f"experts.{j}.w2.weight"] = rnd(h, i)
                out[m + f"experts.{j}.w3.weight"] = rnd(i, h)
        else:
            f = cfg["moe_intermediate_size"]
            out[p + "mlp.gate.weight"] = rnd(cfg["num_experts"], h, scale=1.0)
            for j in range(cfg["num_experts"]):
                out[p + f"mlp.experts.{j}.gate_proj.weight"] = rnd(f, h)
                out[p + f"mlp.experts.{j}.up_proj.weight"] = rnd(f, h)
                out[p + f"mlp.experts.{j}.down_proj.weight"] = rnd(h, f)
            if cfg.get("shared_expert_intermediate_size"):
                s = cfg["shared_expert_intermediate_size"]
                out[p + "mlp.shared_expert.gate_proj.weight"] = rnd(s, h)
                out[p + "mlp.shared_expert.up_proj.weight"] = rnd(s, h)
                out[p + "mlp.shared_expert.down_proj.weight"] = rnd(h, s)
                out[p + "mlp.shared_expert_gate.weight"] = rnd(1, h, scale=0.5)
        if name in ("qwen2", "qwen2_moe"):
            out[p + "self_attn.q_proj.bias"] = rnd(q, scale=0.5)
            out[p + "self_attn.k_proj.bias"] = rnd(kv, scale=0.5)
            out[p + "self_attn.v_proj.bias"] = rnd(kv, scale=0.5)
        if name in ("qwen3", "qwen3_moe"):
            out[p + "self_attn.q_norm.weight"] = norm(hd)
            out[p + "self_attn.k_norm.weight"] = norm(hd)
        if name == "gemma2":
            out[p + "pre_feedforward_layernorm.weight"] = norm(h)
            out[p + "post_feedforward_layernorm.weight"] = norm(h)
    return {k: v.to(torch.bfloat16) for k, v in out.items()}


def write_safetensors(path, ts):
    """The safetensors layout, written directly (the package is not in Debian 12)."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
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
        sys.exit("usage: gen.py TOKENIZER.model OUT_DIR")
    tok, root = sys.argv[1:]
    converter = os.path.join(os.path.dirname(__file__), "../../../../shared/tools/llamacpp/convert-hf-to-gguf")
    moe = sorted(set(FAMILIES) - set(DENSE))
    seeds = {name: 100 + i for i, name in enumerate(DENSE)} | {name: 200 + i for i, name in enumerate(moe)}
    for name, fam in sorted(FAMILIES.items()):
        seed = seeds[name]
        cfg = dict(COMMON, **fam)
        out = os.path.join(root, name)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        shutil.copyfile(tok, os.path.join(out, "tokenizer.model"))
        write_safetensors(os.path.join(out, "model.safetensors"), tensors(name, cfg, seed))
        if name in LLAMACPP:
            subprocess.run([converter, out, os.path.join(root, name + "-llamacpp.gguf"), "--outtype", "f32"],
                           check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
