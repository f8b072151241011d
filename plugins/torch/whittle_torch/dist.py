"""torch.distributed: launching ranks the way torchrun does, the command
loop that keeps them in step, and the sharding strategy.

Rank 0 is the plugin process whittle talks to. With nproc_per_node > 1 it
starts local ranks 1..nproc_per_node-1 itself (python3 -m
whittle_torch.worker, with torchrun's environment: RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT); on other nodes (nnodes > 1) one runs

    whittle-plugin-torch worker --nnodes N --node-rank K --nproc-per-node P \
        --rdzv-endpoint HOST:PORT

which starts that node's ranks. Every Backend call is broadcast from rank 0
(a gloo group carries the commands) and run by every rank; rank 0 returns
the answer. A rank that dies fails the call in progress with an error naming
it, and every later call: whittle records the pass as failed, and running
the recipe again resumes from the last checkpoint.

Strategies (select_strategy): one rank: "single"; torch >= 2.4 with
torch.distributed.fsdp.fully_shard: "fsdp2" (parameters, gradients and
optimizer state sharded, per layer); older torch: "ddp+zero1" (DDP gradient
all-reduce, AdamW state sharded by ZeroRedundancyOptimizer, parameters and
gradients replicated).
"""

import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import time

import torch

STRATEGY_SINGLE = "single"
STRATEGY_FSDP2 = "fsdp2"
STRATEGY_ZERO1 = "ddp+zero1"


def parse_version(v):
    """(major, minor) of a torch version string ("1.13.0a0+git", "2.11.0")."""
    m = re.match(r"(\d+)\.(\d+)", v)
    if not m:
        raise ValueError("unparsable torch version %r" % v)
    return int(m.group(1)), int(m.group(2))


def fully_shard_available():
    """Whether FSDP2's fully_shard imports (torch >= 2.4; Debian 12's 1.13
    cannot even import torch.distributed.fsdp under Python 3.11)."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
        return True
    except Exception:
        try:
            from torch.distributed._composable.fsdp import fully_shard  # noqa: F401
            return True
        except Exception:
            return False


def select_strategy(world, version, has_fully_shard, requested=""):
    """The sharding strategy for world ranks on a torch of version (a
    string), given whether fully_shard imports. requested ("", "fsdp2",
    "ddp+zero1") forces one; forcing fsdp2 where it is missing is an error
    saying why."""
    if requested not in ("", "auto", STRATEGY_FSDP2, STRATEGY_ZERO1):
        raise ValueError("unknown strategy %r (want auto, fsdp2 or ddp+zero1)" % requested)
    if world == 1:
        return STRATEGY_SINGLE
    new_enough = parse_version(version) >= (2, 4)
    if requested == STRATEGY_FSDP2 and not (new_enough and has_fully_shard):
        raise ValueError("strategy fsdp2 needs torch >= 2.4 with torch.distributed.fsdp.fully_shard; this is torch %s" % version)
    if requested == STRATEGY_ZERO1:
        return STRATEGY_ZERO1
    if new_enough and has_fully_shard:
        return STRATEGY_FSDP2
    return STRATEGY_ZERO1


def strategy_note(strategy, version):
    if strategy == STRATEGY_ZERO1:
        return "DDP + ZeRO-1 (optimizer state sharded; torch %s has no usable FSDP2, which needs torch >= 2.4)" % version
    if strategy == STRATEGY_FSDP2:
        return "FSDP2 (parameters, gradients and optimizer state sharded per layer)"
    return "one rank"


class Comm:
    """Collectives of one rank; with one rank they do nothing."""

    def __init__(self, rank=0, world=1, device="cpu", control=None):
        self.rank, self.world, self.device = rank, world, device
        self.control = control  # gloo group for commands and flags

    def all_reduce(self, t):
        if self.world > 1:
            import torch.distributed as dist
            dist.all_reduce(t)

    def any_flag(self, flag):
        if self.world == 1:
            return bool(flag)
        import torch.distributed as dist
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, group=self.control)
        return bool(t.item())

    def all_agree(self, ok):
        if self.world == 1:
            return bool(ok)
        import torch.distributed as dist
        t = torch.tensor([0 if ok else 1], dtype=torch.int64)
        dist.all_reduce(t, group=self.control)
        return t.item() == 0

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier(group=self.control)

    def gather_objects(self, obj):
        """Every rank's obj, in rank order (on every rank)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def broadcast(self, obj):
        if self.world == 1:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]


# --- training wrappers


