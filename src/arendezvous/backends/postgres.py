"""The PostgreSQL backend: one row per run in a table, each compare-and-swap one SQL statement.

The table (created on first use, see :data:`CREATE_TABLE_SQL`)::

    run_id      text PRIMARY KEY
    incarnation bytea NOT NULL       -- 16 random bytes, new each time the run's row is created
    version     bigint GENERATED ALWAYS AS IDENTITY   -- a new sequence value on every write
    state       bytea NOT NULL       -- b"ARDP", format version, CRC-32 of the state, the state

A token is :class:`PostgresToken` ``(incarnation, version)``. The version comes from the table's
sequence, so it never repeats within the table, not even when a row is deleted and created again;
the random incarnation keeps a token of another database, or of a table dropped and created again
(whose sequence starts over), from ever matching.

``set_state`` is a single statement, hence a single transaction: a locking read of the current row,
the conditional ``UPDATE`` (or ``INSERT ... ON CONFLICT DO NOTHING`` for token ``None``), a
``pg_notify`` in the write's ``RETURNING`` list so the notice is sent exactly when the write
commits, and -- when the write loses -- the current row, all in one round trip.
``wait_for_change`` ``LISTEN``\\s on a dedicated connection, then re-reads; every notice, and every
reconnect, is followed by another re-read, so a lost notice only costs latency.

Connections: a small pool of the handle's own (:class:`_ConnectionPool` says why not
``asyncpg.Pool``), plus one dedicated listening connection once ``wait_for_change`` is used.

Why asyncpg: it is asyncio-native (no thread hop per query), speaks the binary protocol with
prepared statements cached per connection -- the CAS statement is parsed and planned once per
connection, not per call -- enforces per-statement timeouts with a timer rather than a task, and
hands ``NOTIFY`` to a plain callback, which is all a listener needs. The price: asyncpg runs only
on asyncio, so this backend does too; from trio, use it through :class:`arendezvous.SyncBackend`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import struct
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio

from .._backend import (
    DEFAULT_MAX_STATE_SIZE,
    AsyncRendezvousBackend,
    RunHandle,
    Token,
    check_run_id,
    check_state,
    check_timeout,
)
from .._compat import import_optional, require_asyncio
from .._errors import (
    BackendClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousStateError,
)

__all__ = (
    "CREATE_TABLE_SQL",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_TABLE",
    "DEFAULT_TIMEOUT",
    "PostgresBackend",
    "PostgresToken",
    "from_url",
)

_T = TypeVar("_T")

DEFAULT_TABLE: Final = "arendezvous_state"
"""The table that holds the runs' rows unless ``table=`` names another."""

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds one call may take (connecting included) before it fails with a connection error."""

DEFAULT_POOL_SIZE: Final = 4
"""Connections a backend keeps at most for reads and writes (the listener has its own)."""

DEFAULT_HEARTBEAT: Final = 10.0
"""Seconds ``wait_for_change`` waits for a notice before checking the listening connection."""

CREATE_TABLE_SQL: Final = """\
CREATE TABLE IF NOT EXISTS {table} (
    run_id text PRIMARY KEY,
    incarnation bytea NOT NULL,
    version bigint GENERATED ALWAYS AS IDENTITY,
    state bytea NOT NULL
)"""
"""The table's definition; ``{table}`` is the quoted name. A DBA may create it ahead of time."""

_MAX_STATE_LIMIT = 1 << 29  # bytea and the protocol allow ~1 GiB; a rendezvous needs far less
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated

_MAGIC = b"ARDP"
_FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sBI")

_INSERT_ATTEMPTS = 8
_RECONNECT_BACKOFF = (0.05, 1.0)

_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq connection parameters that asyncpg understands in a URL; passed through to it untouched.
_PASSTHROUGH_OPTIONS = (
    "application_name",
    "dbname",
    "host",
    "krbsrvname",
    "passfile",
    "password",
    "port",
    "ssl_max_protocol_version",
    "ssl_min_protocol_version",
    "sslcert",
    "sslcrl",
    "sslkey",
    "sslmode",
    "sslpassword",
    "sslrootcert",
    "target_session_attrs",
    "user",
)


