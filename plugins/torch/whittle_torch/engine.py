"""What every rank computes: the Backend methods on one rank of a
torch.distributed group (or alone).

Every rank holds every loaded model (replicated weights, as DDP wants; under
FSDP2 each layer's parameters are sharded). Statistics and evaluation split
the sequences (or options) across ranks and all-reduce the sums the results
are built from, so they equal the single-process sums. Training splits each
micro-batch's rows across ranks; each rank's loss is its share of the
micro-batch's token sum divided by the micro-batch's scored-token count,
scaled by the world size because DDP (and FSDP2) average gradients: the
synchronized gradient is then the single-process one. AdamW's state is
sharded by ZeroRedundancyOptimizer (ZeRO-1) or FSDP2.
"""

import hashlib
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from . import gorand
from .model import (LORA_ROLES, NAME_CLASSIFIER, ConfigError, Decoder, join_fused, load_dir, split_experts,
                    write_safetensors)

VERSION = "0.1.0"
CHECKPOINT_PREFIX = "train.rank"


class BadRequest(ValueError):
    pass


# --- request rules (core/backend: TrainRequest.Resolve, GenerateRequest.Check)

def _finite_at_least(v, lo):
    return isinstance(v, (int, float)) and v >= lo and not math.isinf(v) and v == v


def resolve_train(r):
    """backend.TrainRequest.Resolve: the same rules and words."""
    r = dict(r)
    steps, bs, accum = r.get("steps", 0), r.get("batch_size", 0), r.get("grad_accum", 0)
    ev, ce = r.get("eval_every", 0), r.get("checkpoint_every", 0)
    if steps <= 0:
        raise BadRequest("steps %d must be positive" % steps)
    if bs <= 0:
        raise BadRequest("batch_size %d must be positive" % bs)
    if accum < 0:
        raise BadRequest("negative grad_accum %d" % accum)
    if ev < 0 or ce < 0:
        raise BadRequest("negative eval_every %d or checkpoint_every %d" % (ev, ce))
    if r.get("teacher") and r.get("teacher") == r.get("model"):
        raise BadRequest("the teacher %s is the model being trained; load it a second time" % r["teacher"])
    r["grad_accum"] = accum or 1
    loss = dict(r.get("loss") or {})
    aux = loss.get("router_aux_weight", 0.0)
    if not _finite_at_least(aux, 0):
        raise BadRequest("router_aux_weight %g must be a finite non-negative number" % aux)
    kl_weight = 0.0
    obj = r.get("objective")
    if obj == "ce":
        loss = {"router_aux_weight": aux} if aux else {}
    elif obj == "kl":
        if not r.get("teacher"):
            raise BadRequest("objective kl needs a teacher")
        w, t, k = loss.get("ce_weight", 0.0), loss.get("temperature", 0.0), loss.get("top_k", 0)
        if not (0 <= w <= 1):
            raise BadRequest("ce_weight %g outside [0, 1]" % w)
        if not _finite_at_least(t, 0):
            raise BadRequest("temperature %g must be a finite positive number (0 = 1)" % t)
        if k < 0:
            raise BadRequest("negative top_k %d" % k)
        loss["temperature"] = t or 1.0
        kl_weight = 1 - w
    else:
        raise BadRequest("unknown objective %r (want ce or kl)" % obj)
    r["loss"] = loss
    o = dict(r.get("optim") or {})
    lr = o.get("lr", 0)
    if not (lr > 0) or math.isinf(lr):
        raise BadRequest("learning rate %g must be a finite positive number" % lr)
    if not _finite_at_least(o.get("min_lr", 0), 0):
        raise BadRequest("min_lr %g must be a finite non-negative number" % o.get("min_lr", 0))
    if o.get("warmup_steps", 0) < 0:
        raise BadRequest("negative warmup_steps %d" % o["warmup_steps"])
    if not _finite_at_least(o.get("grad_clip", 0), 0):
        raise BadRequest("grad_clip %g must be a finite non-negative number (0 = none)" % o["grad_clip"])
    if not _finite_at_least(o.get("weight_decay", 0), 0):
        raise BadRequest("weight_decay %g must be a finite non-negative number" % o["weight_decay"])
    b1, b2 = o.get("beta1", 0), o.get("beta2", 0)
    if not (0 <= b1 < 1) or not (0 <= b2 < 1):
        raise BadRequest("AdamW betas %g, %g must be in [0, 1) (0 = PyTorch's 0.9, 0.999)" % (b1, b2))
    if not _finite_at_least(o.get("eps", 0), 0):
        raise BadRequest("AdamW eps %g must be a finite non-negative number (0 = 1e-08)" % o["eps"])
    o["beta1"], o["beta2"], o["eps"] = b1 or 0.9, b2 or 0.999, o.get("eps") or 1e-8
    for k in ("min_lr", "warmup_steps", "weight_decay", "grad_clip"):
        o.setdefault(k, 0)
    r["optim"] = o
    mode = r.get("mode") or ""
    if mode not in ("full", "", "norm-only", "lora"):
        raise BadRequest("unknown mode %r (want full, norm-only or lora)" % mode)
    if mode != "lora" and r.get("lora") is not None:
        raise BadRequest("lora settings given for mode %r" % mode)
    r["mode"] = mode or "full"
    adapters = None
    if r["mode"] == "lora":
        lc = dict(r.get("lora") or {})
        rank, alpha = lc.get("rank", 0), lc.get("alpha", 0.0)
        if rank < 0:
            raise BadRequest("negative lora rank %d" % rank)
        rank = rank or 8
        alpha = alpha or float(rank)
        targets = lc.get("targets") or [s for s, _ in LORA_ROLES]
        roles = []
        for t in targets:
            role = dict(LORA_ROLES).get(t)
            if role is None:
                raise BadRequest("unknown lora target %r (want some of %s)" % (t, ", ".join(s for s, _ in LORA_ROLES)))
            if role in roles:
                raise BadRequest("lora target %r listed twice" % t)
            roles.append(role)
        adapters = {"rank": rank, "alpha": alpha, "roles": roles}
        r["lora"] = {"rank": rank, "alpha": alpha, "targets": [s for s, ro in LORA_ROLES if ro in roles]}
    return r, kl_weight, adapters


