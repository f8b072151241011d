#!/usr/bin/python3
"""Writes the PyTorch fixtures that torch_fixtures_test.go compares the engine against.

    /usr/bin/python3 plugins/cpu/engine/testdata/gen_torch_fixtures.py   (from the repository root)

Needs Debian's python3-torch (1.13) and numpy; the Go tests only read the JSON it writes.

torch_tiny_{tied,untied}.json: a tiny Llama written here from scratch in the Hugging Face layout (half-order
RoPE, grouped-query attention by repeat_interleave, SwiGLU, RMSNorm with the config's eps), two layers of
different sizes, fixed seeded float32 weights and a fixed batch. Forward, losses and autograd run in float64
on those float32 values, so the fixtures are the exact answers the float32 engine approximates: logits, and
for each objective (cross-entropy, masked/weighted cross-entropy, top-k forward KL at T=2 times T², a KL/CE mix)
the loss, its CE and KL terms, and every parameter's gradient.

torch_adamw.json: six torch.optim.AdamW steps (float32, as the engine) from given parameters and gradients,
weight decay on matrices only (parameter groups by dimension), learning rates from a linear warm-up + cosine
schedule built from torch's LinearLR/CosineAnnealingLR/SequentialLR, and torch.nn.utils.clip_grad_norm_ on the
gradients: the parameters after every step, the gradient norms and clip factors.
"""
import json, math, os, warnings

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)
# SequentialLR in torch 1.13 steps its second scheduler with an explicit epoch and warns about it.
warnings.filterwarnings("ignore", message="The epoch parameter")


def config(tied, eps, theta):
    return {
        "arch": "llama", "vocab_size": 13, "hidden_size": 8,
        "layers": [
            {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "intermediate_size": 12},
            {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 6, "intermediate_size": 5},
        ],
        "rms_norm_eps": eps, "rope_theta": theta, "max_position_embeddings": 16,
        "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2,
    }


def shapes(cfg):
    """Canonical tensor names and [out, in] shapes, in file order."""
    d, v = cfg["hidden_size"], cfg["vocab_size"]
    out = [("model.embed_tokens.weight", (v, d))]
    for i, l in enumerate(cfg["layers"]):
        q, kv, m = l["num_attention_heads"] * l["head_dim"], l["num_key_value_heads"] * l["head_dim"], l["intermediate_size"]
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (d,)), (p + "self_attn.q_proj.weight", (q, d)),
                (p + "self_attn.k_proj.weight", (kv, d)), (p + "self_attn.v_proj.weight", (kv, d)),
                (p + "self_attn.o_proj.weight", (d, q)), (p + "post_attention_layernorm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (m, d)), (p + "mlp.up_proj.weight", (m, d)),
                (p + "mlp.down_proj.weight", (d, m))]
    out.append(("model.norm.weight", (d,)))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, d)))
    return out


def random_weights(cfg, rng):
    w = {}
    for name, shape in shapes(cfg):
        if len(shape) == 1:
            a = 1 + 0.3 * rng.standard_normal(shape)
        else:
            a = 0.4 * rng.standard_normal(shape)
        w[name] = a.astype(np.float32)
    return w


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