@dataclass(frozen=True, slots=True)
class PostgresToken:
    """A PostgreSQL backend's token: the row's incarnation and the sequence value of its last write.

    Equal only to another :class:`PostgresToken` with the same fields (an exact type check comes
    first, so a foreign object's ``__eq__`` never runs).
    """

    incarnation: bytes
    version: int

    def __repr__(self) -> str:
        return f"<PostgresToken {self.incarnation[:4].hex()}...#{self.version}>"


def _well_formed(token: object) -> bool:
    """A PostgresToken with a bytes incarnation and a bigint version: only such a token is
    compared or sent (asyncpg refuses other types, and truncates a float version)."""
    return (
        type(token) is PostgresToken
        and type(token.incarnation) is bytes
        and type(token.version) is int
        and -(2**63) <= token.version < 2**63
    )


def _same_token(current: Token, token: object) -> bool:
    # The caller's token is untrusted: its type is checked first, so only our __eq__ ever runs.
    return _well_formed(token) and token == current


def _encode(state: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, _FORMAT_VERSION, zlib.crc32(state)) + state


def _decode(stored: object, where: str) -> bytes:
    if not isinstance(stored, bytes) or len(stored) < _HEADER.size:
        raise RendezvousStateError(f"{where} does not hold arendezvous state (too short)")
    magic, version, checksum = _HEADER.unpack_from(stored)
    if magic != _MAGIC:
        raise RendezvousStateError(f"{where} does not hold arendezvous state (magic {magic!r})")
    if version != _FORMAT_VERSION:
        raise RendezvousStateError(f"{where} holds state of unknown format version {version}")
    state = stored[_HEADER.size :]
    if zlib.crc32(state) != checksum:
        raise RendezvousStateError(f"{where} holds state whose checksum does not match")
    return state


def _quote_table(table: object) -> tuple[str, str]:
    """Validate a table name (``name`` or ``schema.name``); return ``(quoted, plain)`` forms.

    Only plain identifiers are accepted, so quoting them cannot be escaped: the quoted form is the
    one string this module ever puts into SQL text that did not come from itself.
    """
    if not isinstance(table, str):
        raise TypeError(f"table must be str, not {type(table).__name__}")
    parts = table.split(".")
    if len(parts) > 2 or not all(
        _IDENTIFIER.match(part) and len(part.encode()) <= _MAX_IDENTIFIER_BYTES for part in parts
    ):
        raise ValueError(
            f"table must be NAME or SCHEMA.NAME of letters, digits and underscores (each at most "
            f"{_MAX_IDENTIFIER_BYTES} bytes, not starting with a digit); got {table!r}"
        )
    return ".".join(f'"{part}"' for part in parts), table


def _redact(dsn: str) -> str:
    """*dsn* without password and query string (where ``password=``/``sslpassword=`` may hide)."""
    parts = urllib.parse.urlsplit(dsn)
    user, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}@{hosts}" if at else hosts
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _check_dsn(dsn: object) -> str:
    if not isinstance(dsn, str):
        raise TypeError(f"dsn must be str, not {type(dsn).__name__}")
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ValueError("a PostgreSQL URL starts with postgresql:// or postgres://")
    if parts.fragment:
        raise ValueError("a PostgreSQL URL takes no #fragment")
    if parts.path.count("/") > 1:
        raise ValueError("a PostgreSQL URL's path is /DATABASE (percent-encode '/' in passwords)")
    for host in parts.netloc.rpartition("@")[2].split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, port = port.partition(":")
        if colon and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError("bad port in a PostgreSQL URL (percent-encode '?' in passwords)")
    return dsn


def _channel(table: str, run_id: str) -> str:
    # Channel names are identifiers of at most 63 bytes; run ids are any text: hash them.
    digest = hashlib.sha256(f"{table}\0{run_id}".encode()).hexdigest()[:40]
    return f"arendezvous_{digest}"


