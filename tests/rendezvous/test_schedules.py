"""Hypothesis-driven join / leave / crash / restart schedules on the memory and file backends.

Every completed round must have distinct ranks 0..n-1 agreed by all its nodes, and once the
schedule is over a round with every node must complete (see ``_schedules.py``).
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings

from arendezvous import AsyncRendezvousBackend, FileBackend, MemoryBackend, MemoryStore

from ._schedules import Schedule, run_schedule, schedules

SCHEDULES = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@given(schedule=schedules())
@SCHEDULES
def test_schedules_on_memory(anyio_backend: str, schedule: Schedule) -> None:
    store = MemoryStore()
    run_id = f"schedule-{uuid.uuid4().hex[:8]}"

    async def make() -> AsyncRendezvousBackend:
        return MemoryBackend(run_id, store)

    anyio.run(run_schedule, schedule, make, backend=anyio_backend)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@given(schedule=schedules())
@SCHEDULES
def test_schedules_on_file(anyio_backend: str, schedule: Schedule) -> None:
    with tempfile.TemporaryDirectory() as directory:

        async def make() -> AsyncRendezvousBackend:
            return FileBackend(Path(directory), "schedule", durable=False, poll_interval=0.01)

        anyio.run(run_schedule, schedule, make, backend=anyio_backend)


# Found by the schedules above: a second process with node 0's id waited out the first's record
# while the first completed a round and crashed; taking the record over put it into that round's
# group, and it was handed the dead process's rank (and a round the first had already held).
TAKEOVER = Schedule(
    min_nodes=2,
    max_nodes=3,
    last_call=0.1,
    nodes=2,
    offsets=(3600.0, -3600.0),
    steps=(("start", 0), ("start", 1), ("pause", 0.05), ("start", 0), ("settle", 0),
           ("duplicate", 0), ("leave", 1), ("duplicate", 0), ("duplicate", 1), ("restart", 1),
           ("crash", 0)),
)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("attempt", range(3))
def test_a_process_taking_over_a_dead_participants_id_gets_no_rank_of_its_round(
    anyio_backend: str, attempt: int
) -> None:
    store = MemoryStore()

    async def make() -> AsyncRendezvousBackend:
        return MemoryBackend(f"takeover-{attempt}", store)

    anyio.run(run_schedule, TAKEOVER, make, backend=anyio_backend)