class _Wrapped(torch.nn.Module):
    """The trained model with its adapters, as one module for DDP."""

    def __init__(self, model, lora):
        super().__init__()
        self.m = model
        self.lora_params = lora.params if lora is not None else torch.nn.ParameterList()
        self._lora = lora

    def forward(self, tokens, router=None):
        return self.m(tokens, lora=self._lora, router=router)


def wrap_for_training(eng, model, lora, groups, o):
    """The module to run forward through and the optimizer, for the
    engine's strategy."""
    kw = dict(lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    st = eng.strategy
    if eng.device.type == "cuda" and st != STRATEGY_FSDP2 and parse_version(torch.__version__) >= (2, 0):
        kw["fused"] = True  # one kernel for the whole update, as the peer uses
    if st == STRATEGY_SINGLE:
        return _Wrapped(model, lora), torch.optim.AdamW(groups, **kw)
    if st == STRATEGY_ZERO1:
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel as DDP
        w = _Wrapped(model, lora)
        dev = [eng.device.index] if eng.device.type == "cuda" else None
        net = DDP(w, device_ids=dev, broadcast_buffers=False)
        opt = ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, **kw)
        return net, opt
    # FSDP2: the model's layers and root were sharded at load; adapters
    # (small) stay replicated and their gradients are all-reduced by hand
    # in grad_norm.
    return _Wrapped(model, lora), torch.optim.AdamW(groups, **kw)


def forward(eng, net, tokens, lora, router=None):
    """The trained model's logits; router, a list, receives each MoE
    layer's routing totals (Decoder.forward)."""
    if eng.device.type == "cuda" and eng.precision == "bf16":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return net(tokens, router=router)
    return net(tokens, router=router)


def grad_norm(eng, model, lora):
    """The global L2 norm of the trainable gradients (float64), the same on
    every rank."""
    total = torch.zeros(1, dtype=torch.float64, device=eng.device)
    sharded = torch.zeros(1, dtype=torch.float64, device=eng.device)
    params = [p for p in model.parameters() if p.grad is not None]
    if eng.strategy == STRATEGY_FSDP2 and lora is not None:
        # Replicated adapters under FSDP2: average their gradients here.
        for p in lora.params:
            if p.grad is not None:
                eng.comm.all_reduce(p.grad)
                p.grad.div_(eng.comm.world)
    for p in params:
        g = p.grad
        if hasattr(g, "to_local"):
            sharded += g.to_local().double().pow(2).sum()
        else:
            total += g.double().pow(2).sum()
    if lora is not None:
        for p in lora.params:
            if p.grad is not None:
                total += p.grad.double().pow(2).sum()
    if eng.strategy == STRATEGY_FSDP2:
        eng.comm.all_reduce(sharded)
    return float((total + sharded).sqrt())


def optimizer_state(opt):
    """This rank's optimizer state, for its checkpoint file: the local
    AdamW shard under ZeRO-1, the local parts of the moments under FSDP2
    (plain tensors: a DTensor's pickling ties it to a process group)."""
    inner = getattr(opt, "optim", None)  # ZeroRedundancyOptimizer's local shard
    if inner is not None:
        return {"kind": "torch", "state": inner.state_dict()}
    ps = [p for g in opt.param_groups for p in g["params"]]
    if not any(hasattr(p, "to_local") for p in ps):
        return {"kind": "torch", "state": opt.state_dict()}
    out = []
    for p in ps:
        st = opt.state.get(p, {})
        out.append({k: (float(v) if k == "step" else local(v).detach().cpu().clone()) for k, v in st.items()})
    return {"kind": "local", "state": out}


def load_optimizer(opt, saved):
    inner = getattr(opt, "optim", None)
    if saved["kind"] == "torch":
        (inner or opt).load_state_dict(saved["state"])
        return
    # FSDP2: rebuild AdamW's per-parameter state (step, exp_avg,
    # exp_avg_sq) around the local parts.
    ps = [p for g in opt.param_groups for p in g["params"]]
    if len(ps) != len(saved["state"]):
        raise ValueError("checkpoint holds optimizer state for %d tensors, the run has %d" % (len(saved["state"]), len(ps)))
    for p, st in zip(ps, saved["state"]):
        if not st:
            continue
        new = {}
        for k, v in st.items():
            if k == "step":
                new[k] = torch.tensor(v, dtype=torch.float32)
            else:
                z = torch.zeros_like(p)
                local(z).copy_(v.to(local(z).device))
                new[k] = z
        opt.state[p] = new


