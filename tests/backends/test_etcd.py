"""The etcd backend against a real etcd on 127.0.0.1 (started by the fixtures below).

The contract, the network scenarios every network store shares (races, crashes, a frozen server,
a partition, many waiters on one handle, a second event loop) and the state machine run on asyncio
and on trio; the rest covers what is etcd's own: the transaction's failure branch, revisions as
tokens, the request limit, a cluster with a frozen member, authentication, TLS, and URLs. Those
tests use aetcd's asyncio client to look behind the backend, so they run on asyncio.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import aetcd
import anyio
import anyio.to_thread
import pytest
from hypothesis import settings

from _network import on_asyncio
from arendezvous import (
    AsyncRendezvousBackend,
    RendezvousConnectionError,
    RendezvousStateError,
    RunInfo,
    SyncBackend,
    open_backend,
)
from arendezvous.backends.etcd import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_TIMEOUT,
    MAX_STATE_SIZE_LIMIT,
    EtcdBackend,
    EtcdMemberVersion,
    EtcdToken,
    from_url,
)
from arendezvous.backends.etcd._protocol import encode_member
from arendezvous.testing.lifecycle import RunLifecycleConformance
from arendezvous.testing.members import MemberTableConformance
from arendezvous.testing.network import NetworkBackendConformance
from arendezvous.testing.servers.etcd import EtcdCluster
from arendezvous.testing.stateful import backend_state_machine
from servers import find_binary, free_port
from servers.etcd import EtcdServer

from ._loops import BothLoops
from ._waiting import waiting

pytestmark = pytest.mark.anyio

_PREFIX = f"/arendezvous-test-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def anyio_backend() -> str:
    """The etcd-specific tests use aetcd's asyncio client directly; the shared suites run on
    both loops."""
    return "asyncio"


_servers: list[EtcdServer] = []


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    """One etcd shared by the module's tests that do not stop it (each uses its own run ids)."""
    with EtcdServer() as server:
        _servers.append(server)
        try:
            yield server
        finally:
            _servers.remove(server)


@pytest.fixture
def server() -> Iterator[EtcdServer]:
    """An etcd of the test's own, for tests that restart or reconfigure it."""
    with EtcdServer() as server:
        yield server


def _run_id() -> str:
    return f"run-{uuid.uuid4().hex}"


async def _raw_put(server: EtcdServer, key: bytes, value: bytes) -> None:
    """Write *value* under *key* with aetcd's own client, behind the backend's back."""
    async with aetcd.Client(host=server.host, port=server.port, timeout=10) as client:
        await client.put(key, value)


async def _raw_delete(server: EtcdServer, key: bytes) -> None:
    async with aetcd.Client(host=server.host, port=server.port, timeout=10) as client:
        await client.delete(key)


# -- the contract and the shared network scenarios -------------------------------------------------


class TestEtcdConformance(BothLoops, NetworkBackendConformance):
    corrupt_values = (
        *NetworkBackendConformance.corrupt_values,
        b"ARDE",  # the magic alone
        b"ARDE\x02\x00\x00\x00\x00state",  # a format version from the future
        b"ARDE\x01\x00\x00\x00\x00state",  # the right header with a wrong checksum
        b"\x80\x04\x95pickle",  # the start of a pickle
    )


    @pytest.fixture(autouse=True)
    def _server(self, etcd_server: EtcdServer) -> None:
        self.etcd = etcd_server

    def server_address(self) -> tuple[str, int]:
        return self.etcd.host, self.etcd.port

    def backend_at(
        self, run_id: str, host: str, port: int, *, timeout: float
    ) -> AsyncRendezvousBackend:
        return EtcdBackend(run_id, f"{host}:{port}", key_prefix=_PREFIX, timeout=timeout)

    def server_url(self, run_id: str) -> str:
        return f"{self.etcd.url}?key_prefix={_PREFIX}"

    @classmethod
    def start_server(cls) -> EtcdServer:
        return EtcdServer().start()

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        await on_asyncio(_raw_put, self.etcd, (_PREFIX + run_id).encode(), raw)

    async def delete_state(self, run_id: str) -> None:
        await on_asyncio(_raw_delete, self.etcd, (_PREFIX + run_id).encode())

    async def server_connections(self) -> int:
        """The server's watch streams: what a waiter costs it (the handle's connection is one
        either way)."""
        return await anyio.to_thread.run_sync(_watch_streams, self.etcd)


