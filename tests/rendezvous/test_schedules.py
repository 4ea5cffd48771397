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
