"""Bad input at every public entry point, fuzzed with Hypothesis, on every backend.

What the contract (DESIGN.md section 2, the README's "Backend contract") promises for bad input:

* ``set_state`` with a state that is not ``bytes`` raises ``TypeError``, with one over the size
  limit ``ValueError``, and nothing is written either way.
* Any token but the current one -- stale, of another run or backend, forged, unhashable, hostile
  (its ``__eq__``/``__hash__`` raise or say yes to everything) -- is merely stale: ``set_state``
  returns the current ``(state, token, False)`` and never raises, and ``wait_for_change`` returns
  the current state at once.
* Stored bytes that do not decode raise ``RendezvousStateError`` from ``get_state``, ``set_state``
  and ``wait_for_change``, and are left exactly as they were.
* ``open_backend`` refuses a malformed URL with ``ValueError`` (``TypeError`` for a non-``str``)
  and never repeats the password, in a message or a repr.
* ``wait_for_change`` takes a negative timeout like 0 (look, do not wait), ``inf`` like ``None``,
  and refuses NaN with ``ValueError``.
* ``SyncBackend`` raises what the backend it wraps raises.

Memory and file run on asyncio and trio; Redis, etcd and PostgreSQL run on asyncio (their own
test modules run them on trio too, through the loop thread) against real servers started on
127.0.0.1 by ``tests/servers``, once per module. S3's URLs are fuzzed here with the others' (its
own test module covers its tokens and stored objects on a real SeaweedFS). The hostile
objects, the stored layouts written out from their documentation (the oracle for which raw bytes
must decode) and the strategies live in ``tests/bad_input/``.

A bug found here and not yet fixed is pinned by an ``xfail(strict=True)`` test whose reason names
it (none is left). When it is fixed, its xfail turns into a failure: remove the marker. The bugs
this module found and that were fixed (size limits dodged by bytes subclasses, ill-typed token
fields, NaN timeouts, passwords in URL errors, non-ASCII ports, negative limits, NUL run ids,
PostgreSQL overwriting a state corrupted in place) are now ordinary passing tests.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import math
import operator
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from arendezvous import (
    AsyncRendezvousBackend,
    RendezvousStateError,
    SyncBackend,
    Token,
    open_backend,
)
from arendezvous.backends.etcd import EtcdBackend, EtcdToken
from arendezvous.backends.file import FileBackend
from arendezvous.backends.memory import MemoryBackend, MemoryStore
from arendezvous.backends.postgres import (
    CREATE_TABLE_SQL,
    DEFAULT_TABLE,
    PostgresBackend,
    PostgresToken,
)
from arendezvous.backends.redis import DEFAULT_KEY_PREFIX, RedisBackend, RedisToken
from bad_input.layouts import (
    etcd_decode,
    etcd_encode,
    file_decode,
    file_encode,
    pg_decode,
    pg_encode,
    redis_hash_decode,
)
from bad_input.objects import (
    EtcdTokenEqualsEverything,
    Hostile,
    LyingLength,
    MemoryTokenEqualsEverything,
    PostgresTokenEqualsEverything,
    RedisTokenEqualsEverything,
    SelfSatisfiedBytes,
    StrEqualsEverything,
    hostile,
    is_current,
    message_chain,
)
from bad_input.strategies import (
    OTHER_RUN,
    REDIS_HASHES,
    SCHEMES,
    bad_states,
    forgeries,
    garbage_tokens,
    odd_urls,
    raw_values,
)
from servers.etcd import EtcdServer
from servers.postgres import PostgresServer
from servers.redis import RedisServer

pytestmark = pytest.mark.anyio

LIMIT = 64
"""A small configured size limit: sizes around it are cheap to write on every store."""

ETCD_PREFIX = "/arendezvous-bad-input/"
PG_PASSWORD = "pg-bad-input-Pa55"

FUZZ = settings(
    max_examples=40,
    deadline=None,
    # One handle per test serves every example on purpose: each example starts from what the
    # store holds now, so nothing needs resetting, and connections are not opened per example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FUZZ_CHEAP = settings(FUZZ, max_examples=100)
"""For properties that never reach a store (URL parsing)."""


# -- the stores ------------------------------------------------------------------------------------


@dataclass
class Store:
    """One kind of backend, with a way around it to its stored representation."""

    kind: str
    #: ``new(run_id, **options)``: a new handle on the run.
    new: Callable[..., AsyncRendezvousBackend]
    #: ``corrupt(run_id, raw)``: store *raw* as the run's representation with the store's client.
    corrupt: Callable[[str, bytes], Awaitable[None]] | None = None
    #: ``read_raw(run_id)``: the run's representation as the store holds it (version included).
    read_raw: Callable[[str], Awaitable[object]] | None = None
    #: The layout's reference encoder and decoder (``None`` for Redis: a string is never ours).
    encode: Callable[[bytes], bytes] | None = None
    decode: Callable[[bytes], bytes | None] | None = None


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer(password=PG_PASSWORD) as server:
        yield server


def _memory_store(request: pytest.FixtureRequest) -> Store:
    store = MemoryStore()
    return Store("memory", lambda run_id, **options: MemoryBackend(run_id, store, **options))


def _file_store(request: pytest.FixtureRequest) -> Store:
    directory: Path = request.getfixturevalue("tmp_path")

    def new(run_id: str, **options: Any) -> AsyncRendezvousBackend:
        options.setdefault("poll_interval", 0.01)
        return FileBackend(directory, run_id, durable=False, **options)

    def path(run_id: str) -> anyio.Path:
        return anyio.Path(FileBackend(directory, run_id).path)

    async def corrupt(run_id: str, raw: bytes) -> None:
        await path(run_id).parent.mkdir(parents=True, exist_ok=True)
        await path(run_id).write_bytes(raw)

    async def read_raw(run_id: str) -> object:
        return await path(run_id).read_bytes()

    return Store("file", new, corrupt, read_raw, file_encode, file_decode)


def _redis_store(request: pytest.FixtureRequest) -> Store:
    import redis.asyncio

    server: RedisServer = request.getfixturevalue("redis_server")

    def new(run_id: str, **options: Any) -> AsyncRendezvousBackend:
        return RedisBackend(run_id, host="127.0.0.1", port=server.port, **options)

    async def corrupt(run_id: str, raw: bytes) -> None:
        async with redis.asyncio.Redis(host="127.0.0.1", port=server.port) as client:
            await client.delete(DEFAULT_KEY_PREFIX + run_id)
            await client.set(DEFAULT_KEY_PREFIX + run_id, raw)

    async def read_raw(run_id: str) -> object:
        key = DEFAULT_KEY_PREFIX + run_id
        async with redis.asyncio.Redis(host="127.0.0.1", port=server.port) as client:
            kind = await client.type(key)
            if kind == b"string":
                return kind, await client.get(key)
            if kind == b"hash":
                return kind, await client.hgetall(key)
            if kind == b"list":
                return kind, await client.lrange(key, 0, -1)
            if kind == b"set":
                return kind, sorted(await client.smembers(key))
            return kind, None

    return Store("redis", new, corrupt, read_raw)


def _etcd_store(request: pytest.FixtureRequest) -> Store:
    import aetcd

    server: EtcdServer = request.getfixturevalue("etcd_server")
    host, _, port = server.endpoint.partition(":")

    def new(run_id: str, **options: Any) -> AsyncRendezvousBackend:
        return EtcdBackend(run_id, server.endpoint, key_prefix=ETCD_PREFIX, **options)

    async def corrupt(run_id: str, raw: bytes) -> None:
        async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
            await client.put((ETCD_PREFIX + run_id).encode(), raw)

    async def read_raw(run_id: str) -> object:
        async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
            got = await client.get((ETCD_PREFIX + run_id).encode())
        return None if got is None else (got.value, got.mod_revision)

    return Store("etcd", new, corrupt, read_raw, etcd_encode, etcd_decode)


def _postgres_store(request: pytest.FixtureRequest) -> Store:
    import asyncpg

    server: PostgresServer = request.getfixturevalue("postgres_server")

    def new(run_id: str, **options: Any) -> AsyncRendezvousBackend:
        # A long heartbeat: a wait must be woken by NOTIFY, not by the liveness check.
        return PostgresBackend(server.dsn, run_id, heartbeat=300, **options)

    async def corrupt(run_id: str, raw: bytes) -> None:
        connection = await asyncpg.connect(server.dsn)
        try:
            await connection.execute(CREATE_TABLE_SQL.format(table=f'"{DEFAULT_TABLE}"'))
            # A foreign write, as another program would make it: a new version with the bytes.
            await connection.execute(
                f'INSERT INTO "{DEFAULT_TABLE}" (run_id, incarnation, state) VALUES ($1, $2, $3) '
                "ON CONFLICT (run_id) DO UPDATE SET state = EXCLUDED.state, version = DEFAULT",
                run_id,
                b"\x00" * 16,
                raw,
            )
        finally:
            await connection.close()

    async def read_raw(run_id: str) -> object:
        connection = await asyncpg.connect(server.dsn)
        try:
            row = await connection.fetchrow(
                f'SELECT incarnation, version, state FROM "{DEFAULT_TABLE}" WHERE run_id = $1',
                run_id,
            )
        finally:
            await connection.close()
        return None if row is None else tuple(row)

    return Store("postgres", new, corrupt, read_raw, pg_encode, pg_decode)


_STORES: dict[str, Callable[[pytest.FixtureRequest], Store]] = {
    "memory": _memory_store,
    "file": _file_store,
    "redis": _redis_store,
    "etcd": _etcd_store,
    "postgres": _postgres_store,
}

_CASE_IDS = {
    ("memory", "asyncio"): "memory-asyncio",
    ("memory", "trio"): "memory-trio",
    ("file", "asyncio"): "file-asyncio",
    ("file", "trio"): "file-trio",
    ("redis", "asyncio"): "redis",
    ("etcd", "asyncio"): "etcd",
    ("postgres", "asyncio"): "postgres",
}


def cases(*kinds: str, xfail: dict[str, str] | None = None, loops: bool = True) -> list[Any]:
    """pytest params of ``(kind, event loop)`` for *kinds* (all by default).

    Memory and file run on asyncio and trio (unless *loops* is false); the network stores on
    asyncio (their own modules cover trio). *xfail* maps a kind to the reason it is a known failure.
    """
    wanted = kinds or tuple(_STORES)
    params = []
    for (kind, loop), case_id in _CASE_IDS.items():
        if kind not in wanted or (loop == "trio" and not loops):
            continue
        reason = (xfail or {}).get(kind)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param((kind, loop), id=case_id if loops else kind, marks=marks))
    return params


DECODING = ("file", "redis", "etcd", "postgres")
"""The stores that decode what they read: their stored bytes can be corrupt."""


@pytest.fixture
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(kind, event loop)``, given by each test's ``parametrize(..., indirect=True)``."""
    value: tuple[str, str] = request.param
    return value


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
def store(case: tuple[str, str], request: pytest.FixtureRequest) -> Store:
    return _STORES[case[0]](request)


