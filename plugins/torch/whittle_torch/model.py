"""Hugging Face model directories and the decoder, in PyTorch.

The configuration rules follow whittle's ir/hf.ParseConfig for every family
(per-layer sizes in whittle_layers for pruned models); the decoder follows
the graph IR's builder: RMSNorm, grouped-query attention with RoPE in
Hugging Face's half order (inverse frequencies as ir.Config.RopeInvFreq),
the families' options (biases, q/k norms, Gemma's norms, scales and caps,
GeGLU, sliding windows), a gated MLP or a mixture of experts (ir/graph's
moe op; experts stacked along dimension 0 as ir names them).
"""

import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NAME_EMBED = "model.embed_tokens.weight"
NAME_FINAL_NORM = "model.norm.weight"
NAME_CLASSIFIER = "lm_head.weight"

# Layer tensor names by function (ir.Config.LayerTensors for the Llama
# family); "" would mark an absent one in other families.
ROLES = {
    "attn_norm": "input_layernorm.weight",
    "q": "self_attn.q_proj.weight",
    "k": "self_attn.k_proj.weight",
    "v": "self_attn.v_proj.weight",
    "o": "self_attn.o_proj.weight",
    "mlp_norm": "post_attention_layernorm.weight",
    "gate": "mlp.gate_proj.weight",
    "up": "mlp.up_proj.weight",
    "down": "mlp.down_proj.weight",
}
# LoRA targets in engine.LoRARoles order, with their short names.
LORA_ROLES = [("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o"),
              ("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")]


def layer_name(i, role):
    return "model.layers.%d.%s" % (i, ROLES[role])


class ConfigError(ValueError):
    pass


# The families of ir/hf (family.go): defaults of each transformers config
# class and the options the family implies; moe: the mixture-of-experts
# families' defaults (ir/hf moeFamily): experts, experts per token, expert
# and shared widths, Qwen-MoE's keys (else Mixtral's), a shared expert.
FAMILIES = {
    "llama": dict(arch="LlamaForCausalLM", eps=1e-6, max_seq=2048, tied=False, head_dim=0),
    "mistral": dict(arch="MistralForCausalLM", eps=1e-6, max_seq=4096 * 32, tied=False, head_dim=0),
    "qwen2": dict(arch="Qwen2ForCausalLM", eps=1e-6, max_seq=32768, tied=False, head_dim=0, attn_bias=True),
    "qwen3": dict(arch="Qwen3ForCausalLM", eps=1e-6, max_seq=32768, tied=False, head_dim=128, qk_norm=True),
    "gemma2": dict(arch="Gemma2ForCausalLM", eps=1e-6, max_seq=8192, tied=True, head_dim=256, gemma=True),
    "phi3": dict(arch="Phi3ForCausalLM", eps=1e-5, max_seq=4096, tied=False, head_dim=0, fused=True),
    "mixtral": dict(arch="MixtralForCausalLM", eps=1e-5, max_seq=4096 * 32, tied=False, head_dim=0, rope_theta=1e6,
                    moe=dict(experts=8, per_token=2, expert_mlp=0, shared_mlp=0, qwen=False, shared=False)),
    "qwen2_moe": dict(arch="Qwen2MoeForCausalLM", eps=1e-6, max_seq=32768, tied=False, head_dim=0, attn_bias=True,
                      moe=dict(experts=60, per_token=4, expert_mlp=1408, shared_mlp=5632, qwen=True, shared=True)),
    "qwen3_moe": dict(arch="Qwen3MoeForCausalLM", eps=1e-6, max_seq=32768, tied=False, head_dim=0, qk_norm=True,
                      moe=dict(experts=128, per_token=8, expert_mlp=768, shared_mlp=0, qwen=True, shared=False)),
}
_DEFAULT_WINDOW, _DEFAULT_MAX_WINDOW_LAYERS = 4096, 28


