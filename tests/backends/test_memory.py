from __future__ import annotations

import logging
import os
import threading

import anyio
import pytest

import arendezvous.backends.memory as memory_module
from _forking import fork_with_locks_held
from arendezvous import (
    AsyncRendezvousBackend,
    MemoryBackend,
    MemoryStore,
    RunInfo,
    Token,
    open_backend,
)
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


# -- the run lifecycle ----------------------------------------------------------------------------


class FakeClock:
    """Stands in for the memory backend's ``time`` module: a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(memory_module, "time", fake)
    return fake


async def test_any_write_keeps_an_expiring_run_alive(clock: FakeClock) -> None:
    store = MemoryStore()
    expiring = MemoryBackend("run", store, expire_after=10)
    plain = MemoryBackend("run", store)
    _, token, _ = await expiring.set_state(b"a")
    member, _, _ = await plain.member_table().put("node", "group", b"v", None)
    assert member is not None
    for _ in range(5):
        clock.now += 6
        _, token, written = await plain.set_state(b"b", token)  # a write of a handle without it
        assert written
        clock.now += 6
        touched = await plain.member_table().touch("node", member.version)  # a heartbeat
        assert touched is not None
        member = touched
    clock.now += 9.9
    assert await plain.get_state() is not None
    clock.now += 0.2
    assert await plain.get_state() is None
    assert await plain.member_table().get("node") is None
    assert await plain.list_runs() == []


async def test_runs_no_expiring_handle_wrote_never_expire(clock: FakeClock) -> None:
    store = MemoryStore()
    await MemoryBackend("forever", store).set_state(b"x")
    await MemoryBackend("brief", store, expire_after=1).set_state(b"y")
    clock.now += 10**6
    assert [run.run_id for run in await MemoryBackend("any", store).list_runs()] == ["forever"]


async def test_listing_reports_sizes_members_and_ages(clock: FakeClock) -> None:
    store = MemoryStore()
    lister = MemoryBackend("lister", store)
    await MemoryBackend("untracked", store).set_state(b"123")
    [run] = await lister.list_runs()
    assert run == RunInfo("untracked", 3, None, 0)  # no handle with expire_after wrote yet
    tracked = MemoryBackend("tracked", store, expire_after=60)
    await tracked.member_table().put("a", "g", b"", None)
    await tracked.member_table().put("b", "g", b"", None)
    clock.now += 5
    await MemoryBackend("untracked", store).member_table().put("c", "g", b"", None)
    clock.now += 2
    runs = sorted(await lister.list_runs(), key=lambda run: run.run_id)
    assert runs == [RunInfo("tracked", None, 7.0, 2), RunInfo("untracked", 3, 2.0, 1)]


async def test_reads_leave_nothing_behind() -> None:
    store = MemoryStore()
    backend = MemoryBackend("read-only", store)
    table = backend.member_table()
    assert await backend.get_state() is None
    assert await table.get("node") is None
    assert await table.members("group") == []
    assert await table.count("group") == 0
    assert await backend.list_runs() == []
    assert await backend.delete_run() is False
    member, _, _ = await table.put("node", "group", b"", None)
    assert member is not None
    await table.delete("node", member.version)
    assert await backend.list_runs() == []  # no state, no records: nothing to list


async def test_deleting_and_expiring_wake_member_waiters(clock: FakeClock) -> None:
    store = MemoryStore()
    backend = MemoryBackend("watched", store, expire_after=10)
    table = backend.member_table()
    woken: list[bool] = []

    async def wait(version: Token) -> None:
        woken.append(await table.wait_for_change("node", version, timeout=30))

    for end in ("delete", "expire"):
        member, _, _ = await table.put("node", "group", b"", None)
        assert member is not None
        async with anyio.create_task_group() as group:
            group.start_soon(wait, member.version)
            await anyio.wait_all_tasks_blocked()
            if end == "delete":
                assert await backend.delete_run() is True
            else:
                clock.now += 11
                # Expiry is enforced by the next call on the store, any run's.
                assert await MemoryBackend("other", store).get_state() is None
    assert woken == [True, True]


async def test_an_expired_run_is_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="arendezvous")
    backend = MemoryBackend("logged", MemoryStore(), expire_after=10)
    await backend.set_state(b"x")
    clock.now += 12
    assert await backend.get_state() is None
    assert await backend.get_state() is None
    [record] = [record for record in caplog.records if record.name.startswith("arendezvous")]
    assert record.levelno == logging.INFO
    assert record.getMessage() == ("run 'logged' expired: nobody wrote to it for 12 s "
                                   "(expire_after=10 s)")
    facts = vars(record)
    assert (facts["event"], facts["run_id"], facts["idle"], facts["expire_after"]) == (
        "run_expired", "logged", 12.0, 10.0)


def test_expire_after_option() -> None:
    backend = open_backend("memory://lifecycle?expire_after=0.5", run_id="r")
    assert isinstance(backend, MemoryBackend)
    assert backend.expire_after == 0.5
    assert MemoryBackend("r").expire_after is None
    with pytest.raises(ValueError, match="bad value for option 'expire_after'"):
        open_backend("memory://?expire_after=never", run_id="r")
    with pytest.raises(ValueError, match="positive"):
        MemoryBackend("r", expire_after=0)
    with pytest.raises(ValueError, match="positive"):
        MemoryBackend("r", expire_after=float("nan"))
    with pytest.raises(TypeError, match="expire_after"):
        MemoryBackend("r", expire_after=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")
@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")
def test_a_fork_while_the_stores_locks_are_held_leaves_a_usable_child() -> None:
    """A thread holding the store's lock and its notifier's at the fork: the child still reads,
    writes and wakes (the locks are renewed there)."""
    store = MemoryStore()
    backend = MemoryBackend("fork-held", store)
    anyio.run(backend.set_state, b"parent")
    named = memory_module._named_stores_lock

    def child() -> None:
        async def use() -> None:
            with store._notifier.watching("another key"):  # notify() takes the lock
                current = await backend.get_state()
                assert current is not None
                assert (await backend.set_state(b"child", current[1]))[2]
        anyio.run(use)
        named_store("fork-held")

    assert fork_with_locks_held([store._lock, store._notifier._lock, named], child) == 0
