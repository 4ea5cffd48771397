"""The demo's four acts: N nodes form rounds through the async rendezvous.

Every node is an :class:`~arendezvous.rendezvous.AsyncRendezvous` on its own backend handle (the
handles add a simulated network latency before each write and count what they do). The demo
plays four acts:

1. all N nodes join round 0 at once (``min_nodes = N - 1``, ``max_nodes = N``); each writes its
   own member record, which tells it how many have joined, so nobody races: the node that makes
   it N completes the round;
2. one node drops out without a word (its store handle goes silent); its watcher evicts it when
   its record goes a heartbeat timeout without a heartbeat, and the others form round 1;
3. it comes back: it waits for the next round, the others see it waiting, and round 2 has all N;
4. one node closes the run; everybody sees it closed.

Nothing polls: every node waits on the store's change notifications or on a deadline. The output
shows each join, each round with its ranks, and ends with the round-0 join order, the store
calls each node made, and a table of the rounds.
"""

from __future__ import annotations

import random
import time
from typing import TextIO

import anyio

from ..._backend import AsyncRendezvousBackend
from ...backends._url import open_backend
from ...backends._urlparse import redact_url
from ...rendezvous import AsyncRendezvous, RoundEnd
from ._handle import DemoBackend
from ._narrator import Demo
from ._result import DemoResult

__all__ = ("run_demo",)

HEARTBEAT = 0.05
HEARTBEAT_TIMEOUT = 0.25
LAST_CALL = 0.2


async def _node(
    demo: Demo, rendezvous: AsyncRendezvous, scope: anyio.CancelScope
) -> None:
    with scope:
        async with rendezvous:
            while True:
                info = await rendezvous.next_rendezvous()
                demo.report(info)
                reason = await rendezvous.wait_for_round_end()
                if reason is RoundEnd.CLOSED:
                    return
                if demo.trigger == "in progress":
                    demo.trigger = ("a node dropped out" if reason is RoundEnd.RESTARTED
                                    else "a node was waiting")
                    why = ("a participant was evicted or left" if reason is RoundEnd.RESTARTED
                           else "a node is waiting to join")
                    demo.say(f"  {rendezvous.node} sees round {info.round} is over: {why}")


async def run_demo(
    nodes: int = 8,
    *,
    url: str = "memory://",
    run_id: str | None = None,
    latency: float = 0.002,
    seed: int | None = None,
    out: TextIO,
) -> DemoResult:
    """Play the demo with *nodes* nodes on the backend at *url*; print as it goes."""
    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    run_id = run_id or f"demo-{random.getrandbits(32):08x}"
    demo = Demo(nodes, latency, random.Random(seed), out, HEARTBEAT_TIMEOUT)
    names = [f"node-{index}" for index in range(nodes)]
    handles: list[AsyncRendezvousBackend] = []
    scopes: dict[str, anyio.CancelScope] = {}
    backends: dict[str, DemoBackend] = {}

    def make(name: str) -> AsyncRendezvous:
        handle = open_backend(url, run_id=run_id)
        handles.append(handle)
        backends[name] = DemoBackend(demo, name, handle)
        scopes[name] = anyio.CancelScope()
        return AsyncRendezvous(backends[name], name, max(1, nodes - 1), nodes,
                               last_call=LAST_CALL, heartbeat=HEARTBEAT,
                               heartbeat_timeout=HEARTBEAT_TIMEOUT)

    first = open_backend(url, run_id=run_id)
    handles.append(first)
    demo.say(f"{nodes} nodes joining run {run_id!r} on {first.name} ({redact_url(url)}): "
             f"min {max(1, nodes - 1)}, max {nodes} nodes, last call {LAST_CALL:g} s, "
             f"heartbeat {HEARTBEAT:g} s (evicted after {HEARTBEAT_TIMEOUT:g} s)")
    started = time.perf_counter()
    try:
        async with anyio.create_task_group() as group:
            demo.say("round 0:")
            for name in names:
                group.start_soon(_node, demo, make(name), scopes[name])
            info = await demo.until_rounds(1)
            if nodes > 1:
                victim = info.participants[-1]
                demo.say(f"{victim} drops out: its store handle goes silent, it never leaves")
                demo.next_round("in progress")
                backends[victim].silent = True
                scopes[victim].cancel()
                await demo.until_rounds(2)
                demo.say(f"{victim} comes back and asks to join")
                demo.next_round("in progress")
                group.start_soon(_node, demo, make(victim), scopes[victim])
                await demo.until_rounds(3)
            closer = AsyncRendezvous(first, "closer", 1, 1)
            demo.say("closing the run")
            await closer.close()
        demo.say("every node saw the run closed")
    finally:
        for handle in handles:
            with anyio.CancelScope(shield=True):
                await handle.aclose()
    demo.result.total_operations = demo.operations
    demo.result.total_seconds = time.perf_counter() - started
    return demo.result
