"""Backends for the rendezvous tests: memory and file, and a one-blob backend (any backend without
a member table, which the rendezvous emulates inside its blob). Every handle is watched, so that
tests wait on writes, never on time (``_observe.py``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from arendezvous import AsyncRendezvousBackend, FileBackend, MemoryBackend, MemoryStore

from ._observe import Changes, Observer, WatchedBackend

MakeBackend = Callable[[], AsyncRendezvousBackend]


@pytest.fixture
def changes() -> Changes:
    """Set after every write through a handle of the test's run."""
    return Changes()


@pytest.fixture(params=["memory", "file", "one-blob"])
async def make_backend(
    request: pytest.FixtureRequest, tmp_path: Path, changes: Changes
) -> AsyncIterator[MakeBackend]:
    """A factory of handles on one fresh run; each node gets its own handle. All closed after."""
    run_id = f"rdzv-{uuid.uuid4().hex[:8]}"
    store = MemoryStore()
    handles: list[AsyncRendezvousBackend] = []

    def make() -> AsyncRendezvousBackend:
        handle: AsyncRendezvousBackend
        if request.param == "file":
            # Handles in one process wake each other at once; the short poll only matters for
            # writes from other processes.
            handle = FileBackend(tmp_path, run_id, durable=False, poll_interval=0.01)
        else:
            handle = MemoryBackend(run_id, store)
        handle = WatchedBackend(handle, changes, one_blob=request.param == "one-blob")
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        await handle.aclose()


@pytest.fixture
def observer(make_backend: MakeBackend, changes: Changes) -> Observer:
    """Reads the test's run through a handle of its own."""
    return Observer(make_backend(), changes)
