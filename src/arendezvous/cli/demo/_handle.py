"""A demo node's store handle: it counts calls, adds latency, narrates, and can go silent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from ..._backend import AsyncRendezvousBackend, Token
from ..._members import Member, MemberPut, MemberTable

if TYPE_CHECKING:
    from ._narrator import Demo

__all__ = ("DemoBackend",)


class DemoBackend(AsyncRendezvousBackend):
    """A node's handle: counts calls, adds latency before writes, and can go silent. Its member
    table (when the store has one) does the same and tells the demo who joined or evicted whom."""

    def __init__(self, demo: Demo, node: str, backend: AsyncRendezvousBackend) -> None:
        self._demo = demo
        self._node = node
        self._backend = backend
        self.silent = False
        table = backend.member_table()
        self._table = None if table is None else _DemoTable(self, table)

    @property
    def name(self) -> str:
        return self._backend.name

    async def call(self, *, write: bool = False) -> None:
        """Count one store call of this node (after a simulated latency, for writes)."""
        await self._gone()
        if write:
            await anyio.sleep(self._demo.rng.uniform(0, self._demo.latency))
            await self._gone()
        self._demo.count(self._node)

    async def _gone(self) -> None:
        if self.silent:
            await anyio.sleep_forever()  # a host that vanished: no answer, no error

    async def get_state(self) -> tuple[bytes, Token] | None:
        await self.call()
        return await self._backend.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        await self.call(write=True)
        return await self._backend.set_state(state, token)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        await self.call()
        return await self._backend.wait_for_change(token, timeout=timeout)

    async def aclose(self) -> None:
        await self._backend.aclose()

    def member_table(self) -> MemberTable | None:
        return self._table


class _DemoTable(MemberTable):
    """The member table of a demo node's handle."""

    def __init__(self, handle: DemoBackend, table: MemberTable) -> None:
        self._handle = handle
        self._table = table
        self.has_clock = table.has_clock  # type: ignore[misc]

    async def get(self, node: str) -> Member | None:
        await self._handle.call()
        return await self._table.get(node)

    async def members(self, group: str) -> list[Member]:
        await self._handle.call()
        return await self._table.members(group)

    async def count(self, group: str) -> int:
        await self._handle.call()
        return await self._table.count(group)

    async def put(self, node: str, group: str, value: bytes, version: Token | None) -> MemberPut:
        await self._handle.call(write=True)
        result = await self._table.put(node, group, value, version)
        if result.written:
            self._handle._demo.joined(node, group, result.group_size)
        return result

    async def touch(self, node: str, version: Token) -> Member | None:
        await self._handle.call(write=True)
        return await self._table.touch(node, version)

    async def delete(self, node: str, version: Token) -> bool:
        await self._handle.call(write=True)
        deleted = await self._table.delete(node, version)
        if deleted and node != self._handle._node:
            self._handle._demo.evicted(self._handle._node, node)
        return deleted

    async def wait_for_change(
        self, node: str, version: Token | None, *, timeout: float | None = None
    ) -> bool:
        await self._handle.call()
        return await self._table.wait_for_change(node, version, timeout=timeout)
