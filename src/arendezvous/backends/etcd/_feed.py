"""The etcd backend's change feed: one watch stream per handle, for all its waiters.

Besides hints, the feed keeps what its events say: for each key it watches, the newest revision
seen, the key's ``mod_revision`` then and its value (:class:`Seen`). An etcd watch event is the
change itself, not a notice to go and look, so a reader that only needs a key's revision (the
member table's ``wait_for_change``) learns a touch from the event alone, and a waiter on the
run's state learns the new state from it, with no read. What the feed knows holds only while its
stream does: a new feed (after the stream broke, or to watch other keys) starts knowing nothing,
and its keys are read again. Keys are added to a live stream (one more watch on it), so a waiter
on a new key costs no new stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from contextlib import suppress
from typing import Any, NamedTuple

import anyio

from ..._errors import RendezvousConnectionError
from .._feed import ALL, PONG, ChangeFeed
from ._cluster import Cluster, cancellable

__all__ = ("Seen", "WatchFeed")


class Seen(NamedTuple):
    """A key as seen at one revision: by a read (the store's revision when it answered) or by a
    watch event (the event's revision)."""

    revision: int
    mod_revision: int
    """The key's ``mod_revision`` then; 0 if it did not exist."""
    value: bytes | None = None
    """The key's value then, if the one who saw it read it (``None``: not known)."""
    cluster_id: int = 0
    """The cluster that answered (its id, as the response header said)."""


class WatchFeed(ChangeFeed):
    """A watch stream, on the first member that confirms it, watching some keys.

    A task of the feed's own reads the stream into a queue, so waiting for a hint with a timeout
    never cancels a read of the stream. A liveness check is etcd's progress request, answered on
    the stream by a response without events.
    """

    def __init__(self, cluster: Cluster, *, operation: str) -> None:
        self._cluster = cluster
        self._operation = operation
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._responses: deque[Any] = deque()
        self._arrived = anyio.Event()
        self._lost: str | None = None
        self._member: Any = None
        self._topics: frozenset[Hashable] = frozenset()
        self._created = 0
        self._creation = anyio.Event()
        # gRPC allows one write in flight per stream: adding keys and pinging take turns.
        self._sending = anyio.Lock()
        self._opened = False
        self._closed = False
        self._seen: dict[bytes, Seen] = {}

    @property
    def cluster(self) -> Cluster:
        """The connections the feed's stream runs on."""
        return self._cluster

    @property
    def live(self) -> bool:
        """Whether the stream is confirmed and unbroken: only then does what it saw hold."""
        return self._opened and self._lost is None and not self._closed

    def seen(self, key: bytes) -> Seen | None:
        """The newest state of *key* this live feed knows of, or ``None`` (read it, then
        :meth:`learn`)."""
        return self._seen.get(key) if self.live else None

    def learn(self, key: bytes, seen: Seen) -> Seen:
        """Note a read of *key* that began while this feed was live; return the newest of it and
        what the feed already knew (events can arrive after a read that already saw them).

        A read is remembered only while the feed is live and watches *key*: from then on every
        change of the key reaches the feed as an event.
        """
        if not self.live or key not in self._topics:
            return seen
        known = self._seen.get(key)
        if known is not None and known.revision >= seen.revision:
            return known
        self._seen[key] = seen
        return seen

    async def open(self, topics: frozenset[Hashable]) -> None:
        cluster = self._cluster
        grpc, rpc = cluster.grpc, cluster.rpc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cluster.timeout
        members = cluster.candidates()
        last: BaseException | None = None
        for index, candidate in enumerate(members):
            member = cluster.open(candidate)
            budget = (deadline - loop.time()) / (len(members) - index)
            if budget <= 0:
                break
            call = None
            opened = False
            try:
                with anyio.fail_after(budget):
                    metadata = await cluster.metadata(member, budget)
                    call = member.watch.Watch(metadata=metadata, wait_for_ready=False)
                    for topic in topics:
                        create = rpc.WatchCreateRequest(key=topic)
                        await cancellable(
                            call.write(rpc.WatchRequest(create_request=create)),
                            pending=cluster.pending,
                        )
                    created = 0
                    while created < len(topics):
                        response = await cancellable(call.read(), pending=cluster.pending)
                        if response is grpc.aio.EOF or response.canceled:
                            raise RendezvousConnectionError("the watch was refused")
                        created += bool(response.created)
                opened = True
            except (grpc.RpcError, OSError, RendezvousConnectionError, TimeoutError) as exc:
                last = exc
                if cluster.expired_token(exc):
                    member.metadata = None
                cluster.forget_if_broken(member)
                continue
            finally:
                if call is not None and not opened:  # failed or cancelled: end it properly
                    with anyio.CancelScope(shield=True):
                        await self._cancel(call)
            self._call, self._member = call, member
            self._topics, self._opened = topics, True
            self._reader = loop.create_task(self._read())
            return
        if last is None:
            last = TimeoutError()
        raise cluster.error(last, self._operation) from last

    async def _read(self) -> None:
        grpc = self._cluster.grpc
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    self._lost = "the watch stream ended"
                    return
                cluster_id = response.header.cluster_id
                for event in response.events:
                    # Learnt as the stream delivers it: a reader asking later gets the newest.
                    kv = event.kv
                    if event.type == event.PUT:
                        seen = Seen(kv.mod_revision, kv.mod_revision, kv.value, cluster_id)
                    else:
                        seen = Seen(kv.mod_revision, 0, None, cluster_id)
                    self.learn(kv.key, seen)
                if response.created:
                    self._created += 1
                    self._creation.set()
                self._responses.append(response)
                self._arrived.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._cluster.expired_token(exc):
                self._member.metadata = None
            self._lost = f"the watch stream broke: {type(exc).__name__}"
        finally:
            self._arrived.set()
            self._creation.set()

    async def next_hint(self, timeout: float) -> object:
        while True:
            if not self._responses and self._lost is None:
                with anyio.move_on_after(timeout):
                    await self._arrived.wait()
                self._arrived = anyio.Event()
            if self._responses:
                response = self._responses.popleft()
            elif self._lost is not None:
                raise RendezvousConnectionError(
                    f"{self._cluster.what(self._operation)}: {self._lost}"
                )
            else:
                return None
            if response.canceled:
                if "auth token" in (response.cancel_reason or ""):
                    self._member.metadata = None
                raise RendezvousConnectionError(
                    f"{self._cluster.what(self._operation)}: etcd cancelled the watch: "
                    f"{response.cancel_reason or 'no reason given'}"
                )
            if response.events:
                keys = {event.kv.key for event in response.events}
                return keys.pop() if len(keys) == 1 else ALL
            if not response.created:
                return PONG  # a progress notification: the answer to ping()

    async def add(self, topics: frozenset[Hashable]) -> bool:
        """One more watch on the live stream per key; return once etcd has confirmed each."""
        rpc = self._cluster.rpc
        target = self._created + len(topics)
        try:
            with anyio.fail_after(self._cluster.timeout):
                for topic in topics:
                    await self._send(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                        key=topic)))
                while self._created < target:
                    if self._lost is not None:
                        raise RendezvousConnectionError(
                            f"{self._cluster.what(self._operation)}: {self._lost}"
                        )
                    self._creation = anyio.Event()
                    await self._creation.wait()
        except TimeoutError:
            raise RendezvousConnectionError(
                f"{self._cluster.what(self._operation)}: a new watch on the stream was not "
                f"confirmed within {self._cluster.timeout:g} s"
            ) from None
        self._topics = self._topics | topics
        return True

    async def ping(self) -> bool:
        rpc = self._cluster.rpc
        await self._send(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))
        return False

    async def _send(self, request: Any) -> None:
        """Write *request* on the live stream, after any other write of this feed.

        :raises RendezvousConnectionError: the stream failed.
        """
        try:
            async with self._sending:
                await cancellable(self._call.write(request), pending=self._cluster.pending)
        except (self._cluster.grpc.RpcError, OSError) as exc:
            raise self._cluster.error(exc, self._operation) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._call is not None:
            # Cancelled through gRPC, the stream ends the reader's read with gRPC's own report
            # (cancelling the reader's task instead would leave that report to come later).
            await self._cancel(self._call)
        if self._reader is not None:
            with anyio.move_on_after(self._cluster.timeout):
                await asyncio.wait({self._reader})
            self._reader.cancel()
        # The feed's task may be ending because its loop is (an unclosed handle's): RPCs of the
        # handle that cancelled callers abandoned must be reported while the loop still runs.
        if self._cluster.pending:
            with anyio.move_on_after(self._cluster.timeout):
                await asyncio.wait(set(self._cluster.pending))

    async def _cancel(self, call: Any) -> None:
        """Cancel *call* and wait (bounded) until gRPC has finished with it: gRPC reports the end
        of a call to the event loop it began on, and a loop that has closed by then makes it
        fail inside whichever loop runs next."""
        call.cancel()
        with anyio.move_on_after(self._cluster.timeout), suppress(Exception):
            await call.code()