class Handles:
    """The handles of one test, opened on demand, each on a run of the test's own."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tag = uuid.uuid4().hex[:12]
        self._named: dict[str, AsyncRendezvousBackend] = {}

    def run_id(self, name: str) -> str:
        return f"bad-input-{self._tag}-{name}"

    def named(self, name: str, **options: Any) -> AsyncRendezvousBackend:
        """The test's handle called *name* (on run *name*), made on first use with *options*."""
        if name not in self._named:
            self._named[name] = self.store.new(self.run_id(name), **options)
        return self._named[name]

    def fresh(self, name: str, **options: Any) -> AsyncRendezvousBackend:
        """A new handle on run *name*; the caller closes it (``async with``)."""
        return self.store.new(self.run_id(name), **options)

    async def filled(
        self, name: str = "filled", **options: Any
    ) -> tuple[AsyncRendezvousBackend, tuple[bytes, Token]]:
        """Handle *name* and the run's current ``(state, token)``, writing one if there is none."""
        backend = self.named(name, **options)
        current = await backend.get_state()
        if current is None:
            _, token, written = await backend.set_state(b"kept")
            assert written
            current = (b"kept", token)
        return backend, current

    @asynccontextmanager
    async def fresh_run(
        self, prefix: str
    ) -> AsyncIterator[tuple[AsyncRendezvousBackend, str, Token]]:
        """A handle on a new run holding ``b"kept"``: ``(handle, run id, token)``; closed after."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        async with self.fresh(name) as backend:
            _, token, written = await backend.set_state(b"kept")
            assert written
            yield backend, self.run_id(name), token

    async def aclose(self) -> None:
        for backend in self._named.values():
            await backend.aclose()


@pytest.fixture
async def handles(store: Store) -> AsyncIterator[Handles]:
    opened = Handles(store)
    yield opened
    await opened.aclose()


# -- set_state: the state --------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases(), indirect=True)
@FUZZ
@given(state=bad_states(), which_token=st.sampled_from(["current", "none", "garbage"]))
async def test_non_bytes_state_raises_type_error_and_changes_nothing(
    handles: Handles, state: Any, which_token: str
) -> None:
    for backend, current in [(handles.named("empty"), None), await handles.filled()]:
        token = {"current": current and current[1], "none": None, "garbage": "garbage"}
        with anyio.fail_after(30):
            with pytest.raises(TypeError, match="bytes"):
                await backend.set_state(state, token[which_token])
            assert await backend.get_state() == current


@pytest.mark.parametrize("case", cases(), indirect=True)
@FUZZ
@given(
    size=st.integers(0, LIMIT + 3) | st.sampled_from([LIMIT * 16, LIMIT * 4096]),
    fill=st.binary(min_size=1, max_size=1),
)
async def test_state_size_around_the_limit(handles: Handles, size: int, fill: bytes) -> None:
    backend, current = await handles.filled("limited", max_state_size=LIMIT)
    blob = fill * size
    with anyio.fail_after(30):
        if size <= LIMIT:
            state, token, written = await backend.set_state(blob, current[1])
            assert (state, written) == (blob, True)
            assert await backend.get_state() == (blob, token)
        else:
            with pytest.raises(ValueError, match="at most"):
                await backend.set_state(blob, current[1])
            assert await backend.get_state() == current


@pytest.mark.parametrize("case", cases(), indirect=True)
async def test_default_limit_refuses_one_byte_more_and_much_more(handles: Handles) -> None:
    backend, current = await handles.filled()
    for size in (1024 * 1024 + 1, 16 * 1024 * 1024):
        with pytest.raises(ValueError, match="at most"):
            await backend.set_state(b"\x00" * size, current[1])
        assert await backend.get_state() == current


@pytest.mark.parametrize("case", cases(), indirect=True)
async def test_bytes_subclass_cannot_dodge_the_size_limit(handles: Handles) -> None:
    backend, current = await handles.filled("limited", max_state_size=LIMIT)
    with pytest.raises(ValueError, match="at most"):
        await backend.set_state(LyingLength(b"x" * (LIMIT * 4)), current[1])
    assert await backend.get_state() == current


@pytest.mark.parametrize("case", cases(), indirect=True)
async def test_state_of_a_bytes_subclass_is_read_back_as_plain_bytes(handles: Handles) -> None:
    backend, current = await handles.filled()
    _, token, written = await backend.set_state(SelfSatisfiedBytes(b"sub"), current[1])
    assert written
    reader = handles.fresh("filled")
    async with reader:
        state = await reader.get_state()
    assert state is not None
    assert type(state[0]) is bytes
    assert state == (b"sub", token)


# -- set_state and wait_for_change: the token -----------------------------------------------------


@pytest.mark.parametrize("case", cases(), indirect=True)
@FUZZ
@given(token=garbage_tokens(), exists=st.booleans())
async def test_garbage_tokens_are_merely_stale(handles: Handles, token: Any, exists: bool) -> None:
    if exists:
        backend, current = await handles.filled()
        expected: tuple[bytes, Token, bool] = (*current, False)
    else:
        backend, expected = handles.named("empty"), (b"", None, False)
    with anyio.fail_after(30):
        assert await backend.set_state(b"overwritten?", token) == expected
        assert await backend.get_state() == (current if exists else None)
        assert await backend.wait_for_change(token, timeout=0) == (current if exists else None)
        if exists:  # the waiting path, not only the first look: returns at once all the same
            assert await backend.wait_for_change(token, timeout=20) == current


@pytest.mark.parametrize("case", cases(), indirect=True)
@FUZZ
@given(data=st.data(), fresh_handle=st.booleans())
async def test_forged_tokens_are_stale_unless_equal(
    handles: Handles, store: Store, data: st.DataObject, fresh_handle: bool
) -> None:
    _, current = await handles.filled()
    _, other_run = await handles.filled("other-run")
    forgery = data.draw(forgeries(store.kind), label="forgery")
    token = other_run[1] if forgery is OTHER_RUN else forgery.make(current[1])
    # A fresh handle has not talked to the store yet (etcd learns its cluster id on first use).
    backend = handles.fresh("filled") if fresh_handle else handles.named("filled")
    try:
        with anyio.fail_after(30):
            state, new_token, written = await backend.set_state(b"forged write", token)
            if is_current(token, current[1]):
                # Equal by the contract: a write is allowed (and not required: a lookalike of
                # another type that == says is equal may be refused).
                expected = (b"forged write", new_token) if written else current
                if written:
                    assert new_token != current[1]
            else:
                assert (state, new_token, written) == (*current, False)
                expected = current
                assert await backend.wait_for_change(token, timeout=0) == current
            assert await backend.get_state() == expected
    finally:
        if fresh_handle:
            await backend.aclose()


def _ill_typed_tokens() -> list[Any]:
    """``(kind, label, make token from the current one)``: lookalikes and the token classes with
    fields of the wrong type or range, each a case of its own."""

    def replace(**changes: Any) -> Callable[[Any], Any]:
        return lambda real: dataclasses.replace(real, **changes)

    rows: list[tuple[str, str, Callable[[Any], Any]]] = [
        ("memory", "subclass equal to all", lambda real: MemoryTokenEqualsEverything()),
        ("memory", "copy", copy.copy),
        ("file", "str subclass equal to all", StrEqualsEverything),
        ("file", "bytes of the token", lambda real: real.encode()),
        ("redis", "subclass equal to all", lambda real: RedisTokenEqualsEverything(
            real.incarnation, real.counter)),
        ("redis", "hostile fields", lambda real: RedisToken(hostile(), hostile())),
        ("redis", "bool counter", lambda real: RedisToken(real.incarnation, True)),
        ("redis", "bytes incarnation", lambda real: RedisToken(real.incarnation.encode(),
            real.counter)),
        ("redis", "surrogate in incarnation", replace(incarnation="\ud800")),
        ("redis", "counter of 5000 digits", lambda real: RedisToken(real.incarnation, 10**5000)),
        ("etcd", "subclass equal to all", lambda real: EtcdTokenEqualsEverything(
            real.cluster_id, real.key, real.mod_revision)),
        ("etcd", "hostile fields", lambda real: EtcdToken(hostile(), hostile(), hostile())),
        ("etcd", "hostile cluster id, right key", lambda real: EtcdToken(
            hostile(), real.key, real.mod_revision)),
        ("etcd", "revision 2**70", replace(mod_revision=2**70)),
        ("etcd", "revision as str", lambda real: dataclasses.replace(
            real, mod_revision=str(real.mod_revision))),
        ("etcd", "revision + 0.5", lambda real: dataclasses.replace(
            real, mod_revision=real.mod_revision + 0.5)),
        ("postgres", "subclass equal to all", lambda real: PostgresTokenEqualsEverything(
            real.incarnation, real.version)),
        ("postgres", "hostile fields", lambda real: PostgresToken(hostile(), hostile())),
        ("postgres", "version 2**70", replace(version=2**70)),
        ("postgres", "version as str", lambda real: dataclasses.replace(
            real, version=str(real.version))),
        ("postgres", "incarnation as hex str", lambda real: dataclasses.replace(
            real, incarnation=real.incarnation.hex())),
        ("postgres", "version + 0.5", lambda real: dataclasses.replace(
            real, version=real.version + 0.5)),
    ]  # fmt: skip
    params = []
    for kind, label, make in rows:
        params.append(pytest.param((kind, "asyncio"), make, id=f"{kind}-{label}"))
    return params


@pytest.mark.parametrize(("case", "make_token"), _ill_typed_tokens(), indirect=["case"])
async def test_ill_typed_token_fields_are_stale(
    handles: Handles, make_token: Callable[[Token], Any]
) -> None:
    _, current = await handles.filled()
    token = make_token(current[1])
    for fresh in (False, True):
        backend = handles.fresh("filled") if fresh else handles.named("filled")
        try:
            with anyio.fail_after(30):
                assert await backend.set_state(b"forged write", token) == (*current, False)
                assert await backend.get_state() == current
                assert await backend.wait_for_change(token, timeout=0) == current
        finally:
            if fresh:
                await backend.aclose()


# -- wait_for_change: the timeout ------------------------------------------------------------------


@pytest.mark.parametrize("case", cases(), indirect=True)
@FUZZ
@given(timeout=st.floats(max_value=0.0, allow_nan=False), pending=st.booleans())
async def test_non_positive_timeout_looks_without_waiting(
    handles: Handles, timeout: float, pending: bool
) -> None:
    backend, current = await handles.filled()
    with anyio.fail_after(10):
        result = await backend.wait_for_change(
            "garbage" if pending else current[1], timeout=timeout
        )
    assert result == (current if pending else None)


@pytest.mark.parametrize("case", cases("memory", "redis", "etcd", "postgres"), indirect=True)
@FUZZ
@given(timeout=st.floats(min_value=0.0, max_value=0.05, exclude_min=True))
async def test_tiny_timeout_still_reports_a_pending_change(
    handles: Handles, timeout: float
) -> None:
    """A change already made is reported however short the timeout, even by a new handle that
    has still to connect (the file backend: see also the smallest-timeout test below)."""
    _, current = await handles.filled()
    async with handles.fresh("filled") as backend:
        with anyio.fail_after(10):
            assert await backend.wait_for_change("garbage", timeout=timeout) == current


_SMALLEST_TIMEOUT = math.ulp(0.0)
"""5e-324: a deadline that has passed by the first checkpoint, whatever the machine's speed."""


