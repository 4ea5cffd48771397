"""The PostgreSQL backend's connection pool: a semaphore and a list."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ("ConnectionPool", "time_left")


def time_left(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    """Seconds left until *deadline* on *loop*'s clock; ``TimeoutError`` if none are."""
    remaining = deadline - loop.time()
    if remaining <= 0:
        raise TimeoutError
    return remaining


def _discard(task: asyncio.Future[Any]) -> None:
    """Close the connection a connect task made for a caller that is gone (or retrieve its
    error, so asyncio does not report it as never retrieved)."""
    if task.cancelled():
        return
    if task.exception() is None:
        task.result().terminate()


class ConnectionPool:
    """At most *size* asyncpg connections for one backend, reused last-in first-out.

    ``asyncpg.Pool`` costs more per call than the query itself on a fast link: every release runs
    in a shielded task of its own and, by default, resets the session with a second round trip
    (``benchmarks/bench_postgres.py`` shows the difference). This pool is a semaphore and a list.
    A connection goes back to the list only if the call on it ended with the server's answer
    (a result or an error) outside a transaction; one interrupted by cancellation, a timeout or a
    network error is terminated, so no connection in an unknown state is ever handed out again.

    :param connect: opens a connection, given the deadline on *loop*'s clock.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connect: Callable[[float], Awaitable[Any]],
        size: int,
    ) -> None:
        self.loop = loop
        self._connect = connect
        self._idle: list[Any] = []
        self._slots = anyio.Semaphore(size)
        self._closed = False

    @property
    def idle(self) -> list[Any]:
        """The connections waiting for reuse."""
        return self._idle

    async def acquire(self, deadline: float) -> Any:
        """A connection, reused or new; waiting for a slot and connecting end by *deadline*."""
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.fail_after(time_left(self.loop, deadline)):
                await self._slots.acquire()
        try:
            while self._idle:
                connection = self._idle.pop()
                if not connection.is_closed():
                    return connection
            return await self._connect_settled(deadline)
        except BaseException:
            self._slots.release()
            raise

    async def _connect_settled(self, deadline: float) -> Any:
        """Connect in a task of its own that a cancelled caller leaves to finish (bounded by
        *deadline*) and whose connection is then closed: asyncpg cancelled mid-handshake leaves
        futures with unretrieved errors behind, which the loop reports as errors."""
        task = asyncio.ensure_future(self._connect(deadline))
        try:
            return await asyncio.shield(task)
        except BaseException:
            task.add_done_callback(_discard)
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
