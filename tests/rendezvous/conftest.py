"""Backends for the rendezvous tests: every test runs on the memory and the file backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from arendezvous import AsyncRendezvousBackend, FileBackend, MemoryBackend, MemoryStore

MakeBackend = Callable[[], AsyncRendezvousBackend]


@pytest.fixture(params=["memory", "file"])
async def make_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MakeBackend]:
    """A factory of handles on one fresh run; each node gets its own handle. All closed after."""
    run_id = f"rdzv-{uuid.uuid4().hex[:8]}"
    store = MemoryStore()
    handles: list[AsyncRendezvousBackend] = []

    def make() -> AsyncRendezvousBackend:
        handle: AsyncRendezvousBackend
        if request.param == "memory":
            handle = MemoryBackend(run_id, store)
        else:
            # Handles in one process wake each other at once; the short poll only matters for
            # writes from other processes.
            handle = FileBackend(tmp_path, run_id, durable=False, poll_interval=0.01)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        await handle.aclose()