def parse_config(data):
    """config.json (a dict) to a config dict; mirrors ir/hf.ParseConfig for
    the dense families (llama, mistral, qwen2, qwen3, gemma2, phi3) and the
    mixtures of experts (mixtral, qwen2_moe, qwen3_moe)."""
    mt = data.get("model_type")
    if not mt:
        raise ConfigError("no model_type (want one of %s)" % ", ".join(sorted(FAMILIES)))
    fam = FAMILIES.get(mt)
    if fam is None:
        raise ConfigError("unsupported model_type %r (want one of %s)" % (mt, ", ".join(sorted(FAMILIES))))
    archs = data.get("architectures") or []
    if archs and fam["arch"] not in archs:
        raise ConfigError("unsupported architectures %r for model_type %s (want %r)" % (archs, mt, fam["arch"]))
    gemma = fam.get("gemma", False)
    if data.get("attention_bias") and not fam.get("attn_bias"):
        raise ConfigError("unsupported: attention_bias is true (no attention output bias in %s)" % mt)
    if data.get("mlp_bias"):
        raise ConfigError("unsupported: mlp_bias is true")
    if data.get("quantization_config"):
        raise ConfigError("unsupported: quantized checkpoint (quantization_config is set)")
    prf = data.get("partial_rotary_factor")
    if prf is not None and prf != 1:
        raise ConfigError("unsupported: partial_rotary_factor %g" % prf)
    if gemma:
        for key in ("hidden_activation", "hidden_act"):
            if data.get(key) not in (None, "gelu_pytorch_tanh"):
                raise ConfigError("unsupported: %s %r (want gelu_pytorch_tanh)" % (key, data.get(key)))
    elif data.get("hidden_act") not in (None, "silu"):
        raise ConfigError("unsupported: hidden_act %r (want silu)" % data.get("hidden_act"))
    cfg = {"arch": mt, "attn_bias": bool(fam.get("attn_bias")), "qk_norm": bool(fam.get("qk_norm")),
           "norm_offset": 1.0 if gemma else 0.0, "embed_scale": gemma, "act": "gelu_tanh" if gemma else "silu",
           "post_norms": gemma, "fused": bool(fam.get("fused")), "attn_scalar": 0.0, "attn_cap": 0.0, "final_cap": 0.0}
    for key, dst in (("hidden_size", "hidden"), ("vocab_size", "vocab")):
        v = data.get(key)
        if v is None:
            raise ConfigError("missing %s" % key)
        if not isinstance(v, int) or v <= 0:
            raise ConfigError("%s must be positive, got %r" % (key, v))
        cfg[dst] = v
    n = data.get("num_hidden_layers")
    if n is None:
        raise ConfigError("missing num_hidden_layers")
    if not (1 <= n <= 1 << 16):
        raise ConfigError("num_hidden_layers must be in [1, 65536], got %d" % n)
    wl = data.get("whittle_layers")
    if wl is not None:
        if len(wl) != n:
            raise ConfigError("whittle_layers has %d entries for num_hidden_layers %d" % (len(wl), n))
        layers = []
        for i, l in enumerate(wl):
            layers.append({"heads": l["num_attention_heads"], "kv_heads": l["num_key_value_heads"],
                           "head_dim": l["head_dim"], "mlp": l.get("intermediate_size", 0), "window": 0,
                           "experts": l.get("num_experts", 0), "expert_mlp": l.get("moe_intermediate_size", 0),
                           "shared_mlp": l.get("shared_expert_intermediate_size", 0)})
    else:
        heads, mlp = data.get("num_attention_heads"), data.get("intermediate_size")
        if heads is None:
            raise ConfigError("missing num_attention_heads")
        if mlp is None:
            raise ConfigError("missing intermediate_size")
        kv = data.get("num_key_value_heads") or heads
        hd = data.get("head_dim") or fam["head_dim"]
        if not hd:
            if cfg["hidden"] % heads:
                raise ConfigError("no head_dim, and hidden_size %d does not divide into %d heads" % (cfg["hidden"], heads))
            hd = cfg["hidden"] // heads
        layers = [{"heads": heads, "kv_heads": kv, "head_dim": hd, "mlp": mlp, "window": 0,
                   "experts": 0, "expert_mlp": 0, "shared_mlp": 0} for _ in range(n)]
    _parse_moe(mt, fam.get("moe"), data, cfg, layers, wl is not None)
    for i, l in enumerate(layers):
        if l["heads"] <= 0 or l["kv_heads"] <= 0 or l["heads"] % l["kv_heads"] or l["head_dim"] % 2:
            raise ConfigError("layer %d: %d heads, %d kv heads, head_dim %d" % (i, l["heads"], l["kv_heads"], l["head_dim"]))
        if l["experts"] > 0:
            if l["expert_mlp"] <= 0 or l["shared_mlp"] < 0 or l["mlp"]:
                raise ConfigError("layer %d: %d experts of width %d, shared expert %d, dense MLP %d" % (
                    i, l["experts"], l["expert_mlp"], l["shared_mlp"], l["mlp"]))
            if not (1 <= cfg["top_k"] <= l["experts"]):
                raise ConfigError("layer %d: num_experts_per_tok %d must be between 1 and the layer's %d experts" % (
                    i, cfg["top_k"], l["experts"]))
            if l["shared_mlp"] and not fam["moe"]["shared"]:
                raise ConfigError("layer %d: %s has no shared expert" % (i, fam["arch"]))
        elif l["mlp"] <= 0 or l["expert_mlp"] or l["shared_mlp"] or l["experts"] < 0:
            raise ConfigError("layer %d: a dense MLP needs a positive intermediate size (%d) and no expert sizes" % (i, l["mlp"]))
    cfg["layers"] = layers
    cfg["norm_eps"] = data.get("rms_norm_eps", fam["eps"])
    cfg["max_seq"] = data.get("max_position_embeddings", fam["max_seq"])
    _windows(mt, data, layers)
    cfg["tied"] = bool(data.get("tie_word_embeddings", fam["tied"]))
    if gemma:
        for key, dst, default, nullable in (("query_pre_attn_scalar", "attn_scalar", 256.0, False),
                                            ("attn_logit_softcapping", "attn_cap", 50.0, True),
                                            ("final_logit_softcapping", "final_cap", 30.0, True)):
            if key not in data:
                cfg[dst] = default
            elif data[key] is None:
                if not nullable:
                    raise ConfigError("%s is null (want a positive number)" % key)
                cfg[dst] = 0.0
            elif not (data[key] > 0) or math.isinf(data[key]):
                raise ConfigError("%s must be positive and finite, got %r" % (key, data[key]))
            else:
                cfg[dst] = float(data[key])
    theta = data.get("rope_theta", fam.get("rope_theta", 10000.0))
    scaling, key = data.get("rope_scaling"), "rope_scaling"
    if data.get("rope_parameters") is not None:
        scaling, key = data["rope_parameters"], "rope_parameters"
        theta = scaling.get("rope_theta", theta)
    cfg["rope_theta"] = float(theta)
    cfg["rope_scaling"] = _rope_scaling(scaling, key)
    if mt == "phi3" and cfg["rope_scaling"] is not None:
        raise ConfigError("unsupported: %s on phi3 (Phi3Config allows only longrope)" % key)
    return cfg


