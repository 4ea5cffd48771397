"""``PostgresBackend``: the handle, on the network base (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Final, TypeVar

import anyio

from ..._backend import DEFAULT_MAX_STATE_SIZE, RunInfo, Token, same_token
from ..._compat import import_optional
from ..._errors import ErrorTable, RendezvousConnectionError, RendezvousStateError
from .._feed import ChangeFeed
from .._network import DEFAULT_TIMEOUT, NetworkBackend, check_seconds
from .._urlparse import TlsOptions
from ._dsn import check_dsn, shown_dsn, with_tls
from ._feed import ListenFeed
from ._member_sql import MemberStatements
from ._members import PostgresMemberTable
from ._pool import ConnectionPool, time_left
from ._sql import (
    DEFAULT_TABLE,
    HEADER_SIZE,
    HEADER_START,
    MAX_STATE_SIZE_LIMIT,
    PostgresToken,
    Statements,
    advisory_key,
    channel,
    decode,
    encode,
    error_table,
    quote_table,
    sendable,
)

__all__ = ("DEFAULT_HEARTBEAT", "DEFAULT_POOL_SIZE", "PostgresBackend")

_T = TypeVar("_T")

DEFAULT_POOL_SIZE: Final = 4
"""Connections a backend keeps at most for reads and writes (the listener has its own)."""

DEFAULT_HEARTBEAT: Final = 10.0
"""Seconds ``wait_for_change`` waits for a notice before checking the listening connection."""

_INSERT_ATTEMPTS = 8

_TIDY_ON_WRITE = 16
"""Expired runs a write deletes at most, when its handle's turn to clean up has come."""

_TIDY_ON_LIST = 256
"""Expired runs ``list_runs`` deletes at most, of each kind (with a state row; member rows only)."""

_log = logging.getLogger("arendezvous.backends.postgres")

_WRITES: Final = frozenset({"set_state", "member put", "member touch", "member delete"})
"""The operations whose cancellation is settled (see :meth:`PostgresBackend._run_in`)."""


class _Objects:
    """Database objects a handle makes on first use (the state table; the member table and its
    companions): how to tell they exist, how to create them, and whether this handle knows they
    do. Creation runs under a transaction-scoped advisory lock, so many nodes may start at once
    (concurrent ``CREATE ... IF NOT EXISTS`` can still collide, on a row type's unique name)."""

    __slots__ = ("create", "exists", "exists_args", "lock_key", "missing", "ready")

    def __init__(
        self,
        *,
        exists: str,
        exists_args: tuple[str, ...],
        create: str,
        lock_key: int,
        missing: tuple[type[BaseException], ...],
    ) -> None:
        self.exists = exists  # a query answering one boolean
        self.exists_args = exists_args
        self.create = create
        self.lock_key = lock_key
        self.missing = missing  # what a statement raises when an object was dropped since
        self.ready = False


async def _settle(connection: Any, deadline: float) -> bool:
    """Wait, shielded, until the server has finished what *connection* was doing; return
    whether the connection is clean for reuse (PostgreSQL runs a connection's statements in
    order, and asyncpg first acknowledges the cancelled one)."""
    with anyio.CancelScope(shield=True):
        try:
            remaining = time_left(asyncio.get_running_loop(), deadline)
            await connection.fetchval("SELECT 1", timeout=remaining)
        except Exception:
            return False
    return not connection.is_in_transaction()


