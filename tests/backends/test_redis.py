"""The Redis backend against a real ``redis-server`` on 127.0.0.1.

The contract (:class:`CorruptStateConformance`), the network scenarios every network store shares
(:class:`NetworkBackendConformance`: races, crashes, a frozen server, a partition, many waiters on
one handle, a second event loop) and the state machine run on asyncio and on trio; the rest covers
what is Redis's own: the hash's layout, the Lua script, pub/sub, ACLs, TLS, a caller's client,
URLs. Those tests look at the store with redis-py's asyncio client, so they run on asyncio.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import anyio
import anyio.to_thread
import hypothesis
import pytest

from _missing import missing

try:
    import redis.asyncio
except ImportError:  # pragma: no cover - CI installs every extra
    missing("redis-py is not installed: pip install 'arendezvous[redis]'", module=True)

from _network import ReadCounter, on_asyncio
from arendezvous import (
    AsyncRendezvousBackend,
    BackendClosedError,
    Member,
    RendezvousConnectionError,
    RendezvousStateError,
    RunInfo,
    SyncBackend,
    open_backend,
)
from arendezvous.backends.redis import (
    DEFAULT_KEY_PREFIX,
    MAX_STATE_SIZE_LIMIT,
    SET_STATE_SCRIPT,
    RedisBackend,
    RedisMemberVersion,
    RedisToken,
    from_url,
)
from arendezvous.backends.redis._members import MEMBERS_FORMAT
from arendezvous.testing.lifecycle import RunLifecycleConformance
from arendezvous.testing.members import MemberTableConformance
from arendezvous.testing.network import NetworkBackendConformance
from arendezvous.testing.servers import free_port
from arendezvous.testing.stateful import backend_state_machine
from bad_input.objects import HostileStr
from servers.redis import RedisServer

from ._loops import BothLoops
from ._waiting import waiting

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The Redis-specific tests use redis-py's asyncio client directly; the shared suites below
    run on both loops."""
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """redis-py's own client on the test server, to look at and tamper with the keys."""
    client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
    yield client
    await client.aclose()


def backend_on(server: RedisServer, run_id: str, **options: Any) -> RedisBackend:
    return RedisBackend(run_id, host="127.0.0.1", port=server.port, **options)


def new_run_id() -> str:
    return f"redis-test-{uuid.uuid4().hex}"


# -- the contract and the shared network scenarios -------------------------------------------------


class TestRedisConformance(BothLoops, NetworkBackendConformance):
    corrupt_values = (
        *NetworkBackendConformance.corrupt_values,
        b"arendezvous/1",
        b'{"state": "x"}',
    )
    keeps_state_across_restart = False  # the test servers persist nothing


    @pytest.fixture(autouse=True)
    def _server(self, server: RedisServer) -> None:
        self.server = server

    def server_address(self) -> tuple[str, int]:
        return self.server.host, self.server.port

    def backend_at(
        self, run_id: str, host: str, port: int, *, timeout: float
    ) -> AsyncRendezvousBackend:
        return RedisBackend(run_id, host=host, port=port, timeout=timeout)

    def server_url(self, run_id: str) -> str:
        return self.server.url

    @classmethod
    def start_server(cls) -> RedisServer:
        return RedisServer().start()

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        async def write() -> None:
            async with redis.asyncio.Redis(host="127.0.0.1", port=self.server.port) as client:
                await client.set(DEFAULT_KEY_PREFIX + run_id, raw)

        await on_asyncio(write)

    async def delete_state(self, run_id: str) -> None:
        async def delete() -> None:
            async with redis.asyncio.Redis(host="127.0.0.1", port=self.server.port) as client:
                await client.delete(DEFAULT_KEY_PREFIX + run_id)

        await on_asyncio(delete)

    async def server_connections(self) -> int:
        async def count() -> int:
            async with redis.asyncio.Redis(host="127.0.0.1", port=self.server.port) as client:
                return len(await client.client_list()) - 1  # not this one

        return await on_asyncio(count)


class _OnRedis(BothLoops):
    """A kit class on the module's server, on asyncio and on trio (there through the loop
    thread)."""

    @pytest.fixture(autouse=True)
    def _server(self, server: RedisServer) -> None:
        self.server = server

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return backend_on(self.server, run_id)


class TestRedisMembers(_OnRedis, MemberTableConformance):
    """The member table's contract."""


class TestRedisLifecycle(_OnRedis, RunLifecycleConformance):
    """Deleting, listing and expiring runs (``PEXPIRE``)."""

    async def make_expiring_backend(
        self, run_id: str, expire_after: float
    ) -> AsyncRendezvousBackend:
        return backend_on(self.server, run_id, expire_after=expire_after)


# The state machine's TestCase is a unittest class: it cannot take fixtures as arguments, so its
# factory finds the module's server here, put there by a fixture the class uses.
_state_machine_servers: list[RedisServer] = []


@pytest.fixture
def state_machine_server(server: RedisServer) -> Iterator[None]:
    _state_machine_servers.append(server)
    yield
    _state_machine_servers.remove(server)


def _state_machine_backend(run_id: str) -> RedisBackend:
    return backend_on(_state_machine_servers[-1], run_id)


_MACHINE_SETTINGS = hypothesis.settings(max_examples=25, stateful_step_count=20, deadline=None)
TestStateMachine = pytest.mark.usefixtures("state_machine_server")(
    backend_state_machine(_state_machine_backend).TestCase
)
TestStateMachine.settings = _MACHINE_SETTINGS
TestStateMachineOnTrio = pytest.mark.usefixtures("state_machine_server")(
    backend_state_machine(_state_machine_backend, anyio_backend="trio").TestCase
)
TestStateMachineOnTrio.settings = _MACHINE_SETTINGS


# -- what the store holds --------------------------------------------------------------------------


async def test_layout_is_one_hash_per_run(server: RedisServer, raw: redis.asyncio.Redis) -> None:
    run_id = new_run_id()
    backend = backend_on(server, run_id)
    before = await raw.time()
    _, token, _ = await backend.set_state(b"hello")
    after = await raw.time()
    assert backend.key == f"arendezvous:{run_id}".encode()
    fields = await raw.hgetall(backend.key)
    assert fields[b"format"] == b"arendezvous/1"
    assert fields[b"state"] == b"hello"
    assert isinstance(token, RedisToken)
    assert fields[b"incarnation"] == token.incarnation.encode()
    assert fields[b"counter"] == b"%d" % token.counter
    # The time of the write, by the server's clock (list_runs tells ages by it).
    assert before[0] * 10**6 + before[1] <= int(fields[b"written"]) <= after[0] * 10**6 + after[1]
    assert await raw.pttl(backend.key) == -1  # no expire_after: no expiry
    await backend.aclose()


