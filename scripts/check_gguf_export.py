#!/usr/bin/python3
"""Check a GGUF llama model the way llama.cpp would load and run it.

An independent re-implementation, sharing no code with whittle, of what
llama.cpp does with a GGUF v3 file of architecture "llama":

  * the file parsed with struct: header, metadata, tensor infos, alignment
    (general.alignment, default 32), data offsets and sizes.
  * the metadata keys the llama architecture reads: general.architecture,
    llama.context_length, embedding_length, block_count,
    feed_forward_length, attention.head_count, attention.head_count_kv,
    rope.dimension_count, attention.layer_norm_rms_epsilon and the
    SentencePiece vocabulary tokenizer.ggml.{model,tokens,scores,
    token_type,bos_token_id,eos_token_id}. (llama.cpp defaults a few of
    these; this checker requires them, since every converter writes them.)
  * tensor names, types and shapes in ggml's ne order (innermost first),
    1-D norm weights F32, as llama.cpp's create_tensor demands; output.weight
    optional (token_embd.weight is used when it is absent).
  * the LLM_ARCH_LLAMA graph: RMS norm, RoPE in "normal" mode (dimensions
    2i and 2i+1 of a head rotate together; GGUF stores Q/K rows already
    permuted for that, so no permutation here), grouped-query attention
    scaled by 1/sqrt(head_dim), SwiGLU, final norm, output. With
    --precision ggml (the default) the rounding of llama.cpp's CPU backend
    with default settings is reproduced: the KV cache holds F16, and the
    other operand of a product with an F16/BF16 tensor (weights, cached K
    and V) is first rounded to that type, as ggml's vec_dot does.
    --precision f32 computes everything in float32.
  * greedy decoding from BOS for --steps positions, with the vocabulary
    from the file's metadata, printed as llama2.c's run.c prints it, and
    compared with --expected.

Run: /usr/bin/python3 scripts/check_gguf_export.py FILE --expected FILE
Exit status: 0 pass, 1 text mismatch, 2 a structural problem.
"""

import argparse
import math
import os
import struct
import sys

import numpy as np

sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runc_text  # noqa: E402


class ExportError(Exception):
    """A problem llama.cpp would refuse or mishandle."""


GGUF_MAGIC = b"GGUF"

# gguf_type: (struct format, size) for the scalar value types.
SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
           6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
T_STRING, T_ARRAY = 8, 9
TYPE_NAMES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32",
              7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64"}
INT_TYPES = {0, 1, 2, 3, 4, 5, 10, 11}

# ggml_type: (name, bytes per element) for the types this checker runs.
GGML_TYPES = {0: ("F32", 4), 1: ("F16", 2), 30: ("BF16", 2), 8: ("Q8_0", 34 / 32), 2: ("Q4_0", 18 / 32)}

# llama_token_type
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


class Reader:
    def __init__(self, data, path):
        self.data, self.off, self.path = data, 0, path

    def need(self, n, what):
        if self.off + n > len(self.data):
            raise ExportError(f"{self.path}: offset {self.off}: {what} runs past the end of the file")

    def scalar(self, t, what):
        fmt, size = SCALARS[t]
        self.need(size, what)
        (v,) = struct.unpack_from(fmt, self.data, self.off)
        if t == 7 and self.data[self.off] > 1:
            raise ExportError(f"{self.path}: offset {self.off}: {what}: bool byte {self.data[self.off]}")
        self.off += size
        return v

    def string(self, what):
        n = self.scalar(10, what + " length")
        self.need(n, what)
        s = self.data[self.off:self.off + n]
        self.off += n
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ExportError(f"{self.path}: offset {self.off - n}: {what} is not UTF-8: {e}")

    def value(self, t, what):
        if t in SCALARS:
            return self.scalar(t, what)
        if t == T_STRING:
            return self.string(what)
        if t == T_ARRAY:
            et = self.scalar(4, what + " element type")
            n = self.scalar(10, what + " element count")
            if et == T_ARRAY:
                raise ExportError(f"{self.path}: offset {self.off}: {what}: nested arrays")
            if et in SCALARS and et != 7:
                fmt, size = SCALARS[et]
                self.need(n * size, what)
                arr = np.frombuffer(self.data, dtype=np.dtype(fmt), count=n, offset=self.off)
                self.off += n * size
                return ("array", et, arr)
            return ("array", et, [self.value(et, f"{what}[{i}]") for i in range(n)])
        raise ExportError(f"{self.path}: offset {self.off}: {what}: unknown value type {t}")


