"""The backend whittle talks to (rank 0): the backend block's attributes,
Info, and every call broadcast to the ranks."""

import json
import sys
import threading
import time

import torch

from . import dist
from .engine import VERSION, BadRequest, Engine
from .server import Cancelled, RemoteError, log

# Backend block attributes and their types.
ATTRIBUTES = {
    "device": str,  # "cpu", "cuda", "auto" (cuda when available)
    "precision": str,  # "fp32" or "bf16" (bf16 autocast and bf16 teachers on CUDA)
    "threads": int,  # intra-op threads per rank (0: torch's default)
    "nproc_per_node": int,  # ranks on this node (torchrun's --nproc-per-node)
    "nnodes": int,  # nodes (torchrun's --nnodes)
    "node_rank": int,  # this node's rank: the plugin process is node 0
    "rdzv_endpoint": str,  # host:port of rank 0's rendezvous (nnodes > 1)
    "strategy": str,  # "auto", "fsdp2" or "ddp+zero1"
    "timeout": int,  # seconds a collective may wait for a rank (default 300)
}


def parse_config(cfg):
    """The backend block's attributes, checked; unknown ones are refused by
    name."""
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise BadRequest("torch backend attributes: want an object")
    out = {"device": "cpu", "precision": "fp32", "threads": 0, "nproc_per_node": 1, "nnodes": 1, "node_rank": 0,
           "rdzv_endpoint": "", "strategy": "auto", "timeout": 300}
    for k, v in cfg.items():
        typ = ATTRIBUTES.get(k)
        if typ is None:
            raise BadRequest("torch backend attributes: unknown attribute %r (known: %s)" % (k, ", ".join(sorted(ATTRIBUTES))))
        if typ is int:
            if isinstance(v, float) and v == int(v):
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise BadRequest("torch backend attributes: %s = %r must be a non-negative whole number" % (k, v))
        elif not isinstance(v, str):
            raise BadRequest("torch backend attributes: %s = %r must be a string" % (k, v))
        out[k] = v
    if out["device"] == "auto":
        out["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if not (out["device"] == "cpu" or out["device"].startswith("cuda")):
        raise BadRequest("torch backend attributes: device %r (want cpu, cuda or auto)" % out["device"])
    if out["device"].startswith("cuda") and not torch.cuda.is_available():
        raise BadRequest("torch backend attributes: device %r but torch %s sees no CUDA device" % (out["device"], torch.__version__))
    if out["precision"] not in ("fp32", "bf16"):
        raise BadRequest("torch backend attributes: precision %r (want fp32 or bf16)" % out["precision"])
    if out["nproc_per_node"] < 1 or out["nnodes"] < 1:
        raise BadRequest("torch backend attributes: nproc_per_node and nnodes must be at least 1")
    if out["node_rank"] != 0:
        raise BadRequest("torch backend attributes: node_rank %d: the plugin process whittle starts is node 0; start the "
                         "other nodes with `whittle-plugin-torch worker --node-rank K ...`" % out["node_rank"])
    if out["nnodes"] > 1 and not out["rdzv_endpoint"]:
        raise BadRequest("torch backend attributes: nnodes %d needs rdzv_endpoint = \"host:port\" (this node's address, "
                         "reachable from the others)" % out["nnodes"])
    if out["timeout"] == 0:
        out["timeout"] = 300
    return out


def endpoint(ep):
    if not ep:
        return "127.0.0.1", dist.free_port()
    host, _, port = ep.rpartition(":")
    if not host or not port.isdigit():
        raise BadRequest("rdzv_endpoint %r: want host:port" % ep)
    return host, int(port)


class Backend:
    def __init__(self, cfg):
        self.cfg = cfg
        self.world = cfg["nproc_per_node"] * cfg["nnodes"]
        self.strategy = dist.select_strategy(self.world, torch.__version__, dist.fully_shard_available(), cfg["strategy"]
                                             if cfg["strategy"] != "auto" else "")
        self.lock = threading.Lock()
        self.broken = None
        self.launcher = dist.Launcher()
        device = dist.rank_device(cfg["device"], 0)
        comm = dist.Comm(0, self.world, device)
        if self.world > 1:
            addr, port = endpoint(cfg["rdzv_endpoint"])
            env = {"WORLD_SIZE": str(self.world), "MASTER_ADDR": addr, "MASTER_PORT": str(port),
                   "WHITTLE_TORCH_CONFIG": json.dumps(dict(cfg, strategy=self.strategy))}
            ranks = [(r, r) for r in range(1, cfg["nproc_per_node"])]
            self.launcher.start(ranks, env, [sys.executable, "-m", "whittle_torch.worker"])
            try:
                comm.control = dist.init_group(0, self.world, addr, port, cfg["device"], cfg["timeout"])
            except Exception as e:
                dead = self.launcher.dead()
                self.launcher.stop()
                raise RuntimeError("joining the process group of %d ranks at %s:%d: %s%s" % (
                    self.world, addr, port, e, "; " + dead if dead else ""))
        self.eng = Engine(comm, device, self.strategy, cfg["threads"], cfg["precision"])
        log("info", "torch backend open", torch=torch.__version__, ranks=self.world, device=device,
            strategy=dist.strategy_note(self.strategy, torch.__version__))

    def info(self):
        caps = ["train", "lora", "stats", "evaluate", "generate"]
        from . import bench
        if bench.available():
            caps.append("bench")
        dev = self.cfg["device"]
        if self.world > 1:
            backend = "nccl" if dev.startswith("cuda") else "gloo"
            dev = "%s x%d ranks (%s, %s)" % (dev, self.world, backend, dist.strategy_note(self.strategy, torch.__version__))
        return {"name": "torch", "version": "%s (torch %s)" % (VERSION, torch.__version__), "device": dev,
                "threads": torch.get_num_threads(), "capabilities": caps}

    def _run(self, op, req, local):
        with self.lock:
            if self.broken:
                raise RemoteError("torch: %s" % self.broken)
            if self.world > 1:
                dead = self.launcher.dead()
                if dead:
                    self.broken = "%s; the process group is gone: run the recipe again to resume" % dead
                    raise RemoteError("torch: %s: %s" % (op, self.broken))
                try:
                    self.eng.comm.broadcast((op, req))
                except Exception as e:
                    raise self._failure(op, e)
            result, err = None, None
            try:
                result = local()
            except Exception as e:
                err = e
            if self.world > 1:
                # Every rank says how the call ended, so that a failure on
                # another rank (a file it cannot read) is reported naming it
                # rather than leaving the ranks out of step.
                try:
                    ends = self.eng.comm.gather_objects(None)
                except Exception as e:
                    raise self._failure(op, err or e)
                for r, msg in enumerate(ends):
                    if r > 0 and msg and err is None:
                        err = RemoteError("torch: %s: rank %d: %s" % (op, r, msg))
            if err is None:
                return result
            if isinstance(err, (BadRequest, Cancelled, RemoteError)) or self.world == 1:
                raise err
            raise self._failure(op, err)

    def _failure(self, op, e):
        # A collective that fails because a rank died: name the rank.
        deadline = time.time() + 5
        dead = self.launcher.dead()
        while dead is None and time.time() < deadline:
            time.sleep(0.1)
            dead = self.launcher.dead()
        if dead is None:
            dead = self.launcher.stopped()
        if dead:
            self.broken = "%s; the process group is gone: run the recipe again to resume" % dead
            return RemoteError("torch: %s: %s (%s)" % (op, self.broken, e))
        if self.cfg["nnodes"] > 1:
            return RuntimeError("%s (no rank of this node exited or stopped: look at the other nodes' ranks)" % e)
        return e

    def load(self, req):
        return self._run("load", req, lambda: self.eng.load(req))

    def save(self, req):
        return self._run("save", req, lambda: self.eng.save(req))

    def release(self, mid):
        return self._run("release", mid, lambda: self.eng.release(mid))

    def stats(self, req):
        return self._run("stats", req, lambda: self.eng.stats(req))

    def evaluate(self, req):
        return self._run("evaluate", req, lambda: self.eng.evaluate(req))

    def generate(self, req):
        return self._run("generate", req, lambda: self.eng.generate(req))

    def bench(self, req):
        return self._run("bench", req, lambda: self.eng.bench(req))

    def train(self, req, emit, cancelled):
        return self._run("train", req, lambda: self.eng.train(req, emit, cancelled))

    def close(self):
        with self.lock:
            self.eng.close()
            if self.world > 1 and not self.broken:
                try:
                    self.eng.comm.broadcast(("stop", None))
                except Exception:
                    pass
            self.launcher.stop()
        return None


def open_backend(cfg):
    try:
        c = parse_config(cfg)
    except BadRequest as e:
        raise RemoteError(str(e))
    return Backend(c)