def _advisory_key(table: str) -> int:
    digest = hashlib.sha256(f"arendezvous create table {table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _remaining(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    """Seconds left until *deadline* on *loop*'s clock; ``TimeoutError`` if none are."""
    remaining = deadline - loop.time()
    if remaining <= 0:
        raise TimeoutError
    return remaining


class _ConnectionPool:
    """At most *size* asyncpg connections for one backend, reused last-in first-out.

    ``asyncpg.Pool`` costs more per call than the query itself on a fast link: every release runs
    in a shielded task of its own and, by default, resets the session with a second round trip
    (``benchmarks/bench_postgres.py`` shows the difference). This pool is a semaphore and a list.
    A connection goes back to the list only if the call on it ended with the server's answer
    (a result or an error) outside a transaction; one interrupted by cancellation, a timeout or a
    network error is terminated, so no connection in an unknown state is ever handed out again.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connect: Callable[[float], Awaitable[Any]],
        size: int,
    ) -> None:
        self._loop = loop
        self._connect = connect
        self._idle: list[Any] = []
        self._slots = anyio.Semaphore(size)
        self._closed = False

    async def acquire(self, deadline: float) -> Any:
        """A connection, reused or new; waiting for a slot and connecting end by *deadline*."""
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.fail_after(_remaining(self._loop, deadline)):
                await self._slots.acquire()
        try:
            while self._idle:
                connection = self._idle.pop()
                if not connection.is_closed():
                    return connection
            return await self._connect(deadline)
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: Any, *, reusable: bool) -> None:
        """Give *connection* back; keep it only if *reusable* and idle, else terminate it."""
        try:
            if (
                reusable
                and not self._closed
                and not connection.is_closed()
                and not connection.is_in_transaction()
            ):
                self._idle.append(connection)
            else:
                connection.terminate()
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        """Close the idle connections politely; those in use are terminated when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()

    def terminate(self) -> None:
        """Drop every idle connection without a goodbye."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.terminate()


class PostgresBackend(RunHandle, AsyncRendezvousBackend):
    """A handle on one run's row in a PostgreSQL table.

    :param dsn: ``postgresql://user:password@host:port/database`` with optional libpq parameters
        (``sslmode``, ``sslrootcert``, ...) as its query string; never shown in reprs or errors.
    :param table: ``NAME`` or ``SCHEMA.NAME`` (plain identifiers only; case is kept). Created with
        :data:`CREATE_TABLE_SQL` on first use if missing; the schema must exist.
    :param timeout: seconds any one call may take, connecting included, before it raises
        :class:`~arendezvous.RendezvousConnectionError`. ``wait_for_change`` rides through outages
        of the server shorter than this, reconnecting, and raises after a longer one.
    :param pool_size: connections kept at most for reads and writes.
    :param heartbeat: seconds ``wait_for_change`` waits without a notice before it checks that
        the listening connection is alive (a silently dead one would lose every notice).
    :param max_state_size: the largest state accepted, in bytes.
    :param connect_kwargs: more keyword arguments for ``asyncpg.connect`` (``ssl=`` an
        :class:`ssl.SSLContext`, ``password=``, ``server_settings=``, ...).

    Runs on asyncio only (the asyncpg client does; under trio the first call raises a clear
    ``RuntimeError``), and on the one event loop it is first used on. Safe to share between tasks.
    A cancelled ``set_state`` has either committed or not: it is one statement, hence one
    transaction. The connection it was cancelled on is closed, never reused, so the pool holds
    only connections in a known state.
    """

    def __init__(
        self,
        dsn: str,
        run_id: str,
        *,
        table: str = DEFAULT_TABLE,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
        heartbeat: float = DEFAULT_HEARTBEAT,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._asyncpg = import_optional("asyncpg", "postgres")
        self._run_id = check_run_id(run_id)
        if "\x00" in run_id:
            raise ValueError("run_id must not contain NUL: PostgreSQL text cannot hold it")
        self._dsn = _check_dsn(dsn)
        self._table_sql, self._table = _quote_table(table)
        if not 0 < timeout < float("inf"):
            raise ValueError("timeout must be a positive number of seconds")
        if not 0 < heartbeat < float("inf"):
            raise ValueError("heartbeat must be a positive number of seconds")
        if type(pool_size) is not int or pool_size < 1:
            raise ValueError("pool_size must be an int of at least 1")
        if type(max_state_size) is not int or not 0 <= max_state_size <= _MAX_STATE_LIMIT:
            raise ValueError(f"max_state_size must be an int from 0 to {_MAX_STATE_LIMIT}")
        self._timeout = float(timeout)
        self._pool_size = pool_size
        self._heartbeat = float(heartbeat)
        self._max_state_size = max_state_size
        self._connect_kwargs = dict(connect_kwargs or {})
        if {"dsn", "timeout"} & self._connect_kwargs.keys():
            raise ValueError("connect_kwargs must not set dsn or timeout: they are arguments here")
        self._channel = _channel(self._table, self._run_id)
        self._where = f"row {self._run_id!r} of table {self._table}"
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: _ConnectionPool | None = None
        self._table_ready = False
        self._listener: Any = None
        self._listener_lock = anyio.Lock()
        self._listener_alive_at = float("-inf")
        self._watchers: set[anyio.Event] = set()

        t = self._table_sql
        self._create_sql = CREATE_TABLE_SQL.format(table=t)
        self._get_sql = f"SELECT version, incarnation, state FROM {t} WHERE run_id = $1"
        # Both CAS statements return one row (written, version, incarnation, state) -- the new
        # version if the write won, else the current row -- or none when the run has no row.
        self._insert_sql = f"""\
WITH inserted AS (
    INSERT INTO {t} (run_id, incarnation, state) VALUES ($1, $2, $3)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING version, pg_notify($4, version::text)
)
SELECT true AS written, version, NULL::bytea AS incarnation, NULL::bytea AS state FROM inserted
UNION ALL
SELECT false, version, incarnation, state FROM {t}
WHERE run_id = $1 AND NOT EXISTS (SELECT FROM inserted)"""
        # The locking read comes first: under READ COMMITTED it waits for a concurrent writer and
        # returns the row that writer committed, so the token is compared with the latest row and
        # a loser reports the winner's row. Without the lock the comparison would use this
        # statement's snapshot, and two racing writers could both win (measured: it happens).
        self._update_sql = f"""\
WITH current AS (
    SELECT c.version, c.incarnation, c.state FROM {t} AS c WHERE c.run_id = $1
    FOR NO KEY UPDATE
), updated AS (
    UPDATE {t} AS u SET version = DEFAULT, state = $4
    WHERE u.run_id = $1
      AND EXISTS (SELECT FROM current AS c WHERE c.version = $2 AND c.incarnation = $3)
    RETURNING u.version, pg_notify($5, u.version::text)
)
SELECT true AS written, version, NULL::bytea AS incarnation, NULL::bytea AS state FROM updated
UNION ALL
SELECT false, version, incarnation, state FROM current
WHERE NOT EXISTS (SELECT FROM updated)"""

        asyncpg = self._asyncpg
        self._connection_errors: tuple[type[BaseException], ...] = (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,
            OSError,
            asyncio.TimeoutError,
        )
        self._client_errors = (TimeoutError, *self._connection_errors)
        # A table of that name that is not ours is as foreign as a value that is not ours.
        self._layout_errors: tuple[type[BaseException], ...] = (
            asyncpg.UndefinedColumnError,
            asyncpg.DatatypeMismatchError,
            asyncpg.WrongObjectTypeError,
        )

    @property
    def name(self) -> str:
        return "postgres"

    @property
    def table(self) -> str:
        """The table holding the runs' rows, as given (``NAME`` or ``SCHEMA.NAME``)."""
        return self._table

    @property
    def timeout(self) -> float:
        """Seconds one call may take before it raises a connection error."""
        return self._timeout

    def __repr__(self) -> str:
        return (
            f"PostgresBackend({_redact(self._dsn)!r}, run_id={self._run_id!r}, "
            f"table={self._table!r})"
        )

    # -- connections -----------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> RendezvousError:
        """Our error for the client's *exc*; the caller raises it ``from exc``."""
        where = f"PostgreSQL {what} ({self._where})"
        if isinstance(exc, self._layout_errors):
            return RendezvousStateError(
                f"{where}: the table does not have arendezvous's layout: "
                f"{type(exc).__name__}: {exc}"
            )
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return RendezvousConnectionError(f"{where}: no answer within {self._timeout} s")
        return RendezvousConnectionError(f"{where}: {type(exc).__name__}: {exc}")

    async def _connect(self, deadline: float) -> Any:
        return await self._asyncpg.connect(
            self._dsn, timeout=self._time_left(deadline), **self._connect_kwargs
        )

    def _connections(self) -> tuple[asyncio.AbstractEventLoop, _ConnectionPool]:
        """The event loop and the pool, after checking that this is the loop they belong to."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            require_asyncio("postgres", "asyncpg")  # raises, saying why
            raise
        if loop is not self._loop:
            if self._loop is not None:
                raise RuntimeError(
                    "this PostgresBackend is bound to the event loop it was first used on (its "
                    "connections are); open one backend per event loop"
                )
            self._loop = loop
            self._pool = _ConnectionPool(loop, self._connect, self._pool_size)
        assert self._pool is not None
        return loop, self._pool

    def _time_left(self, deadline: float) -> float:
        assert self._loop is not None
        return _remaining(self._loop, deadline)

    async def _run(self, what: str, operation: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Run ``operation(connection, deadline, *args)`` on a pooled connection, errors mapped.

        Every step (waiting for a slot, connecting, each statement) ends by one deadline,
        :attr:`timeout` seconds from now, through asyncpg's own timeouts: no cancel scope on the
        hot path.
        """
        self._check_open()
        loop, pool = self._connections()
        deadline = loop.time() + self._timeout
        try:
            connection = await pool.acquire(deadline)
            reusable = False
            try:
                if not self._table_ready:
                    await self._create_table(connection, deadline)
                try:
                    result = await operation(connection, deadline, *args)
                except self._asyncpg.UndefinedTableError:
                    # Dropped behind our back; the statement failed before writing anything.
                    self._table_ready = False
                    await self._create_table(connection, deadline)
                    result = await operation(connection, deadline, *args)
                reusable = True
                return result
            except (RendezvousStateError, self._asyncpg.PostgresError):
                reusable = True  # the server answered: the connection is in a known state
                raise
            finally:
                pool.release(connection, reusable=reusable)
        except RendezvousError:
            raise
        except self._client_errors as exc:
            raise self._error(what, exc) from exc

    async def _create_table(self, connection: Any, deadline: float) -> None:
        # Runs once per handle: a cancel scope bounds it, the transaction's rollback included.
        with anyio.fail_after(self._time_left(deadline)):
            exists = await connection.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", self._table_sql
            )
            if not exists:
                # Concurrent CREATE TABLE IF NOT EXISTS can still collide (on the row type's
                # unique name); a transaction-scoped advisory lock lets one node create it.
                async with connection.transaction():
                    await connection.execute(
                        "SELECT pg_advisory_xact_lock($1)", _advisory_key(self._table_sql)
                    )
                    await connection.execute(self._create_sql)
        self._table_ready = True

    # -- reads and writes ------------------------------------------------------------------------

    def _current(self, row: Any) -> tuple[bytes, PostgresToken]:
        state = _decode(row["state"], self._where)
        return state, PostgresToken(bytes(row["incarnation"]), int(row["version"]))

    async def _read(self, connection: Any, deadline: float) -> tuple[bytes, Token] | None:
        row = await connection.fetchrow(
            self._get_sql, self._run_id, timeout=self._time_left(deadline)
        )
        return None if row is None else self._current(row)

    async def _read_only(self, connection: Any, deadline: float) -> tuple[bytes, Token, bool]:
        # Not one of our tokens: it cannot be current, so the write is just a read.
        current = await self._read(connection, deadline)
        return (b"", None, False) if current is None else (*current, False)

    async def _insert(
        self, connection: Any, deadline: float, state: bytes, stored: bytes
    ) -> tuple[bytes, Token, bool]:
        for _ in range(_INSERT_ATTEMPTS):
            incarnation = os.urandom(16)
            row = await connection.fetchrow(
                self._insert_sql,
                self._run_id,
                incarnation,
                stored,
                self._channel,
                timeout=self._time_left(deadline),
            )
            if row is None:
                # The row that beat the insert committed after this statement's snapshot (or
                # was deleted since): a new statement, with a new snapshot, sees it.
                continue
            if row["written"]:
                return state, PostgresToken(incarnation, row["version"]), True
            return (*self._current(row), False)
        raise RendezvousConnectionError(
            f"PostgreSQL write ({self._where}): the row kept appearing and disappearing"
        )

    async def _update(
        self, connection: Any, deadline: float, state: bytes, stored: bytes, token: PostgresToken
    ) -> tuple[bytes, Token, bool]:
        row = await connection.fetchrow(
            self._update_sql,
            self._run_id,
            token.version,
            token.incarnation,
            stored,
            self._channel,
            timeout=self._time_left(deadline),
        )
        if row is None:
            return b"", None, False
        if row["written"]:
            return state, PostgresToken(token.incarnation, row["version"]), True
        return (*self._current(row), False)

    async def get_state(self) -> tuple[bytes, Token] | None:
        return await self._run("read", self._read)

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self._check_open()
        state = check_state(state, self._max_state_size)
        if token is None:
            return await self._run("write", self._insert, state, _encode(state))
        if _well_formed(token):
            return await self._run("write", self._update, state, _encode(state), token)
        return await self._run("write", self._read_only)

    # -- waiting ---------------------------------------------------------------------------------

    def _wake_watchers(self, *_: object) -> None:
        for event in self._watchers:
            event.set()

    def _on_listener_lost(self, connection: Any) -> None:
        if self._listener is connection:
            self._listener = None
        self._wake_watchers()

    async def _listen(self) -> None:
        """Make sure the dedicated connection is open and ``LISTEN``\\s on the run's channel."""
        async with self._listener_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            self._listener = None
            try:
                deadline = anyio.current_time() + self._timeout
                with anyio.fail_after(self._timeout):
                    connection = await self._connect(deadline)
                    try:
                        connection.add_termination_listener(self._on_listener_lost)
                        await connection.add_listener(self._channel, self._wake_watchers)
                    except BaseException:
                        connection.terminate()
                        raise
            except self._client_errors as exc:
                raise self._error("listen", exc) from exc
            self._listener = connection
            self._listener_alive_at = anyio.current_time()

    async def _check_listener(self) -> None:
        """Ping the listening connection; drop it (waking the watchers) if it does not answer."""
        async with self._listener_lock:
            connection = self._listener
            if connection is None or self._heartbeat / 2 > (
                anyio.current_time() - self._listener_alive_at
            ):
                return  # gone already, or another waiter has just checked it
            try:
                await connection.fetchval("SELECT 1", timeout=self._timeout)
            except self._client_errors:
                connection.terminate()
                self._on_listener_lost(connection)
            else:
                self._listener_alive_at = anyio.current_time()

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self._check_open()
        check_timeout(timeout)
        self._connections()  # the event-loop checks, before any waiting
        if timeout is not None and timeout <= 0:  # no wait, but still report a change already made
            current = await self.get_state()
            return current if current is not None and not _same_token(current[1], token) else None
        # The wait's timeout bounds only the waiting for a notice: each LISTEN and re-read is
        # bounded by the backend's own timeout, so a change already made is reported however
        # short the wait, and None is answered only after a read saw the token still current.
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        outage_since: float | None = None
        backoff = _RECONNECT_BACKOFF[0]
        while True:
            self._check_open()
            changed = anyio.Event()
            # Registered before LISTEN and the re-read: a notice that comes after the re-read
            # began is never missed.
            self._watchers.add(changed)
            try:
                try:
                    await self._listen()
                    current = await self._run("read", self._read)
                except BackendClosedError:
                    raise
                except RendezvousConnectionError as exc:
                    now = anyio.current_time()
                    outage_since = now if outage_since is None else outage_since
                    if now - outage_since >= self._timeout:
                        raise
                    if now >= deadline:
                        # "No change" would be a guess: the store could not be asked.
                        raise RendezvousConnectionError(
                            f"PostgreSQL wait ({self._where}): the store was unreachable when "
                            "the wait timed out"
                        ) from exc
                    # Reconnect backoff while the server is unreachable, not state polling.
                    pause = min(backoff, outage_since + self._timeout - now, deadline - now)
                    await anyio.sleep(pause)
                    backoff = min(backoff * 2, _RECONNECT_BACKOFF[1])
                    continue
                outage_since, backoff = None, _RECONNECT_BACKOFF[0]
                if current is not None and not _same_token(current[1], token):
                    return current
                while not changed.is_set():
                    left = deadline - anyio.current_time()
                    if left <= 0:
                        return None
                    with anyio.move_on_after(min(self._heartbeat, left)):
                        await changed.wait()
                    if not changed.is_set() and anyio.current_time() < deadline:
                        await self._check_listener()
            finally:
                self._watchers.discard(changed)

    # -- closing ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_watchers()
        listener, pool = self._listener, self._pool
        self._listener = self._pool = None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None or running is not self._loop:
            # Not on the loop that owns the connections: drop them without a goodbye.
            if listener is not None:
                listener.terminate()
            if pool is not None:
                pool.terminate()
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout) as scope:
            try:
                if listener is not None:
                    await listener.close()
                if pool is not None:
                    await pool.aclose()
            except self._client_errors:
                scope.cancel()
        if scope.cancel_called:
            if listener is not None:
                listener.terminate()
            if pool is not None:
                pool.terminate()


