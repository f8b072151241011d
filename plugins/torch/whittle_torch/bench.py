"""`whittle bench --backend torch`: the PyTorch peer's workloads
(core/bench: train, forward, importance, distill) on random weights, run by
every rank data-parallel (the global batch split across ranks), timed on
rank 0, with each rank's peak memory and the bytes of its parameters,
gradients and optimizer state (what ZeRO-1 and FSDP2 shard).

The shapes and FLOP counts repeat core/bench's (Shapes, StepFLOPs,
ir.Config.Params); the conformance suite's Bench check compares them."""

import resource
import time

import numpy as np
import torch

from . import dist
from .engine import BadRequest, token_terms
from .model import Decoder, expected_shapes

# core/bench.Shapes.
SHAPES = {
    "stories260K": dict(dim=64, layers=5, heads=8, kv=4, ffn=172, voc=512, tied=True),
    "stories15M": dict(dim=288, layers=6, heads=6, kv=6, ffn=768, voc=32000, tied=True),
    "stories110M": dict(dim=768, layers=12, heads=12, kv=12, ffn=2048, voc=32000, tied=True),
    "llama-1B": dict(dim=2048, layers=16, heads=32, kv=8, ffn=8192, voc=32000, tied=False),
}
WORKLOADS = ["train", "forward", "importance", "distill"]


def available():
    return True


def student(s):
    """bench.Shape.Student: 3/4 of the widths, head_dim following."""
    st = dict(s)
    st["dim"] = s["dim"] * 3 // 4 // s["heads"] * s["heads"]
    st["ffn"] = s["ffn"] * 3 // 4
    return st


def config(s, seq):
    hd = s["dim"] // s["heads"]
    return {"arch": "llama", "vocab": s["voc"], "hidden": s["dim"], "norm_eps": 1e-5, "rope_theta": 10000.0,
            "rope_scaling": None, "max_seq": seq, "tied": s["tied"],
            "layers": [{"heads": s["heads"], "kv_heads": s["kv"], "head_dim": hd, "mlp": s["ffn"]}] * s["layers"]}


def params(cfg):
    return sum(int(np.prod(v)) for v in expected_shapes(cfg).values())


def forward_flops(cfg, b, t):
    """bench.ForwardFLOPs: matmul FLOPs of a forward over b*t tokens,
    causal attention."""
    lin = 0
    slope = 0
    for n, shp in expected_shapes(cfg).items():
        if len(shp) == 2 and n != "model.embed_tokens.weight" and n != "lm_head.weight":
            lin += shp[0] * shp[1]
    lin += cfg["vocab"] * cfg["hidden"]  # the classifier, tied or not
    for lc in cfg["layers"]:
        slope += 4 * lc["heads"] * lc["head_dim"]
    base = 2 * lin
    return float(b) * (float(t) * base + float(slope) * t * (t + 1) / 2)


def step_flops(s, w, b, t):
    fwd = forward_flops(config(s, t), b, t)
    if w in ("forward", "importance"):
        return fwd
    if w == "train":
        return 3 * fwd
    return fwd + 3 * forward_flops(config(student(s), t), b, t)


def random_model(cfg, seed, device):
    g = torch.Generator().manual_seed(seed)
    t = {}
    for n, shp in sorted(expected_shapes(cfg).items()):
        if len(shp) == 1:
            t[n] = torch.ones(shp)
        else:
            # The peer's initialization: N(0, 0.02²), so a model starts at
            # a loss near ln(vocab).
            t[n] = torch.randn(shp, generator=g) * 0.02
    return Decoder(cfg, t).to(device)


def _reset_peak():
    # Linux: writing 5 to clear_refs resets the VmHWM high-water mark, so
    # the peak is this run's, not the plugin process's lifetime's.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _bytes(ts):
    total = 0
    for t in ts:
        if t is None:
            continue
        if hasattr(t, "to_local"):
            t = t.to_local()
        total += t.numel() * t.element_size()
    return total


def _optim_bytes(opt):
    inner = getattr(opt, "optim", None) or opt
    return _bytes(v for st in inner.state.values() for v in st.values() if torch.is_tensor(v))


