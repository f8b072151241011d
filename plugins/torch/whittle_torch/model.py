"""Hugging Face model directories and the decoder, in PyTorch.

The configuration rules follow whittle's ir/hf.ParseConfig (Llama and
Mistral checkpoints whose computation is a plain Llama decoder, per-layer
sizes in whittle_layers for width-pruned models); the decoder follows the
graph IR's Llama family: RMSNorm, grouped-query attention with RoPE in
Hugging Face's half order (inverse frequencies as ir.Config.RopeInvFreq),
SwiGLU MLP. Options of other families (biases, q/k norms, Gemma's norms,
scales and caps, GeGLU, sliding windows) are refused by name.
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


_DEFAULT_MAX_SEQ = {"llama": 2048, "mistral": 4096 * 32}


def parse_config(data):
    """config.json (a dict) to a config dict; mirrors ir/hf.ParseConfig."""
    mt = data.get("model_type")
    if not mt:
        raise ConfigError("no model_type (want llama or mistral)")
    if mt not in ("llama", "mistral"):
        raise ConfigError("model_type %r: the torch backend implements the Llama family (llama, mistral) only" % mt)
    archs = data.get("architectures") or []
    if archs and not any(a in ("LlamaForCausalLM", "MistralForCausalLM") for a in archs):
        raise ConfigError("unsupported architectures %r" % archs)
    if data.get("attention_bias"):
        raise ConfigError("unsupported: attention_bias is true (the torch backend's Llama has no attention biases)")
    if data.get("mlp_bias"):
        raise ConfigError("unsupported: mlp_bias is true")
    if data.get("hidden_act") not in (None, "silu"):
        raise ConfigError("unsupported: hidden_act %r (want silu)" % data.get("hidden_act"))
    if data.get("quantization_config"):
        raise ConfigError("unsupported: quantized checkpoint (quantization_config is set)")
    for key in ("qk_norm", "post_norms", "embed_scale", "query_pre_attn_scalar", "attn_logit_softcapping",
                "final_logit_softcapping"):
        if data.get(key):
            raise ConfigError("unsupported family option %s (the torch backend implements the Llama family)" % key)
    cfg = {"arch": mt}
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
            if l.get("sliding_window"):
                raise ConfigError("layer %d: sliding windows are not implemented by the torch backend" % i)
            layers.append({"heads": l["num_attention_heads"], "kv_heads": l["num_key_value_heads"],
                           "head_dim": l["head_dim"], "mlp": l["intermediate_size"]})
    else:
        heads, mlp = data.get("num_attention_heads"), data.get("intermediate_size")
        if heads is None:
            raise ConfigError("missing num_attention_heads")
        if mlp is None:
            raise ConfigError("missing intermediate_size")
        kv = data.get("num_key_value_heads") or heads
        hd = data.get("head_dim")
        if hd is None:
            if cfg["hidden"] % heads:
                raise ConfigError("no head_dim, and hidden_size %d does not divide into %d heads" % (cfg["hidden"], heads))
            hd = cfg["hidden"] // heads
        layers = [{"heads": heads, "kv_heads": kv, "head_dim": hd, "mlp": mlp} for _ in range(n)]
    for i, l in enumerate(layers):
        if l["heads"] <= 0 or l["kv_heads"] <= 0 or l["heads"] % l["kv_heads"] or l["head_dim"] % 2:
            raise ConfigError("layer %d: %d heads, %d kv heads, head_dim %d" % (i, l["heads"], l["kv_heads"], l["head_dim"]))
    cfg["layers"] = layers
    cfg["norm_eps"] = data.get("rms_norm_eps", 1e-6)
    cfg["max_seq"] = data.get("max_position_embeddings", _DEFAULT_MAX_SEQ[mt])
    sw = data.get("sliding_window")
    if sw is not None and sw < cfg["max_seq"]:
        raise ConfigError("unsupported: sliding_window %d is shorter than max_position_embeddings %d" % (sw, cfg["max_seq"]))
    cfg["tied"] = bool(data.get("tie_word_embeddings", False))
    theta = data.get("rope_theta", 10000.0)
    scaling, key = data.get("rope_scaling"), "rope_scaling"
    if data.get("rope_parameters") is not None:
        scaling, key = data["rope_parameters"], "rope_parameters"
        theta = scaling.get("rope_theta", theta)
    cfg["rope_theta"] = float(theta)
    cfg["rope_scaling"] = _rope_scaling(scaling, key)
    return cfg


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


def expected_shapes(cfg):
    d = cfg["hidden"]
    out = {NAME_EMBED: (cfg["vocab"], d)}
    for i, l in enumerate(cfg["layers"]):
        q, kv = l["heads"] * l["head_dim"], l["kv_heads"] * l["head_dim"]
        shapes = {"attn_norm": (d,), "q": (q, d), "k": (kv, d), "v": (kv, d), "o": (d, q),
                  "mlp_norm": (d,), "gate": (l["mlp"], d), "up": (l["mlp"], d), "down": (d, l["mlp"])}
        for role, s in shapes.items():
            out[layer_name(i, role)] = s
    out[NAME_FINAL_NORM] = (d,)
    if not cfg["tied"]:
        out[NAME_CLASSIFIER] = (cfg["vocab"], d)
    return out


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
    tensors = {}
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            wm = json.load(f)["weight_map"]
        for shard in sorted(set(wm.values())):
            tensors.update(read_safetensors(os.path.join(path, shard), want))
    else:
        tensors = read_safetensors(os.path.join(path, "model.safetensors"), want)
    for name, shape in shapes.items():
        t = tensors.get(name)
        if t is None:
            raise ConfigError("%s: missing tensor %s" % (path, name))
        if tuple(t.shape) != tuple(shape):
            raise ConfigError("%s: tensor %s has shape %s, want %s" % (path, name, list(t.shape), list(shape)))
    return raw, cfg, tensors


# --- the decoder


class _W(nn.Module):
    """A holder of one weight, so that parameter names are Hugging Face's."""

    def __init__(self, t):
        super().__init__()
        self.weight = nn.Parameter(t, requires_grad=False)