def _parse_moe(mt, moe, data, cfg, layers, per_layer):
    """The layers the family routes through experts (ir/hf parseMoE):
    Mixtral every layer, each expert intermediate_size wide, top-k always
    renormalized; Qwen-MoE the layers not in mlp_only_layers whose number
    (from 1) is a multiple of decoder_sparse_step, experts
    moe_intermediate_size wide, Qwen2-MoE with a shared expert. With
    whittle_layers the sizes are already per layer."""
    cfg["top_k"], cfg["norm_topk"] = 0, False
    if moe is None:
        for key in ("num_local_experts", "num_experts"):
            if (data.get(key) or 0) > 0:
                raise ConfigError("unsupported: %s on %s (a dense family; its class has no experts)" % (key, mt))
        if any(l["experts"] for l in layers):
            raise ConfigError("%s has no mixture-of-experts layers (use a MoE family: mixtral, qwen2_moe, qwen3_moe)" % mt)
        return

    def num(key, default):
        v = data.get(key)
        if v is None:
            return default
        if not isinstance(v, int) or v < 0:
            raise ConfigError("%s must be a non-negative integer, got %r" % (key, v))
        return v

    key = "num_experts" if moe["qwen"] else "num_local_experts"
    experts = num(key, moe["experts"])
    cfg["top_k"] = num("num_experts_per_tok", moe["per_token"])
    cfg["norm_topk"] = bool(data.get("norm_topk_prob")) if moe["qwen"] else True
    if per_layer:
        return
    if not moe["qwen"]:
        if experts == 0:
            raise ConfigError("%s must be positive for %s" % (key, FAMILIES[mt]["arch"]))
        for l in layers:
            l["experts"], l["expert_mlp"], l["mlp"] = experts, l["mlp"], 0
        return
    expert_mlp = num("moe_intermediate_size", moe["expert_mlp"])
    shared = num("shared_expert_intermediate_size", moe["shared_mlp"]) if moe["shared"] else 0
    step = data.get("decoder_sparse_step")
    step = 1 if step is None else step
    if not isinstance(step, int) or step <= 0:
        raise ConfigError("decoder_sparse_step must be positive, got %r" % step)
    dense = data.get("mlp_only_layers") or []
    for i, l in enumerate(layers):
        if experts > 0 and (i + 1) % step == 0 and i not in dense:
            l["mlp"], l["experts"], l["expert_mlp"], l["shared_mlp"] = 0, experts, expert_mlp, shared


def _windows(mt, data, layers):
    """Each layer's sliding window from the family's keys (ir/hf
    parseWindows): 0 is global attention."""
    n = len(layers)
    present, sw = "sliding_window" in data, data.get("sliding_window")

    def window(default):
        if not present:
            return default
        if sw is None:
            return 0
        if sw <= 0:
            raise ConfigError("sliding_window must be positive or null, got %d" % sw)
        return sw

    def sliding(default):
        lt = data.get("layer_types")
        if lt is None:
            return [default(i) for i in range(n)]
        if len(lt) != n:
            raise ConfigError("layer_types has %d entries for num_hidden_layers %d" % (len(lt), n))
        out = []
        for i, t in enumerate(lt):
            if t not in ("sliding_attention", "full_attention"):
                raise ConfigError("layer_types[%d] is %r" % (i, t))
            out.append(t == "sliding_attention")
        return out

    if mt == "llama":
        if present and sw is not None and sw < data.get("max_position_embeddings", 2048):
            raise ConfigError("unsupported: sliding_window %d is shorter than max_position_embeddings (Llama has no sliding-window attention)" % sw)
        if data.get("layer_types") is not None:
            raise ConfigError("unsupported: layer_types (Llama has no sliding-window attention)")
        return
    if mt in ("mistral", "phi3", "mixtral"):
        if data.get("layer_types") is not None:
            raise ConfigError("unsupported: layer_types (%s applies sliding_window to every layer)" % mt)
        w = window(_DEFAULT_WINDOW if mt == "mistral" else 0)
        slide = [True] * n
    elif mt in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
        w = window(_DEFAULT_WINDOW) if data.get("use_sliding_window") else 0
        first = data.get("max_window_layers", _DEFAULT_MAX_WINDOW_LAYERS)
        slide = sliding(lambda i: w > 0 and i >= first)
    else:  # gemma2
        w = window(_DEFAULT_WINDOW)
        slide = sliding(lambda i: i % 2 == 0)
    for i, l in enumerate(layers):
        if slide[i]:
            if w == 0:
                if mt in ("mistral", "phi3", "mixtral"):
                    return
                raise ConfigError("layer %d is a sliding_attention layer but no sliding window is set" % i)
            l["window"] = w