def lr_at(o, step, total):
    """engine.Schedule.At: linear warm-up, cosine decay to min_lr."""
    lr, lo, w = o["lr"], o["min_lr"], o["warmup_steps"]
    if step < w:
        return lr * (step + 1) / w
    if total <= w:
        return lr
    p = min(1.0, (step - w) / (total - w))
    return lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * p))


# --- data

class Sequences:
    """core/backend/batch.Sequences: an .npy int32 [N, L] token array and
    an optional uint8 mask of the positions that count as targets."""

    def __init__(self, s, vocab, max_seq):
        path = s.get("path") or ""
        if not path:
            raise BadRequest("sequences: no path")
        limit = s.get("limit", 0)
        if limit < 0:
            raise BadRequest("%s: negative limit %d" % (path, limit))
        try:
            tok = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise BadRequest("%s: %s" % (path, e))
        if tok.ndim != 2:
            raise BadRequest("%s: token array has shape %s, want [sequences, length]" % (path, list(tok.shape)))
        self.path = path
        self.rows, self.cols = tok.shape
        if limit > 0:
            self.rows = min(self.rows, limit)
        if self.rows == 0 or self.cols == 0:
            raise BadRequest("%s: no tokens (shape %s, limit %d)" % (path, list(tok.shape), limit))
        if max_seq > 0 and self.cols > max_seq:
            raise BadRequest("%s: sequences of %d tokens exceed the model's %d positions" % (path, self.cols, max_seq))
        # Memory-mapped: a batch reads its rows (and checks their tokens)
        # when it is made, as core/backend/batch does.
        self.tok = tok
        self.vocab = vocab
        self.mask = None
        mp = s.get("mask_path") or ""
        if mp:
            try:
                m = np.load(mp, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise BadRequest("%s: %s" % (mp, e))
            if m.ndim != 2 or m.shape[0] != tok.shape[0] or m.shape[1] != self.cols:
                raise BadRequest("%s: mask shape %s differs from the tokens' %s (%s)" % (mp, list(m.shape), list(tok.shape), path))
            self.mask = m

    def batch(self, rows):
        """Tokens [n, L] and next-token targets [n, L] (-1: not scored)."""
        rows = np.asarray(rows, dtype=np.int64) % self.rows
        tok = np.asarray(self.tok[rows], dtype=np.int64).reshape(len(rows), self.cols)
        bad = np.argwhere((tok < 0) | (tok >= self.vocab))
        if bad.size:
            i, j = bad[0]
            raise BadRequest("%s: row %d position %d: token %d outside vocabulary of %d" % (
                self.path, rows[i], j, tok[i, j], self.vocab))
        tg = np.full_like(tok, -1)
        tg[:, :-1] = tok[:, 1:]
        if self.mask is not None:
            m = np.asarray(self.mask[rows]).reshape(len(rows), self.cols)
            tg[:, :-1][m[:, 1:] == 0] = -1
        return tok, tg


def new_option(ctx, cont, vocab, max_seq):
    """batch.NewOption: context + continuation, cut on the left to
    max_seq+1 tokens as lm-evaluation-harness does."""
    if not ctx:
        raise BadRequest("empty context (it needs at least BOS)")
    if not cont:
        raise BadRequest("empty continuation")
    allt = list(ctx) + list(cont)
    for t in allt:
        if t < 0 or t >= vocab:
            raise BadRequest("token %d outside vocabulary of %d" % (t, vocab))
    first = len(ctx) - 1
    if max_seq > 0 and len(allt) > max_seq + 1:
        if len(cont) > max_seq:
            raise BadRequest("continuation of %d tokens does not fit the model's %d positions" % (len(cont), max_seq))
        cut = len(allt) - (max_seq + 1)
        allt, first = allt[cut:], first - cut
    return allt, first, len(cont)


# --- losses

def token_terms(z, tg, zt=None, tau=1.0, top_k=0, need_ce=True):
    """Per scored position: cross-entropy at temperature 1 (None unless
    need_ce) and, with teacher logits zt, KL(teacher^tau (top-k
    renormalized) || student^tau). z, zt: [N, V]; tg: [N] (all scored)."""
    ce = F.cross_entropy(z, tg, reduction="none") if need_ce else None
    if zt is None:
        return ce, None
    lq = F.log_softmax(z / tau, dim=-1)
    zt = zt.to(z.dtype)
    if 0 < top_k < zt.shape[-1]:
        vals, ids = torch.topk(zt, top_k, dim=-1)
        lp = F.log_softmax(vals / tau, dim=-1)
        kl = (lp.exp() * (lp - lq.gather(-1, ids))).sum(-1)
    else:
        lp = F.log_softmax(zt / tau, dim=-1)
        kl = (lp.exp() * (lp - lq)).sum(-1)
    return ce, kl


class LoRA:
    """Adapters: A [rank, in] (drawn as the CPU backend draws them), B
    [out, rank] at zero; y += scale * B A x."""

    def __init__(self, cfg, a, seed, device):
        self.rank, self.alpha = a["rank"], a["alpha"]
        self.scale = float(np.float32(self.alpha / self.rank))
        self.keys, shapes = [], []
        d = cfg["hidden"]
        for i, lc in enumerate(cfg["layers"]):
            q, kv = lc["heads"] * lc["head_dim"], lc["kv_heads"] * lc["head_dim"]
            io = {"q": (q, d), "k": (kv, d), "v": (kv, d), "o": (d, q), "gate": (lc["mlp"], d), "up": (lc["mlp"], d),
                  "down": (d, lc["mlp"])}
            for _, role in LORA_ROLES:
                if lc.get("experts", 0) > 0 and role in ("gate", "up", "down"):
                    continue  # a mixture of experts has no dense MLP matrices to adapt (engine.NewLoRA)
                if role in a["roles"]:
                    out, fan_in = io[role]
                    self.keys.append((i, role, out, fan_in))
                    shapes.append((self.rank, fan_in))
        init = gorand.lora_init(seed, shapes)
        self.params = torch.nn.ParameterList()
        self.index = {}
        for (i, role, out, fan_in), av in zip(self.keys, init):
            pa = torch.nn.Parameter(torch.from_numpy(av).to(device))
            pb = torch.nn.Parameter(torch.zeros(out, self.rank, device=device))
            self.index[(i, role)] = len(self.params)
            self.params.append(pa)
            self.params.append(pb)

    def get(self, i, role):
        k = self.index.get((i, role))
        if k is None:
            return None
        return self.params[k], self.params[k + 1], self.scale

    def merge(self, model):
        with torch.no_grad():
            for (i, role, _, _) in self.keys:
                a, b, s = self.get(i, role)
                lay = model.model.layers[i]
                mod = lay.self_attn if role in ("q", "k", "v", "o") else lay.mlp
                w = getattr(mod, role + "_proj").weight
                delta = (s * (b @ a)).to(w.dtype)
                if hasattr(w, "device_mesh"):  # an FSDP2 shard
                    from .dist import distribute_like
                    delta = distribute_like(delta, w)
                w.add_(delta)


class Entry:
    def __init__(self, mid, src, raw, cfg, model, trainable):
        self.id, self.src, self.raw, self.cfg, self.model, self.trainable = mid, src, raw, cfg, model, trainable
        self.hash = None

    def weights_hash(self):
        if self.hash is None:
            h = hashlib.sha256()
            for n, p in sorted(self.model.weights().items()):
                h.update(n.encode())
                h.update(_full(p).detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self.hash = h.hexdigest()
        return self.hash


def _full(p):
    """A parameter's whole value (FSDP2 shards are DTensors)."""
    if hasattr(p, "full_tensor"):
        return p.full_tensor()
    return p


def _moe_stats(acc, off, lc, rec, B, T):
    """Adds a MoE layer's statistics of B sequences of T tokens into acc
    from off (plugins/cpu stats.go addMoE): each expert's neurons
    aggregated as the dense MLP's over the tokens routed to it (a
    sequence's mean over its tokens routed to e, squared, summed over the
    sequences that route any), the router probabilities summed over
    tokens, the norms of the weighted expert outputs, the routed tokens,
    the shared expert's neurons as the dense MLP's."""
    E, m, sh = lc["experts"], lc["expert_mlp"], lc["shared_mlp"]
    key = rec["experts"] * B + torch.div(rec["rows"], T, rounding_mode="floor")
    sums = torch.zeros(E * B, m, dtype=torch.float64, device=acc.device)
    sums.index_add_(0, key, rec["act"].abs().double())
    cnt = torch.bincount(key, minlength=E * B).double()
    mean = sums / cnt.clamp(min=1)[:, None]
    acc[off:off + E * m] += mean.pow(2).view(E, B, m).sum(1).reshape(-1)
    off += E * m
    acc[off:off + E] += rec["probs"].double().sum(0)
    norms = torch.zeros(E, dtype=torch.float64, device=acc.device)
    norms.index_add_(0, rec["experts"], rec["out"].double().norm(dim=1))
    acc[off + E:off + 2 * E] += norms
    acc[off + 2 * E:off + 3 * E] += rec["counts"].double()
    off += 3 * E
    if sh:
        acc[off:off + sh] += rec["shared_act"].view(B, T, sh).abs().double().mean(1).pow(2).sum(0)


class Engine:
    """The backend on one rank. comm is dist.Comm (rank, world, collectives)."""

    def __init__(self, comm, device, strategy, threads=0, precision="fp32"):
        self.comm, self.device, self.strategy = comm, torch.device(device), strategy
        self.precision = precision
        self.models = {}
        self.next_id = 0
        self.mesh = None  # FSDP2's device mesh, made at the first load
        if threads > 0:
            torch.set_num_threads(threads)

    # --- models

    def model(self, mid):
        e = self.models.get(mid)
        if e is None:
            raise BadRequest("unknown model %r" % mid)
        return e

    def load(self, req):
        d = req.get("dir") or ""
        try:
            raw, cfg, tensors = load_dir(d)
        except (ConfigError, OSError, ValueError) as e:
            raise BadRequest(str(e))
        m = Decoder(cfg, tensors)
        if not req.get("trainable") and self.device.type == "cuda" and self.precision == "bf16":
            m = m.to(torch.bfloat16)  # a teacher or evaluated model, held cheaply (converted before it moves)
        m = m.to(self.device)
        m.eval()
        if self.strategy == "fsdp2":
            from . import dist
            dist.shard_fsdp2(self, m)
        self.next_id += 1
        mid = "torch-%d" % self.next_id
        self.models[mid] = Entry(mid, d, raw, cfg, m, bool(req.get("trainable")))
        return mid

    def release(self, mid):
        if self.models.pop(mid, None) is None:
            raise BadRequest("unknown model %r" % mid)
        return None

    def save(self, req):
        e = self.model(req.get("model", ""))
        dt = {"": torch.float32, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}.get(req.get("dtype") or "")
        if dt is None:
            raise BadRequest("unknown dtype %r (want f32, f16 or bf16)" % req.get("dtype"))
        # Every rank takes part (FSDP2 gathers shards); rank 0 writes.
        full = {n: _full(p).detach() for n, p in e.model.weights().items()}
        if e.cfg["tied"]:
            full.pop(NAME_CLASSIFIER, None)
        join_fused(e.cfg, full)  # Phi-3 stores q/k/v and gate/up fused
        split_experts(e.cfg, full)  # one tensor per expert, as Hugging Face stores them
        if self.comm.rank != 0:
            return None
        out = req.get("dir") or ""
        if not out:
            raise BadRequest("save: no directory")
        os.makedirs(out, exist_ok=True)
        raw = dict(e.raw)
        raw["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dt]
        with open(os.path.join(out, "config.json.tmp"), "w") as f:
            json.dump(raw, f, indent=2, sort_keys=True)
        os.replace(os.path.join(out, "config.json.tmp"), os.path.join(out, "config.json"))
        for extra in ("generation_config.json", "tokenizer.model", "tokenizer.bin", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json"):
            src = os.path.join(e.src, extra)
            if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(out, extra)):
                with open(src, "rb") as fi, open(os.path.join(out, extra), "wb") as fo:
                    fo.write(fi.read())
        for stale in ("model.safetensors.index.json",):
            p = os.path.join(out, stale)
            if os.path.exists(p):
                os.remove(p)
        write_safetensors(os.path.join(out, "model.safetensors"), full, dt)
        return None

    # --- helpers

    def _mine(self, n):
        """The indices [0, n) this rank handles: a contiguous share."""
        w, r = self.comm.world, self.comm.rank
        lo, hi = (n * r) // w, (n * (r + 1)) // w
        return range(lo, hi)

    def _batches(self, items, bs, n):
        """items (this rank's share of n) in batches of bs. Under FSDP2 every
        forward is a collective, so ranks with fewer batches get empty
        ones until all ranks have the same count."""
        out = [items[s:s + bs] for s in range(0, len(items), bs)]
        if self.strategy == "fsdp2" and self.comm.world > 1:
            w = self.comm.world
            most = max(-(-((n * (r + 1)) // w - (n * r) // w) // bs) for r in range(w))
            out += [[]] * (most - len(out))
        return out

    def _t(self, a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int64, device=self.device)

    def _forward(self, e, tok, **kw):
        m = e.model
        if self.device.type == "cuda" and self.precision == "bf16":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return m(tok, **kw).float()
        return m(tok, **kw).float()

    # --- statistics

    def stats(self, req):
        e = self.model(req.get("model", ""))
        cfg = e.cfg
        data = Sequences(req.get("data") or {}, cfg["vocab"], cfg["max_seq"])
        bs = req.get("batch_size") or 8
        want_act, want_bi = bool(req.get("activations")), bool(req.get("block_influence"))
        nl, d = len(cfg["layers"]), cfg["hidden"]
        sizes = []
        for lc in cfg["layers"]:
            sizes += [lc["mlp"], lc["heads"] * lc["head_dim"], d, d]
        # Mixtures of experts, after the cosines: per MoE layer the experts'
        # neurons [E, m], probabilities, outputs and tokens [E] each, the
        # shared expert's neurons.
        moe_off, moe_size = {}, sum(sizes) + nl
        for l, lc in enumerate(cfg["layers"]):
            if lc.get("experts", 0) > 0:
                moe_off[l] = moe_size
                moe_size += lc["experts"] * (lc["expert_mlp"] + 3) + lc["shared_mlp"]
        acc = torch.zeros(moe_size, dtype=torch.float64, device=self.device)
        mine = list(self._mine(data.rows))
        with torch.no_grad():
            for rows in self._batches(mine, bs, data.rows):
                tok, _ = data.batch(rows)
                acts = []
                self._forward(e, self._t(tok), acts=acts)
                off = 0
                for l, a in enumerate(acts):
                    for key in ("mlp_act", "attn_out", "attn_norm", "mlp_norm"):
                        if a[key] is None:
                            continue  # a MoE layer's MLP: below
                        v = a[key].abs().double().mean(1).pow(2).sum(0)
                        acc[off:off + v.numel()] += v
                        off += v.numel()
                    if a["moe"] is not None:
                        _moe_stats(acc, moe_off[l], cfg["layers"][l], a["moe"], len(rows), data.cols)
                for l, a in enumerate(acts):
                    x, y = a["in"].double(), a["out"].double()
                    cos = (x * y).sum(-1) / torch.sqrt((x * x).sum(-1) * (y * y).sum(-1))
                    acc[sum(sizes) + l] += cos.sum()
        self.comm.all_reduce(acc)
        acc = acc.cpu().numpy()
        tokens = data.rows * data.cols
        res = {"sequences": data.rows, "tokens": tokens}
        if want_act:
            mlp, heads, chans, hidden = [], [], [], np.zeros(d)
            off = 0
            for lc in cfg["layers"]:
                m = acc[off:off + lc["mlp"]]
                off += lc["mlp"]
                c = acc[off:off + lc["heads"] * lc["head_dim"]]
                off += lc["heads"] * lc["head_dim"]
                n1, n2 = acc[off:off + d], acc[off + d:off + 2 * d]
                off += 2 * d
                mlp.append(np.sqrt(m).tolist() if not lc.get("experts") else None)
                ch = np.sqrt(c)
                chans.append(ch.tolist())
                heads.append(np.sqrt((ch.reshape(lc["heads"], lc["head_dim"]) ** 2).sum(1)).tolist())
                hidden += np.sqrt(n1) + np.sqrt(n2)
            res.update(mlp=mlp, head_channels=chans, heads=heads, hidden=hidden.tolist())
            if moe_off:
                em, ep, eo, et, sm = ([None] * nl for _ in range(5))
                for l, o in moe_off.items():
                    lc = cfg["layers"][l]
                    E, m, sh = lc["experts"], lc["expert_mlp"], lc["shared_mlp"]
                    em[l] = np.sqrt(acc[o:o + E * m]).reshape(E, m).tolist()
                    o += E * m
                    ep[l] = acc[o:o + E].tolist()
                    eo[l] = acc[o + E:o + 2 * E].tolist()
                    et[l] = [int(round(v)) for v in acc[o + 2 * E:o + 3 * E]]
                    o += 3 * E
                    if sh:
                        sm[l] = np.sqrt(acc[o:o + sh]).tolist()
                res.update(expert_mlp=em, expert_prob=ep, expert_output=eo, expert_tokens=et, shared_mlp=sm)
        if want_bi:
            res["block_influence"] = (1 - acc[sum(sizes):sum(sizes) + nl] / tokens).tolist()
        return res

    # --- evaluation

    def _lm_sums(self, e, data, bs, skip=None, teacher=None, lora=None):
        """Summed NLL, KL to the teacher (temperature 1, full vocabulary)
        and scored tokens over data, all-reduced."""
        acc = torch.zeros(3, dtype=torch.float64, device=self.device)
        mine = list(self._mine(data.rows))
        with torch.no_grad():
            for rows in self._batches(mine, bs, data.rows):
                tok, tg = data.batch(rows)
                t = self._t(tok)
                z = self._forward(e, t, skip=skip, lora=lora)
                tgt = self._t(tg)
                sel = tgt >= 0
                zt = None
                if teacher is not None:
                    zt = self._forward(teacher, t)[sel]
                ce, kl = token_terms(z[sel], tgt[sel], zt)
                acc[0] += ce.double().sum()
                if kl is not None:
                    acc[1] += kl.double().sum()
                acc[2] += sel.sum()
        self.comm.all_reduce(acc)
        return acc.tolist()

    def _score(self, e, opts, bs, skip=None):
        """batch.ScoreOptions: each option's summed continuation NLL and
        whether greedy decoding reproduces it; options split across ranks."""
        n = len(opts)
        nll = torch.zeros(n, dtype=torch.float64, device=self.device)
        greedy = torch.zeros(n, dtype=torch.float64, device=self.device)
        order = sorted(range(n), key=lambda i: -len(opts[i][0]))
        mine = order[self.comm.rank::self.comm.world]
        batches = [mine[s:s + bs] for s in range(0, len(mine), bs)]
        if self.strategy == "fsdp2" and self.comm.world > 1:
            most = -(-len(order[0::self.comm.world]) // bs) if order else 0
            batches += [[]] * (most - len(batches))
        with torch.no_grad():
            for b in batches:
                if not b:
                    self._forward(e, self._t(np.zeros((0, 1))), skip=skip)  # FSDP2: keep in step
                    continue
                T = len(opts[b[0]][0]) - 1
                tok = np.zeros((len(b), T), dtype=np.int64)
                for bi, oi in enumerate(b):
                    toks = opts[oi][0]
                    tok[bi, :len(toks) - 1] = toks[:-1]
                z = self._forward(e, self._t(tok), skip=skip)
                ls = F.log_softmax(z, dim=-1)
                am = z.argmax(-1)
                for bi, oi in enumerate(b):
                    toks, first, count = opts[oi]
                    pos = torch.arange(first, first + count, device=self.device)
                    tg = self._t(toks[first + 1:first + 1 + count])
                    nll[oi] = -ls[bi, pos, tg].double().sum()
                    greedy[oi] = float(bool((am[bi, pos] == tg).all()))
        self.comm.all_reduce(nll)
        self.comm.all_reduce(greedy)
        return nll.tolist(), [g > 0.5 for g in greedy.tolist()]

    @staticmethod
    def _choice_result(items, opts, nll):
        res = {"items": len(items), "predictions": []}
        c = cn = ct = 0
        k = 0
        for it in items:
            n = len(it["contexts"])
            chars = it.get("continuation_chars")
            cnt = [opts[k + j][2] for j in range(n)]
            ch = [float(chars[j]) if chars else float(cnt[j]) for j in range(n)]
            best = bn = bt = 0
            for j in range(n):
                v = nll[k + j]
                if v < nll[k + best]:
                    best = j
                if v / ch[j] < nll[k + bn] / ch[bn]:
                    bn = j
                if v / cnt[j] < nll[k + bt] / cnt[bt]:
                    bt = j
            res["predictions"].append(best)
            c += best == it["gold"]
            cn += bn == it["gold"]
            ct += bt == it["gold"]
            k += n
        m = len(items)
        res["accuracy"] = c / m if m else 0.0
        res["accuracy_norm"] = cn / m if m else 0.0
        res["accuracy_norm_tokens"] = ct / m if m else 0.0
        return res

    def evaluate(self, req):
        e = self.model(req.get("model", ""))
        cfg = e.cfg
        nl = len(cfg["layers"])
        bs = req.get("batch_size") or 8
        skips = req.get("skip_layers") or []
        for i, sk in enumerate(skips):
            for l in sk:
                if not (0 <= l < nl):
                    raise BadRequest("skip_layers[%d]: layer %d outside the model's %d layers" % (i, l, nl))
        res = {}
        lm = req.get("lm")
        data = Sequences(lm, cfg["vocab"], cfg["max_seq"]) if lm else None
        items = req.get("choices") or []
        copts = []
        for i, it in enumerate(items):
            ctxs, conts = it.get("contexts") or [], it.get("continuations") or []
            if not ctxs or len(ctxs) != len(conts):
                raise BadRequest("choices[%d]: %d contexts and %d continuations" % (i, len(ctxs), len(conts)))
            if not (0 <= it.get("gold", 0) < len(ctxs)):
                raise BadRequest("choices[%d]: gold %d outside the %d options" % (i, it.get("gold", 0), len(ctxs)))
            chars = it.get("continuation_chars")
            if chars is not None:
                if len(chars) != len(ctxs):
                    raise BadRequest("choices[%d]: %d continuation_chars for %d options" % (i, len(chars), len(ctxs)))
                for j, n in enumerate(chars):
                    if n < 1:
                        raise BadRequest("choices[%d] option %d: continuation_chars = %d must be at least 1" % (i, j, n))
            for j in range(len(ctxs)):
                try:
                    copts.append(new_option(ctxs[j], conts[j], cfg["vocab"], cfg["max_seq"]))
                except BadRequest as err:
                    raise BadRequest("choices[%d] option %d: %s" % (i, j, err))
        lw = req.get("last_word") or []
        lopts = []
        for i, it in enumerate(lw):
            try:
                lopts.append(new_option(it.get("context") or [], it.get("continuation") or [], cfg["vocab"], cfg["max_seq"]))
            except BadRequest as err:
                raise BadRequest("last_word[%d]: %s" % (i, err))
        if data is not None:
            s = self._lm_sums(e, data, bs)
            res["lm"] = {"loss": s[0] / s[2] if s[2] else 0.0, "tokens": int(s[2])}
        if items:
            nll, _ = self._score(e, copts, bs)
            res["choices"] = self._choice_result(items, copts, nll)
        if lw:
            nll, greedy = self._score(e, lopts, bs)
            toks = sum(o[2] for o in lopts)
            res["last_word"] = {"accuracy": sum(greedy) / len(lopts), "loss": sum(nll) / toks, "items": len(lopts)}
        if skips:
            res["skipped"] = []
            for sk in skips:
                r = {"layers": list(sk)}
                if data is not None:
                    s = self._lm_sums(e, data, bs, skip=set(sk))
                    r["lm"] = {"loss": s[0] / s[2] if s[2] else 0.0, "tokens": int(s[2])}
                if items:
                    nll, _ = self._score(e, copts, bs, skip=set(sk))
                    r["choices"] = self._choice_result(items, copts, nll)
                res["skipped"].append(r)
        return res

    # --- generation

    def generate(self, req):
        e = self.model(req.get("model", ""))
        cfg = e.cfg
        temp, top_p = req.get("temperature", 0.0), req.get("top_p", 0.0) or 1.0
        if not (temp >= 0) or math.isinf(temp):
            raise BadRequest("temperature %g must be a finite non-negative number (0 = greedy)" % temp)
        if not (0 < top_p <= 1):
            raise BadRequest("top_p %g must be in (0, 1] (1 = no nucleus cut)" % top_p)
        prompts = req.get("prompts") or []
        V, S = cfg["vocab"], cfg["max_seq"]
        for i, p in enumerate(prompts):
            if not p:
                raise BadRequest("prompt %d is empty (it needs at least BOS)" % i)
            if S > 0 and len(p) > S:
                raise BadRequest("prompt %d has %d tokens, the model %d positions" % (i, len(p), S))
            for j, t in enumerate(p):
                if t < 0 or t >= V:
                    raise BadRequest("prompt %d token %d is %d, outside vocabulary of %d" % (i, j, t, V))
        # Replicated weights: rank 0 alone decodes. Sharded ones (FSDP2):
        # every rank runs the same forward passes in lockstep.
        if self.comm.rank != 0 and self.strategy != "fsdp2":
            return None
        sampler = gorand.Sampler(temp, req.get("top_p", 0.0), req.get("seed", 0))
        stop = req.get("stop_token", -1)
        out = []
        with torch.no_grad():
            for p in prompts:
                limit = req.get("max_tokens", 0)
                if S > 0 and (limit <= 0 or limit > S - len(p) + 1):
                    limit = S - len(p) + 1
                if limit <= 0:
                    raise BadRequest("max_tokens %d must be positive for a model without a context length" % req.get("max_tokens", 0))
                seq = list(p)
                cont = []
                while len(cont) < limit:
                    z = self._forward(e, self._t([seq]))[0, -1].cpu().numpy().astype(np.float32)
                    nxt = sampler.sample(z)
                    if nxt == stop:
                        break
                    cont.append(nxt)
                    seq.append(nxt)
                out.append(cont)
        return {"tokens": out}

    # --- training

    def train(self, req, emit, should_stop):
        from . import train as tr
        return tr.run(self, req, emit, should_stop)

    def bench(self, req):
        from . import bench
        return bench.run(self, req)

    def close(self):
        self.models.clear()
        return None