class _Attn(nn.Module):
    def __init__(self, t, i):
        super().__init__()
        for r in ("q", "k", "v", "o"):
            setattr(self, r + "_proj", _W(t[layer_name(i, r)]))


class _MLP(nn.Module):
    def __init__(self, t, i):
        super().__init__()
        for r in ("gate", "up", "down"):
            setattr(self, r + "_proj", _W(t[layer_name(i, r)]))


_SDPA = getattr(F, "scaled_dot_product_attention", None)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class Layer(nn.Module):
    """One decoder layer; forward runs through the module so that FSDP2's
    hooks (fully_shard per layer) gather its weights."""

    def __init__(self, cfg, t, i):
        super().__init__()
        self.i = i
        self.lc = cfg["layers"][i]
        self.eps = cfg["norm_eps"]
        self.input_layernorm = _W(t[layer_name(i, "attn_norm")])
        self.self_attn = _Attn(t, i)
        self.post_attention_layernorm = _W(t[layer_name(i, "mlp_norm")])
        self.mlp = _MLP(t, i)

    def proj(self, role, x, lora):
        mod = self.self_attn if role in ("q", "k", "v", "o") else self.mlp
        y = F.linear(x, getattr(mod, role + "_proj").weight)
        if lora is not None:
            ad = lora.get(self.i, role)
            if ad is not None:
                a, b, scale = ad
                y = y + scale * F.linear(F.linear(x, a), b)
        return y

    def forward(self, x, cos, sin, acts=None, lora=None):
        lc = self.lc
        B, T, _ = x.shape
        H, KV, hd = lc["heads"], lc["kv_heads"], lc["head_dim"]
        h = rms_norm(x, self.input_layernorm.weight, self.eps)
        q = self.proj("q", h, lora).view(B, T, H, hd).transpose(1, 2)
        k = self.proj("k", h, lora).view(B, T, KV, hd).transpose(1, 2)
        v = self.proj("v", h, lora).view(B, T, KV, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if KV != H:
            k = k.repeat_interleave(H // KV, dim=1)
            v = v.repeat_interleave(H // KV, dim=1)
        if _SDPA is not None and B > 0:
            # torch >= 2.0: fused (flash / memory-efficient) attention, which
            # never holds the T x T scores.
            a = _SDPA(q, k, v, is_causal=True)
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            s = s.masked_fill(mask, float("-inf"))
            a = torch.matmul(torch.softmax(s, dim=-1), v)
        a = a.transpose(1, 2).reshape(B, T, H * hd)
        x2 = x + self.proj("o", a, lora)
        h2 = rms_norm(x2, self.post_attention_layernorm.weight, self.eps)
        m = F.silu(self.proj("gate", h2, lora)) * self.proj("up", h2, lora)
        out = x2 + self.proj("down", m, lora)
        if acts is not None:
            acts.append({"in": x, "attn_norm": h, "attn_out": a, "mlp_norm": h2, "mlp_act": m, "out": out})
        return out


def rope(x, cos, sin):
    """Rotates [B, H, T, hd] in Hugging Face's half order."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Decoder(nn.Module):
    """A Llama decoder whose parameter names are the checkpoint's."""

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

    def forward(self, tokens, skip=None, acts=None, lora=None, hidden_only=False):
        """Logits [B, T, vocab] for tokens [B, T] (int64), the layers in skip
        bypassed; acts, a list, receives each computed layer's activations."""
        x = F.embedding(tokens, self.model.embed_tokens.weight)
        T = tokens.shape[1]
        for i, layer in enumerate(self.model.layers):
            if skip and i in skip:
                continue
            cos, sin = self.rope_tables(layer.lc["head_dim"], T, x.device)
            x = layer(x, cos, sin, acts, lora)
        x = rms_norm(x, self.model.norm.weight, self.cfg["norm_eps"])
        if hidden_only:
            return x
        return F.linear(x, self.classifier())