@pytest.mark.parametrize("case", cases("file"), indirect=True)
async def test_file_tiny_timeout_still_reports_a_pending_change(handles: Handles) -> None:
    _, current = await handles.filled()
    async with handles.fresh("filled") as backend:
        with anyio.fail_after(10):
            assert await backend.wait_for_change("garbage", timeout=_SMALLEST_TIMEOUT) == current


@pytest.mark.parametrize("case", cases(), indirect=True)
async def test_infinite_timeout_waits_like_none(handles: Handles) -> None:
    waiter, current = await handles.filled()
    with anyio.fail_after(10):
        assert await waiter.wait_for_change(Hostile(), timeout=math.inf) == current
    writer = handles.fresh("filled")
    results: list[tuple[bytes, Token] | None] = []

    async def wait() -> None:
        results.append(await waiter.wait_for_change(current[1], timeout=math.inf))

    async with writer:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                _, new_token, written = await writer.set_state(b"woken", current[1])
    assert written
    assert results == [(b"woken", new_token)]


@pytest.mark.parametrize("case", cases(), indirect=True)
async def test_nan_timeout_is_refused(handles: Handles) -> None:
    backend, current = await handles.filled()
    with anyio.fail_after(3), pytest.raises(ValueError):
        await backend.wait_for_change(current[1], timeout=math.nan)
    assert await backend.get_state() == current


