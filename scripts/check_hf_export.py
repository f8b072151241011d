#!/usr/bin/python3
"""Check a Hugging Face Llama directory the way transformers would use it.

An independent re-implementation, sharing no code with whittle, of what
`LlamaForCausalLM.from_pretrained(DIR)` reads and computes:

  * config.json read as transformers' LlamaConfig does, with its defaults
    (num_key_value_heads = num_attention_heads, head_dim = hidden_size //
    num_attention_heads, tie_word_embeddings False, rope_theta 10000,
    rms_norm_eps 1e-6, ...). Keys transformers does not know (such as
    whittle_layers) are ignored, as transformers ignores them.
  * model.safetensors, or the shards model.safetensors.index.json names,
    parsed with json + numpy (F32, F16, BF16), with the checks the
    safetensors library makes (contiguous data offsets, sizes).
  * a strict state-dict load: every key LlamaForCausalLM expects present
    with its exact shape, no unexpected keys; lm_head.weight may be absent
    only when tie_word_embeddings is true.
  * LlamaForCausalLM's forward in float32 (the dtype from_pretrained loads
    in when no torch_dtype is asked for): LlamaRMSNorm, rotate_half RoPE,
    repeat_kv, causal softmax attention scaled by 1/sqrt(head_dim),
    down(silu(gate(x)) * up(x)).
  * greedy decoding from BOS for --steps positions, printed as llama2.c's
    run.c prints, compared with --expected.

The tokenizer is tokenizer.model read with the sentencepiece module when
present, else llama2.c's tokenizer.bin.

Run with Debian's interpreter, which has PyTorch and sentencepiece:
  /usr/bin/python3 scripts/check_hf_export.py DIR --expected FILE
Exit status: 0 pass, 1 text mismatch, 2 a structural problem.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runc_text  # noqa: E402


class ExportError(Exception):
    """A problem transformers would refuse or silently mishandle."""


# LlamaConfig.__init__ defaults (transformers 4.4x).
LLAMA_DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pretraining_tp": 1,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
    "head_dim": None,
}


def read_config(path):
    with open(path, "rb") as f:
        raw = json.load(f)
    if raw.get("model_type") != "llama":
        raise ExportError(f"{path}: model_type {raw.get('model_type')!r}: AutoConfig would not build a LlamaConfig")
    archs = raw.get("architectures")
    if archs is not None and "LlamaForCausalLM" not in archs:
        raise ExportError(f"{path}: architectures {archs!r} lacks LlamaForCausalLM")
    cfg = dict(LLAMA_DEFAULTS)
    for k in LLAMA_DEFAULTS:
        if k in raw:
            cfg[k] = raw[k]
    # LlamaConfig: "for backward compatibility" num_key_value_heads None
    # means multi-head attention; head_dim None means hidden // heads.
    if cfg["num_key_value_heads"] is None:
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]
    if cfg["head_dim"] is None:
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    if cfg["hidden_act"] != "silu":
        raise ExportError(f"{path}: hidden_act {cfg['hidden_act']!r} (this checker implements silu)")
    if cfg["attention_bias"] or cfg["mlp_bias"]:
        raise ExportError(f"{path}: attention_bias/mlp_bias set; whittle writes no biases")
    rs = cfg["rope_scaling"]
    if rs is not None:
        typ = rs.get("rope_type", rs.get("type"))
        if typ not in ("default", "linear"):
            raise ExportError(f"{path}: rope_scaling type {typ!r} not implemented by this checker")
    for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim"):
        if not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] <= 0:
            raise ExportError(f"{path}: {k} = {cfg[k]!r} is not a positive integer")
    if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        raise ExportError(f"{path}: num_attention_heads {cfg['num_attention_heads']} is not a multiple "
                          f"of num_key_value_heads {cfg['num_key_value_heads']}")
    if not isinstance(cfg["tie_word_embeddings"], bool):
        raise ExportError(f"{path}: tie_word_embeddings {cfg['tie_word_embeddings']!r} is not a boolean")
    ignored = sorted(k for k in raw if k.startswith("whittle"))
    return cfg, raw, ignored


# safetensors dtype strings and their numpy readers.
def _bf16(buf, count):
    u = np.frombuffer(buf, dtype="<u2", count=count).astype(np.uint32) << 16
    return u.view(np.float32)


SAFETENSORS_DTYPES = {
    "F32": (4, lambda b, n: np.frombuffer(b, dtype="<f4", count=n)),
    "F16": (2, lambda b, n: np.frombuffer(b, dtype="<f2", count=n).astype(np.float32)),
    "BF16": (2, _bf16),
}


def read_safetensors(path):
    """Header checks as the safetensors library makes them; returns
    {name: (dtype, shape, float32 array)}."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ExportError(f"{path}: {len(data)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > 100_000_000 or 8 + n > len(data):
        raise ExportError(f"{path}: header length {n} does not fit the {len(data)}-byte file")
    hdr_bytes = data[8:8 + n]
    if not hdr_bytes.startswith(b"{"):
        raise ExportError(f"{path}: header does not start with '{{'")
    hdr = json.loads(hdr_bytes.decode("utf-8"))
    meta = hdr.pop("__metadata__", None)
    # transformers' load_state_dict refuses archives whose format is not a
    # framework it knows.
    if meta is not None and meta.get("format") not in ("pt", "tf", "flax", "mlx"):
        raise ExportError(f"{path}: __metadata__.format {meta.get('format')!r} is not pt/tf/flax/mlx")
    body = data[8 + n:]
    spans, out = [], {}
    for name, info in hdr.items():
        dt = info.get("dtype")
        if dt not in SAFETENSORS_DTYPES:
            raise ExportError(f"{path}: tensor {name}: dtype {dt!r} is not F32/F16/BF16")
        size, conv = SAFETENSORS_DTYPES[dt]
        shape = info["shape"]
        begin, end = info["data_offsets"]
        count = math.prod(shape)
        if end - begin != count * size:
            raise ExportError(f"{path}: tensor {name}: data_offsets [{begin}, {end}] hold {end - begin} bytes, "
                              f"shape {shape} {dt} needs {count * size}")
        if not 0 <= begin <= end <= len(body):
            raise ExportError(f"{path}: tensor {name}: data_offsets [{begin}, {end}] outside the "
                              f"{len(body)}-byte data section")
        spans.append((begin, end, name))
        arr = conv(body[begin:end], count).reshape(shape)
        out[name] = (dt, tuple(shape), arr)
    # The library requires the tensors to tile the data buffer exactly.
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise ExportError(f"{path}: tensor {name} starts at data offset {begin}, expected {pos} (gap or overlap)")
        pos = end
    if pos != len(body):
        raise ExportError(f"{path}: tensors cover {pos} data bytes, the file has {len(body)}")
    return out, meta


def read_weights(d):
    single = os.path.join(d, "model.safetensors")
    index = os.path.join(d, "model.safetensors.index.json")
    # from_pretrained prefers the single file when both exist.
    if os.path.exists(single):
        w, meta = read_safetensors(single)
        return w, [f"model.safetensors (metadata {meta})"]
    if not os.path.exists(index):
        raise ExportError(f"{d}: neither model.safetensors nor model.safetensors.index.json")
    with open(index) as f:
        wmap = json.load(f)["weight_map"]
    out, notes = {}, []
    for shard in sorted(set(wmap.values())):
        w, meta = read_safetensors(os.path.join(d, shard))
        notes.append(f"{shard} (metadata {meta})")
        for name, t in w.items():
            if wmap.get(name) != shard:
                raise ExportError(f"{shard}: holds {name}, which the index places in {wmap.get(name)!r}")
            out[name] = t
    missing = sorted(set(wmap) - set(out))
    if missing:
        raise ExportError(f"{index}: lists tensors no shard holds: {missing[:5]}")
    return out, notes


def expected_state_dict(cfg):
    """LlamaForCausalLM(cfg).state_dict() names and shapes ([out, in])."""
    h, hd = cfg["hidden_size"], cfg["head_dim"]
    q, kv, ff, v = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, cfg["intermediate_size"], cfg["vocab_size"]
    sd = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = (q, h)
        sd[p + "self_attn.k_proj.weight"] = (kv, h)
        sd[p + "self_attn.v_proj.weight"] = (kv, h)
        sd[p + "self_attn.o_proj.weight"] = (h, q)
        sd[p + "mlp.gate_proj.weight"] = (ff, h)
        sd[p + "mlp.up_proj.weight"] = (ff, h)
        sd[p + "mlp.down_proj.weight"] = (h, ff)
        sd[p + "input_layernorm.weight"] = (h,)
        sd[p + "post_attention_layernorm.weight"] = (h,)
    return sd


def strict_load(cfg, weights):
    sd = expected_state_dict(cfg)
    notes = []
    tied = cfg["tie_word_embeddings"]
    missing = sorted(set(sd) - set(weights))
    if tied and "lm_head.weight" in missing:
        missing.remove("lm_head.weight")  # _tied_weights_keys: filled by tie_weights()
    unexpected = sorted(set(weights) - set(sd))
    errs = []
    if missing:
        errs.append(f"missing keys (transformers would initialise them randomly): {missing}")
    if unexpected:
        errs.append(f"unexpected keys: {unexpected}")
    for name, shape in sd.items():
        if name in weights and weights[name][1] != shape:
            errs.append(f"{name}: shape {list(weights[name][1])} in the checkpoint, LlamaForCausalLM has {list(shape)}")
    if errs:
        raise ExportError("strict load_state_dict fails:\n  " + "\n  ".join(errs))
    if tied and "lm_head.weight" in weights:
        same = np.array_equal(weights["lm_head.weight"][2], weights["model.embed_tokens.weight"][2])
        notes.append("tie_word_embeddings is true but lm_head.weight is stored; tie_weights() replaces it "
                     f"with the embedding ({'identical' if same else 'DIFFERENT values: stored head is ignored'})")
    if not tied and "lm_head.weight" in weights and np.array_equal(
            weights["lm_head.weight"][2], weights["model.embed_tokens.weight"][2]):
        notes.append("tie_word_embeddings is false but lm_head.weight equals the embedding (works; could be tied)")
    dtypes = sorted({t[0] for t in weights.values()})
    notes.append(f"stored dtypes {dtypes}; computed in float32 as from_pretrained does by default")
    return {k: torch.from_numpy(np.array(t[2], dtype=np.float32)) for k, t in weights.items()}, notes


class Llama:
    """LlamaForCausalLM.forward (eager attention, no cache) in float32."""

    def __init__(self, cfg, w):
        self.cfg, self.w = cfg, w
        hd = cfg["head_dim"]
        # LlamaRotaryEmbedding, "default" rope: inv_freq in float32.
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        rs = cfg["rope_scaling"]
        if rs is not None and rs.get("rope_type", rs.get("type")) == "linear":
            inv = inv / rs["factor"]
        self.inv_freq = inv
        self.lm_head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]

    def rmsnorm(self, x, weight):
        # LlamaRMSNorm.forward
        x = x.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.cfg["rms_norm_eps"])
        return weight * x

    @staticmethod
    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def forward(self, ids):
        c, w = self.cfg, self.w
        T = len(ids)
        nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        x = w["model.embed_tokens.weight"][torch.tensor(ids)]  # [T, h]
        pos = torch.arange(T, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()  # [T, hd]
        mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            r = x
            hs = self.rmsnorm(x, w[p + "input_layernorm.weight"])
            q = (hs @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
            k = (hs @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
            v = (hs @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            # repeat_kv: each KV head serves n_rep consecutive query heads.
            k = k.repeat_interleave(nh // nkv, dim=0)
            v = v.repeat_interleave(nh // nkv, dim=0)
            att = (q @ k.transpose(1, 2)) / math.sqrt(hd) + mask
            att = torch.softmax(att, dim=-1, dtype=torch.float32)
            o = (att @ v).transpose(0, 1).reshape(T, nh * hd)
            x = r + o @ w[p + "self_attn.o_proj.weight"].T
            r = x
            hs = self.rmsnorm(x, w[p + "post_attention_layernorm.weight"])
            g = torch.nn.functional.silu(hs @ w[p + "mlp.gate_proj.weight"].T)
            x = r + (g * (hs @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        x = self.rmsnorm(x, w["model.norm.weight"])
        return x @ self.lm_head.T  # [T, vocab]


def read_tokenizer(d, cfg):
    sp_path, bin_path = os.path.join(d, "tokenizer.model"), os.path.join(d, "tokenizer.bin")
    if os.path.exists(sp_path):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=sp_path)
        n = sp.vocab_size()
        if sp.bos_id() != cfg["bos_token_id"] or sp.eos_id() != cfg["eos_token_id"]:
            raise ExportError(f"{sp_path}: bos/eos {sp.bos_id()}/{sp.eos_id()} differ from config.json's "
                              f"{cfg['bos_token_id']}/{cfg['eos_token_id']}")
        pieces = [runc_text.llama2c_piece(sp.id_to_piece(i), i, sp.bos_id(), sp.eos_id()) for i in range(n)]
        src = f"tokenizer.model ({n} pieces, sentencepiece {spm.__version__})"
        if os.path.exists(bin_path):
            # Both files describe one vocabulary: llama2.c's export of the
            # SentencePiece model must be tokenizer.bin, piece for piece.
            other = runc_text.read_llama2c_tokenizer(bin_path)
            if other != pieces:
                i = next((k for k in range(min(len(other), len(pieces))) if other[k] != pieces[k]), None)
                where = f"at id {i}: {pieces[i]!r} vs {other[i]!r}" if i is not None else \
                    f"in size: {len(pieces)} vs {len(other)}"
                raise ExportError(f"tokenizer.model and tokenizer.bin disagree {where}")
            src += ", tokenizer.bin agrees"
    elif os.path.exists(bin_path):
        pieces = runc_text.read_llama2c_tokenizer(bin_path)
        src = f"tokenizer.bin ({len(pieces)} pieces)"
    else:
        raise ExportError(f"{d}: no tokenizer.model or tokenizer.bin")
    if len(pieces) != cfg["vocab_size"]:
        raise ExportError(f"{src}: {len(pieces)} pieces, config.json vocab_size {cfg['vocab_size']}")
    return pieces, src


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="Hugging Face model directory")
    ap.add_argument("--expected", help="file with the expected run.c greedy output")
    ap.add_argument("--steps", type=int, default=200, help="positions to run, as run.c's -n (default 200)")
    ap.add_argument("--out", default="", help="also write the generated text here ('-' for stdout)")
    a = ap.parse_args()
    try:
        cfg, raw, ignored = read_config(os.path.join(a.dir, "config.json"))
        print(f"config: hidden {cfg['hidden_size']}, layers {cfg['num_hidden_layers']}, heads "
              f"{cfg['num_attention_heads']}/{cfg['num_key_value_heads']} x {cfg['head_dim']}, ffn "
              f"{cfg['intermediate_size']}, vocab {cfg['vocab_size']}, tied {cfg['tie_word_embeddings']}, "
              f"eps {cfg['rms_norm_eps']}, theta {cfg['rope_theta']}, max_pos {cfg['max_position_embeddings']}")
        if ignored:
            print(f"note: keys transformers ignores: {ignored}")
        if "tie_word_embeddings" not in raw:
            print("note: no tie_word_embeddings key; LlamaConfig defaults it to false")
        weights, files = read_weights(a.dir)
        print("weights:", ", ".join(files))
        w, notes = strict_load(cfg, weights)
        for n in notes:
            print("note:", n)
        print(f"strict load: OK ({len(weights)} tensors)")
        pieces, src = read_tokenizer(a.dir, cfg)
        print("tokenizer:", src)
        if a.steps > cfg["max_position_embeddings"]:
            raise ExportError(f"--steps {a.steps} exceeds max_position_embeddings {cfg['max_position_embeddings']}")
    except (ExportError, OSError, ValueError, KeyError) as e:
        print(f"FAIL structure: {e}")
        return 2
    model = Llama(cfg, w)
    with torch.no_grad():
        text, toks = runc_text.generate(lambda ids: model.forward(ids)[-1], pieces, a.steps, cfg["bos_token_id"])
    print(f"generated {len(toks) - 1} tokens")
    runc_text.emit(text, a.out)
    if a.expected:
        return runc_text.compare(text, a.expected, f"hf {a.dir}")
    if a.out != "-":
        print(text.decode("utf-8", "replace"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