def _watch_streams(server: EtcdServer) -> int:
    with urllib.request.urlopen(f"http://{server.endpoint}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("etcd_debugging_mvcc_watch_stream_total "):
                return int(float(line.split()[1]))
    raise AssertionError("etcd published no watch stream count")


def _state_machine_backend(run_id: str) -> EtcdBackend:
    return EtcdBackend(run_id, _servers[-1].endpoint, key_prefix=_PREFIX)


_MACHINE_SETTINGS = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestStateMachine = pytest.mark.usefixtures("etcd_server")(
    backend_state_machine(_state_machine_backend).TestCase
)
TestStateMachine.settings = _MACHINE_SETTINGS
TestStateMachineOnTrio = pytest.mark.usefixtures("etcd_server")(
    backend_state_machine(_state_machine_backend, anyio_backend="trio").TestCase
)
TestStateMachineOnTrio.settings = _MACHINE_SETTINGS


class _OnEtcd(BothLoops):
    """A kit class on the module's server, on asyncio and on trio (there through the loop
    thread)."""

    @pytest.fixture(autouse=True)
    def _server(self, etcd_server: EtcdServer) -> None:
        self.etcd = etcd_server

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return EtcdBackend(run_id, self.etcd.endpoint, key_prefix=_PREFIX)


class TestEtcdMembers(_OnEtcd, MemberTableConformance):
    """The member table's contract."""


class TestEtcdLifecycle(_OnEtcd, RunLifecycleConformance):
    """Deleting, listing and expiring runs (a lease per run)."""

    async def make_expiring_backend(
        self, run_id: str, expire_after: float
    ) -> AsyncRendezvousBackend:
        return EtcdBackend(
            run_id, self.etcd.endpoint, key_prefix=_PREFIX, expire_after=expire_after
        )


# -- etcd specifics ------------------------------------------------------------------------------


@pytest.fixture
async def backend(etcd_server: EtcdServer) -> AsyncIterator[EtcdBackend]:
    async with EtcdBackend(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX) as backend:
        yield backend


async def test_state_is_stored_under_the_prefixed_key(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    _, token, _ = await backend.set_state(b"payload")
    assert backend.key == (_PREFIX + backend.run_id).encode()
    async with aetcd.Client(host=etcd_server.host, port=etcd_server.port, timeout=10) as client:
        stored = await client.get(backend.key)
    assert stored is not None
    assert stored.value.endswith(b"payload")
    assert isinstance(token, EtcdToken)
    assert token.mod_revision == stored.mod_revision


class _HostileToken:
    """A token whose ``__eq__`` must never run: the backend compares only its own tokens."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("the backend called a foreign token's __eq__")

    __hash__ = object.__hash__


async def test_foreign_tokens_are_stale_and_never_compared(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    _, token, _ = await backend.set_state(b"a")
    assert isinstance(token, EtcdToken)

    class SubToken(EtcdToken):
        __slots__ = ()

    other_prefix = EtcdBackend(backend.run_id, etcd_server.endpoint, key_prefix=_PREFIX + "x/")
    async with other_prefix:
        _, other_token, _ = await other_prefix.set_state(b"other")
    foreign: list[Any] = [
        _HostileToken(),
        SubToken(token.cluster_id, token.key, token.mod_revision),
        EtcdToken(token.cluster_id + 1, token.key, token.mod_revision),
        EtcdToken(token.cluster_id, token.key + b"x", token.mod_revision),
        other_token,
        token.mod_revision,  # the bare revision is not the token
        (token.cluster_id, token.key, token.mod_revision),
    ]
    for garbage in foreign:
        assert await backend.set_state(b"b", garbage) == (b"a", token, False)
        with anyio.fail_after(10):
            assert await backend.wait_for_change(garbage) == (b"a", token)
    # the same values in the real type are the current version, not a forgery
    rebuilt = EtcdToken(token.cluster_id, token.key, token.mod_revision)
    assert rebuilt == token
    assert hash(rebuilt) == hash(token)
    assert (await backend.set_state(b"c", rebuilt))[2]


async def test_a_fresh_handle_checks_the_cluster_before_trusting_a_token(
    etcd_server: EtcdServer,
) -> None:
    run_id = _run_id()
    async with EtcdBackend(run_id, etcd_server.endpoint, key_prefix=_PREFIX) as first:
        _, token, _ = await first.set_state(b"a")
    assert isinstance(token, EtcdToken)
    forged = EtcdToken(token.cluster_id ^ 1, token.key, token.mod_revision)
    async with EtcdBackend(run_id, etcd_server.endpoint, key_prefix=_PREFIX) as fresh:
        assert await fresh.set_state(b"b", forged) == (b"a", token, False)
    async with EtcdBackend(run_id, etcd_server.endpoint, key_prefix=_PREFIX) as fresh:
        state, new_token, written = await fresh.set_state(b"b", token)
        assert (state, written) == (b"b", True)
        assert new_token != token


async def test_losing_writer_gets_the_winner_from_the_same_transaction(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    _, token, _ = await backend.set_state(b"a")
    async with EtcdBackend(backend.run_id, etcd_server.endpoint, key_prefix=_PREFIX) as other:
        _, winner, _ = await other.set_state(b"winner", token)
    calls: list[str] = []
    call = backend._call

    async def counting(
        cluster: Any, operation: str, method: str, request: Any, *, idempotent: bool
    ) -> Any:
        calls.append(method)
        return await call(cluster, operation, method, request, idempotent=idempotent)

    backend._call = counting  # type: ignore[method-assign]
    assert await backend.set_state(b"loser", token) == (b"winner", winner, False)
    assert calls == ["Txn"]


async def test_wait_for_change_ignores_writes_to_other_runs(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    _, token, _ = await backend.set_state(b"a")
    async with EtcdBackend(backend.run_id + "-sibling", etcd_server.endpoint) as sibling:
        result: list[Any] = []

        async def wait() -> None:
            result.append(await backend.wait_for_change(token, timeout=0.3))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await sibling.set_state(b"elsewhere")
        assert result == [None]


async def test_the_size_limit_fits_etcds_request_limit(etcd_server: EtcdServer) -> None:
    """The largest state the largest allowed max_state_size lets through, under the longest
    key, is accepted by etcd; one byte more is a ValueError before anything is sent."""
    run_id = "r" * (16 * 1024 - len(_PREFIX))
    async with EtcdBackend(
        run_id, etcd_server.endpoint, key_prefix=_PREFIX, max_state_size=MAX_STATE_SIZE_LIMIT
    ) as backend:
        _, token, written = await backend.set_state(b"x" * MAX_STATE_SIZE_LIMIT)
        assert written
        with pytest.raises(ValueError, match="at most"):
            await backend.set_state(b"x" * (MAX_STATE_SIZE_LIMIT + 1), token)
        current = await backend.get_state()
        assert current is not None
        assert (len(current[0]), current[1]) == (MAX_STATE_SIZE_LIMIT, token)


@pytest.mark.parametrize("size", [MAX_STATE_SIZE_LIMIT + 1, 2 << 20])
def test_a_size_limit_over_etcds_request_limit_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match=r"1\.5 MiB"):
        EtcdBackend("r", max_state_size=size)
    with pytest.raises(ValueError, match="max_state_size"):
        open_backend(f"etcd://127.0.0.1:1?max_state_size={size}", run_id="r")


def test_a_key_too_long_for_a_request_is_refused() -> None:
    with pytest.raises(ValueError, match="16384"):
        EtcdBackend("r" * (16 * 1024), key_prefix="/")


def test_sync_adapter_from_threads(etcd_server: EtcdServer) -> None:
    """The blocking face (used by torch) over etcd: threads racing, one waiting for the result."""
    run_id = _run_id()
    with SyncBackend(EtcdBackend(run_id, etcd_server.endpoint, key_prefix=_PREFIX)) as backend:
        _, token, _ = backend.set_state(b"0")
        seen: list[Any] = []
        waiter = threading.Thread(
            target=lambda: seen.append(backend.wait_for_change(token, timeout=30))
        )
        waiter.start()

        def increment() -> None:
            for _ in range(10):
                current = backend.get_state()
                assert current is not None
                state, token, written = current[0], current[1], False
                while not written:
                    state, token, written = backend.set_state(b"%d" % (int(state) + 1), token)

        writers = [threading.Thread(target=increment) for _ in range(3)]
        for thread in writers:
            thread.start()
        for thread in [*writers, waiter]:
            thread.join(30)
            assert not thread.is_alive()
        current = backend.get_state()
        assert current is not None
        assert current[0] == b"30"
        assert len(seen) == 1
        assert seen[0] is not None
        assert seen[0][1] != token


# -- the member table ----------------------------------------------------------------------------


class _Counted(EtcdBackend):
    """Records the method of every call the handle makes (its member table's included), the
    topics of every watch stream it opens, and the topics a stream watches after each key it adds
    (``subscriptions``; ``opens`` counts the streams)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []
        self.subscriptions: list[frozenset[Any]] = []
        self.subscribed = anyio.Event()
        self.opens = 0
        self.feeds: list[Any] = []

    async def _call(
        self, cluster: Any, operation: str, method: str, request: Any, *, idempotent: bool
    ) -> Any:
        self.calls.append(method)
        return await super()._call(cluster, operation, method, request, idempotent=idempotent)

    def _make_feed(self, client: Any) -> Any:
        feed = super()._make_feed(client)
        opened, added = feed.open, feed.add

        def watching(topics: frozenset[Any]) -> None:
            self.subscriptions.append(topics)
            self.subscribed.set()
            self.subscribed = anyio.Event()

        async def open(topics: frozenset[Any]) -> None:
            await opened(topics)
            self.opens += 1
            watching(topics)

        async def add(topics: frozenset[Any]) -> bool:
            assert await added(topics)
            watching(self.subscriptions[-1] | topics)
            return True

        feed.open = open  # type: ignore[method-assign]
        feed.add = add  # type: ignore[method-assign]
        # One stream at a time: the hub ends a feed before it makes the next.
        assert all(not earlier.live for earlier in self.feeds)
        self.feeds.append(feed)
        return feed


@pytest.fixture
async def counted(etcd_server: EtcdServer) -> AsyncIterator[_Counted]:
    async with _Counted(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX) as backend:
        yield backend


async def _raw_get(server: EtcdServer, key: bytes) -> Any:
    async with aetcd.Client(host=server.host, port=server.port, timeout=10) as client:
        return await client.get(key)


async def test_member_records_lie_beside_the_runs_key(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    """A record key and one group-index key per node, named after the state key and a NUL; a
    move replaces the index key, a touch rewrites only the record, a delete removes both."""
    table = backend.member_table()
    assert backend.member_table() is table  # one per handle
    record_key = backend.key + b"\x00m/n\xc3\xa9"
    index_key = backend.key + b"\x00g/g1\x00n\xc3\xa9"
    member, _, _ = await table.put("n\u00e9", "g1", b"v", None)
    assert member is not None
    assert isinstance(member.version, EtcdMemberVersion)
    assert member.version.key == record_key
    record, index = await _raw_get(etcd_server, record_key), await _raw_get(etcd_server, index_key)
    assert record.mod_revision == member.version.mod_revision == member.seq
    assert index.mod_revision == member.seq
    assert index.value == b""
    touched = await table.touch("n\u00e9", member.version)
    assert touched is not None
    assert touched.seq == member.seq
    assert (await _raw_get(etcd_server, index_key)).mod_revision == index.mod_revision
    moved, _, _ = await table.put("n\u00e9", "g2", b"w", touched.version)
    assert moved is not None
    assert await _raw_get(etcd_server, index_key) is None
    assert await _raw_get(etcd_server, backend.key + b"\x00g/g2\x00n\xc3\xa9") is not None
    assert await table.delete("n\u00e9", moved.version)
    async with aetcd.Client(host=etcd_server.host, port=etcd_server.port, timeout=10) as client:
        left = await client.get_prefix(backend.key + b"\x00")
    assert list(left) == []


async def test_every_member_call_is_one_round_trip(counted: _Counted) -> None:
    table = counted.member_table()
    await counted.get_state()  # the handle knows its cluster from now on
    steps: list[tuple[str, Any]] = []

    async def step(name: str, call: Any) -> Any:
        before = len(counted.calls)
        result = await call
        steps.append((name, counted.calls[before:]))
        return result

    member, _, _ = await step("put None", table.put("a", "g", b"v", None))
    await step("losing put", table.put("a", "g", b"v", None))
    touched = await step("touch", table.touch("a", member.version))
    await step("stale touch", table.touch("a", member.version))
    moved, _, _ = await step("put", table.put("a", "h", b"v", touched.version))
    await step("losing put with a version", table.put("a", "g", b"v", touched.version))
    await step("get", table.get("a"))
    await step("count", table.count("h"))
    await step("members", table.members("h"))
    await step("delete", table.delete("a", moved.version))
    assert steps == [
        ("put None", ["Txn"]), ("losing put", ["Txn"]), ("touch", ["Txn"]),
        ("stale touch", ["Txn"]), ("put", ["Txn"]), ("losing put with a version", ["Txn"]),
        ("get", ["Range"]), ("count", ["Range"]), ("members", ["Txn"]), ("delete", ["Txn"]),
    ]  # fmt: skip


async def test_a_corrupt_member_record_raises_and_is_never_overwritten(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    table = backend.member_table()
    member, _, _ = await table.put("a", "g", b"v", None)
    assert member is not None
    record_key = backend.key + b"\x00m/a"
    good = (await _raw_get(etcd_server, record_key)).value
    for raw in (b"", b"ARDM", good[:-1], good[:9] + b"\xff" + good[10:], b"\x80\x04\x95pickle"):
        await on_asyncio(_raw_put, etcd_server, record_key, raw)
        with pytest.raises(RendezvousStateError):
            await table.get("a")
        with pytest.raises(RendezvousStateError):
            await table.members("g")
        with pytest.raises(RendezvousStateError):
            await table.put("a", "h", b"w", None)  # the loser's read decodes it
        assert await table.touch("a", member.version) is None
        assert not await table.delete("a", member.version)
        assert await table.wait_for_change("a", member.version, timeout=0)
        assert (await _raw_get(etcd_server, record_key)).value == raw
        assert await table.count("h") == 0


async def test_member_versions_are_checked_before_anything_is_compared(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    table = backend.member_table()
    member, _, _ = await table.put("a", "g", b"v", None)
    assert member is not None
    version = member.version
    assert isinstance(version, EtcdMemberVersion)
    assert str(version.mod_revision) in repr(version)
    assert b"ARDM" not in repr(version).encode()

    class SubVersion(EtcdMemberVersion):
        __slots__ = ()

    other, _, _ = await table.put("b", "g", b"v", None)
    assert other is not None
    foreign: list[Any] = [
        _HostileToken(),
        SubVersion(*dataclasses.astuple(version)),
        dataclasses.replace(version, cluster_id=version.cluster_id + 1),
        dataclasses.replace(version, mod_revision=2**63),
        dataclasses.replace(version, record=b"ARDM"),  # not a record: never current
        other.version,  # another node's
        version.mod_revision,
    ]
    for garbage in foreign:
        assert (await table.put("a", "h", b"w", garbage)) == (member, False, 0)
        assert await table.touch("a", garbage) is None
        assert not await table.delete("a", garbage)
        assert await table.wait_for_change("a", garbage, timeout=10)
    # The right revision with another record (made up) fails etcd's compare of the value.
    record = encode_member("h", b"w", 0)
    made_up = dataclasses.replace(version, record=record)
    assert (await table.put("a", "h", b"w", made_up)) == (member, False, 0)
    assert await table.touch("a", made_up) is None
    assert await table.get("a") == member
    # A fresh handle checks which cluster answers before it trusts a revision.
    async with EtcdBackend(backend.run_id, etcd_server.endpoint, key_prefix=_PREFIX) as fresh:
        forged = dataclasses.replace(version, cluster_id=version.cluster_id ^ 1)
        assert await fresh.member_table().touch("a", forged) is None
    async with EtcdBackend(backend.run_id, etcd_server.endpoint, key_prefix=_PREFIX) as fresh:
        rebuilt = EtcdMemberVersion(*dataclasses.astuple(version))
        assert await fresh.member_table().touch("a", rebuilt) is not None


async def test_a_touch_reaches_its_watcher_without_a_read(
    counted: _Counted, etcd_server: EtcdServer
) -> None:
    """The watch event itself says that the record moved: once the stream is up and has seen the
    record, neither a wait's first look nor its wake-up reads anything."""
    async with EtcdBackend(counted.run_id, etcd_server.endpoint, key_prefix=_PREFIX) as writer:
        member, _, _ = await writer.member_table().put("a", "g", b"v", None)
        assert member is not None
        table = counted.member_table()
        assert not await table.wait_for_change("a", member.version, timeout=0.05)
        for _ in range(3):
            before = list(counted.calls)
            outcome: list[bool] = []

            async def wait(version: Any, outcome: list[bool] = outcome) -> None:
                outcome.append(await table.wait_for_change("a", version, timeout=10))

            async with anyio.create_task_group() as group:
                group.start_soon(wait, member.version)
                await anyio.wait_all_tasks_blocked()
                touched = await writer.member_table().touch("a", member.version)
                assert touched is not None
                member = touched
            assert outcome == [True]
            assert counted.calls == before  # no Range: the event was enough


async def test_a_new_state_reaches_its_waiter_from_the_watch_event(
    counted: _Counted, etcd_server: EtcdServer
) -> None:
    """A watch event carries the new value: a waiter's first look reads, its wake-up does not.
    A wait begun right after the handle's own write never reports the state before it, though
    the stream still had that older state as its newest event when the write returned."""
    async with EtcdBackend(counted.run_id, etcd_server.endpoint, key_prefix=_PREFIX) as writer:
        _, token, _ = await counted.set_state(b"first")
        for number in range(3):
            async with waiting(counted, token, within=10) as results:
                await anyio.wait_all_tasks_blocked()
                before = list(counted.calls)
                _, written, _ = await writer.set_state(f"by the writer {number}".encode(), token)
            assert results == [(f"by the writer {number}".encode(), written)]
            assert counted.calls == before  # no Range: the event was enough
            # The handle's own write, then a wait on its token: nothing has changed since.
            _, token, _ = await counted.set_state(f"own {number}".encode(), written)
            assert await counted.wait_for_change(token, timeout=0.05) is None


async def test_one_watch_stream_serves_many_watched_records(
    counted: _Counted, etcd_server: EtcdServer
) -> None:
    nodes = [f"node-{index}" for index in range(12)]
    async with EtcdBackend(counted.run_id, etcd_server.endpoint, key_prefix=_PREFIX) as writer:
        writes = writer.member_table()
        members: dict[str, Any] = {
            node: (await writes.put(node, "g", b"v", None)).member for node in nodes
        }
        _, token, _ = await writer.set_state(b"state")
        table = counted.member_table()
        assert not await table.wait_for_change(nodes[0], members[nodes[0]].version, timeout=0.01)
        baseline = await anyio.to_thread.run_sync(_watch_streams, etcd_server)
        woken: list[str] = []

        async def wait(node: str) -> None:
            if await table.wait_for_change(node, members[node].version, timeout=20):
                woken.append(node)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for node in nodes:
                    group.start_soon(wait, node)
                group.start_soon(counted.wait_for_change, token)
                await anyio.wait_all_tasks_blocked()
                while counted.subscriptions[-1] != {counted.key, *(
                        counted.key + b"\x00m/" + node.encode() for node in nodes)}:
                    await counted.subscribed.wait()
                # Keys join the live stream: the first wait's stream is the only one.
                assert counted.opens == 1
                for node in nodes:
                    await writes.touch(node, members[node].version)
                await writer.set_state(b"again", token)
            # The client ends each stream before it makes the next (the feeds say so), but the
            # server counts a stream gone only once its handler has unwound, a moment later,
            # and its gauge tells nobody: look until it settles.
            while await anyio.to_thread.run_sync(_watch_streams, etcd_server) != baseline:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    assert sorted(woken) == sorted(nodes)


async def test_a_watched_record_is_forgotten_when_its_waiters_are_gone(
    counted: _Counted,
) -> None:
    counted.FEED_LINGER = 0.2  # type: ignore[misc]
    table = counted.member_table()
    a, _, _ = await table.put("a", "g", b"v", None)
    b, _, _ = await table.put("b", "g", b"v", None)
    assert a is not None
    assert b is not None
    key_a, key_b = (counted.key + b"\x00m/" + node for node in (b"a", b"b"))
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(partial(table.wait_for_change, "b", b.version, timeout=30))
            assert not await table.wait_for_change("a", a.version, timeout=0.05)
            assert key_a in counted.subscriptions[-1]
            # Nobody waits on a any more: after the linger the stream is made again without it.
            while key_a in counted.subscriptions[-1]:
                await counted.subscribed.wait()
            assert counted.subscriptions[-1] == {key_b}
            assert counted._bound is not None
            hub = counted._bound.hub
            assert hub is not None
            assert set(hub._topics) == {key_b}
            # b's waiter still hears of b's touch on the new stream.
            assert await table.touch("b", b.version) is not None
        # b's waiter returned; once the feed has lingered and stopped, it forgets b too.
        assert hub is not None
        assert hub._task is not None
        await asyncio.wait({hub._task})
        assert hub._topics == {}


async def test_a_lost_compare_after_an_unanswered_attempt_may_have_been_applied(
    etcd_server: EtcdServer,
) -> None:
    """A write retried on another member after one went unanswered, whose compare then fails,
    may have lost to its own first attempt: it says so instead of reporting a lost race."""

    class Unanswered(EtcdBackend):
        async def _call(
            self, cluster: Any, operation: str, method: str, request: Any, *, idempotent: bool
        ) -> Any:
            response, _ = await super()._call(cluster, operation, method, request,
                                              idempotent=idempotent)
            return response, not idempotent  # as if a first attempt had gone unanswered

    async with Unanswered(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX) as backend:
        table = backend.member_table()
        member, written, _ = await table.put("a", "g", b"v", None)
        assert written  # a compare that held: whatever the first attempt did, this one applied
        assert member is not None
        touched = await table.touch("a", member.version)
        assert touched is not None
        for call in (lambda: table.put("a", "h", b"v", None),
                     lambda: table.put("a", "h", b"v", member.version),
                     lambda: table.touch("a", member.version),
                     lambda: table.delete("a", member.version)):  # fmt: skip
            with pytest.raises(RendezvousConnectionError, match="may or may not have been applied"):
                await call()
        assert await table.get("a") == touched


async def test_member_keys_over_etcds_limit_are_refused_before_anything_is_sent(
    etcd_server: EtcdServer,
) -> None:
    run_id = "r" * (16 * 1024 - len(_PREFIX) - 40)
    async with _Counted(run_id, etcd_server.endpoint, key_prefix=_PREFIX) as backend:
        table = backend.member_table()
        for call in (
            lambda: table.put("n" * 40, "g", b"v", None),
            lambda: table.put("n", "g" * 40, b"v", None),
            lambda: table.get("n" * 40),
            lambda: table.count("g" * 40),
            lambda: table.members("g" * 40),
            lambda: table.wait_for_change("n" * 40, None, timeout=0),
        ):
            with pytest.raises(ValueError, match="16384"):
                await call()
        assert backend.calls == []
        assert (await table.put("n", "g", b"v", None)).written  # short enough


# -- a cluster ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    find_binary("etcd", debian_package="etcd-server")  # skip locally / fail in CI if missing
    with EtcdCluster(3) as running:
        yield running


async def test_a_frozen_member_is_passed_over(cluster: EtcdCluster) -> None:
    """SIGSTOP the member listed first (a follower; the other two keep a quorum): its TCP
    connection stays up and nothing answers on it, yet every call succeeds within the handle's
    timeout on another member, and a waiter is woken through another member's watch."""
    leader = cluster.leader()
    order = sorted(range(3), key=lambda index: index == leader)  # a follower first
    endpoints = ",".join(cluster.endpoints[index] for index in order)
    timeout = 3.0
    run_id = _run_id()
    writer = EtcdBackend(run_id, endpoints, key_prefix=_PREFIX, timeout=timeout)
    waiter = EtcdBackend(run_id, endpoints, key_prefix=_PREFIX, timeout=timeout)
    _, token, _ = await writer.set_state(b"0")
    cluster.pause(order[0])
    try:
        for step in range(6):
            started = anyio.current_time()
            async with waiting(waiter, token, timeout=30) as results:
                await anyio.wait_all_tasks_blocked()
                state, token, written = await writer.set_state(b"%d" % (step + 1), token)
            assert written, "a write was not applied while one member of three was frozen"
            assert results[-1] == (state, token)
            assert await writer.get_state() == (state, token)
            assert anyio.current_time() - started < 2 * timeout + 2
    finally:
        cluster.resume(order[0])
    await writer.aclose()
    await waiter.aclose()


async def test_every_member_refusing_fails_fast() -> None:
    ports = [free_port() for _ in range(3)]
    endpoints = ",".join(f"127.0.0.1:{port}" for port in ports)
    async with EtcdBackend(_run_id(), endpoints, timeout=30) as backend:
        for call in (backend.get_state, lambda: backend.set_state(b"x")):
            started = anyio.current_time()
            with pytest.raises(RendezvousConnectionError, match="UNAVAILABLE"):
                await call()
            assert anyio.current_time() - started < 2


# -- authentication and TLS ----------------------------------------------------------------------


async def test_user_and_password(server: EtcdServer) -> None:
    password = "p@ss:w/rd%"
    server.enable_auth(password)
    quoted = "p%40ss%3Aw%2Frd%25"
    url = f"etcd://root:{quoted}@{server.endpoint}"
    backend = open_backend(url + "?expire_after=60", run_id=_run_id())  # leases need it too
    assert password not in repr(backend)
    assert quoted not in repr(backend)
    async with backend:
        _, token, written = await backend.set_state(b"authenticated")
        assert written
        # the handle keeps working across a restart, logging in again if etcd forgot its token
        await anyio.to_thread.run_sync(server.restart)
        assert await backend.get_state() == (b"authenticated", token)
    for bad in (f"etcd://root:wrong@{server.endpoint}", f"etcd://{server.endpoint}"):
        async with open_backend(bad + "?timeout=2", run_id=_run_id()) as refused:
            with pytest.raises(RendezvousConnectionError) as info:
                await refused.set_state(b"x")
            assert "wrong" not in str(info.value)
            assert password not in str(info.value)
    with pytest.raises(ValueError, match="unknown option") as bad_option:
        open_backend(f"{url}?colour=red", run_id="r")
    assert password not in str(bad_option.value)
    assert quoted not in str(bad_option.value)


async def test_tls_with_client_certificate() -> None:
    with EtcdServer(tls=True, client_cert_auth=True) as server:
        run_id = _run_id()
        async with open_backend(server.url, run_id=run_id) as backend:
            _, token, _ = await backend.set_state(b"over tls")
            assert await backend.wait_for_change(None) == (b"over tls", token)
        # The older option names, still documented, reach the same server.
        older = server.url.replace("tls_ca_file=", "ca_cert=").replace(
            "tls_cert_file=", "cert_cert="
        ).replace("tls_key_file=", "cert_key=")
        assert older != server.url
        async with open_backend(older, run_id=run_id) as backend:
            assert await backend.get_state() == (b"over tls", token)
        for url in (
            f"etcd://{server.endpoint}?tls_ca_file={server.ca_file}&timeout=0.5",  # no client cert
            f"etcd://{server.endpoint}?tls=true&timeout=0.5",  # the test CA is not trusted
            f"etcd://{server.endpoint}?timeout=0.5",  # plaintext to a TLS port
        ):
            async with open_backend(url, run_id=run_id) as refused:
                with pytest.raises(RendezvousConnectionError):
                    await refused.get_state()


# -- the run lifecycle ---------------------------------------------------------------------------


async def _raw_range(server: EtcdServer, start: bytes, end: bytes) -> list[tuple[bytes, Any]]:
    async with aetcd.Client(host=server.host, port=server.port, timeout=10) as client:
        return [(kv.key, kv) for kv in await client.get_range(start, end)]


async def test_deleting_a_run_deletes_its_member_and_index_keys(etcd_server: EtcdServer) -> None:
    """One DeleteRange over the run's key and every key named after it, and nothing of a run
    whose id merely starts with this one's."""
    run_id = _run_id()
    doomed = EtcdBackend(run_id, etcd_server.endpoint, key_prefix=_PREFIX)
    neighbour = EtcdBackend(run_id + "x", etcd_server.endpoint, key_prefix=_PREFIX)
    for backend in (doomed, neighbour):
        await backend.set_state(b"state")
        await backend.member_table().put("a", "g1", b"v", None)
        await backend.member_table().put("b", "g2", b"v", None)
    end = doomed.key + b"\x01"
    assert len(await _raw_range(etcd_server, doomed.key, end)) == 5  # state, 2 records, 2 index
    assert await doomed.delete_run() is True
    assert await _raw_range(etcd_server, doomed.key, end) == []
    assert await doomed.delete_run() is False
    assert await neighbour.get_state() is not None
    assert await neighbour.member_table().count("g2") == 1
    for backend in (doomed, neighbour):
        await backend.aclose()


async def test_a_deleted_run_is_gone_at_one_revision(etcd_server: EtcdServer) -> None:
    """At the revision before the deletion every key of the run is there; at the deletion's
    own, none is: no reader can see some of them gone and others not."""
    backend = EtcdBackend(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX)
    await backend.set_state(b"state")
    await backend.member_table().put("a", "g", b"v", None)
    await backend.delete_run()

    async def keys_at(revision: int) -> tuple[int, list[bytes]]:
        request = backend._rpc.RangeRequest(
            key=backend.key, range_end=backend.key + b"\x01", revision=revision, keys_only=True
        )

        async def call(cluster: Any) -> Any:
            return await backend._call(cluster, "test", "Range", request, idempotent=True)

        response, _ = await backend._on_client(call)
        return response.header.revision, [kv.key for kv in response.kvs]

    deleted_at, left = await keys_at(0)  # nothing else writes to this etcd meanwhile
    assert left == []
    assert (await keys_at(deleted_at - 1))[1] == [
        backend.key, backend.key + b"\x00g/g\x00a", backend.key + b"\x00m/a"
    ]
    await backend.aclose()


class _LeaseCounted(EtcdBackend):
    """Records every call to etcd as ``service.method``, the lease's calls included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def _open_client(self) -> Any:
        cluster = super()._open_client()
        call = cluster.call

        async def counted(method: str, request: Any, **options: Any) -> Any:
            self.calls.append(f"{options.get('service', 'kv')}.{method}")
            return await call(method, request, **options)

        cluster.call = counted  # type: ignore[method-assign]
        return cluster


async def test_writes_keep_the_runs_lease_alive(etcd_server: EtcdServer) -> None:
    """Every key a write puts carries the run's lease; the first write grants it, and a write
    keeps it alive once the TTL's margin over expire_after has passed since this handle last
    did (a member write too: a heartbeat keeps its run alive), and only then."""
    backend = _LeaseCounted(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX, expire_after=1)
    table = backend.member_table()
    await backend.set_state(b"state")
    assert backend.calls == ["lease.LeaseKeepAlive", "lease.LeaseGrant", "kv.Txn"]
    put = await table.put("a", "g", b"v", None)
    assert put.member is not None
    assert backend.calls[3:] == ["kv.Txn"]  # within the margin: no keep-alive
    keys = [backend.key, backend.key + b"\x00m/a", backend.key + b"\x00g/g\x00a"]
    for key, kv in await _raw_range(etcd_server, backend.key, backend.key + b"\x01"):
        assert (key, kv.lease) in [(each, backend.lease) for each in keys]
    async with aetcd.Client(host=etcd_server.host, port=etcd_server.port, timeout=10) as client:
        info = await client.get_lease_info(backend.lease)
    assert info.grantedTTL == 2  # expire_after and a second more
    # The margin is a second: past it, a heartbeat keeps the lease alive before it writes.
    await anyio.sleep(1.1)
    del backend.calls[:]
    touched = await table.touch("a", put.member.version)
    assert touched is not None
    assert backend.calls == ["lease.LeaseKeepAlive", "kv.Txn"]
    await backend.get_state()
    await table.get("a")
    assert backend.calls[2:] == ["kv.Range", "kv.Range"]  # reading keeps nothing alive
    await backend.aclose()


async def test_a_lease_revoked_behind_the_handles_back_is_granted_again(
    etcd_server: EtcdServer,
) -> None:
    """etcd refuses a whole transaction that puts a key with a lease it does not know; the
    handle grants the lease again and sends the transaction once more."""
    backend = _LeaseCounted(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX, expire_after=60)
    await backend.set_state(b"state")
    async with aetcd.Client(host=etcd_server.host, port=etcd_server.port, timeout=10) as client:
        await client.revoke_lease(backend.lease)  # and with it the run's keys
    assert await backend.get_state() is None
    del backend.calls[:]
    _, token, written = await backend.set_state(b"again")
    assert written
    assert backend.calls == [
        "kv.Txn", "lease.LeaseKeepAlive", "lease.LeaseGrant", "kv.Txn",
    ]  # fmt: skip
    assert await backend.get_state() == (b"again", token)
    await backend.aclose()


async def test_listing_skips_what_is_not_ours(etcd_server: EtcdServer) -> None:
    prefix = f"/list-{uuid.uuid4().hex[:8]}/"
    ours = EtcdBackend("ours", etcd_server.endpoint, key_prefix=prefix)
    await ours.set_state(b"12345")
    members_only = EtcdBackend("members-only", etcd_server.endpoint, key_prefix=prefix)
    await members_only.member_table().put("a", "g", b"v", None)
    await members_only.member_table().put("b", "h", b"v", None)
    base = prefix.encode()
    for key, value in [
        (base + b"foreign", b"not ours"),
        (base + b"ours\x00m/x", b"not a record"),
        (base + b"ours\x00other", b"x"),
        (base + b"\x00m/a", encode_member("g", b"v", 0)),  # no run id
        (base + b"\xff\xfe", b"ARDE\x01\x00\x00\x00\x00"),  # not UTF-8
        (base + b"corrupt", b"ARDE\x01\x00\x00\x00\x00abc"),  # ours, its checksum wrong
    ]:
        await _raw_put(etcd_server, key, value)
    runs = {run.run_id: run for run in await ours.list_runs()}
    assert runs == {
        "ours": RunInfo("ours", 5, None, 0),
        "members-only": RunInfo("members-only", None, None, 2),
        "corrupt": RunInfo("corrupt", 3, None, 0),
    }
    await ours.aclose()
    await members_only.aclose()


async def test_listing_reads_in_pages_and_halves_a_page_too_large(
    etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of a few keys find every run once; a page of states over the gRPC message limit
    is asked for again in halves."""
    from arendezvous.backends.etcd import _backend

    prefix = f"/pages-{uuid.uuid4().hex[:8]}/"
    for number in range(7):
        backend = EtcdBackend(f"run-{number}", etcd_server.endpoint, key_prefix=prefix)
        await backend.set_state(b"s" * number)
        await backend.member_table().put("a", "g", b"v", None)
        await backend.aclose()
    monkeypatch.setattr(_backend, "_LIST_PAGE", 4)
    lister = EtcdBackend("run-0", etcd_server.endpoint, key_prefix=prefix)
    runs = await lister.list_runs()
    assert sorted(runs, key=lambda run: run.run_id) == [
        RunInfo(f"run-{number}", number, None, 1) for number in range(7)
    ]
    await lister.aclose()

    big = f"/big-{uuid.uuid4().hex[:8]}/"
    for number in range(5):  # 5 MiB: more than one answer may carry (4 MiB)
        backend = EtcdBackend(f"run-{number}", etcd_server.endpoint, key_prefix=big)
        await backend.set_state(b"x" * (1 << 20))
        await backend.aclose()
    monkeypatch.setattr(_backend, "_LIST_PAGE", 1024)
    lister = _Counted("run-0", etcd_server.endpoint, key_prefix=big)
    runs = await lister.list_runs()
    assert sorted(run.run_id for run in runs) == [f"run-{number}" for number in range(5)]
    assert all(run.size == 1 << 20 for run in runs)
    assert lister.calls.count("Range") > 2  # refused whole, then in smaller pages
    await lister.aclose()


# -- construction and URLs -----------------------------------------------------------------------


def test_url_parsing() -> None:
    backend = from_url("etcd://", run_id="r")
    assert backend.endpoints == ("localhost:2379",)
    assert backend.key == (DEFAULT_KEY_PREFIX + "r").encode()
    assert backend._timeout == DEFAULT_TIMEOUT

    backend = from_url("etcd://10.0.0.1,10.0.0.2:3379/", run_id="r")
    assert backend.endpoints == ("10.0.0.1:2379", "10.0.0.2:3379")

    backend = from_url("etcd://[::1]:2380,[fe80::1]", run_id="r")
    assert backend.endpoints == ("[::1]:2380", "[fe80::1]:2379")

    # Each member has a connection of its own, so names and address families may mix.
    backend = from_url("etcd://a.example,10.0.0.1,[::1]", run_id="r")
    assert backend.endpoints == ("a.example:2379", "10.0.0.1:2379", "[::1]:2379")

    backend = from_url(
        "ETCD://etcd.example:1234?timeout=2.5&key_prefix=/jobs/&max_state_size=10&tls=yes"
        "&expire_after=30",
        run_id="run/1",
    )
    assert isinstance(backend, EtcdBackend)
    assert backend.endpoints == ("etcd.example:1234",)
    assert backend.key == b"/jobs/run/1"
    assert backend._timeout == 2.5
    assert backend._max_state_size == 10
    assert backend._tls
    assert backend.expire_after == 30
    assert backend.lease > 0
    assert from_url("etcd://", run_id="r").lease == 0  # no expire_after: no lease

    backend = from_url("etcd://u%3Ax:p%40ss@h:1", run_id="r")
    assert (backend._username, backend._password) == ("u:x", "p@ss")
    assert "p@ss" not in repr(backend)

    assert isinstance(open_backend("etcd://127.0.0.1:2379", run_id="r"), EtcdBackend)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("etcd://h:1/path", "no path"),
        ("etcd://h:1#frag", "fragment"),
        ("etcd://h:99999", "bad port"),
        ("etcd://h:port", "bad port"),
        ("etcd://::1:2379", "brackets"),
        ("etcd://[nope]:1", "IPv6"),
        ("etcd://h:1,,h:2", "empty"),
        ("etcd://user@h:1", "user:password@"),
        ("etcd://h?colour=red", "unknown option 'colour'"),
        ("etcd://h?timeout=0", "timeout"),
        ("etcd://h?timeout=soon", "timeout"),
        ("etcd://h?tls=maybe", "tls"),
        ("etcd://h?timeout=1&timeout=2", "twice"),
        ("etcd://h?expire_after=-1", "expire_after"),
        ("etcd://h?expire_after=forever", "expire_after"),
        ("etcd://h?ca_cert=/nonexistent/ca.pem", "cannot read tls_ca_file"),
        ("etcd://h?tls_ca_file=/nonexistent/ca.pem", "cannot read tls_ca_file"),
        ("etcd://h?cert_key=/nonexistent/key.pem", "tls_cert_file"),
        ("etcd://h?cert_cert=/nonexistent/c.pem", "both tls_key_file and tls_cert_file"),
        ("etcd://h?ca_cert=/nonexistent/ca.pem&tls=false", "tls=false"),
        ("etcd://h?ca_cert=/a.pem&tls_ca_file=/b.pem", "not both"),
        ("etcd://h?tls_verify=none", "verifies"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_backend(url, run_id="r")


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="both username and password"):
        EtcdBackend("r", username="root")
    with pytest.raises(ValueError, match="timeout"):
        EtcdBackend("r", timeout=-1)
    with pytest.raises(ValueError, match="no etcd endpoint"):
        EtcdBackend("r", [])
    with pytest.raises(TypeError, match="run_id must be str"):
        EtcdBackend(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        EtcdBackend("")
    with pytest.raises(ValueError, match="expire_after"):
        EtcdBackend("r", expire_after=0)
    with pytest.raises(TypeError, match="expire_after"):
        EtcdBackend("r", expire_after="60")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="etcd's longest lease"):
        EtcdBackend("r", expire_after=1e10)
    assert EtcdBackend("r", ["10.0.0.1:1", "10.0.0.2"]).endpoints == ("10.0.0.1:1", "10.0.0.2:2379")


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aetcd", None)
    with pytest.raises(ImportError, match=r"pip install 'arendezvous\[etcd\]'"):
        open_backend("etcd://127.0.0.1:2379", run_id="r")


def test_importing_arendezvous_does_not_import_the_client() -> None:
    code = (
        "import sys, arendezvous, arendezvous.backends.etcd\n"
        "assert 'aetcd' not in sys.modules and 'grpc' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
