"""A rank other than 0, started by rank 0 (local ranks) or by
`whittle-plugin-torch worker` (other nodes) with torchrun's environment:
RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, and the backend
block's settings in WHITTLE_TORCH_CONFIG."""

import json
import os
import sys

from . import dist
from .engine import Engine


def main():
    cfg = json.loads(os.environ["WHITTLE_TORCH_CONFIG"])
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ["WORLD_SIZE"])
    device = dist.rank_device(cfg["device"], local)
    control = dist.init_group(rank, world, os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), cfg["device"],
                              cfg.get("timeout", 300))
    comm = dist.Comm(rank, world, device, control)
    dist.worker_loop(lambda: Engine(comm, device, cfg["strategy"], cfg.get("threads", 0), cfg.get("precision", "fp32")))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(1)
