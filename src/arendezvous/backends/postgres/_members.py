"""The PostgreSQL backend's member table: one row per node of a run, beside the run's state row.

The rows live in ``<table>_members`` (:data:`~._member_sql.CREATE_MEMBERS_SQL`), made on first
use under an advisory lock like the state table. Every operation is one round trip -- one
statement, or one call of the put function the table's creation installs -- hence one
transaction: a cancelled write committed entirely or not at all, and the handle waits until the
server has finished it before the cancellation goes on (as for ``set_state``).

* ``get``, ``members`` and ``count`` are one indexed ``SELECT`` each (by primary key; by
  the index on ``(run_id, group_name, seq)``, which lists a group in ``seq`` order unsorted).
* ``put`` calls ``<table>_members_put``: it reads the row (a loser returns it at once), takes a
  transaction-scoped advisory lock on a hash of (table, run id, group), writes, and counts the
  group. Each statement of a ``VOLATILE`` PL/pgSQL function reads a fresh snapshot, so the count,
  taken after the lock was granted, sees every earlier put into the group (they committed before
  releasing it) and its own write: racing joiners of one group each see a different size. A
  single statement could not: its one snapshot is taken before it waits for the lock.
* ``touch`` and ``delete`` are one conditional ``UPDATE`` / ``DELETE`` each (the row lock makes a
  racing writer re-check against the committed row), returning the current row when they do not
  apply, so that a corrupt row is reported rather than taken for a lost one.

A version is :class:`PostgresMemberVersion` ``(incarnation, version)``: the version is a value of
the table's sequence (so never repeated within the table), the incarnation 16 random bytes drawn
when the row is created (so a row deleted and created again, or a table dropped and created again,
whose sequence starts over, never repeats one). Ages are the server's: ``clock_timestamp()`` minus
the row's last write, never a client's clock. Member writes send no ``NOTIFY``: a heartbeat wakes
nobody. A row arendezvous could not have written (found by the one SQL rule of
:func:`~._member_sql._valid`) raises :class:`~arendezvous.RendezvousStateError` from every
operation that meets it, and no write overwrites it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..._backend import Token
from ..._errors import RendezvousStateError
from ..._members import (
    Member,
    MemberPut,
    MemberTable,
    check_group,
    check_member_value,
    check_node,
)
from ._member_sql import INCARNATION_BYTES, MemberStatements, group_lock_key
from ._pool import time_left
from ._sql import sendable_fields

if TYPE_CHECKING:
    from ._backend import PostgresBackend, _Objects

__all__ = ("PostgresMemberTable", "PostgresMemberVersion")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PostgresMemberVersion:
    """A member record's version in the PostgreSQL member table: the row's incarnation and the
    sequence value of its last put or touch.

    Equal only to another :class:`PostgresMemberVersion` with the same fields; the table checks a
    caller's version by exact type (its fields' too) before anything is compared or sent, so a
    foreign object's ``__eq__`` never runs.
    """

    incarnation: bytes
    version: int

    def __repr__(self) -> str:
        return f"<PostgresMemberVersion {self.incarnation[:4].hex()}...#{self.version}>"


def _sendable(version: object) -> PostgresMemberVersion | None:
    """*version* if it is one of ours whose fields may be sent; else ``None``: it cannot be
    current (a float or an int beyond bigint must never reach the SQL)."""
    if type(version) is PostgresMemberVersion and sendable_fields(
        version.incarnation, version.version
    ):
        return version
    return None


class PostgresMemberTable(MemberTable):
    """The PostgreSQL backend's :class:`~arendezvous.MemberTable` (see the module docstring);
    from :meth:`PostgresBackend.member_table()
    <arendezvous.backends.postgres.PostgresBackend.member_table>`.

    It runs on its handle's connection pool, on asyncio and trio (there on arendezvous's asyncio
    loop thread), and closes with the handle. Errors are the handle's: ``RendezvousConnectionError``
    for an unreachable or failing server or a call over the handle's ``timeout`` (a write may or
    may not have applied), ``RendezvousStateError`` for a corrupt row or a table of that name with
    another layout, ``TypeError``/``ValueError`` for bad arguments, before anything is sent.
    """

    has_clock = True

    def __init__(
        self, backend: PostgresBackend, statements: MemberStatements, objects: _Objects
    ) -> None:
        self._backend = backend
        self._run_id = backend.run_id
        self._sql = statements
        self._objects = objects

    def __repr__(self) -> str:
        return f"PostgresMemberTable(run_id={self._run_id!r}, table={self._sql.names.plain!r})"

    async def _call(self, what: str, operation: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """``operation(connection, deadline, *args)`` on a connection of the handle's pool."""
        backend = self._backend
        result: _T = await backend._on_client(
            backend._run_in, self._objects, what, operation, *args
        )
        return result

    def _corrupt(self, what: str, node: str) -> RendezvousStateError:
        return RendezvousStateError(
            f"{self._backend._what(what)}: the record of node {node!r} in "
            f"{self._sql.names.plain} is not one arendezvous writes (that takes a node id and "
            f"group of the allowed lengths, a value within the limit, an incarnation of "
            f"{INCARNATION_BYTES} bytes and a finite time); it is left as it is"
        )

    def _member(self, what: str, node: str, row: Any) -> Member:
        """The record in *row* (a statement's ``_record`` columns)."""
        if not row["valid"]:
            raise self._corrupt(what, node)
        version = PostgresMemberVersion(row["incarnation"], row["version"])
        # The server's clock may have stepped back since the write: an age is never negative.
        return Member(node, row["group_name"], row["value"], version, row["seq"],
                      max(0.0, row["age"]))

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, node: str) -> Member | None:
        check_node(node)
        return await self._call("member get", self._get, node)

    async def _get(self, connection: Any, deadline: float, node: str) -> Member | None:
        row = await connection.fetchrow(
            self._sql.get, self._run_id, node,
            timeout=time_left(asyncio.get_running_loop(), deadline),
        )  # fmt: skip
        return None if row is None else self._member("member get", node, row)

    async def members(self, group: str) -> list[Member]:
        check_group(group)
        return await self._call("members", self._members, group)

    async def _members(self, connection: Any, deadline: float, group: str) -> list[Member]:
        rows = await connection.fetch(
            self._sql.members, self._run_id, group,
            timeout=time_left(asyncio.get_running_loop(), deadline),
        )  # fmt: skip
        return [self._member("members", row["node"], row) for row in rows]

    async def count(self, group: str) -> int:
        check_group(group)
        return await self._call("member count", self._count, group)

    async def _count(self, connection: Any, deadline: float, group: str) -> int:
        counted: int = await connection.fetchval(
            self._sql.count, self._run_id, group,
            timeout=time_left(asyncio.get_running_loop(), deadline),
        )  # fmt: skip
        return counted

    # -- writes ----------------------------------------------------------------------------------

    async def put(
        self, node: str, group: str, value: bytes, version: Token | None
    ) -> MemberPut:
        check_node(node)
        check_group(group)
        value = check_member_value(value)
        if version is None:
            return await self._call("member put", self._put, node, group, value, None)
        ours = _sendable(version)
        if ours is None:
            # Not one of our versions: it cannot be current, so the put is a read.
            current = await self._call("member put", self._get, node)
            return MemberPut(current, False, 0)
        return await self._call("member put", self._put, node, group, value, ours)

    async def _put(
        self,
        connection: Any,
        deadline: float,
        node: str,
        group: str,
        value: bytes,
        version: PostgresMemberVersion | None,
    ) -> MemberPut:
        if version is None:
            incarnation, number, new_incarnation = None, None, os.urandom(INCARNATION_BYTES)
        else:
            incarnation, number, new_incarnation = version.incarnation, version.version, None
        row = await connection.fetchrow(
            self._sql.put, self._run_id, node, group, value, incarnation, number,
            new_incarnation, group_lock_key(self._sql.names.members, self._run_id, group),
            self._backend.expire_after, timeout=time_left(asyncio.get_running_loop(), deadline),
        )  # fmt: skip
        if row is None:
            return MemberPut(None, False, 0)
        member = self._member("member put", node, row)
        written = bool(row["written"])
        return MemberPut(member, written, int(row["group_size"]) if written else 0)

    async def touch(self, node: str, version: Token) -> Member | None:
        check_node(node)
        ours = _sendable(version)
        if ours is None:
            self._backend._check_open()
            return None
        return await self._call("member touch", self._touch, node, ours)

    async def _touch(
        self, connection: Any, deadline: float, node: str, version: PostgresMemberVersion
    ) -> Member | None:
        row = await connection.fetchrow(
            self._sql.touch, self._run_id, node, version.version, version.incarnation,
            self._backend.expire_after, timeout=time_left(asyncio.get_running_loop(), deadline),
        )  # fmt: skip
        if row is None:
            return None
        member = self._member("member touch", node, row)  # raises for a corrupt row
        return member if row["written"] else None

    async def delete(self, node: str, version: Token) -> bool:
        check_node(node)
        ours = _sendable(version)
        if ours is None:
            self._backend._check_open()
            return False
        return await self._call("member delete", self._delete, node, ours)

    async def _delete(
        self, connection: Any, deadline: float, node: str, version: PostgresMemberVersion
    ) -> bool:
        row = await connection.fetchrow(
            self._sql.delete, self._run_id, node, version.version, version.incarnation,
            timeout=time_left(asyncio.get_running_loop(), deadline),
        )  # fmt: skip
        if row is None:
            return False
        if not row["valid"]:
            raise self._corrupt("member delete", node)
        return bool(row["written"])
