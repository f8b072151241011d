"""whittle-plugin-torch: serve whittle (no arguments), print what torch
offers (info), or start another node's ranks (worker)."""

import argparse
import json
import os
import subprocess
import sys

import torch

from . import dist
from .engine import VERSION


def info():
    v = torch.__version__
    fs = dist.fully_shard_available()
    out = {
        "plugin": VERSION,
        "torch": v,
        "cuda": torch.cuda.is_available(),
        "cuda_devices": torch.cuda.device_count(),
        "nccl": torch.distributed.is_nccl_available() if torch.distributed.is_available() else False,
        "gloo": torch.distributed.is_gloo_available() if torch.distributed.is_available() else False,
        "fully_shard": fs,
        "multi_rank_strategy": dist.strategy_note(dist.select_strategy(2, v, fs), v),
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


def worker(argv):
    p = argparse.ArgumentParser(prog="whittle-plugin-torch worker",
                                description="Start this node's ranks of a multi-node torch backend (torchrun's role).")
    p.add_argument("--nnodes", type=int, required=True)
    p.add_argument("--node-rank", type=int, required=True)
    p.add_argument("--nproc-per-node", type=int, required=True)
    p.add_argument("--rdzv-endpoint", required=True, help="host:port of node 0 (the backend block's rdzv_endpoint)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--timeout", type=int, default=300)
    a = p.parse_args(argv)
    if a.node_rank < 1 or a.node_rank >= a.nnodes:
        p.error("--node-rank must be in [1, nnodes): node 0 is the plugin process whittle starts")
    host, _, port = a.rdzv_endpoint.rpartition(":")
    world = a.nnodes * a.nproc_per_node
    strategy = dist.select_strategy(world, torch.__version__, dist.fully_shard_available(),
                                    "" if a.strategy == "auto" else a.strategy)
    cfg = {"device": a.device, "precision": a.precision, "threads": a.threads, "strategy": strategy, "timeout": a.timeout}
    procs = []
    for local in range(a.nproc_per_node):
        env = dict(os.environ, RANK=str(a.node_rank * a.nproc_per_node + local), LOCAL_RANK=str(local),
                   WORLD_SIZE=str(world), MASTER_ADDR=host, MASTER_PORT=port, WHITTLE_TORCH_CONFIG=json.dumps(cfg))
        procs.append(subprocess.Popen([sys.executable, "-m", "whittle_torch.worker"], env=env))
    rc = 0
    for pr in procs:
        rc = pr.wait() or rc
    sys.exit(rc)


def main():
    args = sys.argv[1:]
    if args and args[0] == "info":
        return info()
    if args and args[0] == "worker":
        return worker(args[1:])
    if args and args[0] in ("-h", "--help", "help"):
        sys.stderr.write("usage: whittle-plugin-torch [info | worker --help]; without arguments it serves whittle\n")
        return
    if args:
        sys.stderr.write("whittle-plugin-torch: unknown subcommand %r (want info or worker)\n" % args[0])
        sys.exit(2)
    from .backend import open_backend
    from .server import serve
    v = torch.__version__

    serve("torch", "%s (torch %s, several ranks: %s)" % (VERSION, v, dist.select_strategy(2, v, dist.fully_shard_available())), open_backend)