def _rope_scaling(m, key):
    if not m:
        return None
    typ = m.get("rope_type") or m.get("type") or ""
    if typ in ("", "default"):
        return None
    if typ not in ("linear", "llama3"):
        raise ConfigError("%s: unsupported rope scaling type %r (want linear or llama3)" % (key, typ))
    s = {"type": typ, "factor": float(m["factor"])}
    if typ == "llama3":
        s["low"] = float(m["low_freq_factor"])
        s["high"] = float(m["high_freq_factor"])
        s["orig"] = int(m["original_max_position_embeddings"])
    return s


def rope_inv_freq(cfg, head_dim):
    """ir.Config.RopeInvFreq, in float64."""
    half = head_dim // 2
    freq = [1 / math.pow(cfg["rope_theta"], (2 * i) / head_dim) for i in range(half)]
    s = cfg["rope_scaling"]
    if s is None or s["factor"] == 0:
        return freq
    if s["type"] == "linear":
        return [f / s["factor"] for f in freq]
    low_w, high_w = s["orig"] / s["low"], s["orig"] / s["high"]
    out = []
    for f in freq:
        w = 2 * math.pi / f
        if w < high_w:
            out.append(f)
        elif w > low_w:
            out.append(f / s["factor"])
        else:
            sm = (s["orig"] / w - s["low"]) / (s["high"] - s["low"])
            out.append((1 - sm) * f / s["factor"] + sm * f)
    return out


def layer_tensors(cfg, i):
    """Layer i's tensor names by function (ir.Config.LayerTensors): absent
    ones are left out."""
    t = {r: layer_name(i, r) for r in ("attn_norm", "q", "k", "v", "o", "gate", "up", "down")}
    t["mlp_norm"] = layer_name(i, "mlp_norm")
    lc = cfg["layers"][i]
    if lc.get("experts", 0) > 0:
        # Experts stacked along dimension 0 under the name without the
        # expert's index (ir.Config.LayerTensors); Mixtral's module is
        # block_sparse_moe with w1 (gate), w3 (up), w2 (down).
        for r in ("gate", "up", "down"):
            del t[r]
        moe, names = moe_module(cfg)
        pre = "model.layers.%d.%s." % (i, moe)
        t["router"] = pre + "gate.weight"
        for r in ("gate", "up", "down"):
            t["expert_" + r] = pre + "experts.%s.weight" % names[r]
        if lc.get("shared_mlp", 0) > 0:
            for r in ("gate", "up", "down"):
                t["shared_" + r] = pre + "shared_expert.%s_proj.weight" % r
            t["shared_expert_gate"] = pre + "shared_expert_gate.weight"
    if cfg.get("attn_bias"):
        for r in ("q", "k", "v"):
            t[r + "_bias"] = "model.layers.%d.self_attn.%s_proj.bias" % (i, r)
    if cfg.get("qk_norm"):
        t["q_norm"] = "model.layers.%d.self_attn.q_norm.weight" % i
        t["k_norm"] = "model.layers.%d.self_attn.k_norm.weight" % i
    if cfg.get("post_norms"):
        # Gemma 2: post_attention_layernorm is the attention output's norm.
        t["attn_post_norm"] = "model.layers.%d.post_attention_layernorm.weight" % i
        t["mlp_norm"] = "model.layers.%d.pre_feedforward_layernorm.weight" % i
        t["mlp_post_norm"] = "model.layers.%d.post_feedforward_layernorm.weight" % i
    return t


def moe_module(cfg):
    """The family's MoE module name and its experts' matrix names."""
    if cfg["arch"] == "mixtral":
        return "block_sparse_moe", {"gate": "w1", "up": "w3", "down": "w2"}
    return "mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def expert_groups(cfg):
    """(stacked name, experts) of every MoE layer's expert matrices."""
    out = []
    for i, lc in enumerate(cfg["layers"]):
        if lc.get("experts", 0) > 0:
            t = layer_tensors(cfg, i)
            out += [(t["expert_" + r], lc["experts"]) for r in ("gate", "up", "down")]
    return out