@pytest.mark.parametrize("case", cases(), indirect=True)
async def test_non_number_timeout_is_refused(handles: Handles) -> None:
    backend, current = await handles.filled()
    for timeout in ("1", b"1", [1]):
        with anyio.fail_after(10), pytest.raises(TypeError):
            await backend.wait_for_change(current[1], timeout=timeout)  # type: ignore[arg-type]
    assert await backend.get_state() == current


@pytest.mark.parametrize("case", cases(), indirect=True)
async def test_nan_timeout_is_refused_even_with_a_change_pending(handles: Handles) -> None:
    backend, _ = await handles.filled()
    with anyio.fail_after(3), pytest.raises(ValueError):
        await backend.wait_for_change("garbage", timeout=math.nan)


# -- stored bytes that do not decode ---------------------------------------------------------------


async def _assert_refused_and_untouched(
    store: Store, backend: AsyncRendezvousBackend, run_id: str, stale: Token
) -> None:
    """Every call on the corrupt run raises RendezvousStateError; the raw value stays as it is."""
    assert store.read_raw is not None
    before = await store.read_raw(run_id)
    with pytest.raises(RendezvousStateError):
        await backend.get_state()
    for token in (None, "garbage", stale, Hostile()):
        with pytest.raises(RendezvousStateError):
            await backend.set_state(b"overwritten?", token)
    for timeout in (0, 5):  # the first look, and the waiting path (which must not wait)
        with pytest.raises(RendezvousStateError):
            await backend.wait_for_change(None, timeout=timeout)
    assert await store.read_raw(run_id) == before


