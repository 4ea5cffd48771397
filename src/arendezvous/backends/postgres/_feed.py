"""The PostgreSQL backend's change feed: one ``LISTEN`` connection per handle, for all waiters."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from contextlib import suppress
from typing import Any

import anyio

from ..._errors import ErrorTable, RendezvousConnectionError, map_exceptions
from .._feed import ChangeFeed

__all__ = ("ListenFeed",)


class ListenFeed(ChangeFeed):
    """A dedicated connection ``LISTEN``ing on the channels of some runs.

    asyncpg hands each ``NOTIFY`` to a plain callback, which queues the channel's name as a hint;
    a liveness check is a ``SELECT 1`` on the same connection.

    :param connect: opens a connection, given a deadline on the loop's clock.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        errors: ErrorTable,
        what: str,
        timeout: float,
    ) -> None:
        self._connect = connect
        self._errors = errors
        self._what = what
        self._timeout = timeout
        self._connection: Any = None
        self._hints: deque[str] = deque()
        self._arrived = anyio.Event()
        self._lost = False

    async def open(self, topics: frozenset[Hashable]) -> None:
        with map_exceptions(self._errors, what=self._what, timeout=self._timeout):
            self._connection = await self._connect()
            self._connection.add_termination_listener(self._on_lost)
            for topic in topics:
                await self._connection.add_listener(topic, self._on_notice)

    def _on_notice(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self._hints.append(channel)
        self._arrived.set()

    def _on_lost(self, connection: object) -> None:
        self._lost = True
        self._arrived.set()

    async def next_hint(self, timeout: float) -> object:
        if not self._hints and not self._lost:
            with anyio.move_on_after(timeout):
                await self._arrived.wait()
            self._arrived = anyio.Event()
        if self._lost:
            raise RendezvousConnectionError(f"{self._what}: the listening connection was lost")
        return self._hints.popleft() if self._hints else None

    async def ping(self) -> bool:
        with map_exceptions(self._errors, what=self._what, timeout=self._timeout):
            await self._connection.fetchval("SELECT 1", timeout=self._timeout)
        return True

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            with anyio.move_on_after(self._timeout) as scope:
                await connection.close()
        except Exception:
            scope.cancel()
        if scope.cancel_called:
            self._abandon(connection)

    @staticmethod
    def _abandon(connection: Any) -> None:
        """Drop *connection* without a goodbye (its loop may be gone): never raises."""
        with suppress(Exception):
            connection.terminate()