def run(eng, req):
    comm = eng.comm
    name, w = req.get("shape", ""), req.get("workload", "")
    if w not in WORKLOADS:
        raise BadRequest("bench: unknown workload %r (known: %s)" % (w, ", ".join(WORKLOADS)))
    s = SHAPES.get(name)
    if s is None:
        raise BadRequest("bench: unknown shape %r (known: %s)" % (name, ", ".join(SHAPES)))
    b, t = req.get("batch", 0), req.get("seq", 0)
    if b <= 0 or t <= 0:
        raise BadRequest("bench: batch %d and sequence length %d must be positive" % (b, t))
    seconds = req.get("seconds", 0.0) or 0.0
    if req.get("threads"):
        torch.set_num_threads(req["threads"])
    seed = int(req.get("seed", 0) or 0)
    dev = eng.device
    trained = student(s) if w == "distill" else s
    cfg = config(trained, t)
    _reset_peak()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    model = random_model(cfg, seed, dev)
    teacher = random_model(config(s, t), seed + 1, dev) if w == "distill" else None
    if teacher is not None and dev.type == "cuda" and eng.precision == "bf16":
        teacher = teacher.to(torch.bfloat16)  # as the peer holds it
    if eng.strategy == dist.STRATEGY_FSDP2:
        dist.shard_fsdp2(eng, model)
        if teacher is not None:
            dist.shard_fsdp2(eng, teacher)
    rng = np.random.default_rng(seed)
    tokens = torch.as_tensor(rng.integers(0, s["voc"], size=(b, t + 1)), dtype=torch.int64)
    mine = list(eng._mine(b))
    x = tokens[mine, :-1].to(dev)
    y = tokens[mine, 1:].to(dev)
    training = w in ("train", "distill")
    net = opt = None
    if training:
        ps = [p for _, p in sorted(model.named_parameters())]
        for p in ps:
            p.requires_grad_(True)
        groups = [{"params": [p for p in ps if p.dim() == 2], "weight_decay": 0.1},
                  {"params": [p for p in ps if p.dim() != 2], "weight_decay": 0.0}]
        net, opt = dist.wrap_for_training(eng, model, None, groups, {"lr": 1e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8})
    amp = dev.type == "cuda" and eng.precision == "bf16"

    def fwd(m, inp, **kw):
        if amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return m(inp, **kw)
        return m(inp, **kw)

    loss_box = [0.0]

    def step():
        if w == "forward":
            with torch.no_grad():
                fwd(model, x)
        elif w == "importance":
            with torch.no_grad():
                acts = []
                fwd(model, x, acts=acts)
                for a in acts:
                    for k in ("mlp_act", "attn_out", "attn_norm", "mlp_norm"):
                        a[k].abs().float().mean(1).pow(2).sum(0)
        else:
            z = fwd(net, x).float()
            zt = None
            if teacher is not None:
                with torch.no_grad():
                    zt = fwd(teacher, x).float().reshape(-1, s["voc"])
            ce, kl = token_terms(z.reshape(-1, s["voc"]), y.reshape(-1), zt, need_ce=teacher is None)
            part = (kl if kl is not None else ce).sum() / (b * t)
            (part * comm.world).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_box[0] = part.detach()  # read once at the end: no sync per step

    for _ in range(2):  # untimed warm-up, as in the peer
        step()
    comm.barrier()
    steps = 0
    start = time.time()
    while True:
        step()
        steps += 1
        done = steps >= 3 and time.time() - start >= seconds
        if comm.any_flag(done) if comm.rank == 0 else comm.any_flag(False):
            break
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elapsed = time.time() - start
    if training:
        v = loss_box[0].double().reshape(1)
        comm.all_reduce(v)
        loss_box[0] = float(v)
    mem = {
        "rank": comm.rank,
        "peak_rss_bytes": _peak_rss(),
        "peak_device_mem_bytes": int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else 0,
        "param_bytes": _bytes(model.parameters()),
        "grad_bytes": _bytes(p.grad for p in model.parameters()) if training else 0,
        "optim_state_bytes": _optim_bytes(opt) if training else 0,
    }
    per_rank = comm.gather_objects(mem)
    if comm.rank != 0:
        return None
    flops = step_flops(s, w, b, t)
    kernel = "torch %s float32" % torch.__version__
    if amp:
        kernel = "torch %s bf16 autocast" % torch.__version__
    if comm.world > 1:
        kernel += ", %d ranks (%s)" % (comm.world, dist.strategy_note(eng.strategy, torch.__version__))
    res = {"shape": name, "workload": w, "batch": b, "seq": t, "params": params(cfg), "steps": steps,
           "tokens": b * t * steps, "seconds": elapsed, "tokens_per_s": b * t * steps / elapsed if elapsed > 0 else 0.0,
           "threads": torch.get_num_threads(), "flops_per_step": flops,
           "gflops": flops * steps / elapsed / 1e9 if elapsed > 0 else 0.0, "device": str(dev), "kernel": kernel,
           "peak_rss_bytes": max(m["peak_rss_bytes"] for m in per_rank),
           "per_rank": per_rank}
    dm = max(m["peak_device_mem_bytes"] for m in per_rank)
    if dm:
        res["peak_device_mem_bytes"] = dm
    if training:
        res["loss"] = loss_box[0]
    return res