def parse(path):
    with open(path, "rb") as f:
        data = f.read()
    r = Reader(data, path)
    r.need(4, "magic")
    if data[:4] != GGUF_MAGIC:
        raise ExportError(f"{path}: magic {data[:4]!r}, not GGUF")
    r.off = 4
    version = r.scalar(4, "version")
    if version != 3:
        raise ExportError(f"{path}: GGUF version {version}, this checker reads 3")
    n_tensors = r.scalar(10, "tensor count")
    n_kv = r.scalar(10, "metadata count")
    kv, kv_types = {}, {}
    for i in range(n_kv):
        key = r.string(f"key {i}")
        t = r.scalar(4, f"type of {key}")
        if key in kv:
            raise ExportError(f"{path}: duplicate key {key}")
        kv[key] = r.value(t, key)
        kv_types[key] = t
    infos = []
    for i in range(n_tensors):
        name = r.string(f"tensor {i} name")
        nd = r.scalar(4, f"{name} n_dims")
        if nd < 1 or nd > 4:
            raise ExportError(f"{path}: tensor {name}: {nd} dimensions (ggml allows 1 to 4)")
        ne = [r.scalar(10, f"{name} ne[{j}]") for j in range(nd)]
        typ = r.scalar(4, f"{name} type")
        off = r.scalar(10, f"{name} offset")
        infos.append((name, ne, typ, off))
    align = kv.get("general.alignment", 32)
    if kv_types.get("general.alignment", 4) != 4 or align == 0 or align & (align - 1):
        raise ExportError(f"{path}: general.alignment {align!r} is not a uint32 power of two")
    data_start = (r.off + align - 1) // align * align
    tensors, spans = {}, []
    for name, ne, typ, off in infos:
        if name in tensors:
            raise ExportError(f"{path}: duplicate tensor {name}")
        if typ not in GGML_TYPES:
            raise ExportError(f"{path}: tensor {name}: ggml type {typ} (this checker runs F32, F16, BF16, Q8_0, Q4_0)")
        tname, size = GGML_TYPES[typ]
        if off % align:
            raise ExportError(f"{path}: tensor {name}: offset {off} is not a multiple of the alignment {align}")
        if tname in ("Q8_0", "Q4_0") and ne[0] % 32:
            raise ExportError(f"{path}: tensor {name}: {tname} rows of {ne[0]} values are not whole 32-value blocks")
        nbytes = int(math.prod(ne) * size)
        start = data_start + off
        if start + nbytes > len(data):
            raise ExportError(f"{path}: tensor {name}: bytes [{start}, {start + nbytes}) past the end ({len(data)})")
        spans.append((off, off + nbytes, name))
        tensors[name] = (tname, ne, start, nbytes)
    spans.sort()
    for (a0, a1, an), (b0, _b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ExportError(f"{path}: tensors {an} and {bn} overlap")
    return data, kv, kv_types, tensors


def tensor_f32(data, t):
    tname, ne, start, nbytes = t
    n = math.prod(ne)
    if tname == "F32":
        a = np.frombuffer(data, dtype="<f4", count=n, offset=start)
    elif tname == "F16":
        a = np.frombuffer(data, dtype="<f2", count=n, offset=start).astype(np.float32)
    elif tname == "Q8_0":
        # ggml's block_q8_0: a float16 scale d, then 32 int8 q; x = d*q.
        blocks = np.frombuffer(data, dtype=np.uint8, count=n // 32 * 34, offset=start).reshape(-1, 34)
        d = blocks[:, :2].copy().view("<f2").astype(np.float32)
        q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
        a = (d * q).reshape(-1)
    elif tname == "Q4_0":
        # ggml's block_q4_0: a float16 scale d, then 16 bytes of nibbles: the
        # block's first 16 values in the low nibbles, the last 16 in the high
        # ones; x = d*(q - 8).
        blocks = np.frombuffer(data, dtype=np.uint8, count=n // 32 * 18, offset=start).reshape(-1, 18)
        d = blocks[:, :2].copy().view("<f2").astype(np.float32)
        qs = blocks[:, 2:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8
        a = (d * q).reshape(-1)
    else:
        a = (np.frombuffer(data, dtype="<u2", count=n, offset=start).astype(np.uint32) << 16).view(np.float32)
    # ne is innermost first; a row-major numpy array has the reverse shape.
    return a.reshape(list(reversed(ne)))


def get(kv, key, required=True, default=None):
    if key not in kv:
        if required:
            raise ExportError(f"missing metadata key {key}")
        return default
    return kv[key]


def int_or_arr(kv, kv_types, key, n_layer, required=True, default=None):
    """llama.cpp's get_key_or_arr: one integer, or an array of n_layer."""
    if key not in kv:
        if required:
            raise ExportError(f"missing metadata key {key}")
        return default
    v, t = kv[key], kv_types[key]
    if t == T_ARRAY:
        _, et, arr = v
        if et not in INT_TYPES or len(arr) != n_layer:
            raise ExportError(f"{key}: array of {len(arr)} {TYPE_NAMES.get(et)}, want {n_layer} integers")
        return [int(x) for x in arr]
    if t not in INT_TYPES:
        raise ExportError(f"{key}: type {TYPE_NAMES.get(t)}, want an integer")
    return [int(v)] * n_layer


def hparams(kv, kv_types):
    arch = get(kv, "general.architecture")
    if arch != "llama":
        raise ExportError(f"general.architecture {arch!r}, not llama")
    hp = {}
    for k in ("context_length", "embedding_length", "block_count"):
        key = "llama." + k
        if kv_types.get(key) not in INT_TYPES:
            raise ExportError(f"{key}: missing or not an integer")
        hp[k] = int(kv[key])
    n = hp["block_count"]
    hp["n_ff"] = int_or_arr(kv, kv_types, "llama.feed_forward_length", n)
    hp["n_head"] = int_or_arr(kv, kv_types, "llama.attention.head_count", n)
    hp["n_head_kv"] = int_or_arr(kv, kv_types, "llama.attention.head_count_kv", n)
    if kv_types.get("llama.attention.layer_norm_rms_epsilon") != 6:
        raise ExportError("llama.attention.layer_norm_rms_epsilon: missing or not float32")
    hp["eps"] = float(np.float32(kv["llama.attention.layer_norm_rms_epsilon"]))
    # n_embd_head_k defaults to n_embd / n_head (of layer 0).
    hd = kv.get("llama.attention.key_length", hp["embedding_length"] // hp["n_head"][0])
    hdv = kv.get("llama.attention.value_length", hd)
    if hd != hdv:
        raise ExportError(f"key_length {hd} != value_length {hdv}")
    hp["head_dim"] = int(hd)
    if "llama.rope.dimension_count" not in kv:
        raise ExportError("missing metadata key llama.rope.dimension_count")
    n_rot = int(kv["llama.rope.dimension_count"])
    if n_rot != hp["head_dim"]:
        # llama.cpp: "invalid n_rot" for LLM_ARCH_LLAMA.
        raise ExportError(f"llama.rope.dimension_count {n_rot} != head size {hp['head_dim']}")
    hp["freq_base"] = float(kv.get("llama.rope.freq_base", 10000.0))
    # llama.cpp: freq_scale = 1/factor for linear scaling (0 = none).
    stype = kv.get("llama.rope.scaling.type", "linear")
    factor = float(kv.get("llama.rope.scaling.factor", kv.get("llama.rope.scale_linear", 0.0)))
    if stype not in ("none", "linear"):
        raise ExportError(f"llama.rope.scaling.type {stype!r} not implemented by this checker")
    hp["freq_scale"] = 1.0 / factor if (stype == "linear" and factor != 0) else 1.0
    for i in range(n):
        if hp["n_head"][i] % hp["n_head_kv"][i]:
            raise ExportError(f"layer {i}: head_count {hp['n_head'][i]} not a multiple of head_count_kv {hp['n_head_kv'][i]}")
    return hp


def vocab(kv, kv_types):
    model = get(kv, "tokenizer.ggml.model")
    if model != "llama":
        raise ExportError(f"tokenizer.ggml.model {model!r}: this checker runs SentencePiece ('llama') vocabularies")
    toks = get(kv, "tokenizer.ggml.tokens")
    if not (isinstance(toks, tuple) and toks[1] == T_STRING):
        raise ExportError("tokenizer.ggml.tokens is not an array of strings")
    pieces = toks[2]
    n = len(pieces)
    scores = get(kv, "tokenizer.ggml.scores")
    if not (isinstance(scores, tuple) and scores[1] == 6 and len(scores[2]) == n):
        raise ExportError(f"tokenizer.ggml.scores: want {n} float32")
    ttype = get(kv, "tokenizer.ggml.token_type")
    if not (isinstance(ttype, tuple) and ttype[1] == 5 and len(ttype[2]) == n):
        raise ExportError(f"tokenizer.ggml.token_type: want {n} int32")
    ids = {}
    for k in ("bos_token_id", "eos_token_id"):
        key = "tokenizer.ggml." + k
        if kv_types.get(key) not in INT_TYPES:
            raise ExportError(f"{key}: missing or not an integer")
        ids[k] = int(kv[key])
        if not 0 <= ids[k] < n:
            raise ExportError(f"{key} {ids[k]} outside the {n}-token vocabulary")
    return pieces, [int(t) for t in ttype[2]], ids["bos_token_id"], ids["eos_token_id"]


def runc_pieces(pieces, types, bos, eos):
    """The file's vocabulary as llama2.c's tokenizer.bin spells it (what
    run.c prints): llama.cpp's SPM token_to_piece for normal tokens (U+2581
    -> space), byte tokens kept as <0xXX> for run.c's decode(), BOS and EOS
    as llama2.c's export writes them."""
    out = []
    for i, (p, t) in enumerate(zip(pieces, types)):
        if t == TOKEN_BYTE:
            out.append(p.encode("utf-8"))
        else:
            out.append(runc_text.llama2c_piece(p, i, bos, eos))
    return out


def check_tensors(tensors, hp, n_vocab):
    """llama.cpp's create_tensor for LLM_ARCH_LLAMA: names, ne, types."""
    E, hd = hp["embedding_length"], hp["head_dim"]
    want = {"token_embd.weight": [E, n_vocab], "output_norm.weight": [E]}
    optional = {"output.weight": [E, n_vocab]}
    for i in range(hp["block_count"]):
        q, kvd, ff = hd * hp["n_head"][i], hd * hp["n_head_kv"][i], hp["n_ff"][i]
        b = f"blk.{i}."
        want.update({
            b + "attn_norm.weight": [E], b + "attn_q.weight": [E, q], b + "attn_k.weight": [E, kvd],
            b + "attn_v.weight": [E, kvd], b + "attn_output.weight": [q, E], b + "ffn_norm.weight": [E],
            b + "ffn_gate.weight": [E, ff], b + "ffn_down.weight": [ff, E], b + "ffn_up.weight": [E, ff],
        })
    errs = []
    missing = sorted(set(want) - set(tensors))
    if missing:
        errs.append(f"missing tensors: {missing}")
    extra = sorted(set(tensors) - set(want) - set(optional))
    if extra:
        # llama.cpp: "wrong number of tensors; expected N, got M".
        errs.append(f"tensors llama.cpp does not create (it counts and refuses them): {extra}")
    for name, shape in {**want, **optional}.items():
        if name not in tensors:
            continue
        tname, ne = tensors[name][0], tensors[name][1]
        if ne != shape:
            errs.append(f"{name}: ne {ne}, llama.cpp wants {shape}")
        if len(shape) == 1 and tname != "F32":
            errs.append(f"{name}: 1-D tensor stored as {tname}, llama.cpp's converters keep norms F32")
    if errs:
        raise ExportError("tensor check fails:\n  " + "\n  ".join(errs))


def round_to(x, tname):
    """ggml's CPU mul_mat converts src1 (activations) to the weight's
    vec_dot type: F16 weights multiply F16-rounded activations."""
    if tname == "F16":
        return x.astype(np.float16).astype(np.float32)
    if tname in ("Q8_0", "Q4_0"):
        # Q8_0 and Q4_0 weights multiply Q8_0-quantized activations (ggml's AVX2
        # quantize_row_q8_0: id = 127/amax, round half to even, d as F16).
        b = x.astype(np.float32).reshape(-1, 32)
        amax = np.abs(b).max(axis=1, keepdims=True)
        idv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
        q = np.round(b * idv)
        d = (amax / np.float32(127)).astype(np.float16).astype(np.float32)
        return (q * d).reshape(x.shape).astype(np.float32)
    if tname == "BF16":
        u = x.astype(np.float32).view(np.uint32)
        # ggml_compute_fp32_to_bf16: round to nearest even (NaN kept quiet).
        u = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) << 16
        return u.astype(np.uint32).view(np.float32)
    return x


class LlamaCpp:
    """llm_build_llama, one token at a time with a KV cache, in float32."""

    def __init__(self, data, tensors, hp, ggml_rounding):
        self.hp = hp
        self.ggml_rounding = ggml_rounding
        # llama_context_params' default cache_type_k/v is F16.
        self.cache_type = "F16" if ggml_rounding else "F32"
        self.w = {n: tensor_f32(data, t) for n, t in tensors.items()}
        self.types = {n: t[0] for n, t in tensors.items()}
        self.out_name = "output.weight" if "output.weight" in tensors else "token_embd.weight"
        self.k_cache = [[] for _ in range(hp["block_count"])]
        self.v_cache = [[] for _ in range(hp["block_count"])]

    def rms_norm(self, x, name):
        # ggml_rms_norm: sum in ggml_float (double), scale = 1/sqrt(mean + eps)
        mean = np.float32(np.sum(x.astype(np.float64) ** 2) / x.size)
        scale = np.float32(1.0) / np.sqrt(mean + np.float32(self.hp["eps"]))
        return (x * scale).astype(np.float32) * self.w[name]

    def matmul(self, name, x):
        # ggml weight ne = [in, out]: numpy shape [out, in]
        if self.ggml_rounding:
            x = round_to(x, self.types[name])
        return (self.w[name] @ x).astype(np.float32)

    def rope(self, x, pos, n_heads):
        """ggml_rope_ext, mode 0 (normal): pairs (2i, 2i+1), theta computed
        as ggml does, theta_scale^i by repeated float multiplication."""
        hd = self.hp["head_dim"]
        theta_scale = np.float32(self.hp["freq_base"] ** (-2.0 / hd))
        freq_scale = np.float32(self.hp["freq_scale"])
        theta = np.float32(pos)
        thetas = np.empty(hd // 2, dtype=np.float32)
        for i in range(hd // 2):
            thetas[i] = freq_scale * theta  # rope_yarn, ext_factor 0
            theta = np.float32(theta * theta_scale)
        cos, sin = np.cos(thetas).astype(np.float32), np.sin(thetas).astype(np.float32)
        x = x.reshape(n_heads, hd // 2, 2)
        x0, x1 = x[..., 0], x[..., 1]
        out = np.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
        return out.reshape(n_heads, hd).astype(np.float32)

    def step(self, tok, pos):
        hp, w = self.hp, self.w
        hd = hp["head_dim"]
        x = w["token_embd.weight"][tok].astype(np.float32)
        for i in range(hp["block_count"]):
            b = f"blk.{i}."
            nh, nkv = hp["n_head"][i], hp["n_head_kv"][i]
            cur = self.rms_norm(x, b + "attn_norm.weight")
            q = self.rope(self.matmul(b + "attn_q.weight", cur), pos, nh)
            k = self.rope(self.matmul(b + "attn_k.weight", cur), pos, nkv)
            v = self.matmul(b + "attn_v.weight", cur).reshape(nkv, hd)
            self.k_cache[i].append(round_to(k, self.cache_type))
            self.v_cache[i].append(round_to(v, self.cache_type))
            K = np.stack(self.k_cache[i], axis=1)  # [nkv, T, hd]
            V = np.stack(self.v_cache[i], axis=1)
            # GQA broadcast: query head h reads KV head h // (nh / nkv).
            kvh = np.arange(nh) // (nh // nkv)
            # kq = mul_mat(K, Q): Q meets an F16 cache as F16.
            kq = np.einsum("hd,htd->ht", round_to(q, self.cache_type), K[kvh]).astype(np.float32)
            kq = kq * np.float32(1.0 / math.sqrt(hd))  # soft_max_ext's scale
            kq = kq - kq.max(axis=-1, keepdims=True)
            p = np.exp(kq)
            p = (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)
            # kqv = mul_mat(V^T, kq): the probabilities meet V as F16.
            o = np.einsum("ht,htd->hd", round_to(p, self.cache_type), V[kvh]).reshape(nh * hd).astype(np.float32)
            x = x + self.matmul(b + "attn_output.weight", o)
            cur = self.rms_norm(x, b + "ffn_norm.weight")
            g = self.matmul(b + "ffn_gate.weight", cur)
            u = self.matmul(b + "ffn_up.weight", cur)
            act = (g / (np.float32(1) + np.exp(-g)) * u).astype(np.float32)
            x = x + self.matmul(b + "ffn_down.weight", act)
        x = self.rms_norm(x, "output_norm.weight")
        return self.matmul(self.out_name, x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", help="GGUF file")
    ap.add_argument("--expected", help="file with the expected run.c greedy output")
    ap.add_argument("--steps", type=int, default=200, help="positions to run, as run.c's -n (default 200)")
    ap.add_argument("--out", default="", help="also write the generated text here ('-' for stdout)")
    ap.add_argument("--precision", choices=("ggml", "f32"), default="ggml",
                    help="ggml: round as llama.cpp's CPU backend does by default (F16 KV cache, operands "
                         "of F16/BF16 products rounded); f32: compute everything in float32")
    ap.add_argument("--allow-nonuniform", action="store_true",
                    help="run a model whose layers differ in size (llama.cpp's llama architecture refuses it)")
    a = ap.parse_args()
    try:
        data, kv, kv_types, tensors = parse(a.file)
        hp = hparams(kv, kv_types)
        pieces, types, bos, eos = vocab(kv, kv_types)
        n_vocab = len(pieces)
        if "llama.vocab_size" in kv and int(kv["llama.vocab_size"]) != n_vocab:
            raise ExportError(f"llama.vocab_size {kv['llama.vocab_size']} != {n_vocab} tokens")
        check_tensors(tensors, hp, n_vocab)
        ftype = kv.get("general.file_type")
        print(f"gguf v3: {len(kv)} keys, {len(tensors)} tensors, file_type {ftype}, types "
              f"{sorted({t[0] for t in tensors.values()})}")
        print(f"hparams: ctx {hp['context_length']}, embd {hp['embedding_length']}, blocks {hp['block_count']}, "
              f"heads {hp['n_head']}/{hp['n_head_kv']} x {hp['head_dim']}, ffn {hp['n_ff']}, eps {hp['eps']}, "
              f"base {hp['freq_base']}, freq_scale {hp['freq_scale']}")
        print(f"vocab: {n_vocab} tokens, bos {bos}, eos {eos}; output: "
              f"{'output.weight' if 'output.weight' in tensors else 'token_embd.weight (tied)'}")
        if any(len(set(hp[k])) > 1 for k in ("n_head", "n_head_kv", "n_ff")):
            # LLM_ARCH_LLAMA's create_tensors sizes every layer from
            # layer 0's hparams, so other layers' shapes fail to load.
            msg = "per-layer sizes differ; llama.cpp's llama architecture creates every layer with layer 0's sizes"
            if not a.allow_nonuniform:
                raise ExportError(msg + " (--allow-nonuniform runs it anyway)")
            print("note:", msg)
        if a.steps > hp["context_length"]:
            raise ExportError(f"--steps {a.steps} exceeds llama.context_length {hp['context_length']}")
    except (ExportError, OSError, ValueError) as e:
        msg = str(e)
        print(f"FAIL structure: {msg if msg.startswith(a.file) else a.file + ': ' + msg}")
        return 2
    model = LlamaCpp(data, tensors, hp, a.precision == "ggml")
    pieces_c = runc_pieces(pieces, types, bos, eos)

    def next_logits(ids):
        # Incremental: feed only the newest token at its position.
        return model.step(ids[-1], len(ids) - 1)

    with np.errstate(over="ignore"):
        text, toks = runc_text.generate(next_logits, pieces_c, a.steps, bos)
    print(f"generated {len(toks) - 1} tokens")
    runc_text.emit(text, a.out)
    if a.expected:
        return runc_text.compare(text, a.expected, f"gguf {a.file}")
    if a.out != "-":
        print(text.decode("utf-8", "replace"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
