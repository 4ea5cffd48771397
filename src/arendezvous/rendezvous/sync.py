"""``SyncRendezvous``: the async rendezvous behind blocking methods, for threads and torchrun.

It is one :class:`~arendezvous.rendezvous.AsyncRendezvous` run on the private event-loop thread
of a :class:`~arendezvous.SyncBackend` (the same hand-over the sync adapter uses for every
backend call), so there is one implementation of the rendezvous and one adapter, never a
hand-written blocking twin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from .._backend import AsyncRendezvousBackend
from ..sync import SyncBackend
from ._handler import AsyncRendezvous
from ._info import Progress, RendezvousInfo, RoundEnd

__all__ = ("SyncRendezvous",)

_T = TypeVar("_T")


class SyncRendezvous:
    """Blocking ``next_rendezvous``, ``num_nodes_waiting``, ``wait_for_round_end``, ``leave``,
    ``close`` and ``is_closed``, with the semantics of :class:`AsyncRendezvous`.

    :param backend: a :class:`~arendezvous.SyncBackend`, which the rendezvous borrows (the caller
        closes it), or an async backend, which is wrapped in a ``SyncBackend`` owned by this
        object and closed when the ``with`` block ends.

    The other parameters are :class:`AsyncRendezvous`'s. Use it as a context manager: inside the
    ``with`` block the node's heartbeat runs on the loop thread; on exit the node leaves the
    rendezvous. Calls made from inside a running event loop raise ``RuntimeError`` (await the
    :attr:`rendezvous` directly there). A ``KeyboardInterrupt`` during a blocking call cancels
    the call on the loop, which leaves the shared state as :class:`AsyncRendezvous` documents.
    """

    def __init__(
        self,
        backend: SyncBackend | AsyncRendezvousBackend,
        node: str,
        min_nodes: int,
        max_nodes: int,
        *,
        last_call: float = 30.0,
        join_timeout: float = 600.0,
        heartbeat: float = 5.0,
        heartbeat_timeout: float | None = None,
        delete_when_closed: bool = False,
    ) -> None:
        if isinstance(backend, SyncBackend):
            async_backend = backend.backend
        elif isinstance(backend, AsyncRendezvousBackend):
            async_backend = backend
        else:
            raise TypeError(
                "backend must be a SyncBackend or an AsyncRendezvousBackend, "
                f"not {type(backend).__name__}"
            )
        self._rendezvous = AsyncRendezvous(
            async_backend, node, min_nodes, max_nodes, last_call=last_call,
            join_timeout=join_timeout, heartbeat=heartbeat, heartbeat_timeout=heartbeat_timeout,
            delete_when_closed=delete_when_closed,
        )
        self._owns_portal = not isinstance(backend, SyncBackend)
        self._portal = backend if isinstance(backend, SyncBackend) else SyncBackend(backend)
        self._holder: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    @property
    def rendezvous(self) -> AsyncRendezvous:
        """The async rendezvous doing the work (use it only on the loop thread)."""
        return self._rendezvous

    @property
    def backend(self) -> SyncBackend:
        """The blocking backend whose loop thread runs the rendezvous."""
        return self._portal

    @property
    def node(self) -> str:
        """This node's id."""
        return self._rendezvous.node

    @property
    def info(self) -> RendezvousInfo | None:
        """The round :meth:`next_rendezvous` last returned, until the node leaves; else ``None``."""
        return self._rendezvous.info

    def __repr__(self) -> str:
        return f"SyncRendezvous({self._portal!r}, node={self.node!r})"

    def _call(
        self, coroutine_function: Callable[..., Coroutine[Any, Any, _T]], *args: Any, **kwargs: Any
    ) -> _T:
        # The sync adapter's loop thread: fork handling, the running-loop check, and
        # cancellation of the coroutine when the waiting thread is interrupted.
        return self._portal.loop_thread.call(coroutine_function, *args, **kwargs)

    def next_rendezvous(self) -> RendezvousInfo:
        """Blocking :meth:`AsyncRendezvous.next_rendezvous`."""
        return self._call(self._rendezvous.next_rendezvous)

    def num_nodes_waiting(self) -> int:
        """Blocking :meth:`AsyncRendezvous.num_nodes_waiting`."""
        return self._call(self._rendezvous.num_nodes_waiting)

    def wait_for_round_end(self, *, timeout: float | None = None) -> RoundEnd | None:
        """Blocking :meth:`AsyncRendezvous.wait_for_round_end`."""
        return self._call(self._rendezvous.wait_for_round_end, timeout=timeout)

    def leave(self) -> None:
        """Blocking :meth:`AsyncRendezvous.leave`."""
        self._call(self._rendezvous.leave)

    def close(self) -> None:
        """Blocking :meth:`AsyncRendezvous.close`: close the run for every node."""
        self._call(self._rendezvous.close)

    def is_closed(self) -> bool:
        """Blocking :meth:`AsyncRendezvous.is_closed`."""
        return self._call(self._rendezvous.is_closed)

    def progress(self) -> Progress:
        """Blocking :meth:`AsyncRendezvous.progress` (callable from another thread while
        :meth:`next_rendezvous` waits)."""
        return self._call(self._rendezvous.progress)

    # -- the heartbeat, held open on the loop thread between __enter__ and __exit__ -------------

    async def _start_holder(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._stop = asyncio.Event()
        self._holder = loop.create_task(self._hold(ready, self._stop))
        await ready

    async def _hold(self, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        # The rendezvous's task group must be entered and left by one task: this one.
        try:
            async with self._rendezvous:
                ready.set_result(None)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    async def _stop_holder(self) -> None:
        holder, stop = self._holder, self._stop
        self._holder = self._stop = None
        if holder is not None and stop is not None:
            stop.set()
            await holder

    def __enter__(self) -> SyncRendezvous:
        if self._holder is not None:
            raise RuntimeError("this SyncRendezvous is already entered")
        self._call(self._start_holder)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._call(self._stop_holder)
        finally:
            if self._owns_portal:
                self._portal.close()
