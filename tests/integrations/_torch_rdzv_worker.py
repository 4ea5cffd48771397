"""One node of the multi-process test: ``python _torch_rdzv_worker.py URL RUN_ID NODES``.

Runs torch's own ``DynamicRendezvousHandler.from_backend(...)`` over ``TorchRendezvousBackend``
and a ``BackendStore`` on the same store, prints one JSON line (rank, world size, rank 0's
address as read through the store), then waits for a line on stdin before shutting down: a node
that shut down (closing the run) before the others saw the round complete would fail them.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

# Rank 0 would otherwise host a TCPStore on every interface; the store's bootstrap keys are what
# this test is about, and they go through the BackendStore either way.
os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"

from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
    DynamicRendezvousHandler,
    RendezvousTimeout,
)

from arendezvous import open_backend
from arendezvous.integrations.torch import BackendStore, TorchRendezvousBackend


def main(url: str, run_id: str, nodes: int) -> None:
    backend = TorchRendezvousBackend(open_backend(url, run_id=run_id))
    store = BackendStore(open_backend(url, run_id=f"{run_id}.c10d"), timeout=timedelta(seconds=60))
    handler = DynamicRendezvousHandler.from_backend(
        run_id=run_id,
        store=store,
        backend=backend,
        min_nodes=nodes,
        max_nodes=nodes,
        local_addr="127.0.0.1",
        timeout=RendezvousTimeout(join=timedelta(seconds=60)),
    )
    info = handler.next_rendezvous()
    bootstrap = info.bootstrap_store_info
    assert bootstrap is not None
    print(
        json.dumps(
            {
                "rank": info.rank,
                "world_size": info.world_size,
                "master": [bootstrap.master_addr, bootstrap.master_port],
                "backend": handler.get_backend(),
            }
        ),
        flush=True,
    )
    sys.stdin.readline()
    assert handler.shutdown()
    backend.close()
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