@pytest.mark.parametrize("case", cases(*DECODING), indirect=True)
@FUZZ
@given(data=st.data())
async def test_corrupt_stored_bytes_raise_state_error_and_stay(
    handles: Handles, store: Store, data: st.DataObject
) -> None:
    assert store.corrupt is not None
    raw = data.draw(raw_values(store.encode), label="raw")
    decoded = store.decode(raw) if store.decode is not None else None
    with anyio.fail_after(60):
        async with handles.fresh_run("corrupted") as (backend, run_id, stale):
            await store.corrupt(run_id, raw)
            if decoded is None:
                await _assert_refused_and_untouched(store, backend, run_id, stale)
            else:  # a valid value reads as the state it holds; a stale token stays stale
                current = await backend.get_state()
                assert current is not None
                assert current[0] == decoded
                assert await backend.set_state(b"x", stale) == (*current, False)


@pytest.mark.parametrize("case", cases("redis"), indirect=True)
@FUZZ
@given(fields=REDIS_HASHES)
async def test_redis_hash_fields_decode_or_raise_state_error(
    handles: Handles, store: Store, redis_server: RedisServer, fields: dict[bytes, bytes]
) -> None:
    """A hash's structure is what Redis state can get wrong (the state field is opaque bytes):
    every field fuzzed, written over a run's hash with redis-py's own client."""
    import redis.asyncio

    expected = redis_hash_decode(fields)
    with anyio.fail_after(60):
        async with handles.fresh_run("corrupted") as (backend, run_id, stale):
            key = DEFAULT_KEY_PREFIX + run_id
            async with redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port) as client:
                await client.delete(key)
                await client.hset(key, mapping=fields)  # type: ignore[arg-type]
            if expected is None:
                await _assert_refused_and_untouched(store, backend, run_id, stale)
                # nor does a token naming exactly the stored incarnation and counter
                counter = fields.get(b"counter", b"")
                lookalike = RedisToken(
                    fields.get(b"incarnation", b"").decode("latin-1"),
                    int(counter) if counter.isdigit() else 1,
                )
                with pytest.raises(RendezvousStateError):
                    await backend.set_state(b"overwritten?", lookalike)
            else:
                assert await backend.get_state() == expected
                assert await backend.set_state(b"x", stale) == (*expected, False)
                assert await backend.set_state(b"x") == (*expected, False)