def from_url(url: str, *, run_id: str) -> PostgresBackend:
    """Open ``postgresql://user:password@host:port/database`` (or ``postgres://``).

    Options of arendezvous, as query parameters: ``table`` (``NAME`` or ``SCHEMA.NAME``, default
    ``arendezvous_state``), ``timeout`` (seconds per call, default 5), ``pool_size`` (default 4),
    ``heartbeat`` (seconds, default 10), ``max_state_size`` (bytes, default 1 MiB).

    libpq parameters passed on to asyncpg: ``sslmode`` (``disable``, ``allow``, ``prefer``,
    ``require``, ``verify-ca``, ``verify-full``), ``sslrootcert``, ``sslcert``, ``sslkey``,
    ``sslpassword``, ``sslcrl``, ``ssl_min_protocol_version``, ``ssl_max_protocol_version``,
    ``application_name``, ``target_session_attrs``, ``host``, ``port``, ``user``, ``password``,
    ``dbname``, ``passfile``, ``krbsrvname``. Any other parameter raises ``ValueError``.
    """
    from ._url import parse_options, parse_seconds, shown_option

    _check_dsn(url)
    parsed = urllib.parse.urlsplit(url)
    ours: list[tuple[str, str]] = []
    passthrough: list[tuple[str, str]] = []
    accepted: dict[str, Callable[[str], Any]] = {
        "table": str,
        "timeout": parse_seconds,
        "pool_size": int,
        "heartbeat": parse_seconds,
        "max_state_size": int,
    }
    for key, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        if key in _PASSTHROUGH_OPTIONS:
            if any(key == seen for seen, _ in passthrough):
                raise ValueError(f"option {key!r} given twice")
            if key == "sslmode" and value not in _SSLMODES:
                raise ValueError(
                    f"bad value for option 'sslmode': {value!r}; accepted: " + ", ".join(_SSLMODES)
                )
            passthrough.append((key, value))
        elif key in accepted:
            ours.append((key, value))
        else:
            raise ValueError(
                f"unknown option {shown_option(key)} for {parsed.scheme}:// URLs; accepted: "
                + ", ".join(sorted((*accepted, *_PASSTHROUGH_OPTIONS)))
            )
    options = parse_options(parsed._replace(query=urllib.parse.urlencode(ours)), accepted)
    dsn = urllib.parse.urlunsplit(parsed._replace(query=urllib.parse.urlencode(passthrough)))
    return PostgresBackend(dsn, run_id, **options)
