from __future__ import annotations

import threading

import anyio
import pytest

from arendezvous import AsyncRendezvousBackend, MemoryBackend, MemoryStore, open_backend
from arendezvous._emulated import emulate_member_table
from arendezvous.backends.memory import MemoryToken, default_store, named_store
from arendezvous.testing.conformance import BackendConformance
from arendezvous.testing.lifecycle import RunLifecycleConformance
from arendezvous.testing.members import MemberTableConformance

pytestmark = pytest.mark.anyio


class TestMemoryConformance(BackendConformance):
    store = MemoryStore()

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return MemoryBackend(run_id, self.store)


async def test_separate_stores_do_not_share_state() -> None:
    first = MemoryBackend("run", MemoryStore())
    second = MemoryBackend("run", MemoryStore())
    _, token, _ = await first.set_state(b"a")
    assert await second.get_state() is None
    assert await second.set_state(b"b", token) == (b"", None, False)


async def test_default_store_is_process_wide() -> None:
    backend = MemoryBackend("default-store-test")
    assert backend.store is default_store()
    url_backend = open_backend("memory://", run_id="default-store-test")
    _, token, _ = await backend.set_state(b"shared")
    assert await url_backend.get_state() == (b"shared", token)


async def test_named_stores_from_urls() -> None:
    first = open_backend("memory://alpha", run_id="r")
    again = open_backend("memory://alpha", run_id="r")
    other = open_backend("memory://beta", run_id="r")
    assert isinstance(first, MemoryBackend)
    assert first.store is named_store("alpha")
    await first.set_state(b"alpha")
    assert await other.get_state() is None
    current = await again.get_state()
    assert current is not None
    assert current[0] == b"alpha"


def test_url_options_and_errors() -> None:
    backend = open_backend("memory://sized?max_state_size=10", run_id="r")
    assert isinstance(backend, MemoryBackend)
    with pytest.raises(
        ValueError, match=r"unknown option 'colour'.*accepted: expire_after, max_state_size"
    ):
        open_backend("memory://?colour=red", run_id="r")
    with pytest.raises(ValueError, match="no path"):
        open_backend("memory://x/y", run_id="r")


def test_tokens_are_opaque_and_unforgeable() -> None:
    store = MemoryStore()

    async def main() -> None:
        backend = MemoryBackend("r", store)
        _, token, _ = await backend.set_state(b"a")
        assert "MemoryToken" in repr(token)
        forged = MemoryToken()  # same class: still not the token
        assert await backend.set_state(b"b", forged) == (b"a", token, False)

    anyio.run(main)


def test_writes_from_other_threads_and_loops_wake_waiters() -> None:
    """A waiter on one event loop is woken by a write made on another loop in another thread."""
    store = MemoryStore()
    created = threading.Event()
    waited: list[object] = []
    wrote: list[object] = []

    async def wait_on_trio() -> None:
        backend = MemoryBackend("cross", store)
        first = await backend.get_state()
        assert first is not None
        created.set()
        waited.append(await backend.wait_for_change(first[1], timeout=10))

    async def write_on_asyncio() -> None:
        backend = MemoryBackend("cross", store)
        current = await backend.get_state()
        assert current is not None
        wrote.append(await backend.set_state(b"changed", current[1]))

    anyio.run(MemoryBackend("cross", store).set_state, b"initial")
    waiter = threading.Thread(target=anyio.run, args=(wait_on_trio,), kwargs={"backend": "trio"})
    waiter.start()
    assert created.wait(10)
    anyio.run(write_on_asyncio)
    waiter.join(10)
    assert not waiter.is_alive()
    [written] = wrote
    assert isinstance(written, tuple)
    assert written[2] is True
    assert waited == [written[:2]]


def test_run_id_is_validated() -> None:
    with pytest.raises(TypeError, match="run_id must be str"):
        MemoryBackend(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        MemoryBackend("")


class TestMemoryLifecycle(RunLifecycleConformance):
    store = MemoryStore()

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return MemoryBackend(run_id, self.store)

    async def make_expiring_backend(
        self, run_id: str, expire_after: float
    ) -> AsyncRendezvousBackend:
        return MemoryBackend(run_id, self.store, expire_after=expire_after)


class TestMemoryMembers(MemberTableConformance):
    store = MemoryStore()

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return MemoryBackend(run_id, self.store)


class TestEmulatedMembers(MemberTableConformance):
    """The table kept inside any backend's one blob, here the memory backend's."""

    store = MemoryStore()

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        register, _ = emulate_member_table(MemoryBackend(run_id, self.store))
        return register
