"""The Redis backend's change feed: one pub/sub subscription per handle, for all its waiters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import anyio

from ..._errors import ErrorTable, map_exceptions
from .._feed import ALL, PONG, ChangeFeed

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("PubSubFeed",)


class PubSubFeed(ChangeFeed):
    """A subscription, on one connection of the client's pool, to the channels of some keys.

    Every notice on a channel is a hint for the topic of the same name. A client with a retry
    policy reconnects (and resubscribes) by itself inside ``get_message``; notices sent meanwhile
    are lost, so a reconnect is reported as a hint for every topic.
    """

    def __init__(
        self, client: Redis, *, errors: ErrorTable, what: str, timeout: float, closed: Any
    ) -> None:
        self._pubsub = client.pubsub()
        self._errors = errors
        self._what = what
        self._timeout = timeout
        self._closed = closed  # the redis module's exceptions that closing may raise
        self._reconnected = False
        self._connection: Any = None

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        with map_exceptions(self._errors, what=self._what, timeout=self._timeout):
            yield

    async def open(self, topics: frozenset[Hashable]) -> None:
        with self._mapped():
            channels = [topic for topic in topics if isinstance(topic, (bytes, str))]
            await self._pubsub.subscribe(*channels)
            confirmed = 0
            while confirmed < len(channels):
                message = await self._pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "subscribe":
                    confirmed += 1
        self._connection = self._pubsub.connection
        if self._connection is not None:
            self._connection.register_connect_callback(self._on_connect)

    def _on_connect(self, connection: object) -> None:
        self._reconnected = True

    async def next_hint(self, timeout: float) -> object:
        deadline = anyio.current_time() + timeout
        while True:
            left = deadline - anyio.current_time()
            if left <= 0:
                return None
            with self._mapped():
                message = await self._pubsub.get_message(timeout=left)
            if self._reconnected:
                self._reconnected = False
                return ALL
            if message is None:
                return None
            if message["type"] == "message":
                channel: Hashable = message["channel"]
                return channel
            if message["type"] == "pong":
                return PONG
            # (Re)subscription confirmations carry no news.

    async def ping(self) -> bool:
        with self._mapped():
            await self._pubsub.ping()
        return False

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.deregister_connect_callback(self._on_connect)
        with suppress(*self._closed, OSError, RuntimeError):
            close: Callable[[], Awaitable[None]] = self._pubsub.aclose
            await close()