@pytest.mark.parametrize("case", cases("redis"), indirect=True)
@pytest.mark.parametrize(
    "command",
    [("RPUSH", "a"), ("SADD", "a"), ("ZADD", "1", "a"), ("XADD", "*", "f", "v")],
    ids=repr,
)
async def test_redis_key_of_another_type_raises_state_error(
    handles: Handles, store: Store, redis_server: RedisServer, command: tuple[str, ...]
) -> None:
    import redis.asyncio

    async with handles.fresh_run("other-type") as (backend, run_id, stale):
        key = DEFAULT_KEY_PREFIX + run_id
        async with redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port) as client:
            await client.delete(key)
            execute: Callable[..., Awaitable[Any]] = client.execute_command
            await execute(command[0], key, *command[1:])
        await _assert_refused_and_untouched(store, backend, run_id, stale)


@pytest.mark.parametrize("case", cases("file"), indirect=True)
@FUZZ
@given(index=st.integers(0), mask=st.integers(1, 255))
async def test_file_corrupted_in_place_is_never_overwritten_by_the_token_holder(
    handles: Handles, store: Store, index: int, mask: int
) -> None:
    """Bit rot that spares the header keeps the token current; the checksum must refuse all the
    same, or the token holder would write over the damage unseen."""
    async with handles.fresh_run("rot") as (backend, run_id, token):
        assert isinstance(backend, FileBackend)
        path = anyio.Path(backend.path)
        raw = await path.read_bytes()
        index %= len(raw)
        await path.write_bytes(raw[:index] + bytes([raw[index] ^ mask]) + raw[index + 1 :])
        await _assert_refused_and_untouched(store, backend, run_id, token)


@pytest.mark.parametrize("case", cases("postgres"), indirect=True)
async def test_postgres_state_corrupted_in_place_is_never_overwritten(
    handles: Handles, store: Store, postgres_server: PostgresServer
) -> None:
    import asyncpg

    async with handles.fresh_run("rot") as (backend, run_id, token):
        connection = await asyncpg.connect(postgres_server.dsn)
        try:
            await connection.execute(
                f'UPDATE "{DEFAULT_TABLE}" SET state = $2 WHERE run_id = $1', run_id, b"garbage"
            )
        finally:
            await connection.close()
        await _assert_refused_and_untouched(store, backend, run_id, token)


@pytest.mark.parametrize("case", cases("redis"), indirect=True)
async def test_redis_format_field_corrupted_in_place_is_never_overwritten(
    handles: Handles, store: Store, redis_server: RedisServer
) -> None:
    import redis.asyncio

    async with handles.fresh_run("rot") as (backend, run_id, token):
        async with redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port) as client:
            await client.hset(DEFAULT_KEY_PREFIX + run_id, b"format", b"arendezvous/9")
        await _assert_refused_and_untouched(store, backend, run_id, token)


# -- run ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases(), indirect=True)
@settings(FUZZ, max_examples=25)
@given(run_id=st.text(min_size=1, max_size=300))
async def test_any_run_id_is_a_run_or_a_value_error(
    handles: Handles, store: Store, run_id: str
) -> None:
    # A NUL in a run id: test_nul_in_a_run_id_is_refused_up_front pins it.
    assume("\x00" not in run_id)
    _, kept = await handles.filled()
    try:
        backend = store.new(run_id)
    except ValueError:  # e.g. a lone surrogate where the store needs UTF-8 (UnicodeEncodeError)
        return
    async with backend:
        with anyio.fail_after(30):
            before = await backend.get_state()
            state, token, written = await backend.set_state(b"v", before and before[1])
            assert (state, written) == (b"v", True)
            assert await backend.get_state() == (b"v", token)
    assert await handles.named("filled").get_state() == kept


@pytest.mark.parametrize("run_id", ["", None, 5, b"run", ["run"]], ids=repr)
def test_bad_run_ids_are_refused(run_id: Any) -> None:
    for url in ("memory://", "file:///tmp/arendezvous-bad-input", "redis://127.0.0.1:1/0",
                "etcd://127.0.0.1:1", "postgresql://u@127.0.0.1:1/db", "s3://bucket"):  # fmt: skip
        with pytest.raises(ValueError if run_id == "" else TypeError):
            open_backend(url, run_id=run_id)


def test_nul_in_a_run_id_is_refused_up_front() -> None:
    for url in ("memory://", "file:///tmp/arendezvous-bad-input", "redis://127.0.0.1:1/0",
                "etcd://127.0.0.1:1", "postgresql://u@127.0.0.1:1/db", "s3://bucket"):  # fmt: skip
        with pytest.raises(ValueError, match="NUL"):
            open_backend(url, run_id="a\x00b")


# -- open_backend: URLs ----------------------------------------------------------------------------


def _check_open(url: str, secrets: list[str]) -> None:
    """``open_backend(url)`` gives a backend or ``ValueError``; no secret in its message or repr."""
    try:
        backend = open_backend(url, run_id="run")
    except ValueError as exc:
        shown = message_chain(exc)
    else:
        assert isinstance(backend, AsyncRendezvousBackend)
        shown = repr(backend)
    for secret in secrets:
        # As given, percent-encoded, decoded, and with the tabs and newlines urlsplit drops.
        forms = {
            secret,
            urllib.parse.quote(secret, safe=""),
            urllib.parse.unquote(secret),
            secret.translate({9: None, 10: None, 13: None}),
        }
        for form in forms:
            assert form not in shown, f"the secret {form!r} shows in {shown!r}"


@FUZZ_CHEAP
@given(
    text=st.text()
    | st.builds(operator.add, st.sampled_from(SCHEMES).map("{}://".format), st.text())
)
def test_any_text_is_a_backend_or_a_value_error(text: str) -> None:
    _check_open(text, [])


