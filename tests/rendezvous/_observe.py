"""Watching a rendezvous from the outside, for tests: every write through a watched handle wakes
the test, which then reads the round record and the member groups.

:class:`WatchedBackend` wraps any backend (and its member table) and signals a shared
:class:`Changes` after every write; :class:`Observer` reads a :class:`Snapshot` and waits, on
those signals and bounded by a deadline, until a predicate holds. No polling, no sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio

from arendezvous import AsyncRendezvousBackend, Token
from arendezvous._emulated import emulate_member_table
from arendezvous._members import Member, MemberPut, MemberTable
from arendezvous.rendezvous._record import RoundRecord, decode_record

LIMIT = 20.0  # generous bound on anything that should happen promptly


class Changes:
    """Something was written: wakes everyone waiting at the time."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    def next_change(self) -> anyio.Event:
        """The event the next write sets (take it *before* reading what you check)."""
        return self._event


class WatchedTable(MemberTable):
    """A member table that signals *changes* after each write."""

    def __init__(self, table: MemberTable, changes: Changes) -> None:
        self.inner = table
        self.changes = changes
        self.has_clock = table.has_clock  # type: ignore[misc]
        #: Calls made through this table: all of them, and reads and touches.
        self.calls = 0
        self.reads = 0
        self.touches = 0

    async def get(self, node: str) -> Member | None:
        self.calls += 1
        self.reads += 1
        return await self.inner.get(node)

    async def members(self, group: str) -> list[Member]:
        self.calls += 1
        return await self.inner.members(group)

    async def count(self, group: str) -> int:
        self.calls += 1
        return await self.inner.count(group)

    async def put(self, node: str, group: str, value: bytes, version: Token | None) -> MemberPut:
        self.calls += 1
        result = await self.inner.put(node, group, value, version)
        self.changes.changed()
        return result

    async def touch(self, node: str, version: Token) -> Member | None:
        self.calls += 1
        self.touches += 1
        result = await self.inner.touch(node, version)
        self.changes.changed()
        return result

    async def delete(self, node: str, version: Token) -> bool:
        self.calls += 1
        result = await self.inner.delete(node, version)
        self.changes.changed()
        return result

    async def wait_for_change(
        self, node: str, version: Token | None, *, timeout: float | None = None
    ) -> bool:
        return await self.inner.wait_for_change(node, version, timeout=timeout)


class WatchedBackend(AsyncRendezvousBackend):
    """Delegates to *backend*, signalling *changes* after every write; with *one_blob*, hides the
    member table (as a backend that meets only the one-blob contract)."""

    def __init__(
        self, backend: AsyncRendezvousBackend, changes: Changes, *, one_blob: bool = False
    ) -> None:
        self.inner = backend
        self.changes = changes
        #: Calls of the one-blob contract made through this handle, and its writes.
        self.register_calls = 0
        self.writes = 0
        #: ``wait_for_change`` calls in progress (signalled on entry, so tests can wait for it).
        self.waiting = 0
        table = None if one_blob else backend.member_table()
        self._table = None if table is None else WatchedTable(table, changes)

    @property
    def name(self) -> str:
        return self.inner.name

    async def get_state(self) -> tuple[bytes, Token] | None:
        self.register_calls += 1
        return await self.inner.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self.register_calls += 1
        self.writes += 1
        result = await self.inner.set_state(state, token)
        self.changes.changed()
        return result

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self.register_calls += 1
        self.waiting += 1
        self.changes.changed()
        try:
            return await self.inner.wait_for_change(token, timeout=timeout)
        finally:
            self.waiting -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()

    def member_table(self) -> WatchedTable | None:
        return self._table


@dataclass(frozen=True)
class Snapshot:
    """The round record and who is in its group and the next one (node ids, arrival order)."""

    record: RoundRecord | None
    joined: tuple[str, ...]
    waiting: tuple[str, ...]
    members: dict[str, Member]

    def listed(self, node: str) -> bool:
        return node in self.members


class Observer:
    """Reads a run through its own handle, the way the rendezvous does."""

    def __init__(self, backend: AsyncRendezvousBackend, changes: Changes) -> None:
        table = backend.member_table()
        if table is None:
            self.register, self.table = emulate_member_table(backend)
        else:
            self.register, self.table = backend, table
        self.changes = changes

    async def snapshot(self) -> Snapshot:
        current = await self.register.get_state()
        record = None if current is None else decode_record(current[0])
        if record is None:
            return Snapshot(None, (), (), {})
        joined = await self.table.members(record.group)
        waiting = await self.table.members(record.next_group)
        return Snapshot(
            record,
            tuple(member.node for member in joined),
            tuple(member.node for member in waiting),
            {member.node: member for member in (*joined, *waiting)},
        )

    async def until(self, predicate: Callable[[Snapshot], bool]) -> Snapshot:
        """Wait for the next writes until *predicate* holds; fail after :data:`LIMIT` seconds."""
        with anyio.fail_after(LIMIT):
            while True:
                # Taken before reading: a write during the read still wakes us.
                change = self.changes.next_change()
                snapshot = await self.snapshot()
                if predicate(snapshot):
                    return snapshot
                await change.wait()