async def test_key_prefix_namespaces_runs(server: RedisServer, raw: redis.asyncio.Redis) -> None:
    run_id = new_run_id()
    default = backend_on(server, run_id)
    custom = backend_on(server, run_id, key_prefix="team-a/")
    await custom.set_state(b"a")
    assert await default.get_state() is None
    assert await raw.exists(f"team-a/{run_id}") == 1
    await default.aclose()
    await custom.aclose()


async def test_same_token_values_are_equal_and_foreign_lookalikes_are_stale(
    server: RedisServer,
) -> None:
    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"a")
    assert isinstance(token, RedisToken)
    assert token == RedisToken(token.incarnation, token.counter)
    lookalikes: list[Any] = [
        f"{token.incarnation}:{token.counter}",
        (token.incarnation, token.counter),
        token.counter,
        RedisToken(token.incarnation.upper(), token.counter),
        RedisToken(token.incarnation, token.counter + 1),
        RedisToken(token.incarnation, True),  # bool is not int
    ]
    for lookalike in lookalikes:
        assert await backend.set_state(b"b", lookalike) == (b"a", token, False), lookalike
    await backend.aclose()


async def test_a_token_with_a_hostile_field_is_never_compared(server: RedisServer) -> None:
    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"a")
    assert isinstance(token, RedisToken)
    sneaky = RedisToken(HostileStr(token.incarnation), token.counter)
    assert await backend.set_state(b"b", sneaky) == (b"a", token, False)
    assert await backend.wait_for_change(sneaky, timeout=0) == (b"a", token)
    assert await backend.wait_for_change(sneaky, timeout=1) == (b"a", token)
    await backend.aclose()


async def test_a_retried_script_recognises_its_own_write(server: RedisServer) -> None:
    """A client that resends a script after losing its reply gets "written", not "lost"."""
    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"a")
    assert isinstance(token, RedisToken)
    arguments = (2, backend.key, backend.member_table().key, b"b", b"1", token.incarnation,
                 token.counter, "writer-x", b"0")
    async with redis.asyncio.Redis(host="127.0.0.1", port=server.port) as client:
        first = await client.eval(SET_STATE_SCRIPT, *arguments)
        again = await client.eval(SET_STATE_SCRIPT, *arguments)
    assert first[0] == again[0] == 1
    assert first[1:] == [token.incarnation.encode(), token.counter + 1]
    assert again[1:] == [token.incarnation.encode(), b"%d" % (token.counter + 1)]
    assert await backend.get_state() == (b"b", RedisToken(token.incarnation, token.counter + 1))
    await backend.aclose()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
def test_a_forked_child_never_passes_for_its_parent(server: RedisServer) -> None:
    """Parent and child make the first write of one forked handle, so without care both would
    send the same writer id; the child's stale write must lose, not pass for the parent's."""
    run_id = new_run_id()

    async def create() -> Any:
        async with backend_on(server, run_id) as setup:
            return (await setup.set_state(b"created"))[1]

    token = anyio.run(create)
    backend = backend_on(server, run_id)  # not used yet: no connections to inherit
    go_read, go_write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 3
        try:
            os.close(go_write)
            os.read(go_read, 1)  # the parent has written by now
            result = anyio.run(backend.set_state, b"child", token)
            code = 1 if result[2] else 0
        finally:
            os._exit(code)
    os.close(go_read)

    async def write_and_close() -> bool:
        async with backend:
            return (await backend.set_state(b"parent", token))[2]

    try:
        assert anyio.run(write_and_close)
    finally:
        os.write(go_write, b"x")
        os.close(go_write)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's stale write was reported written"


async def test_script_is_reloaded_after_script_flush(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"a")
    await raw.script_flush()
    _, _, written = await backend.set_state(b"b", token)
    assert written
    await backend.aclose()


@pytest.mark.parametrize(
    "fields",
    [
        {"format": "arendezvous/2", "incarnation": "0" * 32, "counter": "1", "state": "x"},
        {"format": "arendezvous/1", "incarnation": "0" * 32, "counter": "1"},
        {"format": "arendezvous/1", "incarnation": "xyz", "counter": "1", "state": "x"},
        {"format": "arendezvous/1", "incarnation": "0" * 32, "counter": "01", "state": "x"},
        {"format": "arendezvous/1", "incarnation": "0" * 32, "counter": "-1", "state": "x"},
        {"format": "arendezvous/1", "incarnation": "0" * 32, "counter": "9" * 19, "state": "x"},
        {"format": "arendezvous/1", "counter": "1", "state": "x"},
        {"unrelated": "field"},
    ],
    ids=repr,
)
async def test_foreign_hashes_are_corrupt_and_kept(
    server: RedisServer, raw: redis.asyncio.Redis, fields: dict[str, str]
) -> None:
    backend = backend_on(server, new_run_id())
    await raw.hset(backend.key, mapping=fields)  # type: ignore[arg-type]
    with pytest.raises(RendezvousStateError):
        await backend.get_state()
    for token in (None, RedisToken("0" * 32, 1), "invalid"):
        with pytest.raises(RendezvousStateError):
            await backend.set_state(b"overwrite?", token)
    assert await raw.hgetall(backend.key) == {
        key.encode(): value.encode() for key, value in fields.items()
    }
    await backend.aclose()


@pytest.mark.parametrize("kind", ["list", "set", "zset", "stream"])
async def test_keys_of_other_types_are_corrupt(
    server: RedisServer, raw: redis.asyncio.Redis, kind: str
) -> None:
    backend = backend_on(server, new_run_id())
    if kind == "list":
        await raw.rpush(backend.key, b"x")
    elif kind == "set":
        await raw.sadd(backend.key, b"x")
    elif kind == "zset":
        await raw.zadd(backend.key, {b"x": 1})
    else:
        await raw.xadd(backend.key, {b"x": b"y"})
    with pytest.raises(RendezvousStateError, match="WRONGTYPE"):
        await backend.get_state()
    with pytest.raises(RendezvousStateError, match=f"holds a {kind}"):
        await backend.set_state(b"x")
    await backend.aclose()


# -- wait_for_change -------------------------------------------------------------------------------


class ObservedBackend(ReadCounter, RedisBackend):
    """A backend that counts its reads: a waiter's first read comes once its handle's
    subscription is confirmed, so a write after it can reach the waiter only through a notice."""


def observed_on(server: RedisServer, run_id: str, **options: Any) -> ObservedBackend:
    return ObservedBackend(run_id, host="127.0.0.1", port=server.port, **options)


async def test_a_notice_wakes_a_subscribed_waiter(server: RedisServer) -> None:
    run_id = new_run_id()
    waiter, writer = observed_on(server, run_id), backend_on(server, run_id)
    _, token, _ = await writer.set_state(b"a")
    async with waiting(waiter, token, within=5) as results:
        await waiter.reads_reached(1).wait()
        _, new_token, _ = await writer.set_state(b"b", token)
    assert results == [(b"b", new_token)]
    assert waiter.reads == 2  # the first look, and the read the notice asked for
    await waiter.aclose()
    await writer.aclose()