@pytest.mark.parametrize("scheme", SCHEMES)
@FUZZ_CHEAP
@given(data=st.data())
def test_odd_urls_give_a_backend_or_a_value_error_and_never_the_password(
    scheme: str, data: st.DataObject
) -> None:
    case = data.draw(odd_urls(scheme), label="url")
    _check_open(case.url, list(case.secrets))


_URLS_OF = {
    "memory": "memory://name",
    "file": "file:///tmp/arendezvous-bad-input",
    "redis": "redis://127.0.0.1:6379/0",
    "etcd": "etcd://127.0.0.1:2379",
    "postgresql": "postgresql://127.0.0.1:5432/db",
    "s3": "s3://bucket/prefix",
}


def _with_userinfo(scheme: str, userinfo: str) -> str:
    base = _URLS_OF[scheme]
    head, _, rest = base.partition("://")
    host = "localhost" if scheme == "file" else ""
    return f"{head}://{userinfo}@{host}{rest}"


def _leak_params() -> list[Any]:
    """``(scheme, userinfo)``: a reserved character left unencoded in the password or user."""
    params = []
    for scheme in _URLS_OF:
        for userinfo in (
            "user:SECRETASECRETB",
            "user:SECRETA/SECRETB",
            "user:SECRETA?SECRETB",
            "user:SECRETA#SECRETB",
            "us/er:SECRETASECRETB",
            "us?er:SECRETASECRETB",
            "us#er:SECRETASECRETB",
        ):
            params.append(pytest.param(scheme, userinfo, id=f"{scheme}-{userinfo}"))
    return params


@pytest.mark.parametrize(("scheme", "userinfo"), _leak_params())
def test_odd_userinfo_never_shows(scheme: str, userinfo: str) -> None:
    """A user or password with a reserved character left unencoded: no part of the password
    may show, in the error or the backend's repr."""
    url = _with_userinfo(scheme, userinfo)
    try:
        backend = open_backend(url, run_id="run")
    except ValueError as exc:
        shown = message_chain(exc)
    else:
        shown = repr(backend)
    assert "SECRETA" not in shown
    assert "SECRETB" not in shown


@pytest.mark.parametrize("scheme", list(_URLS_OF))
@pytest.mark.parametrize("netloc", ["user:SECRET@host:\u2100", "[user:SECRET@[::1]"])
def test_urllib_errors_never_show_the_password(scheme: str, netloc: str) -> None:
    with pytest.raises(ValueError) as caught:
        open_backend(f"{scheme}://{netloc}/x", run_id="run")
    assert "SECRET" not in message_chain(caught.value)


def _bad_url_params() -> list[Any]:
    rows: list[str] = []
    for port in ("-1", "65536", "99999", "abc", "1e3", "+80", "0x50", "8_0", " 80", "²", "٣٣"):
        rows += [
            f"redis://127.0.0.1:{port}/0",
            f"etcd://127.0.0.1:{port}",
            f"etcd://127.0.0.1:2379,127.0.0.2:{port}",
            f"postgresql://u@127.0.0.1:{port}/db",
            f"s3://bucket?endpoint_url=http://127.0.0.1:{port}",
        ]
    unknown = ["bogus=1", "TIMEOUT=1", "=1", "max_state_size=1&bogus=", "password=x"]
    for option in unknown:
        rows += [
            f"memory://?{option}",
            f"file:///tmp/x?{option}",
            f"redis://127.0.0.1/0?{option}",
            f"etcd://127.0.0.1?{option}",
            f"s3://bucket?{option}",
        ]
    rows += [f"postgresql://u@h/db?{option}" for option in unknown[:4]]
    rows += [
        # repeated options
        "memory://?max_state_size=1&max_state_size=1",
        "file:///tmp/x?durable=1&durable=1",
        "redis://h/0?timeout=1&timeout=1",
        "etcd://h?timeout=1&timeout=2",
        "postgresql://u@h/db?timeout=1&timeout=1",
        "postgresql://u@h/db?sslmode=require&sslmode=require",
        "postgresql://u@h/db?password=a&password=a",
        "s3://bucket?region=r&region=r",
        # bad option values
        *(f"redis://h/0?timeout={v}" for v in ("0", "-1", "nan", "inf", "abc", "")),
        *(f"etcd://h?timeout={v}" for v in ("0", "-1", "nan", "inf", "abc", "")),
        *(f"postgresql://u@h/db?timeout={v}" for v in ("0", "-1", "nan", "inf", "")),
        "file:///tmp/x?durable=maybe",
        "file:///tmp/x?poll_interval=0",
        "file:///tmp/x?poll_interval=nan",
        "memory://?max_state_size=abc",
        "memory://?max_state_size=1.5",
        "redis://h/0?max_state_size=0",
        "redis://h/0?max_state_size=-1",
        "etcd://h?max_state_size=-1",
        "postgresql://u@h/db?max_state_size=-1",
        "memory://?max_state_size=-1",
        "file:///tmp/x?max_state_size=-1",
        "rediss://h/0?ssl_cert_reqs=sometimes",
        "rediss://h/0?ssl_check_hostname=maybe",
        "redis://h/0?ssl_cert_reqs=none",
        "etcd://h?tls=maybe",
        "etcd://h?tls=false&ca_cert=/nonexistent",
        "etcd://h?ca_cert=/nonexistent/ca.pem",
        "postgresql://u@h/db?pool_size=0",
        "postgresql://u@h/db?pool_size=two",
        "postgresql://u@h/db?heartbeat=0",
        "postgresql://u@h/db?table=1bad",
        "postgresql://u@h/db?table=a.b.c",
        'postgresql://u@h/db?table=x"y',
        "postgresql://u@h/db?sslmode=sometimes",
        *(f"s3://bucket?timeout={v}" for v in ("0", "-1", "nan", "inf", "abc", "")),
        "s3://bucket?poll_interval=0",
        "s3://bucket?poll_interval=2&max_poll_interval=1",
        "s3://bucket?max_state_size=0",
        "s3://bucket?max_state_size=5368709121",
        "s3://bucket?addressing_style=sideways",
        "s3://bucket?region=us%20east",
        "s3://bucket?profile=",
        "s3://bucket?endpoint_url=ftp://h",
        "s3://bucket?endpoint_url=http://h:0",
        "s3://bucket?endpoint_url=http://h?x=1",
        "s3://bucket?aws_access_key_id=AKID",
        # malformed URLs and wrong schemes
        "", "nosuch://x", "http://h", "redis:/h",
        "redis:h", "://h", "memory:", "redis+tls://h",
        "redis://h/x", "redis://h/0/1", "redis://h/-1",
        "redis://h/0#frag", "redis://[::1/0", "redis://u:p@/0x",
        "etcd://h/path", "etcd://h#frag", "etcd://user@h",
        "etcd://[::1", "etcd://[nothex]:2379", "etcd://h1,[::1", "etcd://h1,,h2",
        "etcd://,", "postgresql://u@h/db/x", "postgresql://u@h/db#f",
        "postgresql://u@[::1/db", "memory://x/y", "file://host/tmp",
        "file://relative", "file:relative",
        "s3://", "s3:///prefix", "s3://bucket#frag", "s3://bucket//a", "s3://bucket/a/../b",
        "s3://bu:cket", "s3://[::1]", "s3://-bucket", "s3://key:secret@bucket",
    ]  # fmt: skip
    params = []
    for url in rows:
        params.append(pytest.param(url, id=url or "empty"))
    return params


