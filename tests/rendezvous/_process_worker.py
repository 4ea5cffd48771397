"""One node of a cross-process rendezvous test, as a real ``python`` process.

``python _process_worker.py URL RUN_ID NODE MIN MAX LAST_CALL HEARTBEAT``

Opens the backend by URL and prints ``ready``; on the line ``go`` it joins rounds for ever,
printing each completed round as one JSON line (and each end of a round it held, as
``{"ended": reason}``), until the line ``exit`` (or end of input), when it leaves the rendezvous
and exits.
"""

from __future__ import annotations

import json
import sys

import anyio
import anyio.to_thread

from arendezvous import open_backend
from arendezvous.rendezvous import AsyncRendezvous, RoundEnd


async def main(url: str, run_id: str, node: str, min_nodes: int, max_nodes: int,
               last_call: float, heartbeat: float) -> None:
    async with open_backend(url, run_id=run_id) as backend:
        rendezvous = AsyncRendezvous(
            backend, node, min_nodes, max_nodes, last_call=last_call, heartbeat=heartbeat,
            heartbeat_timeout=4 * heartbeat, join_timeout=60,
        )
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        async with anyio.create_task_group() as group:

            async def until_told_to_exit() -> None:
                while (await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                       ).strip() not in ("exit", ""):
                    pass
                group.cancel_scope.cancel()

            group.start_soon(until_told_to_exit)
            async with rendezvous:
                while True:
                    info = await rendezvous.next_rendezvous()
                    print(json.dumps({"node": info.node, "round": info.round, "rank": info.rank,
                                      "round_id": info.round_id,
                                      "participants": info.participants}), flush=True)
                    reason = await rendezvous.wait_for_round_end()
                    print(json.dumps({"ended": str(reason)}), flush=True)
                    if reason is RoundEnd.CLOSED:
                        break
            group.cancel_scope.cancel()


if __name__ == "__main__":
    url, run_id, node, low, high, last_call, heartbeat = sys.argv[1:8]
    anyio.run(main, url, run_id, node, int(low), int(high), float(last_call), float(heartbeat))