def expert_name(stacked, j):
    """Expert j's tensor in the files (ir/hf expertName)."""
    return stacked.replace(".experts.", ".experts.%d." % j, 1)


def stack_experts(cfg, tensors, path):
    """Replaces the per-expert tensors of the files by the stacked ones."""
    for name, n in expert_groups(cfg):
        parts = []
        for j in range(n):
            pn = expert_name(name, j)
            t = tensors.pop(pn, None)
            if t is None:
                raise ConfigError("%s: missing tensor %s" % (path, pn))
            if parts and t.shape != parts[0].shape:
                raise ConfigError("%s: tensor %s has shape %s, but %s has %s: one layer's experts must match" % (
                    path, pn, list(t.shape), expert_name(name, 0), list(parts[0].shape)))
            parts.append(t)
        tensors[name] = torch.stack(parts, 0)


def split_experts(cfg, tensors):
    """Replaces each stacked expert tensor by one tensor per expert, as
    Hugging Face stores them."""
    for name, n in expert_groups(cfg):
        t = tensors.pop(name)
        for j in range(n):
            tensors[expert_name(name, j)] = t[j]


def expected_shapes(cfg):
    """Every tensor's shape by its canonical name (Phi-3's fused
    projections split, as ir/hf loads them)."""
    d = cfg["hidden"]
    out = {NAME_EMBED: (cfg["vocab"], d)}
    for i, l in enumerate(cfg["layers"]):
        q, kv, hd = l["heads"] * l["head_dim"], l["kv_heads"] * l["head_dim"], l["head_dim"]
        shapes = {"attn_norm": (d,), "q": (q, d), "k": (kv, d), "v": (kv, d), "o": (d, q),
                  "mlp_norm": (d,), "gate": (l["mlp"], d), "up": (l["mlp"], d), "down": (d, l["mlp"]),
                  "q_bias": (q,), "k_bias": (kv,), "v_bias": (kv,), "q_norm": (hd,), "k_norm": (hd,),
                  "attn_post_norm": (d,), "mlp_post_norm": (d,)}
        if l.get("experts", 0) > 0:
            e, m, s = l["experts"], l["expert_mlp"], l["shared_mlp"]
            shapes.update(router=(e, d), expert_gate=(e, m, d), expert_up=(e, m, d), expert_down=(e, d, m),
                          shared_gate=(s, d), shared_up=(s, d), shared_down=(d, s), shared_expert_gate=(1, d))
        for role, name in layer_tensors(cfg, i).items():
            out[name] = shapes[role]
    out[NAME_FINAL_NORM] = (d,)
    if not cfg["tied"]:
        out[NAME_CLASSIFIER] = (cfg["vocab"], d)
    return out


def fused_groups(cfg):
    """Phi-3's fused tensors: (fused name, [(part name, rows)]) per layer,
    rows stacked q, k, v and gate, up (modeling_phi3)."""
    if not cfg.get("fused"):
        return []
    out = []
    for i, l in enumerate(cfg["layers"]):
        q, kv = l["heads"] * l["head_dim"], l["kv_heads"] * l["head_dim"]
        out.append(("model.layers.%d.self_attn.qkv_proj.weight" % i,
                    [(layer_name(i, "q"), q), (layer_name(i, "k"), kv), (layer_name(i, "v"), kv)]))
        out.append(("model.layers.%d.mlp.gate_up_proj.weight" % i,
                    [(layer_name(i, "gate"), l["mlp"]), (layer_name(i, "up"), l["mlp"])]))
    return out


def split_fused(cfg, tensors, path):
    for name, parts in fused_groups(cfg):
        t = tensors.pop(name, None)
        if t is None:
            raise ConfigError("%s: missing tensor %s" % (path, name))
        rows = sum(r for _, r in parts)
        if t.dim() != 2 or t.shape[0] != rows:
            raise ConfigError("%s: tensor %s has shape %s, want %d rows" % (path, name, list(t.shape), rows))
        off = 0
        for part, r in parts:
            tensors[part] = t[off:off + r].clone()
            off += r


def join_fused(cfg, tensors):
    for name, parts in fused_groups(cfg):
        tensors[name] = torch.cat([tensors.pop(part) for part, _ in parts], dim=0)


# --- safetensors