@pytest.mark.parametrize("url", _bad_url_params())
def test_bad_urls_raise_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        open_backend(url, run_id="run")


@pytest.mark.parametrize("url", [None, b"memory://", 5, ["memory://"], Path("/tmp")], ids=repr)
def test_non_str_url_raises_type_error(url: Any) -> None:
    with pytest.raises(TypeError):
        open_backend(url, run_id="run")


# -- SyncBackend -----------------------------------------------------------------------------------


class SyncHandles:
    """Blocking handles of one test, each on a run of the test's own, each with its loop thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tag = uuid.uuid4().hex[:12]
        self.opened: dict[str, SyncBackend] = {}

    def run_id(self, name: str) -> str:
        return f"bad-input-sync-{self._tag}-{name}"

    def named(self, name: str, **options: Any) -> SyncBackend:
        """The test's blocking handle called *name*, made on first use with *options*."""
        if name not in self.opened:
            self.opened[name] = SyncBackend(self.store.new(self.run_id(name), **options))
        return self.opened[name]


@pytest.fixture
def sync_handles(store: Store) -> Iterator[SyncHandles]:
    opened = SyncHandles(store)
    yield opened
    for backend in opened.opened.values():
        backend.close()


def _sync_filled(backend: SyncBackend) -> tuple[bytes, Token]:
    current = backend.get_state()
    if current is None:
        _, token, _ = backend.set_state(b"kept")
        current = (b"kept", token)
    return current


@pytest.mark.parametrize("case", cases(loops=False), indirect=True)
@FUZZ
@given(state=bad_states(), token=garbage_tokens(), size=st.integers(LIMIT + 1, LIMIT * 64))
def test_sync_backend_raises_what_the_backend_raises(
    sync_handles: SyncHandles, state: Any, token: Any, size: int
) -> None:
    backend = sync_handles.named("limited", max_state_size=LIMIT)
    current = _sync_filled(backend)
    with pytest.raises(TypeError, match="bytes"):
        backend.set_state(state, current[1])
    with pytest.raises(ValueError, match="at most"):
        backend.set_state(b"x" * size, current[1])
    assert backend.set_state(b"overwritten?", token) == (*current, False)
    assert backend.wait_for_change(token, timeout=-1) == current
    assert backend.wait_for_change(current[1], timeout=-1) is None
    assert backend.get_state() == current


@pytest.mark.parametrize(
    "case", cases(loops=False), indirect=True
)
def test_sync_backend_refuses_nan_timeout(sync_handles: SyncHandles) -> None:
    backend = sync_handles.named("nan")
    current = _sync_filled(backend)
    # From a thread of its own, so that a wait that never ends cannot hang the test run.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(backend.wait_for_change, current[1], timeout=math.nan)
        try:
            with pytest.raises(ValueError):
                waiting.result(timeout=5)
        finally:
            if not waiting.done():
                backend.close()  # ends the wait (BackendClosedError) before the pool is joined


@pytest.mark.parametrize("case", cases(*DECODING, loops=False), indirect=True)
@settings(FUZZ, max_examples=20)
@given(data=st.data())
def test_sync_backend_refuses_corrupt_state(
    store: Store, sync_handles: SyncHandles, data: st.DataObject
) -> None:
    assert store.corrupt is not None
    assert store.read_raw is not None
    raw = data.draw(
        raw_values(store.encode).filter(
            lambda value: store.decode is None or store.decode(value) is None
        ),
        label="raw",
    )
    backend = sync_handles.named("corrupted")
    run_id = sync_handles.run_id("corrupted")
    anyio.run(store.corrupt, run_id, raw)
    before = anyio.run(store.read_raw, run_id)
    with pytest.raises(RendezvousStateError):
        backend.get_state()
    for token in (None, "garbage"):
        with pytest.raises(RendezvousStateError):
            backend.set_state(b"overwritten?", token)
    with pytest.raises(RendezvousStateError):
        backend.wait_for_change(None, timeout=0)
    assert anyio.run(store.read_raw, run_id) == before
