#!/usr/bin/env python3
"""Writes a tiny random DeciLM checkpoint (DeciLMForCausalLM, model_type
nemotron-nas: Llama-3.1-Nemotron-51B's config.json layout, block_configs
sizing every layer) to decilm/, and llama.cpp's own GGUF conversion of it
(its deci architecture) to decilm-llamacpp.gguf.

Run from the repository root (as gen.py; same packages):

  /usr/bin/python3 ir/testdata/families/gen_decilm.py \
    ../shared/data/models/stories260K/tok512.model ir/testdata/families

(LLAMACPP=DIR names the llama.cpp tools when ../shared is elsewhere.)

The layers differ: KV heads 2, 1, 4 (n_heads_in_group 2, 4, 1 of 4 heads)
and MLP widths 256, 512, 256 from ffn_mult 12, 24 and 6.5, the last
rounded up by DeciLM's rule (int(2 * 6.5 * 32 / 3) = 138 -> 256).
llama.cpp's DeciModel reads a 512-piece vocabulary through
LlamaHfVocab, which imports transformers (not in Debian 12), so this
script runs the converter in-process with the SentencePiece vocabulary
path instead; the weights and architecture metadata are the converter's.
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402  (tensors' layout and write_safetensors)

HIDDEN, HEADS = 32, 4
GROUPS = [2, 4, 1]  # n_heads_in_group per layer
MULTS = [12.0, 24.0, 6.5]  # ffn_mult per layer


def intermediate(mult, n_embd):
    """DeciLM's _ffn_mult_to_intermediate_size."""
    n = int(2 * mult * n_embd / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


CONFIG = {
    "architectures": ["DeciLMForCausalLM"], "model_type": "nemotron-nas",
    "vocab_size": 512, "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "bfloat16", "hidden_act": "silu",
    "hidden_size": HIDDEN, "num_hidden_layers": len(GROUPS), "num_attention_heads": HEADS,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 64, "rope_type": "llama3"},
    "original_max_position_embeddings": 64,
    "block_configs": [
        {"attention": {"n_heads_in_group": g, "no_op": False, "replace_with_linear": False,
                       "sparsify": None, "num_sink_tokens": None, "unshifted_sink": False,
                       "use_prefill_window_in_sink_attention": False, "window_length": None},
         "ffn": {"ffn_mult": m, "no_op": False, "replace_with_linear": False, "sparsify": None}}
        for g, m in zip(GROUPS, MULTS)
    ],
}


def tensors(seed):
    """gen.tensors' Llama layout, one layer at a time with its own sizes."""
    out = {}
    for l, (g, m) in enumerate(zip(GROUPS, MULTS)):
        layer = dict(CONFIG, num_hidden_layers=1, num_key_value_heads=HEADS // g,
                     intermediate_size=intermediate(m, HIDDEN))
        for k, v in gen.tensors("decilm", layer, seed + l).items():
            if k.startswith("model.layers.0."):
                out[k.replace("model.layers.0.", f"model.layers.{l}.")] = v
            elif l == 0:
                out[k] = v
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gen_decilm.py TOKENIZER.model OUT_DIR")
    tok, root = sys.argv[1:]
    out = os.path.join(root, "decilm")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2, sort_keys=True)
        f.write("\n")
    shutil.copyfile(tok, os.path.join(out, "tokenizer.model"))
    gen.write_safetensors(os.path.join(out, "model.safetensors"), tensors(200))

    llamacpp = os.environ.get("LLAMACPP") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "../../../../shared/tools/llamacpp")
    sys.path[:0] = [os.path.join(llamacpp, "pyshim"), os.path.join(llamacpp, "convert/gguf-py"),
                    os.path.join(llamacpp, "convert")]
    import convert_hf_to_gguf as conv
    conv.DeciModel.set_vocab = lambda self: self._set_vocab_sentencepiece()
    sys.argv = ["convert_hf_to_gguf.py", out, "--outfile", os.path.join(root, "decilm-llamacpp.gguf"),
                "--outtype", "f32"]
    conv.main()


if __name__ == "__main__":
    main()
