"""What the network stores' test modules share: raw clients run off the test's event loop,
and a backend that reports its reads.

The store clients the tests use behind a backend's back (redis.asyncio, aetcd, asyncpg) run only
on asyncio; :func:`on_asyncio` runs such a call on an event loop of its own in a worker thread,
so the same hook serves a test running on asyncio or on trio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio.to_thread

from arendezvous._notify import threadsafe_setter

__all__ = ("ReadCounter", "on_asyncio")

_T = TypeVar("_T")


async def on_asyncio(function: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    """``await function(*args)`` on a fresh asyncio loop in a worker thread."""

    def run() -> _T:
        async def main() -> _T:
            return await function(*args)

        return asyncio.run(main())

    return await anyio.to_thread.run_sync(run)


class ReadCounter:
    """Counts a backend's completed reads (its change feed's too), so a test can act once a
    waiter has read, from whichever thread the read ran on.

    Mix into a backend class before it: ``class Counted(ReadCounter, RedisBackend)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads = 0
        self._targets: list[tuple[int, Callable[[], None]]] = []

    def reads_reached(self, count: int) -> anyio.Event:
        """An event set once *count* reads have completed (set from any thread)."""
        event = anyio.Event()
        self._targets.append((count, threadsafe_setter(event)))
        self._check_targets()
        return event

    def _check_targets(self) -> None:
        reached = [target for target in self._targets if self.reads >= target[0]]
        for target in reached:
            self._targets.remove(target)
            target[1]()

    async def _read(self, client: Any) -> Any:
        result = await super()._read(client)  # type: ignore[misc]
        self.reads += 1
        self._check_targets()
        return result