async def test_spurious_notices_are_not_changes(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    run_id = new_run_id()
    waiter, writer = observed_on(server, run_id), backend_on(server, run_id)
    _, token, _ = await writer.set_state(b"a")
    async with waiting(waiter, token, within=5) as results:
        await waiter.reads_reached(1).wait()
        for notice in range(5):
            assert await raw.publish(waiter.key, b"not a change") == 1
            await waiter.reads_reached(2 + notice).wait()  # one re-read per notice
        assert not results
        _, new_token, _ = await writer.set_state(b"b", token)
    assert results == [(b"b", new_token)]
    await waiter.aclose()
    await writer.aclose()


class QuickToLetGo(ObservedBackend):
    FEED_LINGER = 0.2


async def test_waiters_share_one_subscription(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    """150 waiters on one handle (more than redis-py's pool of 100 connections): one pub/sub
    connection, and the feed's subscription closes once the last waiter left and it lingered."""
    run_id = new_run_id()
    waiter = QuickToLetGo(run_id, host="127.0.0.1", port=server.port)
    writer = backend_on(server, run_id)
    _, token, _ = await writer.set_state(b"a")

    async def pubsub_clients() -> int:
        return sum(1 for client in await raw.client_list() if client["flags"] == "P")

    with anyio.fail_after(10):
        async with waiting(waiter, token, count=150) as results:
            await waiter.reads_reached(1).wait()
            await anyio.wait_all_tasks_blocked()
            assert await pubsub_clients() == 1
            _, new_token, _ = await writer.set_state(b"b", token)
        assert results == [(b"b", new_token)] * 150
        # Lingering, then gone: the channel's subscriber count drops to zero by itself.
        for _ in range(200):
            if not (await raw.pubsub_numsub(waiter.key))[0][1]:
                break
            await anyio.sleep(0.05)  # poll-ok: watching the server notice a close
        else:
            raise AssertionError("the subscription outlived its waiters and its linger")
    await waiter.aclose()
    await writer.aclose()


async def test_a_quiet_wait_checks_its_connection_and_carries_on(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    """With nothing to hear for several timeouts, the waiter PINGs, gets PONG, keeps waiting."""

    async def pings() -> int:
        stats = await raw.info("commandstats")
        return int(stats.get("cmdstat_ping", {}).get("calls", 0))

    backend = backend_on(server, new_run_id(), timeout=0.1)
    _, token, _ = await backend.set_state(b"a")
    before = await pings()
    with anyio.fail_after(5):
        assert await backend.wait_for_change(token, timeout=0.7) is None
    assert await pings() - before >= 2
    await backend.aclose()



# -- failures --------------------------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of the test's own, free to be killed."""
    with RedisServer() as running:
        yield running


async def test_a_lost_notice_costs_latency_not_the_change(own_server: RedisServer) -> None:
    """The waiter's subscriber is killed in the same transaction as the write, so the notice
    reaches nobody; the re-read after reconnecting must still find the change."""
    run_id = new_run_id()
    waiter, writer = observed_on(own_server, run_id), backend_on(own_server, run_id)
    _, token, _ = await writer.set_state(b"a")
    assert isinstance(token, RedisToken)
    with anyio.fail_after(5):
        async with (
            redis.asyncio.Redis(host="127.0.0.1", port=own_server.port) as raw,
            waiting(waiter, token) as results,
        ):
            await waiter.reads_reached(1).wait()
            async with raw.pipeline(transaction=True) as pipe:
                pipe.client_kill_filter(_type="pubsub")
                pipe.eval(
                    SET_STATE_SCRIPT, 2, waiter.key, waiter.member_table().key, b"b", b"1",
                    token.incarnation, token.counter, "test-writer", b"0",
                )  # fmt: skip
                killed, reply = await pipe.execute()
            assert killed == 1
            assert reply[0] == 1
    assert results == [(b"b", RedisToken(token.incarnation, token.counter + 1))]
    assert waiter.reads >= 2
    await waiter.aclose()
    await writer.aclose()


async def test_a_callers_retrying_client_re_reads_after_it_reconnects(
    own_server: RedisServer,
) -> None:
    """A client with a retry policy reconnects pub/sub by itself; the lost notice is still
    made up for by a re-read."""
    run_id = new_run_id()
    writer = backend_on(own_server, run_id)
    _, token, _ = await writer.set_state(b"a")
    assert isinstance(token, RedisToken)
    async with (
        redis.asyncio.Redis(host="127.0.0.1", port=own_server.port) as client,
        redis.asyncio.Redis(host="127.0.0.1", port=own_server.port) as raw,
    ):
        retry = client.get_retry()
        assert retry is not None
        assert retry.get_retries() > 0
        waiter = ObservedBackend(run_id, client=client, timeout=2)
        with anyio.fail_after(5):
            async with waiting(waiter, token) as results:
                await waiter.reads_reached(1).wait()
                async with raw.pipeline(transaction=True) as pipe:
                    pipe.client_kill_filter(_type="pubsub")
                    pipe.eval(
                        SET_STATE_SCRIPT, 2, waiter.key, waiter.member_table().key, b"b",
                        b"1", token.incarnation, token.counter, "test-writer", b"0",
                    )  # fmt: skip
                    killed, _ = await pipe.execute()
                assert killed == 1
        await waiter.aclose()
    assert results == [(b"b", RedisToken(token.incarnation, token.counter + 1))]
    await writer.aclose()


async def test_a_callers_slow_client_is_bounded_by_the_timeout(own_server: RedisServer) -> None:
    """A caller's client with long socket timeouts and retries, on a server that never answers
    (frozen): the backend's timeout still bounds every call."""
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=own_server.port, socket_timeout=60, socket_connect_timeout=60
    )
    backend = RedisBackend(new_run_id(), client=client, timeout=0.3)
    _, token, _ = await backend.set_state(b"a")
    own_server.pause()
    try:
        with anyio.fail_after(5):
            for call in (backend.get_state, lambda: backend.set_state(b"b", token)):
                started = anyio.current_time()
                with pytest.raises(RendezvousConnectionError, match=r"no answer within 0\.3 s"):
                    await call()
                assert anyio.current_time() - started < 1.3
    finally:
        own_server.resume()
    await backend.aclose()
    await client.aclose()


async def test_credentials_never_show(server: RedisServer, raw: redis.asyncio.Redis) -> None:
    user, secret = f"user-{uuid.uuid4().hex[:8]}", "s3cr3t-" + uuid.uuid4().hex
    await raw.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{secret}"],
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
    )
    try:
        url = f"redis://{user}:{secret}@127.0.0.1:{server.port}/0"
        good = open_backend(url, run_id=new_run_id())
        _, _, written = await good.set_state(b"authenticated")
        assert written
        assert secret not in repr(good)
        assert isinstance(good, RedisBackend)
        assert (await good.member_table().put("a", "g", b"v", None)).written
        assert secret not in repr(good.member_table())
        await good.aclose()

        bad = open_backend(url.replace(secret, secret + "-wrong"), run_id=new_run_id())
        with pytest.raises(RendezvousConnectionError) as caught:
            await bad.get_state()
        chain: BaseException | None = caught.value
        while chain is not None:
            assert secret not in str(chain)
            assert secret not in repr(chain)
            chain = chain.__cause__
        assert secret not in repr(bad)
        await bad.aclose()
    finally:
        await raw.acl_deluser(user)


# The rules docs/redis.md gives for a least-privilege user.
DOCUMENTED_ACL = (
    "~arendezvous:* &arendezvous:* +hgetall +evalsha +eval +type +hmget +hset +hincrby +publish "
    "+subscribe +ping +hello +hget +hdel +time +pexpire +del +scan +hstrlen"
)


async def test_the_documented_acl_is_enough(server: RedisServer, raw: redis.asyncio.Redis) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    rules = DOCUMENTED_ACL.split()
    await raw.execute_command("ACL", "SETUSER", user, "on", ">pw", *rules)  # type: ignore[no-untyped-call]
    try:
        run_id = new_run_id()
        backend = open_backend(
            f"redis://{user}:pw@127.0.0.1:{server.port}/0?timeout=0.1&expire_after=60",
            run_id=run_id,
        )
        _, token, _ = await backend.set_state(b"a")
        assert await backend.get_state() == (b"a", token)
        await raw.script_flush()  # the EVAL fallback too
        _, new_token, written = await backend.set_state(b"b", token)
        assert written
        assert await backend.wait_for_change(token, timeout=0) == (b"b", new_token)
        assert await backend.wait_for_change(new_token, timeout=0.3) is None  # PINGs included
        table = backend.member_table()
        assert table is not None
        put = await table.put("a", "g", b"v", None)
        assert put.member is not None
        await raw.script_flush()
        moved = await table.put("a", "h", b"v", put.member.version)
        assert moved.member is not None
        touched = await table.touch("a", moved.member.version)
        assert touched is not None
        assert await table.get("a") is not None
        assert [member.node for member in await table.members("h")] == ["a"]
        assert await table.count("h") == 1
        assert await table.delete("a", touched.version)
        assert run_id in [run.run_id for run in await backend.list_runs()]
        await raw.script_flush()
        assert await backend.delete_run()
        await backend.aclose()
    finally:
        await raw.acl_deluser(user)


async def test_tls() -> None:
    try:
        tls_server = RedisServer(tls=True)
    except RuntimeError as exc:  # no openssl command (scripts/test installs it)
        missing(str(exc))
    with tls_server:
        backend = open_backend(tls_server.url, run_id=new_run_id())
        assert isinstance(backend, RedisBackend)
        assert repr(backend).startswith("RedisBackend('rediss://127.0.0.1:")
        _, token, _ = await backend.set_state(b"over tls")
        assert await backend.get_state() == (b"over tls", token)
        assert await backend.wait_for_change(token, timeout=0.05) is None
        await backend.aclose()
        untrusted = open_backend(tls_server.url.partition("?")[0], run_id=new_run_id())
        with pytest.raises(RendezvousConnectionError, match=r"(?i)certificate"):
            await untrusted.get_state()
        await untrusted.aclose()
        # The older option name, still documented, reaches the same server.
        older = tls_server.url.replace("tls_ca_file=", "ssl_ca_certs=")
        assert older != tls_server.url
        async with open_backend(older, run_id=new_run_id()) as backend:
            assert await backend.get_state() is None


# -- clients, loops and handles --------------------------------------------------------------------


async def test_a_callers_client_is_used_and_left_open(server: RedisServer) -> None:
    async with redis.asyncio.Redis(host="127.0.0.1", port=server.port) as client:
        backend = RedisBackend(new_run_id(), client=client)
        _, token, _ = await backend.set_state(b"a")
        assert await backend.get_state() == (b"a", token)
        assert await backend.wait_for_change(token, timeout=0.05) is None
        await backend.aclose()
        assert await client.ping()
        with pytest.raises(BackendClosedError):
            await backend.get_state()


def test_callers_client_is_checked() -> None:
    client = redis.asyncio.Redis(decode_responses=True)
    with pytest.raises(ValueError, match="decode"):
        RedisBackend("r", client=client)
    with pytest.raises(ValueError, match="either client or connection"):
        RedisBackend("r", client=redis.asyncio.Redis(), host="example.org")
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        RedisBackend("r", client=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="either client or connection"):
        RedisBackend("r", client=redis.asyncio.Redis(), tls_ca_file="/ca.pem")


def test_trio_reaches_it_through_the_sync_adapter(server: RedisServer) -> None:
    """What the trio error message advises: SyncBackend, called from a worker thread."""
    sync = SyncBackend(backend_on(server, new_run_id()))

    async def use() -> Any:
        _, token, _ = await anyio.to_thread.run_sync(sync.set_state, b"from trio")
        return token, await anyio.to_thread.run_sync(sync.get_state)

    try:
        token, current = anyio.run(use, backend="trio")
        assert current == (b"from trio", token)
    finally:
        sync.close()


def test_the_client_is_imported_lazily() -> None:
    code = (
        "import sys\n"
        "import arendezvous, arendezvous.backends.redis as r\n"
        "assert 'redis' not in sys.modules, 'import arendezvous imported redis'\n"
        "sys.modules['redis'] = None\n"
        "try:\n"
        "    r.RedisBackend('run')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "pip install 'arendezvous[redis]'" in output


# -- the run lifecycle -----------------------------------------------------------------------------


async def test_deleting_a_run_deletes_both_of_its_keys(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    backend = backend_on(server, new_run_id())
    table = backend.member_table()
    await backend.set_state(b"state")
    await table.put("a", "g", b"v", None)
    assert await raw.exists(backend.key, table.key) == 2
    assert await backend.delete_run() is True
    assert await raw.exists(backend.key, table.key) == 0
    # A run of member records only is a run too; one of nothing is not.
    await table.put("a", "g", b"v", None)
    assert await backend.delete_run() is True
    assert await raw.exists(table.key) == 0
    assert await backend.delete_run() is False
    await backend.aclose()


async def test_a_waiter_sees_a_deleted_run_as_its_state_gone(server: RedisServer) -> None:
    """The deletion's notice makes the waiter re-read; finding no state is no change, so it
    waits on, and the run's next state (a new incarnation) is the change it reports."""
    run_id = new_run_id()
    waiter, other = observed_on(server, run_id), backend_on(server, run_id)
    _, token, _ = await other.set_state(b"old")
    async with waiting(waiter, token, within=5) as results:
        await waiter.reads_reached(1).wait()
        assert await other.delete_run()
        await waiter.reads_reached(2).wait()  # the notice's re-read found nothing
        assert results == []
        _, new_token, _ = await other.set_state(b"new")
    assert results == [(b"new", new_token)]
    assert isinstance(token, RedisToken)
    assert isinstance(new_token, RedisToken)
    assert new_token.incarnation != token.incarnation
    await waiter.aclose()
    await other.aclose()


async def test_every_write_pushes_back_both_keys_expiry(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    """A heartbeat (a member write) keeps the whole run alive, the state's key included; reads
    do not. The keys' remaining lives are shortened by hand, so no time has to pass."""
    backend = backend_on(server, new_run_id(), expire_after=60)
    table = backend.member_table()
    keys = (backend.key, table.key)

    async def shorten() -> None:
        for key in keys:
            assert await raw.pexpire(key, 10_000)

    async def ttls() -> list[int]:
        return [await raw.pttl(key) for key in keys]

    _, token, _ = await backend.set_state(b"state")
    assert 55_000 < await raw.pttl(backend.key) <= 60_000
    put = await table.put("a", "g", b"v", None)  # creates the member hash: both refreshed
    assert put.member is not None
    assert all(55_000 < ttl <= 60_000 for ttl in await ttls())
    await shorten()
    touched = await table.touch("a", put.member.version)
    assert touched is not None
    assert all(55_000 < ttl <= 60_000 for ttl in await ttls())
    await shorten()
    await backend.set_state(b"again", token)
    assert all(55_000 < ttl <= 60_000 for ttl in await ttls())
    await shorten()
    assert await table.delete("a", touched.version)
    assert all(55_000 < ttl <= 60_000 for ttl in await ttls())
    await shorten()
    await backend.get_state()
    await table.get("a")
    await table.members("g")
    await backend.list_runs()
    assert all(ttl <= 10_000 for ttl in await ttls())  # reading is not writing
    await backend.aclose()


async def test_listing_skips_what_is_not_ours(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    # Every character SCAN's pattern treats specially: the prefix is matched literally.
    prefix = f"t[1]*?\\{uuid.uuid4().hex[:8]}:"
    ours = backend_on(server, "ours", key_prefix=prefix)
    await ours.set_state(b"12345")
    members_only = backend_on(server, "members-only", key_prefix=prefix)
    await members_only.member_table().put("a", "g", b"v", None)
    await members_only.member_table().put("b", "h", b"v", None)
    legacy = backend_on(server, "legacy", key_prefix=prefix)
    await legacy.set_state(b"x")
    await legacy.member_table().put("a", "g", b"v", None)
    # Written before the run lifecycle: no write times, no count of records.
    await raw.hdel(legacy.key, "written")
    await raw.hdel(legacy.member_table().key, "\x00written", "\x00records")
    # Keys under the prefix that are not arendezvous runs.
    base = prefix.encode()
    await raw.set(base + b"a-string", b"x")
    await raw.hset(base + b"a-foreign-hash", b"field", b"value")
    await raw.hset(base + b"foreign\x00members", b"\x00format", b"other")
    await raw.set(base + b"other\x00suffix", b"x")
    await raw.set(base + b"\x00members", b"x")
    await raw.hset(base + b"\xff\xfe", mapping={b"format": b"arendezvous/1", b"state": b"x"})
    # A key that the prefix, read as a SCAN pattern, would match: no run under this prefix.
    await raw.hset(b"tX" + base[1:] + b"run", mapping={b"format": b"arendezvous/1", b"state": b"x"})
    runs = {run.run_id: run for run in await ours.list_runs()}
    assert set(runs) == {"ours", "members-only", "legacy"}
    assert (runs["ours"].size, runs["ours"].members) == (5, 0)
    assert runs["ours"].age is not None
    assert 0 <= runs["ours"].age < 5
    assert (runs["members-only"].size, runs["members-only"].members) == (None, 2)
    assert runs["members-only"].age is not None
    assert 0 <= runs["members-only"].age < 5
    assert runs["legacy"] == RunInfo("legacy", 1, None, None)
    for backend in (ours, members_only, legacy):
        await backend.aclose()


async def test_listing_looks_at_many_runs_in_batches(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    """More runs than one SCAN call or one script call takes are all found, once each."""
    prefix = f"many-{uuid.uuid4().hex[:8]}:"
    async with raw.pipeline(transaction=False) as pipe:
        for number in range(600):
            pipe.hset(f"{prefix}run-{number}",
                      mapping={b"format": b"arendezvous/1", b"state": b"s" * (number % 7)})
        await pipe.execute()
    backend = backend_on(server, "run-0", key_prefix=prefix)
    runs = await backend.list_runs()
    assert sorted(run.run_id for run in runs) == sorted(f"run-{n}" for n in range(600))
    assert all(run.size == int(run.run_id[4:]) % 7 for run in runs)
    await backend.aclose()


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": float("inf")}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"max_state_size": 0}, ValueError, "max_state_size"),
        ({"max_state_size": MAX_STATE_SIZE_LIMIT + 1}, ValueError, "proto-max-bulk-len"),
        ({"max_state_size": 1.5}, TypeError, "max_state_size"),
        ({"max_state_size": True}, TypeError, "max_state_size"),
        ({"key_prefix": b"x"}, TypeError, "key_prefix"),
        ({"expire_after": 0}, ValueError, "expire_after"),
        ({"expire_after": float("nan")}, ValueError, "expire_after"),
        ({"expire_after": "60"}, TypeError, "expire_after"),
        ({"db": -1}, ValueError, "db"),
        ({"ssl": False, "ssl_ca_certs": "/ca.pem"}, ValueError, "tls=false"),
        ({"tls": False, "tls_ca_file": "/ca.pem"}, ValueError, "tls=false"),
        ({"tls": True, "ssl": True}, ValueError, "not both"),
        ({"tls_ca_file": "/a.pem", "ssl_ca_certs": "/b.pem"}, ValueError, "not both"),
        ({"tls_verify": "ca", "ssl_check_hostname": False}, ValueError, "not both"),
        ({"tls_verify": "maybe"}, ValueError, "full, ca, none"),
        ({"tls_key_file": "/k.pem"}, ValueError, "tls_cert_file"),
        ({"ssl_cert_reqs": "none"}, ValueError, "need TLS"),
        ({"ssl": True, "ssl_cert_reqs": "maybe"}, ValueError, "ssl_cert_reqs"),
    ],
    ids=repr,
)
def test_bad_options(options: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RedisBackend("r", **options)


def test_bad_run_ids() -> None:
    with pytest.raises(TypeError, match="run_id must be str"):
        RedisBackend(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        RedisBackend("")


async def test_small_size_limit(server: RedisServer) -> None:
    backend = backend_on(server, new_run_id(), max_state_size=4)
    with pytest.raises(ValueError, match="at most 4"):
        await backend.set_state(b"12345")
    assert await backend.get_state() is None
    await backend.aclose()


# -- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://", "redis://localhost:6379/0"),
        ("redis://localhost", "redis://localhost:6379/0"),
        ("redis://127.0.0.1:7000/3", "redis://127.0.0.1:7000/3"),
        ("redis://:pw@host/", "redis://host:6379/0"),
        ("redis://user:p%40ss@host:1/2?timeout=1.5", "redis://host:1/2"),
        ("REDIS://[::1]:7000", "redis://[::1]:7000/0"),
        ("rediss://host?ssl_ca_certs=/ca.pem&ssl_check_hostname=false", "rediss://host:6379/0"),
        ("rediss://host?ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_cert_reqs=none", None),
        ("redis://host?key_prefix=job%2F&max_state_size=10", None),
    ],
)
def test_good_urls(url: str, shown: str | None) -> None:
    backend = open_backend(url, run_id="r")
    assert isinstance(backend, RedisBackend)
    if shown is not None:
        assert repr(backend).startswith(f"RedisBackend({shown!r}")
    assert "pw" not in repr(backend)
    assert "p@ss" not in repr(backend)


def test_tls_options_old_and_new_names_mean_the_same() -> None:
    """The TLS vocabulary every network store shares, and redis-py's names it replaces."""
    new = from_url(
        "rediss://h?tls_ca_file=/ca.pem&tls_cert_file=/c.pem&tls_key_file=/k.pem&tls_verify=ca",
        run_id="r",
    )
    old = from_url(
        "rediss://h?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
        "&ssl_cert_reqs=required&ssl_check_hostname=false",
        run_id="r",
    )

    def tls_of(backend: RedisBackend) -> dict[str, Any]:
        return {k: v for k, v in backend._client_kwargs.items() if k.startswith("ssl")}

    assert tls_of(new) == tls_of(old)
    assert tls_of(new)["ssl_check_hostname"] is False
    unverified = RedisBackend("r", tls=True, tls_verify="none")._client_kwargs
    assert (unverified["ssl_cert_reqs"], unverified["ssl_check_hostname"]) == ("none", False)
    implied = RedisBackend("r", ssl_ca_certs="/ca.pem")  # a file alone turns TLS on
    assert implied._client_kwargs["ssl"] is True
    assert repr(implied).startswith("RedisBackend('rediss://")


def test_url_options_reach_the_backend() -> None:
    backend = from_url(
        "redis://h/1?key_prefix=job%2F&timeout=2.5&max_state_size=10&expire_after=90.5",
        run_id="r",
    )
    assert backend.key == b"job/r"
    assert backend.timeout == 2.5
    assert backend._max_state_size == 10
    assert backend.expire_after == 90.5
    assert from_url("redis://h", run_id="r").expire_after is None
    kwargs = backend._client_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 6379, 1)
    secure = from_url("rediss://u:p%40ss@h?ssl_ca_certs=/ca.pem&ssl_cert_reqs=optional", run_id="r")
    kwargs = secure._client_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("u", "p@ss")
    assert (kwargs["ssl"], kwargs["ssl_ca_certs"], kwargs["ssl_cert_reqs"]) == (
        True,
        "/ca.pem",
        "optional",
    )


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://host/zero", "database number"),
        ("redis://host/0/1", "database number"),
        ("redis://host:port", "port"),
        ("redis://host:99999", "port"),
        ("redis://:secret@:5/0", "host"),
        ("redis://host#frag", "fragment"),
        ("redis://host?colour=red", "unknown option 'colour'"),
        ("redis://host?timeout=-1", "timeout"),
        ("redis://host?timeout=1&timeout=2", "twice"),
        ("redis://host?expire_after=0", "expire_after"),
        ("redis://host?expire_after=soon", "expire_after"),
        ("redis://host?max_state_size=big", "max_state_size"),
        ("redis://host?ssl_ca_certs=/ca.pem", "rediss://"),
        ("redis://host?tls_ca_file=/ca.pem", "rediss://"),
        ("redis://host?tls=true", "rediss://"),
        ("rediss://host?tls=false", "tls=false"),
        ("rediss://host?tls_verify=partly", "tls_verify"),
        ("rediss://host?ssl_cert_reqs=sometimes", "ssl_cert_reqs"),
        ("rediss://host?ssl_check_hostname=perhaps", "ssl_check_hostname"),
        ("redis://[::1/0", "IPv6"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        open_backend(url, run_id="r")
    assert "secret" not in str(caught.value)


# -- the member table ------------------------------------------------------------------------------


async def _fields(raw: redis.asyncio.Redis, key: bytes) -> dict[bytes, bytes]:
    """The fields of the hash *key* (as bytes: the test client does not decode)."""
    fields = await raw.hgetall(key)
    assert all(isinstance(item, bytes) for pair in fields.items() for item in pair)
    return cast("dict[bytes, bytes]", fields)


async def test_member_records_are_one_hash_beside_the_state(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    backend = backend_on(server, new_run_id())
    table = backend.member_table()
    assert table is backend.member_table()
    assert table.key == backend.key + b"\x00members"
    before = await raw.time()
    put = await table.put("node-a", "g1", b"owner\x00 bytes", None)
    after = await raw.time()
    assert put.written
    assert put.member is not None
    version = put.member.version
    assert isinstance(version, RedisMemberVersion)
    fields = await _fields(raw, table.key)
    assert fields[b"\x00format"] == MEMBERS_FORMAT
    assert fields[b"\x00incarnation"] == version.incarnation.encode()
    assert fields[b"\x00counter"] == b"1"
    assert fields[b"\x00size:g1"] == b"1"
    assert fields[b"\x00records"] == b"1"
    number, seq, written, rest = fields[b"node-a"].split(b" ", 3)
    assert fields[b"\x00written"] == written
    assert (number, seq, rest) == (b"1", b"1", b"g1\x00owner\x00 bytes")
    # The time of the write is the server's (TIME: seconds, microseconds), not this process's.
    assert before[0] * 10**6 + before[1] <= int(written) <= after[0] * 10**6 + after[1]
    assert await raw.exists(backend.key) == 0  # the state is untouched

    touched = await table.touch("node-a", version)
    assert touched is not None
    fields = await _fields(raw, table.key)
    assert fields[b"\x00counter"] == b"2"
    assert fields[b"node-a"].split(b" ", 3)[0:2] == [b"2", b"1"]  # new version, same seq
    assert fields[b"\x00written"] == fields[b"node-a"].split(b" ", 3)[2]
    assert await table.delete("node-a", touched.version)
    fields = await _fields(raw, table.key)
    assert int(fields.pop(b"\x00written")) >= int(written)  # a delete is a write too
    assert fields.pop(b"\x00records") == b"0"
    assert set(fields) == {b"\x00format", b"\x00incarnation", b"\x00counter"}  # size 0: gone
    await backend.aclose()


async def test_runs_whose_ids_are_prefixes_of_each_other_never_share_a_key(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    base = new_run_id()
    run_ids = [base, base + "members", base + "\x01members", base + " members", base + "-1"]
    handles = [backend_on(server, run_id) for run_id in run_ids]
    for run_id, handle in zip(run_ids, handles, strict=True):
        await handle.set_state(run_id.encode())
        put = await handle.member_table().put("node", "g", run_id.encode(), None)
        assert put.written
        assert put.group_size == 1
    for run_id, handle in zip(run_ids, handles, strict=True):
        current = await handle.get_state()
        assert current is not None
        assert current[0] == run_id.encode()
        member = await handle.member_table().get("node")
        assert member is not None
        assert member.value == run_id.encode()
        assert await handle.member_table().count("g") == 1
    keys = {handle.key for handle in handles} | {handle.member_table().key for handle in handles}
    assert len(keys) == 2 * len(run_ids)
    assert set(await raw.keys(f"arendezvous:{base}*")) == keys
    with pytest.raises(ValueError, match="NUL"):
        backend_on(server, base + "\x00members")
    for handle in handles:
        await handle.aclose()


async def test_member_writes_publish_nothing(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    """A heartbeat must wake nobody: no member write publishes, on the run's channel or any
    other. (A state write in the middle shows that this test would see a publish.)"""
    backend = backend_on(server, new_run_id())
    table = backend.member_table()
    async with raw.pubsub() as pubsub:
        await pubsub.psubscribe("*")
        with anyio.fail_after(5):
            while (await pubsub.get_message(timeout=5) or {}).get("type") != "psubscribe":
                pass
        put = await table.put("a", "g", b"v", None)
        assert put.member is not None
        touched = await table.touch("a", put.member.version)
        assert touched is not None
        await backend.set_state(b"state")
        moved = await table.put("a", "h", b"v", touched.version)
        assert moved.member is not None
        assert await table.delete("a", moved.member.version)
        await raw.publish("end-of-test", b"")
        channels: list[bytes] = []
        with anyio.fail_after(5):
            while not channels or channels[-1] != b"end-of-test":
                message = await pubsub.get_message(timeout=5)
                if message is not None and message["type"] == "pmessage":
                    channels.append(message["channel"])
    assert channels == [backend.key, b"end-of-test"]
    await backend.aclose()


def _corrupt_cases() -> list[Any]:
    record = [b"", b"garbage", b"1 1 1 g", b"1 1 1 \x00v", b"01 1 1 g\x00v", b"1 x 1 g\x00v",
              b"1 1 -5 g\x00v", b"1234567890123456 1 1 g\x00v", b"1 1 1.5 g\x00v",
              # groups that are not UTF-8 (Python's strict rules: no overlong forms, surrogates
              # or code points past U+10FFFF)
              b"1 1 1 g\xff\x00v", b"1 1 1 \xc0\xaf\x00v", b"1 1 1 \xed\xa0\x80\x00v",
              b"1 1 1 \xf4\x90\x80\x80\x00v", b"1 1 1 \xe2\x82\x00v"]
    every = ("get", "members", "count", "put new", "put current", "touch", "delete")
    # Other nodes' records stay usable (only members() scans them all).
    cases = [pytest.param({b"a": value}, ("get", "members", "put current", "touch", "delete"),
                          id=f"record {value!r}") for value in record]
    cases += [
        pytest.param({b"\x00format": b"arendezvous-members/2"}, every, id="format"),
        pytest.param({b"\x00format": None}, every, id="no format"),
        pytest.param({b"\x00incarnation": b"xyz"}, every, id="incarnation"),
        pytest.param({b"\x00incarnation": None}, every, id="no incarnation"),
        pytest.param({b"\x00counter": b"x"}, ("put new", "put current", "touch"), id="counter"),
        pytest.param({b"\x00counter": None}, ("put new", "put current", "touch"),
                     id="no counter"),
        pytest.param({b"\x00size:g": b"0"}, ("count", "put new", "put current", "delete"),
                     id="size 0"),
        pytest.param({b"\x00size:g": b"-1"}, ("count", "put new", "put current", "delete"),
                     id="size -1"),
        # A size the records contradict is caught where it is about to be decremented.
        pytest.param({b"\x00size:g": None}, ("put current", "delete"), id="no size"),
        pytest.param({b"\x00records": b"x"}, ("put new", "delete"), id="records"),
        pytest.param({b"\x00records": b"01"}, ("put new", "delete"), id="records 01"),
        # A count of 0 while a record exists is caught where it is about to be decremented.
        pytest.param({b"\x00records": b"0"}, ("delete",), id="records 0"),
    ]
    # A node id the client cannot decode, in the group listed.
    cases.append(pytest.param({b"\xff": b"1 1 1 g\x00v"}, ("members",), id="node id"))
    return cases


@pytest.mark.parametrize(("tampered", "refused"), _corrupt_cases())
async def test_a_corrupt_member_table_is_refused_and_kept(
    server: RedisServer, raw: redis.asyncio.Redis, tampered: dict[bytes, bytes | None],
    refused: tuple[str, ...],
) -> None:
    backend = backend_on(server, new_run_id())
    table = backend.member_table()
    put = await table.put("a", "g", b"v", None)
    assert put.member is not None
    version = put.member.version
    for field, value in tampered.items():
        if value is None:
            await raw.hdel(table.key, field)
        else:
            await raw.hset(table.key, field, value)
    stored = await raw.hgetall(table.key)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: table.get("a"),
        "members": lambda: table.members("g"),
        "count": lambda: table.count("g"),
        "put new": lambda: table.put("b", "g", b"v", None),
        "put current": lambda: table.put("a", "h", b"w", version),
        "touch": lambda: table.touch("a", version),
        "delete": lambda: table.delete("a", version),
    }
    for name in refused:
        with pytest.raises(RendezvousStateError, match=f"member {name.split()[0]} of run"):
            await calls[name]()
        assert await raw.hgetall(table.key) == stored, f"{name} changed the corrupt hash"
    await backend.aclose()


@pytest.mark.parametrize("kind", ["string", "list"])
async def test_a_member_key_of_another_type_is_refused_and_kept(
    server: RedisServer, raw: redis.asyncio.Redis, kind: str
) -> None:
    backend = backend_on(server, new_run_id())
    table = backend.member_table()
    if kind == "string":
        await raw.set(table.key, b"x")
    else:
        await raw.rpush(table.key, b"x")
    for call in (lambda: table.get("a"), lambda: table.members("g"), lambda: table.count("g"),
                 lambda: table.put("a", "g", b"v", None)):
        with pytest.raises(RendezvousStateError, match=f"holds a {kind}, not a hash"):
            await call()
    assert await raw.type(table.key) == kind.encode()
    await backend.aclose()


async def test_ages_are_never_negative(server: RedisServer, raw: redis.asyncio.Redis) -> None:
    """A record written before the server's clock was set back reads as fresh, not younger
    than zero."""
    backend = backend_on(server, new_run_id())
    table = backend.member_table()
    await table.put("a", "g", b"v", None)
    number, seq, written, rest = (await _fields(raw, table.key))[b"a"].split(b" ", 3)
    later = b"%d" % (int(written) + 3600 * 10**6)
    await raw.hset(table.key, "a", b" ".join((number, seq, later, rest)))
    member = await table.get("a")
    assert member is not None
    assert member.age == 0.0
    assert [member.age for member in await table.members("g")] == [0.0]
    await backend.aclose()


class _VersionSubclass(RedisMemberVersion):
    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        raise AssertionError("a caller's __eq__ ran")

    __hash__ = RedisMemberVersion.__hash__


class _HostileText(str):
    def __eq__(self, other: object) -> bool:
        raise AssertionError("a caller's __eq__ ran")

    __hash__ = str.__hash__


async def test_member_versions_are_checked_by_exact_type(server: RedisServer) -> None:
    backend = backend_on(server, new_run_id())
    table = backend.member_table()
    put = await table.put("a", "g", b"v", None)
    assert put.member is not None
    version = put.member.version
    assert isinstance(version, RedisMemberVersion)
    assert version.number == 1
    lookalikes: list[Any] = [
        RedisToken(version.incarnation, version.number),  # a state token with the same fields
        (version.incarnation, version.number),
        _VersionSubclass(version.incarnation, version.number),
        RedisMemberVersion(_HostileText(version.incarnation), version.number),
        RedisMemberVersion(version.incarnation, True),  # == 1, but not an int
        RedisMemberVersion(version.incarnation, 1.0),  # type: ignore[arg-type]
        RedisMemberVersion(version.incarnation.upper(), version.number),
        RedisMemberVersion(version.incarnation, 10**40),
        RedisMemberVersion("\ud800" * 32, version.number),
    ]
    for lookalike in lookalikes:
        assert await table.touch("a", lookalike) is None
        assert not await table.delete("a", lookalike)
        result = await table.put("a", "h", b"w", lookalike)
        assert not result.written
        assert result.member is not None
        assert result.member.version == version
    assert await table.touch("a", version) is not None
    await backend.aclose()


async def test_a_restarted_server_never_matches_old_versions(own_server: RedisServer) -> None:
    """A server without persistence restarts empty (its script cache too): the table created
    again draws a new incarnation, so versions of the old table, whose numbers come back, never
    match."""
    backend = backend_on(own_server, new_run_id())
    table = backend.member_table()
    old = (await table.put("a", "g", b"v", None)).member
    assert old is not None
    own_server.restart()
    # The first call may get the pooled connection the killed server closed and fail, as the
    # contract allows (redis-py 8.1 does not notice the close: redis/redis-py#4252); the next
    # one connects again.
    with contextlib.suppress(RendezvousConnectionError):
        await table.get("a")
    assert await table.get("a") is None
    new = (await table.put("a", "g", b"v", None)).member
    assert isinstance(new, Member)
    assert isinstance(new.version, RedisMemberVersion)
    assert isinstance(old.version, RedisMemberVersion)
    assert new.version.number == old.version.number == 1
    assert new.version != old.version
    assert await table.touch("a", old.version) is None
    assert not await table.delete("a", old.version)
    assert not (await table.put("a", "h", b"w", old.version)).written
    current = await table.get("a")
    assert current is not None
    assert current.version == new.version
    await backend.aclose()


async def test_the_member_script_is_reloaded_after_script_flush(
    server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    backend = backend_on(server, new_run_id())
    table = backend.member_table()
    put = await table.put("a", "g", b"v", None)
    assert put.member is not None
    await raw.script_flush()
    assert await table.touch("a", put.member.version) is not None
    await backend.aclose()


async def test_an_unreachable_server_is_a_connection_error_and_bad_input_is_not_sent() -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    backend = RedisBackend(new_run_id(), host="127.0.0.1", port=free_port(), password=secret,
                           timeout=0.5)
    table = backend.member_table()
    version = RedisMemberVersion("0" * 32, 1)
    calls = (lambda: table.get("a"), lambda: table.members("g"), lambda: table.count("g"),
             lambda: table.put("a", "g", b"v", None), lambda: table.touch("a", version),
             lambda: table.delete("a", version))
    for call in calls:
        with pytest.raises(RendezvousConnectionError, match=r"^member [a-z]+ of run") as caught:
            await call()
        assert caught.value.__cause__ is not None
        chain: BaseException | None = caught.value
        while chain is not None:
            assert secret not in str(chain)
            assert secret not in repr(chain)
            chain = chain.__cause__
    assert secret not in repr(table)
    # Bad input raises before anything is sent: not a connection error.
    with pytest.raises(ValueError, match="node"):
        await table.put("", "g", b"v", None)
    with pytest.raises(TypeError, match="group"):
        await table.members(b"g")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value"):
        await table.put("a", "g", bytearray(b"v"), None)  # type: ignore[arg-type]
    await backend.aclose()


async def test_a_frozen_server_times_member_calls_out(own_server: RedisServer) -> None:
    backend = backend_on(own_server, new_run_id(), timeout=0.3)
    table = backend.member_table()
    put = await table.put("a", "g", b"v", None)
    assert put.member is not None
    own_server.pause()
    try:
        with anyio.fail_after(5):
            with pytest.raises(RendezvousConnectionError, match=r"no answer within 0\.3 s"):
                await table.touch("a", put.member.version)
    finally:
        own_server.resume()
    await backend.aclose()


@pytest.mark.parametrize(
    "group", ["\u00e9", "\u0800", "\u20ac", "\ud7ff", "\ue000", "\uffff", "\U00010000",
              "\U0001d11e", "\U0010ffff"], ids=ascii,
)
async def test_groups_in_any_utf8_round_trip(server: RedisServer, group: str) -> None:
    """The script's UTF-8 check, which keeps groups the client could not decode from being
    written over, accepts every well-formed sequence, at the edges of each length."""
    backend = backend_on(server, new_run_id())
    table = backend.member_table()
    put = await table.put("a", group, b"v", None)
    assert put.member is not None
    assert [member.group for member in await table.members(group)] == [group]
    assert await table.touch("a", put.member.version) is not None
    current = await table.get("a")
    assert current is not None
    assert current.group == group
    await backend.aclose()
