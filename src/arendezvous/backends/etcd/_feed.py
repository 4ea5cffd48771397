"""The etcd backend's change feed: one watch stream per handle, for all its waiters."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from contextlib import suppress
from typing import Any

import anyio

from ..._errors import RendezvousConnectionError
from .._feed import ALL, PONG, ChangeFeed
from ._cluster import Cluster, cancellable

__all__ = ("WatchFeed",)


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

    async def ping(self) -> bool:
        rpc = self._cluster.rpc
        try:
            await cancellable(
                self._call.write(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())),
                pending=self._cluster.pending,
            )
        except (self._cluster.grpc.RpcError, OSError) as exc:
            raise self._cluster.error(exc, self._operation) from exc
        return False

    async def aclose(self) -> None:
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