def shard_fsdp2(eng, model):
    """FSDP2: shard every layer, then the root (embedding, final norm,
    classifier), over a 1-D mesh of all ranks on the engine's device type.
    With precision bf16 on CUDA, layers compute in bf16 and gradients are
    reduced in float32 (float32 master weights). Not run on Debian 12's
    torch 1.13 (no FSDP2); see docs/distributed.md for how it is checked."""
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    if eng.mesh is None:
        eng.mesh = init_device_mesh(eng.device.type, (eng.comm.world,))
    kw = {"mesh": eng.mesh}
    if eng.device.type == "cuda" and eng.precision == "bf16":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)


def local(t):
    """A tensor's local part: an FSDP2 shard's, or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def distribute_like(full, like):
    """full (a whole tensor, the same on every rank) sharded as the DTensor
    like is."""
    try:
        from torch.distributed.tensor import distribute_tensor
    except ImportError:
        from torch.distributed._tensor import distribute_tensor
    return distribute_tensor(full, like.device_mesh, like.placements)


# --- launching and the command loop


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_group(rank, world, addr, port, device, timeout_s):
    """Joins the process group (torchrun's env:// rendezvous) and makes the
    gloo control group."""
    import torch.distributed as dist
    backend = "nccl" if device.startswith("cuda") else "gloo"
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
    dist.init_process_group(backend, rank=rank, world_size=world, init_method="env://",
                            timeout=datetime.timedelta(seconds=timeout_s))
    control = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s)) if backend != "gloo" else None
    return control


def rank_device(device, local_rank):
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        return "cuda:%d" % local_rank
    return "cpu"


# DIE_ENV = "<rank>:<op>" makes that rank exit on that call: the tests'
# stand-in for a worker that crashes or is killed.
DIE_ENV = "WHITTLE_TORCH_TEST_DIE"
# FAIL_ENV = "<rank>:<op>" makes that rank fail that call before its work,
# as a rank that cannot read a file would.
FAIL_ENV = "WHITTLE_TORCH_TEST_FAIL"
# STOP_ENV = "<rank>:<op>" stops that rank (SIGSTOP) on that call.
STOP_ENV = "WHITTLE_TORCH_TEST_STOP"


class Launcher:
    """Rank 0's view of the local worker processes it started."""

    def __init__(self):
        self.procs = {}  # rank -> Popen

    def start(self, ranks, env_base, argv):
        for r, local in ranks:
            env = dict(os.environ)
            env.update(env_base)
            env.update({"RANK": str(r), "LOCAL_RANK": str(local)})
            env.pop("PLUGIN_CLIENT_CERT", None)
            # The worker's stdout must not reach go-plugin's handshake
            # reader; its stderr (logs) goes where ours goes.
            self.procs[r] = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr,
                                             stderr=sys.stderr, start_new_session=False)

    def dead(self):
        """A description of the first worker that has exited, or None."""
        for r, p in sorted(self.procs.items()):
            rc = p.poll()
            if rc is not None:
                how = "exit status %d" % rc if rc >= 0 else "signal %d" % -rc
                return "rank %d (pid %d) exited (%s)" % (r, p.pid, how)
        return None

    def stopped(self):
        """A description of the first worker that is stopped (SIGSTOP, a
        debugger), or None: a rank that hangs is seen when a collective
        times out, and this names it."""
        for r, p in sorted(self.procs.items()):
            try:
                with open("/proc/%d/stat" % p.pid) as f:
                    state = f.read().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if state in ("T", "t"):
                return "rank %d (pid %d) is stopped" % (r, p.pid)
        return None

    def stop(self, grace=5.0):
        end = time.time() + grace
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()


def worker_loop(engine_factory):
    """A rank other than 0: run the commands rank 0 broadcasts until it
    says stop or the group breaks."""
    eng = engine_factory()
    comm = eng.comm
    while True:
        cmd = comm.broadcast(None)
        if cmd is None or cmd[0] == "stop":
            return
        op, req = cmd
        if os.environ.get(DIE_ENV) == "%d:%s" % (comm.rank, op):
            os._exit(3)  # fault injection for the tests: this rank dies
        if os.environ.get(STOP_ENV) == "%d:%s" % (comm.rank, op):
            os.kill(os.getpid(), signal.SIGSTOP)  # ... or hangs
        msg = None
        try:
            if os.environ.get(FAIL_ENV) == "%d:%s" % (comm.rank, op):
                raise RuntimeError("injected failure")
            if op == "train":
                eng.train(req, None, lambda: False)
            else:
                getattr(eng, op)(req)
        except Exception as e:
            msg = str(e) or type(e).__name__
        # How the call ended here, for rank 0 to report (see Backend._run).
        comm.gather_objects(msg)