_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def read_safetensors(path, want=None):
    """Tensors of a .safetensors file (those named in want, or all), as
    float32."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 << 20:
            raise ValueError("%s: header of %d bytes" % (path, n))
        header = json.loads(f.read(n))
        base = 8 + n
        for name, meta in header.items():
            if name == "__metadata__" or (want is not None and name not in want):
                continue
            dt = _ST_DTYPES.get(meta["dtype"])
            if dt is None:
                raise ValueError("%s: tensor %s has dtype %s (want F32, F16 or BF16)" % (path, name, meta["dtype"]))
            lo, hi = meta["data_offsets"]
            f.seek(base + lo)
            buf = bytearray(f.read(hi - lo))
            if len(buf) != hi - lo:
                raise ValueError("%s: tensor %s is truncated" % (path, name))
            t = torch.frombuffer(buf, dtype=dt) if hi > lo else torch.empty(0, dtype=dt)
            out[name] = t.reshape(meta["shape"]).to(torch.float32)
    return out


def write_safetensors(path, tensors, dtype):
    """Writes float32 tensors (name -> tensor) converted to dtype, sorted by
    name, atomically."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous().to(dtype)
        if dtype == torch.bfloat16:
            b = t.view(torch.int16).numpy().tobytes()
        else:
            b = t.numpy().tobytes()
        header[name] = {"dtype": _ST_NAMES[dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_dir(path):
    """A Hugging Face directory: (config.json dict, config, float32 tensors)."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError("%s: %s" % (path, e))
    except ValueError as e:
        raise ConfigError("%s/config.json: invalid JSON: %s" % (path, e))
    try:
        cfg = parse_config(raw)
    except (ConfigError, KeyError, TypeError) as e:
        raise ConfigError("%s/config.json: %s" % (path, e))
    shapes = expected_shapes(cfg)
    want = set(shapes)
    if cfg["tied"]:
        want.discard(NAME_CLASSIFIER)
    for name, parts in fused_groups(cfg):
        want.add(name)
        want.difference_update(p for p, _ in parts)
    for name, n in expert_groups(cfg):
        want.discard(name)
        want.update(expert_name(name, j) for j in range(n))
    tensors = {}
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            wm = json.load(f)["weight_map"]
        for shard in sorted(set(wm.values())):
            tensors.update(read_safetensors(os.path.join(path, shard), want))
    else:
        tensors = read_safetensors(os.path.join(path, "model.safetensors"), want)
    split_fused(cfg, tensors, path)
    stack_experts(cfg, tensors, path)
    for name, shape in shapes.items():
        t = tensors.get(name)
        if t is None:
            raise ConfigError("%s: missing tensor %s" % (path, name))
        if tuple(t.shape) != tuple(shape):
            raise ConfigError("%s: tensor %s has shape %s, want %s" % (path, name, list(t.shape), list(shape)))
    return raw, cfg, tensors


# --- the decoder


class _W(nn.Module):
    """A holder of one weight (and bias), so that parameter names are
    Hugging Face's."""

    def __init__(self, t, bias=None):
        super().__init__()
        self.weight = nn.Parameter(t, requires_grad=False)
        if bias is not None:
            self.bias = nn.Parameter(bias, requires_grad=False)
        else:
            self.bias = None


class _Group(nn.Module):
    pass


def rms_norm(x, w, eps, offset=0.0):
    w = w if offset == 0 else offset + w
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


_SDPA = getattr(F, "scaled_dot_product_attention", None)


class _NoAutocast:
    """Turns CUDA autocast off (routers run in float32 whatever the
    compute dtype); nothing elsewhere."""

    def __init__(self, on):
        self.ctx = torch.autocast("cuda", enabled=False) if on else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *a):
        if self.ctx is not None:
            self.ctx.__exit__(*a)


def _no_autocast(x):
    return _NoAutocast(x.is_cuda)


class Layer(nn.Module):
    """One decoder layer of the family cfg describes; forward runs through
    the module so that FSDP2's hooks (fully_shard per layer) gather its
    weights."""

    def __init__(self, cfg, t, i):
        super().__init__()
        self.i = i
        self.cfg = cfg
        self.lc = cfg["layers"][i]
        self.eps = cfg["norm_eps"]
        self.offset = cfg.get("norm_offset", 0.0)
        names = layer_tensors(cfg, i)
        self.input_layernorm = _W(t[names["attn_norm"]])
        self.self_attn = _Group()
        for r in ("q", "k", "v", "o"):
            setattr(self.self_attn, r + "_proj", _W(t[names[r]], t.get(names.get(r + "_bias", ""))))
        if cfg.get("qk_norm"):
            self.self_attn.q_norm = _W(t[names["q_norm"]])
            self.self_attn.k_norm = _W(t[names["k_norm"]])
        self.moe = self.lc.get("experts", 0) > 0
        if self.moe:
            # Parameter names are the stacked tensors' (ir.LayerTensors).
            modname, enames = moe_module(cfg)
            blk = _Group()
            setattr(self, modname, blk)
            blk.gate = _W(t[names["router"]])
            blk.experts = _Group()
            for r in ("gate", "up", "down"):
                setattr(blk.experts, enames[r], _W(t[names["expert_" + r]]))
            self._experts = [enames[r] for r in ("gate", "up", "down")]
            if "shared_gate" in names:
                blk.shared_expert = _Group()
                for r in ("gate", "up", "down"):
                    setattr(blk.shared_expert, r + "_proj", _W(t[names["shared_" + r]]))
                blk.shared_expert_gate = _W(t[names["shared_expert_gate"]])
            self._block = modname
        else:
            self.mlp = _Group()
            for r in ("gate", "up", "down"):
                setattr(self.mlp, r + "_proj", _W(t[names[r]]))
        if cfg.get("post_norms"):
            self.post_attention_layernorm = _W(t[names["attn_post_norm"]])
            self.pre_feedforward_layernorm = _W(t[names["mlp_norm"]])
            self.post_feedforward_layernorm = _W(t[names["mlp_post_norm"]])
        else:
            self.post_attention_layernorm = _W(t[names["mlp_norm"]])

    def norm(self, x, w):
        return rms_norm(x, w, self.eps, self.offset)

    def proj(self, role, x, lora):
        mod = getattr(self.self_attn if role in ("q", "k", "v", "o") else self.mlp, role + "_proj")
        y = F.linear(x, mod.weight, mod.bias)
        if lora is not None:
            ad = lora.get(self.i, role)
            if ad is not None:
                a, b, scale = ad
                y = y + scale * F.linear(F.linear(x, a), b)
        return y

    def act(self, g):
        return F.gelu(g, approximate="tanh") if self.cfg.get("act") == "gelu_tanh" else F.silu(g)

    def experts(self, h, rec=None, router=None):
        """The mixture of experts (ir/graph MoEAttrs) on the MLP norm's
        output h [B, T, d]: router probabilities in float32 (softmax over
        all experts), each token's top-k experts (ties to the lower index,
        by a stable sort), weights renormalized when norm_topk; tokens are
        grouped per expert by a stable sort of the (token, slot) pairs, so
        each expert runs its gated MLP on just its rows, and the weighted
        outputs come back through the inverse permutation: every index is
        distinct, so no step accumulates atomically and the sums have a
        fixed order (slots in order, then the shared expert). rec, a dict,
        receives the routing and activations for statistics; router, a
        list, the (experts, Σ probabilities, counts) for the balancing
        loss."""
        B, T, d = h.shape
        x = h.reshape(B * T, d)
        N = x.shape[0]
        blk = getattr(self, self._block)
        E, k = self.lc["experts"], self.cfg["top_k"]
        with _no_autocast(x):
            probs = torch.softmax(F.linear(x.float(), blk.gate.weight.float()), dim=-1)
        sel = torch.sort(probs.detach(), dim=-1, descending=True, stable=True).indices[:, :k]
        w = probs.gather(1, sel)
        if self.cfg.get("norm_topk"):
            w = w / w.sum(-1, keepdim=True)
        flat = sel.reshape(-1)
        perm = torch.sort(flat, stable=True).indices  # grouped position -> slot
        counts = torch.bincount(flat, minlength=E)
        rows = torch.div(perm, k, rounding_mode="floor")
        # Gathered through the [N*k] slots (distinct indices), not the
        # tokens: index_select's backward then adds no two rows into one,
        # and expand's sums over the slots in order.
        xg = x.unsqueeze(1).expand(N, k, d).reshape(N * k, d).index_select(0, perm)
        # Unbind rather than index per expert: the stacked weights'
        # gradients come back as one tensor. Every expert runs, empty ones
        # on no rows, so that every parameter takes part in each backward
        # (DDP expects it).
        gw, uw, dw = (torch.unbind(getattr(blk.experts, n).weight, 0) for n in self._experts)
        acts, outs, off = [], [], 0
        for e, c in enumerate(counts.tolist()):
            seg = xg[off:off + c]
            off += c
            a = self.act(F.linear(seg, gw[e])) * F.linear(seg, uw[e])
            acts.append(a)
            outs.append(F.linear(a, dw[e]))
        ys = torch.cat(outs, 0).float() * w.reshape(-1).index_select(0, perm)[:, None]
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=perm.device)
        out = ys.index_select(0, inv).view(N, k, d).sum(1)
        sact = None
        if hasattr(blk, "shared_expert"):
            se = blk.shared_expert
            sact = self.act(F.linear(x, se.gate_proj.weight)) * F.linear(x, se.up_proj.weight)
            with _no_autocast(x):
                g = torch.sigmoid(F.linear(x.float(), blk.shared_expert_gate.weight.float()))
            out = out + g * F.linear(sact, se.down_proj.weight).float()
        if rec is not None:
            rec.update(probs=probs.detach(), counts=counts, rows=rows, experts=flat.index_select(0, perm),
                       act=torch.cat(acts, 0).detach(), out=ys.detach(), shared_act=sact)
        if router is not None:
            router.append((E, probs.sum(0), counts))
        return out.view(B, T, d)

    def forward(self, x, cos, sin, acts=None, lora=None, router=None):
        lc, cfg = self.lc, self.cfg
        B, T, _ = x.shape
        H, KV, hd = lc["heads"], lc["kv_heads"], lc["head_dim"]
        h = self.norm(x, self.input_layernorm.weight)
        q = self.proj("q", h, lora).view(B, T, H, hd)
        k = self.proj("k", h, lora).view(B, T, KV, hd)
        v = self.proj("v", h, lora).view(B, T, KV, hd).transpose(1, 2)
        if cfg.get("qk_norm"):
            q = self.norm(q, self.self_attn.q_norm.weight)
            k = self.norm(k, self.self_attn.k_norm.weight)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if KV != H:
            k = k.repeat_interleave(H // KV, dim=1)
            v = v.repeat_interleave(H // KV, dim=1)
        window, cap = lc.get("window", 0), cfg.get("attn_cap", 0.0)
        scale = cfg["attn_scalar"] ** -0.5 if cfg.get("attn_scalar") else 1.0 / math.sqrt(hd)
        if _SDPA is not None and B > 0 and not window and not cap and not cfg.get("attn_scalar"):
            # torch >= 2.0: fused (flash / memory-efficient) attention, which
            # never holds the T x T scores.
            a = _SDPA(q, k, v, is_causal=True)
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) * scale
            if cap:
                s = cap * torch.tanh(s / cap)
            pos = torch.arange(T, device=x.device)
            mask = pos[None, :] > pos[:, None]  # key after query
            if window:
                mask = mask | (pos[None, :] <= pos[:, None] - window)  # key out of the window
            s = s.masked_fill(mask, float("-inf"))
            a = torch.matmul(torch.softmax(s, dim=-1), v)
        a = a.transpose(1, 2).reshape(B, T, H * hd)
        o = self.proj("o", a, lora)
        if cfg.get("post_norms"):
            o = self.norm(o, self.post_attention_layernorm.weight)
            h2 = self.norm(x + o, self.pre_feedforward_layernorm.weight)
        else:
            h2 = self.norm(x + o, self.post_attention_layernorm.weight)
        x2 = x + o
        rec = {} if acts is not None else None
        if self.moe:
            m = None
            dn = self.experts(h2, rec, router)
        else:
            m = self.act(self.proj("gate", h2, lora)) * self.proj("up", h2, lora)
            dn = self.proj("down", m, lora)
        if cfg.get("post_norms"):
            dn = self.norm(dn, self.post_feedforward_layernorm.weight)
        out = x2 + dn
        if acts is not None:
            acts.append({"in": x, "attn_norm": h, "attn_out": a, "mlp_norm": h2, "mlp_act": m, "out": out, "moe": rec or None})
        return out


def rope(x, cos, sin):
    """Rotates [B, H, T, hd] in Hugging Face's half order."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Decoder(nn.Module):
    """A decoder of the graph IR's dense families whose parameter names are
    the checkpoint's (Phi-3's fused projections split)."""

    def __init__(self, cfg, tensors):
        super().__init__()
        self.cfg = cfg
        self.model = nn.Module()
        self.model.embed_tokens = _W(tensors[NAME_EMBED])
        self.model.layers = nn.ModuleList([Layer(cfg, tensors, i) for i in range(len(cfg["layers"]))])
        self.model.norm = _W(tensors[NAME_FINAL_NORM])
        if not cfg["tied"]:
            self.lm_head = _W(tensors[NAME_CLASSIFIER])
        self._rope = {}

    def weights(self):
        """The checkpoint's tensors by name (LoRA adapters excluded)."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("lora.")}

    def classifier(self):
        return self.model.embed_tokens.weight if self.cfg["tied"] else self.lm_head.weight

    def rope_tables(self, hd, T, device):
        key = (hd, T, str(device))
        if key not in self._rope:
            inv = np.array(rope_inv_freq(self.cfg, hd), dtype=np.float64)
            ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
            cos = torch.from_numpy(np.cos(ang).astype(np.float32)).to(device)
            sin = torch.from_numpy(np.sin(ang).astype(np.float32)).to(device)
            self._rope[key] = (cos, sin)
        return self._rope[key]

    def forward(self, tokens, skip=None, acts=None, lora=None, hidden_only=False, router=None):
        """Logits [B, T, vocab] for tokens [B, T] (int64), the layers in skip
        bypassed; acts, a list, receives each computed layer's activations;
        router, a list, each computed MoE layer's routing totals."""
        cfg = self.cfg
        x = F.embedding(tokens, self.model.embed_tokens.weight)
        if cfg.get("embed_scale"):
            # sqrt(hidden) rounded to float32, as the IR defines it.
            x = x * float(np.float32(math.sqrt(cfg["hidden"])))
        T = tokens.shape[1]
        for i, layer in enumerate(self.model.layers):
            if skip and i in skip:
                continue
            cos, sin = self.rope_tables(layer.lc["head_dim"], T, x.device)
            x = layer(x, cos, sin, acts, lora, router)
        x = rms_norm(x, self.model.norm.weight, cfg["norm_eps"], cfg.get("norm_offset", 0.0))
        if hidden_only:
            return x
        z = F.linear(x, self.classifier())
        if cfg.get("final_cap"):
            z = cfg["final_cap"] * torch.tanh(z / cfg["final_cap"])
        return z
