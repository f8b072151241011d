"""Train on one rank: the CPU backend's optimization loop (plugins/cpu
train.go and engine/trainer.go) on torch, data-parallel across ranks.

Step s consumes the batch_size x grad_accum rows starting at row
s*batch_size*grad_accum (wrapping around); each micro-batch's rows are split
across ranks. AdamW (torch.optim.AdamW, PyTorch's update, which the CPU
backend reproduces) decays 2-D tensors and LoRA adapters, not norms; the
gradient norm is taken before clipping to grad_clip/(norm + 1e-6).

Checkpoints are per rank (train.rank<r>.ckpt): rank 0's holds the weights,
adapters, history and its optimizer shard; the others their optimizer
shards (ZeRO-1) or parameter shards (FSDP2). A checkpoint resumes only the
same request on the same weights, data shape and world size.
"""

import hashlib
import json
import os
import time

import numpy as np
import torch

from . import dist
from .engine import BadRequest, LoRA, Sequences, lr_at, resolve_train, token_terms
from .server import Cancelled


def _fingerprint(req, kl_weight, st):
    r = dict(req)
    for k in ("model", "teacher", "validation", "eval_every", "checkpoint_dir", "checkpoint_every"):
        r.pop(k, None)
    if kl_weight == 0:
        st = dict(st, teacher="")
    blob = json.dumps({"request": r, "state": st}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def run(eng, raw, emit, should_stop):
    comm = eng.comm
    try:
        req, kl_weight, adapters = resolve_train(raw)
    except BadRequest as e:
        raise BadRequest("train %s: %s" % (raw.get("model", ""), e))
    e = eng.model(req.get("model", ""))
    if not e.trainable and eng.strategy == "fsdp2":
        raise BadRequest("model %s was not loaded trainable" % e.id)
    cfg = e.cfg
    teacher = None
    if req.get("teacher"):
        teacher = eng.model(req["teacher"])
        if teacher.cfg["vocab"] != cfg["vocab"]:
            raise BadRequest("teacher %s has a vocabulary of %d, the model %d" % (teacher.id, teacher.cfg["vocab"], cfg["vocab"]))
    data = Sequences(req["data"], cfg["vocab"], cfg["max_seq"])
    val = None
    if req.get("validation"):
        try:
            val = Sequences(req["validation"], cfg["vocab"], cfg["max_seq"])
        except BadRequest as err:
            raise BadRequest("validation: %s" % err)
    mode = req["mode"]
    model = e.model
    weights = model.weights()
    names = sorted(weights)

    def trains(name):
        if mode == "norm-only":
            return "norm" in name
        return mode == "full"

    lora = LoRA(cfg, adapters, int(req.get("seed", 0)) & ((1 << 64) - 1), eng.device) if adapters else None
    # What the run may change, to restore it if the run fails.
    snapshot = {n: dist.local(weights[n]).detach().clone() for n in names if trains(n)}
    hash0 = e.weights_hash()
    st = {"data_shape": [data.rows, data.cols], "weights": hash0, "teacher": teacher.weights_hash() if teacher else "",
          "layout": ["world/%d" % comm.world, "strategy/%s" % eng.strategy]}
    fp = _fingerprint(req, kl_weight, st)
    o = req["optim"]
    for n in names:
        weights[n].requires_grad_(trains(n))
    decay, nodecay = [], []
    for n in names:
        p = weights[n]
        if p.requires_grad:
            (decay if p.dim() == 2 else nodecay).append(p)
    if lora is not None:
        decay += list(lora.params)
    groups = [g for g in ({"params": decay, "weight_decay": o["weight_decay"]}, {"params": nodecay, "weight_decay": 0.0})
              if g["params"]]
    net, opt = dist.wrap_for_training(eng, model, lora, groups, o)
    steps, bs, accum = req["steps"], req["batch_size"], req["grad_accum"]
    L = data.cols
    loss_cfg = req["loss"]
    tau = loss_cfg.get("temperature", 1.0)
    st2 = tau * tau if loss_cfg.get("scale_t2") else 1.0
    top_k = loss_cfg.get("top_k", 0)
    aux_w = loss_cfg.get("router_aux_weight", 0.0)
    start, tokens, history = 0, 0, []
    ckdir = req.get("checkpoint_dir") or ""
    if ckdir:
        ck = _read_checkpoint(ckdir, comm.rank, eng.device)
        ck0 = ck if comm.rank == 0 else _read_checkpoint(ckdir, 0, eng.device)
        ok = ck is not None and ck0 is not None and ck0.get("fingerprint") == fp and ck.get("fingerprint") == fp \
            and ck.get("step") == ck0.get("step")
        ok = comm.all_agree(ok)
        if ok:
            if ck0["step"] > steps:
                raise BadRequest("%s: checkpoint at step %d is past the run's %d steps" % (ckdir, ck0["step"], steps))
            # Replicated weights come from rank 0's file; FSDP2 shards
            # from each rank's own.
            src = ck if eng.strategy == dist.STRATEGY_FSDP2 else ck0
            with torch.no_grad():
                for n, v in src["weights"].items():
                    dist.local(weights[n]).copy_(v)
                if lora is not None:
                    for p, v in zip(lora.params, ck0["lora"]):
                        p.copy_(v)
            dist.load_optimizer(opt, ck["optim"])
            start, tokens, history = ck0["step"], ck0["tokens"], ck0["history"]
    e.hash = None
    began = time.time()
    tokens0 = tokens
    try:
        for step in range(start, steps):
            if comm.any_flag(should_stop() if comm.rank == 0 else False):
                raise Cancelled()
            if os.environ.get(dist.DIE_ENV) == "%d:train:%d" % (comm.rank, step):
                os._exit(3)  # fault injection for the tests: this rank dies here
            lr = lr_at(o, step, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            losses = torch.zeros(accum, dtype=torch.float64, device=eng.device)
            for i in range(accum):
                first = (step * accum + i) * bs
                tok, tg = data.batch(np.arange(first, first + bs))
                n_scored = int((tg >= 0).sum())
                mine = list(eng._mine(bs))
                t = eng._t(tok[mine])
                tgt = eng._t(tg[mine])
                router = [] if aux_w > 0 else None
                z = dist.forward(eng, net, t, lora, router).float()
                sel = tgt >= 0
                zt = None
                if teacher is not None and kl_weight > 0:
                    with torch.no_grad():
                        zt = eng._forward(teacher, t)[sel]
                ce, kl = token_terms(z[sel], tgt[sel], zt, tau, top_k, need_ce=kl_weight < 1)
                part = 0.0
                if ce is not None:
                    part = ce.sum() * (1 - kl_weight)
                if kl is not None:
                    part = part + kl_weight * st2 * kl.sum()
                if n_scored > 0:
                    part = part / n_scored
                else:
                    part = part * 0.0
                if router:
                    part = part + aux_w * router_aux(comm, router, bs * L)
                # DDP and FSDP2 average gradients over ranks: scaling by the
                # world size makes the average the sum of the shares.
                (part * (comm.world / accum)).backward()
                losses[i] = part.detach().double()
            comm.all_reduce(losses)
            loss = float(losses.mean())
            gnorm = dist.grad_norm(eng, model, lora)
            if not np.isfinite(gnorm):
                raise RuntimeError("step %d: gradient norm is %g" % (step, gnorm))
            clip = 1.0
            if o["grad_clip"] > 0 and gnorm > o["grad_clip"]:
                clip = o["grad_clip"] / (gnorm + 1e-6)
            if clip != 1.0:
                for g in opt.param_groups:
                    for p in g["params"]:
                        if p.grad is not None:
                            p.grad.mul_(clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += bs * L * accum
            ev = {"step": step + 1, "steps": steps, "loss": loss, "lr": lr, "grad_norm": gnorm, "tokens": tokens}
            last = step + 1 == steps
            ee = req.get("eval_every", 0)
            if val is not None and (last or ee > 0 and (step + 1) % ee == 0):
                s = eng._lm_sums(e, val, bs, teacher=teacher, lora=lora)
                ev["val_loss"] = s[0] / s[2] if s[2] else 0.0
                if teacher is not None:
                    ev["val_kl"] = s[1] / s[2] if s[2] else 0.0
            history.append(ev)
            ce_every = req.get("checkpoint_every", 0)
            if ckdir and (last or ce_every > 0 and (step + 1) % ce_every == 0):
                _write_checkpoint(ckdir, comm, {
                    "fingerprint": fp, "step": step + 1, "tokens": tokens, "history": history,
                    "weights": {n: dist.local(weights[n]).detach().cpu().clone() for n in names if trains(n)}
                    if comm.rank == 0 or eng.strategy == dist.STRATEGY_FSDP2 else {},
                    "lora": [p.detach().cpu().clone() for p in lora.params] if (lora is not None and comm.rank == 0) else [],
                    "optim": dist.optimizer_state(opt),
                })
            if comm.rank == 0 and emit is not None:
                emit(ev)
        if lora is not None:
            lora.merge(model)
    except BaseException:
        with torch.no_grad():
            for n, v in snapshot.items():
                dist.local(weights[n]).copy_(v)
        e.hash = hash0
        raise
    finally:
        for n in names:
            weights[n].requires_grad_(False)
            weights[n].grad = None
    res = {"steps": steps, "tokens": tokens, "history": history, "resumed_from": start, "final_loss": 0.0}
    if history:
        lastev = history[-1]
        res["final_loss"] = lastev["loss"]
        for k in ("val_loss", "val_kl"):
            if k in lastev:
                res[k] = lastev[k]
    dt = time.time() - began
    res["tokens_per_s"] = (tokens - tokens0) / dt if dt > 0 else 0.0
    return res


def router_aux(comm, router, rows):
    """This rank's share of Hugging Face's load_balancing_loss_func (no
    attention mask) over one micro-batch of rows tokens: the router
    probabilities of all MoE layers with one expert count concatenated as
    M rows, aux = E * sum_e f_e * P_e with f_e the fraction of rows routed
    to e (over the top-k slots; a constant) and P_e e's mean probability;
    groups of other counts (non-uniform pruning) add. The counts are
    all-reduced; each rank's probability sums enter linearly, so the
    shares of the ranks add up to the loss (the CPU engine's routerAux)."""
    groups = {}
    for E, psum, counts in router:
        groups.setdefault(E, []).append((psum, counts))
    total = 0.0
    for E in sorted(groups):
        ls = groups[E]
        cnt = torch.stack([c for _, c in ls]).sum(0).to(torch.float64)
        comm.all_reduce(cnt)
        prob = torch.stack([p for p, _ in ls]).sum(0)
        m = float(len(ls) * rows)
        total = total + (prob.double() * cnt).sum() * (E / (m * m))
    return total


def _path(d, rank):
    return os.path.join(d, "train.rank%d.ckpt" % rank)


def _read_checkpoint(d, rank, device):
    p = _path(d, rank)
    if not os.path.exists(p):
        return None
    try:
        return torch.load(p, map_location=device)
    except Exception:
        return None


def _write_checkpoint(d, comm, ck):
    """Writes this rank's file; every rank learns whether all succeeded, so
    that a failed write fails the run on every rank alike."""
    err = None
    try:
        os.makedirs(d, exist_ok=True)
        p = _path(d, comm.rank)
        tmp = p + ".tmp"
        torch.save(ck, tmp)
        os.replace(tmp, p)
    except OSError as e:
        err = e
    if not comm.all_agree(err is None):
        raise RuntimeError("writing the checkpoint in %s%s" % (d, ": %s" % err if err else " failed on another rank"))