class PostgresBackend(NetworkBackend):
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
        the listening connection is alive (at most *timeout*: a silently dead connection must not
        outlast the outage policy).
    :param max_state_size: the largest state accepted, in bytes.
    :param tls: use TLS; with ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file`` and
        ``tls_verify`` (``full``, ``ca``, ``none``) the TLS vocabulary of every network store,
        added to *dsn* as libpq's ``sslmode``, ``sslrootcert``, ``sslcert`` and ``sslkey``.
    :param connect_kwargs: more keyword arguments for ``asyncpg.connect`` (``ssl=`` an
        :class:`ssl.SSLContext`, ``password=``, ``server_settings=``, ...).
    :param expire_after: seconds after which a run nobody writes to disappears (``None``, the
        default: never). Every row a write of this handle makes or changes -- the run's state
        row, a member record -- is stamped to expire that long after it, by the server's clock
        (``expires_at``); the run lives while one of its rows has not expired, so heartbeats
        keep a run whose state is quiet alive. Every read leaves out an expired run; its rows
        are deleted by a bounded clean-up that writes of expiring handles run now and then (at
        most once per *expire_after* per handle, at most 16 runs) and that ``list_runs`` runs,
        or when the run is created again -- never by a background task. Give every handle of a
        run the same value: a row written by a handle without one never expires, and keeps its
        run alive.

    Runs on asyncio and trio (there on arendezvous's asyncio loop thread). Safe to share between
    tasks; all its waiters share one listening connection. A cancelled ``set_state`` has either
    committed or not: it is one statement, hence one transaction. The connection it was
    cancelled on is closed, never reused, so the pool holds only connections in a known state.
    """

    NAME = "postgres"
    MAX_STATE_SIZE_LIMIT = MAX_STATE_SIZE_LIMIT
    MAX_STATE_SIZE_REASON = "PostgreSQL's bytea limit, with room to spare"

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
        tls: bool | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_verify: str | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        expire_after: float | None = None,
    ) -> None:
        self._asyncpg = import_optional("asyncpg", "postgres")
        super().__init__(
            run_id, timeout=timeout, max_state_size=max_state_size, expire_after=expire_after
        )
        tls_given = (tls, tls_ca_file, tls_cert_file, tls_key_file, tls_verify)
        tls_options = TlsOptions.build(
            tls=tls,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_verify=tls_verify,
        )
        self._dsn = with_tls(
            check_dsn(dsn), tls_options, given=any(v is not None for v in tls_given)
        )
        self._table_sql, self._table = quote_table(table)
        self._heartbeat = check_seconds("heartbeat", heartbeat)
        if type(pool_size) is not int or pool_size < 1:
            raise ValueError("pool_size must be an int of at least 1")
        self._pool_size = pool_size
        self._connect_kwargs = dict(connect_kwargs or {})
        if {"dsn", "timeout"} & self._connect_kwargs.keys():
            raise ValueError("connect_kwargs must not set dsn or timeout: they are arguments here")
        self._channel = channel(self._table, self._run_id)
        self._where = f"{shown_dsn(self._dsn)} (table {self._table})"
        self._member_sql = MemberStatements(self._table)
        names = self._member_sql.names
        self._sql = Statements(self._table_sql, names.members)
        self._errors = error_table(self._asyncpg)
        # One set of objects: the state's statements read the member table too (a run lives
        # while any of its rows does), so both tables and their functions are made together.
        self._objects = _Objects(
            exists=(
                "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL"
                " AND to_regprocedure($3) IS NOT NULL AND to_regprocedure($4) IS NOT NULL"
            ),
            exists_args=(self._table_sql, names.members, names.put_signature,
                         names.purge_signature),
            create=f"{self._sql.create};\n{self._member_sql.create}",
            lock_key=advisory_key(self._table_sql),
            missing=(self._asyncpg.UndefinedTableError, self._asyncpg.UndefinedFunctionError),
        )  # fmt: skip
        self._members: PostgresMemberTable | None = None
        # When this handle last ran the clean-up of expired runs (its monotonic clock).
        self._tidied: float | None = None
        # The latest token this handle saw and the stored bytes it came with, so that a write
        # with it can check in SQL that the row still holds them (see Statements.update).
        self._known: tuple[PostgresToken, bytes] | None = None

    @property
    def table(self) -> str:
        """The table holding the runs' rows, as given (``NAME`` or ``SCHEMA.NAME``)."""
        return self._table

    def __repr__(self) -> str:
        return (
            f"PostgresBackend({shown_dsn(self._dsn)!r}, run_id={self._run_id!r}, "
            f"table={self._table!r})"
        )

    # -- the client: a pool, and a listening connection for the feed ---------------------------

    def _open_client(self) -> ConnectionPool:
        loop = asyncio.get_running_loop()
        return ConnectionPool(loop, self._connect, self._pool_size)

    async def _connect(self, deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        return await self._asyncpg.connect(
            self._dsn, timeout=time_left(loop, deadline), **self._connect_kwargs
        )

    async def _close_client(self, client: ConnectionPool) -> None:
        await client.aclose()

    def _drop_client(self, client: ConnectionPool) -> None:
        client.terminate()

    def _make_feed(self, client: ConnectionPool) -> ChangeFeed:
        return ListenFeed(
            lambda: self._connect(client.loop.time() + self._timeout),
            errors=self._errors,
            what=self._what("wait_for_change"),
            timeout=self._timeout,
        )

    def _topic(self) -> Hashable:
        return self._channel

    def _ping_interval(self) -> float:
        return min(self._heartbeat, self._timeout)

    def _run(
        self, pool: ConnectionPool, what: str, operation: Callable[..., Awaitable[_T]], *args: Any
    ) -> Awaitable[_T]:
        """:meth:`_run_in` on the tables (its coroutine, not awaited: a frame less)."""
        return self._run_in(pool, self._objects, what, operation, *args)

    async def _run_in(
        self,
        pool: ConnectionPool,
        objects: _Objects,
        what: str,
        operation: Callable[..., Awaitable[_T]],
        *args: Any,
    ) -> _T:
        """Run ``operation(connection, deadline, *args)`` on a pooled connection, errors mapped,
        once *objects* exist (made on first use, and again if dropped behind our back).

        Every step (waiting for a slot, connecting, each statement) ends by one deadline,
        :attr:`timeout` seconds from now, through asyncpg's own timeouts: no cancel scope on the
        hot path. A write (*what* in :data:`_WRITES`) cancelled mid-statement is settled before
        the cancellation goes on: a ``SELECT 1`` on the same connection (shielded, within the
        deadline) returns only once the server has finished the statement, committed or rolled
        back, so a cancelled write never applies after it returned; the connection is then
        clean, and reused.

        Before a write of a handle with an ``expire_after`` whose turn has come, the bounded
        clean-up of expired runs runs on the same connection (:meth:`_tidy`).
        """
        deadline = pool.loop.time() + self._timeout
        with self._mapped(what):
            connection = await pool.acquire(deadline)
            reusable = False
            try:
                if not objects.ready:
                    await self._create(connection, deadline, objects)
                if what in _WRITES and self._tidy_due():
                    await self._tidy(connection, deadline, _TIDY_ON_WRITE, with_members=False)
                try:
                    result = await operation(connection, deadline, *args)
                except objects.missing:
                    # Dropped behind our back; the statement failed before writing anything.
                    objects.ready = False
                    await self._create(connection, deadline, objects)
                    result = await operation(connection, deadline, *args)
                reusable = True
                return result
            except (RendezvousStateError, self._asyncpg.PostgresError):
                reusable = True  # the server answered: the connection is in a known state
                raise
            except BaseException as exc:
                if what in _WRITES and not isinstance(exc, Exception):  # cancelled
                    reusable = await _settle(connection, deadline)
                raise
            finally:
                pool.release(connection, reusable=reusable)

    async def _create(self, connection: Any, deadline: float, objects: _Objects) -> None:
        # Runs once per handle: a cancel scope bounds it, the transaction's rollback included.
        with anyio.fail_after(time_left(asyncio.get_running_loop(), deadline)):
            if not await connection.fetchval(objects.exists, *objects.exists_args):
                async with connection.transaction():
                    await connection.execute("SELECT pg_advisory_xact_lock($1)", objects.lock_key)
                    # Looked at again: another node may have made them while this one waited (a
                    # CREATE OR REPLACE of its function would then need to own it).
                    if not await connection.fetchval(objects.exists, *objects.exists_args):
                        await connection.execute(objects.create)
        objects.ready = True

    # -- the member table ----------------------------------------------------------------------

    def member_table(self) -> PostgresMemberTable:
        """The run's member records: one row per node in ``<table>_members``, made on first use
        (see :class:`PostgresMemberTable`). One table per handle, on the handle's connections;
        it closes with the handle."""
        if self._members is None:
            self._members = PostgresMemberTable(self, self._member_sql, self._objects)
        return self._members

    # -- reads and writes ----------------------------------------------------------------------

    def _error_table(self) -> ErrorTable:
        return self._errors

    def _current(self, row: Any) -> tuple[bytes, PostgresToken]:
        stored = row["state"]
        try:
            state = decode(stored)
        except RendezvousStateError as exc:
            raise RendezvousStateError(f"{self._what('read')}: {exc}") from None
        token = PostgresToken(bytes(row["incarnation"]), int(row["version"]))
        self._known = (token, stored)
        return state, token

    def _known_bytes(self, token: PostgresToken) -> bytes | None:
        known = self._known
        if known is not None and (known[0] is token or same_token(known[0], token)):
            return known[1]
        return None

    def _read(self, client: ConnectionPool) -> Awaitable[tuple[bytes, Token] | None]:
        # Returns _run's coroutine rather than awaiting it: one frame less on the hot path.
        return self._run(client, "get_state", self._fetch)

    async def _fetch(self, connection: Any, deadline: float) -> tuple[bytes, Token] | None:
        row = await connection.fetchrow(
            self._sql.get, self._run_id, timeout=time_left(asyncio.get_running_loop(), deadline)
        )
        return None if row is None else self._current(row)

    def _swap(
        self, client: ConnectionPool, state: bytes, token: Token | None
    ) -> Awaitable[tuple[bytes, Token, bool]]:
        if token is None:
            return self._run(client, "set_state", self._insert, state, encode(state))
        if sendable(token):
            return self._run(client, "set_state", self._update, state, encode(state), token)
        return self._run(client, "set_state", self._read_only)

    async def _read_only(self, connection: Any, deadline: float) -> tuple[bytes, Token, bool]:
        # Not one of our tokens: it cannot be current, so the write is just a read.
        current = await self._fetch(connection, deadline)
        return (b"", None, False) if current is None else (*current, False)

    async def _insert(
        self, connection: Any, deadline: float, state: bytes, stored: bytes
    ) -> tuple[bytes, Token, bool]:
        loop = asyncio.get_running_loop()
        for _ in range(_INSERT_ATTEMPTS):
            incarnation = os.urandom(16)
            row = await connection.fetchrow(
                self._sql.insert, self._run_id, incarnation, stored, self._channel,
                self._expire_after, timeout=time_left(loop, deadline),
            )  # fmt: skip
            if row is None:
                # The row that beat the insert committed after this statement's snapshot (or
                # was deleted since): a new statement, with a new snapshot, sees it.
                continue
            if row["written"]:
                token = PostgresToken(incarnation, row["version"])
                self._known = (token, stored)
                return state, token, True
            if not row["alive"]:
                # The run expired and its rows are still there: they go first (if it is still
                # expired once its lock is held), then the run is created afresh.
                await connection.fetchval(
                    self._member_sql.purge, self._run_id, self._channel, "expired",
                    timeout=time_left(loop, deadline),
                )  # fmt: skip
                continue
            if row["version"] is None:
                continue  # a rival's row, committed after this statement's snapshot
            return (*self._current(row), False)
        raise RendezvousConnectionError(
            f"{self._what('set_state')}: the row kept appearing and disappearing"
        )

    async def _update(
        self, connection: Any, deadline: float, state: bytes, stored: bytes, token: PostgresToken
    ) -> tuple[bytes, Token, bool]:
        loop = asyncio.get_running_loop()
        known = self._known_bytes(token)
        for _ in range(2):
            row = await connection.fetchrow(
                self._sql.update, self._run_id, token.version, token.incarnation, stored,
                self._channel, known, self._expire_after,
                timeout=time_left(loop, deadline),
            )  # fmt: skip
            if row is None:
                return b"", None, False
            if row["written"]:
                new_token = PostgresToken(token.incarnation, row["version"])
                self._known = (new_token, stored)
                return state, new_token, True
            # Lost, or the token is current but the row's bytes are not the ones this handle
            # knew for it (it never read them, or they were changed in place): decoding the row
            # raises if it is corrupt; if not, the write is tried once more with those bytes.
            current = self._current(row)
            if not same_token(current[1], token):
                return (*current, False)
            known = row["state"]
        return (*current, False)

    # -- the run lifecycle ---------------------------------------------------------------------

    async def delete_run(self) -> bool:
        """Delete the run's state row and member rows in one transaction (one call of the table's
        purge function), under the run's advisory lock taken exclusively: a member put, which
        holds it shared, comes wholly before or after the deletion, the size it counted
        included. A ``NOTIFY`` makes waiters look again and find the state gone.

        The run created again gets a new incarnation, so no token or member version of the
        deleted run ever matches. Returns whether any row was deleted.

        :raises BackendClosedError: the handle was closed.
        :raises RendezvousConnectionError: the server cannot be reached; the deletion may or may
            not have happened.
        """
        deleted: bool = await self._on_client(self._run, "delete_run", self._delete_run)
        return deleted

    async def _delete_run(self, connection: Any, deadline: float) -> bool:
        deleted = await connection.fetchval(
            self._member_sql.purge, self._run_id, self._channel, "delete",
            timeout=time_left(asyncio.get_running_loop(), deadline),
        )  # fmt: skip
        return bool(deleted)

    async def list_runs(self) -> list[RunInfo]:
        """The live runs of this handle's table: one statement joining the state table and the
        member table (``O(runs + member records)`` on the server), after a bounded clean-up of
        expired runs (at most 256 with a state row, through the index of expiring rows, and 256
        of member rows only).

        ``size`` is ``None`` for a run without a state row of ours (member records only, or
        bytes that are not an arendezvous state); ``age`` is the server's
        ``clock_timestamp()`` minus the latest ``written_at`` of the run's rows; ``members``
        counts the records arendezvous could have written. Rows that are not ours are skipped.

        :raises BackendClosedError: the handle was closed.
        :raises RendezvousConnectionError: the server cannot be reached.
        """
        runs: list[RunInfo] = await self._on_client(self._run, "list_runs", self._list_runs)
        return runs

    async def _list_runs(self, connection: Any, deadline: float) -> list[RunInfo]:
        await self._tidy(connection, deadline, _TIDY_ON_LIST, with_members=True)
        rows = await connection.fetch(
            self._member_sql.list_runs, HEADER_START, HEADER_SIZE,
            timeout=time_left(asyncio.get_running_loop(), deadline),
        )  # fmt: skip
        return [
            RunInfo(row["run_id"], row["size"],
                    None if row["age"] is None else max(0.0, row["age"]), row["records"])
            for row in rows
        ]  # fmt: skip

    def _tidy_due(self) -> bool:
        """Whether this handle's turn to clean up after a write has come: it has an
        ``expire_after`` and has not cleaned up for that long (its monotonic clock)."""
        if self._expire_after is None:
            return False
        now = time.monotonic()
        if self._tidied is not None and now - self._tidied < self._expire_after:
            return False
        self._tidied = now
        return True

    async def _tidy(
        self, connection: Any, deadline: float, limit: int, *, with_members: bool
    ) -> None:
        """Delete up to *limit* expired runs (each in the purge function, which passes over a
        run whose lock is held and one written meanwhile). Reads leave expired runs out
        whether or not they are deleted yet, so a clean-up the server refuses (a role without
        ``DELETE``) is logged and the call goes on."""
        try:
            purged = await connection.fetchval(
                self._member_sql.tidy, limit, with_members,
                timeout=time_left(asyncio.get_running_loop(), deadline),
            )  # fmt: skip
        except self._asyncpg.PostgresError as exc:
            _log.debug("%s: %s", self._what("clean-up of expired runs"), exc)
            return
        if purged:
            _log.debug("%s: deleted %d rows", self._what("clean-up of expired runs"), purged)
