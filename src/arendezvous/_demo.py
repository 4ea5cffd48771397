"""``python -m arendezvous demo``: N simulated nodes race to join one run through compare-and-swap.

Each node reads the member list, waits a simulated network latency, and tries to write the list with
itself appended; when another node got there first its write loses, and it retries from the state
the losing call returned (no extra read). Then every node waits -- through ``wait_for_change``, not
polling -- until all N are in. The output shows each join as it happens and ends with the join
order, the conflicts each node met, and the operations per second.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import TextIO

import anyio

from ._backend import AsyncRendezvousBackend
from .backends._url import open_backend

__all__ = ("DemoResult", "run_demo")


@dataclass
class DemoResult:
    """What the demo measured."""

    order: list[str] = field(default_factory=list)
    conflicts: dict[str, int] = field(default_factory=dict)
    operations: int = 0
    seconds: float = 0.0


def _members(state: bytes) -> list[str]:
    members = json.loads(state)["members"]
    assert isinstance(members, list)
    return [str(member) for member in members]


def _encode(members: list[str]) -> bytes:
    return json.dumps({"members": members}).encode()


async def _node(
    name: str,
    backend: AsyncRendezvousBackend,
    nodes: int,
    latency: float,
    result: DemoResult,
    out: TextIO,
    rng: random.Random,
) -> None:
    await anyio.sleep(rng.uniform(0, latency))  # nodes start at slightly different times
    current = await backend.get_state()
    result.operations += 1
    conflicts = 0
    while True:
        state, token = current if current is not None else (_encode([]), None)
        members = _members(state)
        await anyio.sleep(rng.uniform(0, latency))  # simulated time between read and write
        new_state, new_token, written = await backend.set_state(_encode([*members, name]), token)
        result.operations += 1
        if written:
            break
        conflicts += 1
        current = (new_state, new_token) if new_token is not None else None
    result.conflicts[name] = conflicts
    joined = len(members) + 1
    bar = "#" * joined + "." * (nodes - joined)
    print(f"  [{bar}] {name} joined as #{joined} after {conflicts} conflict(s)", file=out)
    # wait for everyone, woken by the backend's change notification
    latest: tuple[bytes, object] = (new_state, new_token)
    while len(_members(latest[0])) < nodes:
        changed = await backend.wait_for_change(latest[1])
        result.operations += 1
        assert changed is not None
        latest = changed


async def run_demo(
    nodes: int = 8,
    *,
    url: str = "memory://",
    run_id: str | None = None,
    latency: float = 0.002,
    seed: int | None = None,
    out: TextIO,
) -> DemoResult:
    """Race *nodes* simulated nodes to join one run on the backend at *url*; print as it goes."""
    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    run_id = run_id or f"demo-{random.getrandbits(32):08x}"
    rng = random.Random(seed)
    result = DemoResult()
    backends = [open_backend(url, run_id=run_id) for _ in range(nodes)]
    print(f"{nodes} nodes racing to join run {run_id!r} on {backends[0].name} ({url})", file=out)
    started = time.perf_counter()
    try:
        async with anyio.create_task_group() as group:
            for index, backend in enumerate(backends):
                group.start_soon(_node, f"node-{index}", backend, nodes, latency, result, out, rng)
        final = await backends[0].get_state()
    finally:
        for backend in backends:
            await backend.aclose()
    result.seconds = time.perf_counter() - started
    assert final is not None
    result.order = _members(final[0])
    return result


def print_summary(result: DemoResult, out: TextIO) -> None:
    """The table the demo ends with."""
    print("\njoin order:", file=out)
    for position, name in enumerate(result.order, 1):
        print(f"  {position:3d}. {name:10s} {result.conflicts[name]:3d} CAS conflict(s)", file=out)
    total = sum(result.conflicts.values())
    rate = result.operations / result.seconds if result.seconds else 0.0
    print(
        f"\n{len(result.order)} joined, {total} CAS conflicts, {result.operations} backend "
        f"operations in {result.seconds * 1000:.1f} ms ({rate:,.0f} ops/s)",
        file=out,
    )