def forward(cfg, w, tokens):
    """Logits [B, T, V] of the Hugging Face Llama decoder, in w's dtype."""
    B, T = tokens.shape
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    x = w["model.embed_tokens.weight"][tokens]
    pos = torch.arange(T, dtype=torch.float64)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    for i, l in enumerate(cfg["layers"]):
        p = f"model.layers.{i}."
        H, KV, hd = l["num_attention_heads"], l["num_key_value_heads"], l["head_dim"]
        inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        f = torch.outer(pos, inv)
        emb = torch.cat((f, f), -1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        h = rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(causal, float("-inf")).softmax(-1)
        a = (att @ v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        m = F.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)
        x = x + m @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"], eps)
    cls = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ cls.T


def objective(z, case, teacher):
    """The engine's objective over rows of logits z [N, V]:
    α·s·KL(q^τ ‖ p^τ) + (1−α)·CE, each a weighted mean over the scored rows (written out, not the engine's
    algebra). Returns (loss, ce, kl) with kl without the τ² factor."""
    alpha, tau, topk = case["kl_weight"], case["temperature"], case["top_k"]
    N, V = z.shape
    ids = torch.tensor(case["ids"]) if case["ids"] is not None else None
    wts = torch.tensor(case["weights"], dtype=z.dtype) if case["weights"] is not None else torch.ones(N, dtype=z.dtype)
    if ids is not None:
        wts = torch.where(ids >= 0, wts, torch.zeros_like(wts))
    total = wts.sum()
    ce = kl = torch.zeros((), dtype=z.dtype)
    if ids is not None:
        nll = -F.log_softmax(z, -1).gather(1, ids.clamp(min=0)[:, None])[:, 0]
        ce = (wts * nll).sum() / total
    if teacher is not None:
        logp = F.log_softmax(z / tau, -1)
        zt = teacher / tau
        if topk:
            top = zt.topk(topk, -1)
            logq = F.log_softmax(top.values, -1)
            rows = (logq.exp() * (logq - logp.gather(1, top.indices))).sum(-1)
        else:
            logq = F.log_softmax(zt, -1)
            rows = (logq.exp() * (logq - logp)).sum(-1)
        kl = (wts * rows).sum() / total
    s = tau * tau if case["scale_t2"] else 1.0
    loss = torch.zeros((), dtype=z.dtype)
    if ids is not None:
        loss = loss + (1 - alpha) * ce
    if teacher is not None:
        loss = loss + alpha * s * kl
    return loss, ce, kl


def rounded(a):
    """Floats with 12 significant digits: far below float32 noise, a third of repr's size."""
    return [float("%.12g" % x) for x in np.asarray(a, dtype=np.float64).ravel()]


def model_fixture(name, tied, eps, theta, seed):
    rng = np.random.default_rng(seed)
    cfg = config(tied, eps, theta)
    B, T, V = 3, 7, cfg["vocab_size"]
    N = B * T
    w32 = random_weights(cfg, rng)
    tokens = rng.integers(0, V, size=(B, T))
    nxt = np.concatenate([tokens[:, 1:], -np.ones((B, 1), dtype=tokens.dtype)], 1).ravel()
    mask = rng.choice([0.0, 0.5, 1.0], size=N, p=[0.3, 0.2, 0.5])
    teacher = (2.0 * rng.standard_normal((N, V))).astype(np.float32)
    # Exact top-k membership needs no near-ties at the k-th value.
    cases = [
        {"name": "ce", "kl_weight": 0.0, "temperature": 1.0, "scale_t2": False, "top_k": 0,
         "ids": nxt.tolist(), "weights": None, "teacher": False},
        {"name": "masked_ce", "kl_weight": 0.0, "temperature": 1.0, "scale_t2": False, "top_k": 0,
         "ids": nxt.tolist(), "weights": mask.tolist(), "teacher": False},
        {"name": "kl_t2_top4", "kl_weight": 1.0, "temperature": 2.0, "scale_t2": True, "top_k": 4,
         "ids": None, "weights": None, "teacher": True},
        {"name": "mix_t2_full", "kl_weight": 0.5, "temperature": 2.0, "scale_t2": False, "top_k": 0,
         "ids": nxt.tolist(), "weights": None, "teacher": True},
    ]
    out = {"config": cfg, "batch": B, "seq": T, "tokens": tokens.ravel().tolist(),
           "weights": {n: f32(w32[n]) for n, _ in shapes(cfg)},
           "teacher_logits": f32(teacher), "cases": []}
    # Logits once without gradients.
    w64 = {n: torch.tensor(a, dtype=torch.float64) for n, a in w32.items()}
    out["logits"] = rounded(forward(cfg, w64, torch.tensor(tokens)).reshape(N, V).numpy())
    for case in cases:
        w64 = {n: torch.tensor(a, dtype=torch.float64, requires_grad=True) for n, a in w32.items()}
        z = forward(cfg, w64, torch.tensor(tokens)).reshape(N, V)
        tl = torch.tensor(teacher, dtype=torch.float64) if case["teacher"] else None
        if tl is not None and case["top_k"]:
            srt = np.sort(teacher / case["temperature"], -1)[:, ::-1]
            assert (srt[:, case["top_k"] - 1] - srt[:, case["top_k"]]).min() > 1e-4
        loss, ce, kl = objective(z, case, tl)
        loss.backward()
        c = dict(case)
        c.update(loss=loss.item(), ce=ce.item(), kl=kl.item(),
                 grads={n: rounded(w64[n].grad.numpy()) for n, _ in shapes(cfg)})
        out["cases"].append(c)
    write(name, out)


def schedule_lrs(peak, lo, warmup, total, steps):
    """Learning rates of steps 0..steps-1 from torch's own schedulers, checked against the closed form."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=lo),
    ], milestones=[warmup])
    lrs = []
    for step in range(steps):
        lr = opt.param_groups[0]["lr"]
        want = peak * (step + 1) / warmup if step < warmup else \
            lo + 0.5 * (peak - lo) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert abs(lr - want) < 1e-12 * peak, (step, lr, want)
        lrs.append(lr)
        opt.step()
        sched.step()
    return lrs


def adamw_fixture():
    rng = np.random.default_rng(7)
    cfg = config(True, 1e-5, 10000.0)
    w32 = random_weights(cfg, rng)
    names = [n for n, _ in shapes(cfg)]
    params = {n: torch.nn.Parameter(torch.tensor(w32[n])) for n in names}
    beta1, beta2, eps, wd, clip = 0.9, 0.95, 1e-8, 0.1, 1.0
    peak, lo, warmup, total = 1e-2, 1e-3, 2, 6
    lrs = schedule_lrs(peak, lo, warmup, total, total + 1)
    decay = [params[n] for n in names if params[n].dim() == 2]
    no_decay = [params[n] for n in names if params[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=peak, betas=(beta1, beta2), eps=eps)
    steps = []
    for step in range(total):
        # Gradient scales vary by step so that clipping acts on some steps and not others; one embedding row
        # has zero gradient (decay and the moments still move it).
        scale = [0.01, 0.3, 0.02, 0.5, 0.001, 0.05][step]
        grads = {n: (scale * rng.standard_normal(w32[n].shape)).astype(np.float32) for n in names}
        grads["model.embed_tokens.weight"][3] = 0
        for n in names:
            params[n].grad = torch.tensor(grads[n])
        norm = torch.nn.utils.clip_grad_norm_([params[n] for n in names], clip).item()
        coef = min(1.0, clip / (norm + 1e-6))
        for g in opt.param_groups:
            g["lr"] = lrs[step]
        opt.step()
        steps.append({"lr": lrs[step], "grad_norm": norm, "clip": coef,
                      "grads": {n: f32(grads[n]) for n in names},
                      "params": {n: f32(params[n].detach().numpy()) for n in names}})
    write("torch_adamw", {
        "config": cfg, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": wd, "clip_norm": clip,
        "schedule": {"peak": peak, "min": lo, "warmup": warmup, "total": total, "lrs": lrs},
        "weights": {n: f32(w32[n]) for n in names}, "steps": steps})


def f32(a):
    """float32 values exactly, in the 9 significant digits that round-trip them."""
    return [float("%.9g" % x) for x in np.asarray(a, dtype=np.float32).ravel()]


def write(name, obj):
    path = os.path.join(HERE, name + ".json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, path)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    model_fixture("torch_tiny_untied", tied=False, eps=1e-5, theta=10000.0, seed=1)
    model_fixture("torch_tiny_tied", tied=True, eps=1e-2, theta=500.0, seed=2)
    adamw_fixture()
    print("torch", torch.__version__)
