"""The training script of the torchrun tests: ``_allreduce.py FINAL_WORLD_SIZE``.

Every worker joins the gloo group torchrun set up (``MASTER_ADDR``/``MASTER_PORT`` from the
rendezvous), sums ``rank + 1`` with ``all_reduce`` and prints one ``ARDZV {json}`` line. While the
world is smaller than FINAL_WORLD_SIZE it then stays up until its agent stops it for the next
round (a node joined); if that never happens it gives up after two minutes and fails.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import torch
import torch.distributed as dist


def main(final_world_size: int) -> None:
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([rank + 1.0])
    dist.all_reduce(total)
    record = {
        "rank": rank,
        "world_size": world_size,
        "sum": total.item(),
        "group_rank": int(os.environ["GROUP_RANK"]),
        "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        "agent_store": os.environ.get("TORCHELASTIC_USE_AGENT_STORE"),
    }
    print("ARDZV " + json.dumps(record), flush=True)
    dist.destroy_process_group()
    if world_size < final_world_size:
        # Not a race being papered over: the next event is this process being stopped by its
        # agent, which only a node joining causes. The bound keeps a broken run from hanging.
        threading.Event().wait(120)
        sys.exit(3)


if __name__ == "__main__":
    main(int(sys.argv[1]))
