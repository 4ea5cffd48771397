"""The base of the network backends (Redis, etcd, PostgreSQL): what they share, written once.

:class:`NetworkBackend` owns

* the option checks (``timeout``; ``max_state_size``: an ``int``, not a ``bool``, from 1 to the
  store's limit; ``expire_after``: ``None`` or a positive number of seconds, which each store
  applies by its own expiry mechanism) and the size check of every state;
* the loop-bound client: a store client belongs to the asyncio event loop it was opened on. A
  handle opens its client on the loop of its first call and follows the caller to a new loop once
  the old one has stopped; used from a loop while its own still runs in another thread, it raises
  ``RuntimeError`` (one handle per event loop). Under trio (whose loop the asyncio-only clients
  cannot use) every call runs on the process-wide asyncio loop thread
  (:meth:`~arendezvous.sync.LoopThread.shared`), with cancellation carried across;
* ``aclose()``: shielded, bounded by the timeout, waking every waiter with
  ``BackendClosedError``, and never failing because the client's loop has gone (its connections
  are then dropped without a goodbye);
* the ``wait_for_change`` template: a ``timeout <= 0`` wait is one read; any other registers with
  the handle's change feed (one :class:`~arendezvous.backends._feed.FeedHub` per handle, shared by
  all its waiters), whose first read after registering is the wait's first look (outside the
  wait's timeout, so a change already made is always reported), then compares tokens after every
  read the feed makes. Outages follow one policy: the wait rides out an outage shorter than the
  handle's ``timeout`` and raises ``RendezvousConnectionError`` after a longer one, and a wait
  whose timeout ends while the store is unreachable raises instead of answering ``None``.

Each store supplies its client's life cycle (:meth:`_open_client`, :meth:`_close_client`,
:meth:`_drop_client`), its read (:meth:`_read`; and :meth:`_read_noticed` if its notices carry the
new state), its compare-and-swap (:meth:`_swap`) and its change feed (:meth:`_make_feed`); what
differs between stores as plain values is a class attribute.

Another component living on a handle (e.g. an optional per-run member table) reuses all of it:
:meth:`_on_client` runs an operation with the handle's client on the client's loop (bridged from
trio), :meth:`_wait_for` is the waiting template for any topic of the handle's feed, and
:meth:`_what` and the store's error table give errors the same form.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Awaitable, Callable, Hashable
from contextlib import suppress
from functools import partial
from typing import Any, ClassVar, TypeVar

import anyio

from .. import _backend as contract
from .._backend import AsyncRendezvousBackend, RunHandle, Token, check_run_id, same_token
from .._errors import (
    BackendClosedError,
    ErrorTable,
    ExceptionMapper,
    RendezvousConnectionError,
    RendezvousStateError,
    map_exceptions,
)
from .._loop_thread import LoopThread
from .._notify import threadsafe_setter
from ._feed import ChangeFeed, FeedHub, View

__all__ = ("NetworkBackend", "check_expire_after", "check_max_state_size", "check_seconds")

_T = TypeVar("_T")

DEFAULT_TIMEOUT = 5.0
"""Seconds a call may take, and an outage a wait rides out, unless a handle is given another."""


def check_seconds(name: str, value: object) -> float:
    """A handle's duration option: a positive, finite number of seconds (not a ``bool``).

    :raises TypeError: not a number.
    :raises ValueError: zero, negative, infinite or NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive, finite number of seconds")
    return float(value)


def check_expire_after(value: object) -> float | None:
    """The ``expire_after`` option of the run lifecycle: ``None`` (runs never expire) or a
    positive, finite number of seconds after which a run nobody writes to disappears.

    :raises TypeError: neither ``None`` nor a number.
    :raises ValueError: zero, negative, infinite or NaN.
    """
    return None if value is None else check_seconds("expire_after", value)


def check_max_state_size(value: object, limit: int, reason: str) -> int:
    """The one ``max_state_size`` rule: an ``int`` (not a ``bool``) from 1 to the store's *limit*.

    :raises TypeError: not an ``int``.
    :raises ValueError: out of range; the message gives the range and *reason* for the limit.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_state_size must be an int, not {type(value).__name__}")
    if not 1 <= value <= limit:
        raise ValueError(f"max_state_size must be from 1 to {limit} bytes ({reason})")
    return value


class _Binding:
    """A handle's client on one event loop, and the change feed hub that goes with it."""

    __slots__ = ("bridged", "client", "hub", "loop", "pid")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any, *, bridged: bool) -> None:
        self.loop = loop
        self.client = client
        self.bridged = bridged  # the process-wide loop thread's loop, on which trio calls run
        self.pid = os.getpid()
        self.hub: FeedHub | None = None

    def alive(self) -> bool:
        """Whether the loop can still run the client's coroutines (in this process)."""
        return self.pid == os.getpid() and self.loop.is_running()


class NetworkBackend(RunHandle, AsyncRendezvousBackend):
    """The base of the bundled network backends; see the module docstring.

    Subclasses set the class attributes, call ``super().__init__`` first in their ``__init__``,
    set ``_where`` (where the store is, safe to show), and implement the hooks.
    """

    # -- what differs between stores ---------------------------------------------------------

    #: The backend's :attr:`name`.
    NAME: ClassVar[str]
    #: The largest ``max_state_size`` the store can take, and why (for the error message).
    MAX_STATE_SIZE_LIMIT: ClassVar[int]
    MAX_STATE_SIZE_REASON: ClassVar[str]
    #: Seconds the change feed stays subscribed after its last waiter left, so that a task
    #: waiting in a loop keeps one subscription instead of making one per wait.
    FEED_LINGER: ClassVar[float] = 10.0

    _where: str

    def __init__(
        self,
        run_id: str,
        *,
        timeout: float,
        max_state_size: int,
        expire_after: float | None = None,
    ) -> None:
        self._run_id = check_run_id(run_id)
        self._timeout = check_seconds("timeout", timeout)
        self._expire_after = check_expire_after(expire_after)
        self._max_state_size = check_max_state_size(
            max_state_size, self.MAX_STATE_SIZE_LIMIT, self.MAX_STATE_SIZE_REASON
        )
        self._closed = False
        self._bound: _Binding | None = None
        self._mappers: dict[str, ExceptionMapper] = {}

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def timeout(self) -> float:
        """Seconds a call may take, and an outage a wait rides out, before they raise
        ``RendezvousConnectionError``."""
        return self._timeout

    @property
    def max_state_size(self) -> int:
        """The largest state accepted, in bytes."""
        return self._max_state_size

    @property
    def expire_after(self) -> float | None:
        """Seconds after which a run nobody writes to (its state or member records) disappears,
        or ``None``: runs never expire. Each store's documentation says how it expires them."""
        return self._expire_after

    def _what(self, operation: str) -> str:
        """The start of every error message: what was done, to which run, where."""
        return f"{operation} of run {self._run_id!r} on {self._where}"

    def _mapped(self, operation: str) -> ExceptionMapper:
        """The store's error table applied to *operation*: ``with self._mapped("get_state"):``.

        Made once per operation and handle (the message is formatted only on an error).
        """
        mapper = self._mappers.get(operation)
        if mapper is None:
            mapper = self._mappers[operation] = map_exceptions(
                self._error_table(), what=partial(self._what, operation), timeout=self._timeout
            )
        return mapper

    def _error_table(self) -> ErrorTable:
        """The store's error table (see :mod:`arendezvous._errors`)."""
        raise NotImplementedError

    # -- hooks each store implements -----------------------------------------------------------

    def _open_client(self) -> Any:
        """A new client for the running event loop (no I/O yet: it connects when used)."""
        raise NotImplementedError

    async def _close_client(self, client: Any) -> None:
        """Close *client* politely, on its own loop (shielded and bounded by the caller)."""
        raise NotImplementedError

    def _drop_client(self, client: Any) -> None:
        """Let go of *client* whose loop has stopped: no awaiting, best effort, never raises."""

    def _make_feed(self, client: Any) -> ChangeFeed:
        """A new change feed for the run's topic on *client*."""
        raise NotImplementedError

    def _topic(self) -> Hashable:
        """The run's topic on the change feed (its key or channel)."""
        raise NotImplementedError

    def _ping_interval(self) -> float:
        """Seconds of silence after which the change feed is checked."""
        return self._timeout

    def _read(self, client: Any) -> Awaitable[tuple[bytes, Token] | None]:
        """The stored ``(state, token)``, or ``None``; bounded by the handle's timeout. (An
        awaitable: a store may hand back a coroutine it made, sparing a frame.)"""
        raise NotImplementedError

    def _read_noticed(self, client: Any) -> Awaitable[tuple[bytes, Token] | None]:
        """The read that follows a change notice of a wait's feed (not a waiter's first look):
        :meth:`_read` unless the store's notices carry the new state itself. It may answer from
        the feed, but never with a state older than one a real read on the same subscription
        returned."""
        return self._read(client)

    def _swap(
        self, client: Any, state: bytes, token: Token | None
    ) -> Awaitable[tuple[bytes, Token, bool]]:
        """The compare-and-swap of *state* (checked already) against *token* (an awaitable)."""
        raise NotImplementedError

    # -- the loop-bound client -----------------------------------------------------------------

    def _here(self) -> _Binding | None:
        """The binding to use on the running loop, or ``None``: bridge to the loop thread."""
        loop = asyncio._get_running_loop()
        bound = self._bound
        if bound is not None and bound.loop is loop:
            return bound
        if loop is None:
            return None  # trio: its calls run on the shared asyncio loop thread
        if bound is not None and bound.bridged and bound.alive():
            return None  # bound to the loop thread already: go through it from any loop
        return self._rebind(loop)

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> _Binding:
        self._check_open()
        old = self._bound
        if old is not None:
            if old.alive():
                raise RuntimeError(
                    f"this {type(self).__name__} is bound to the event loop it was first used "
                    "on, which still runs in another thread (its connections belong to it); "
                    "open one backend per event loop"
                )
            self._bound = None
            self._drop(old)
        bridged = LoopThread.is_shared_loop(loop)
        bound = self._bound = _Binding(loop, self._open_client(), bridged=bridged)
        return bound

    def _drop(self, bound: _Binding) -> None:
        if bound.pid != os.getpid():
            return  # a forked child: those connections are the parent's
        if bound.hub is not None and not bound.loop.is_closed():
            with suppress(RuntimeError):
                bound.loop.call_soon_threadsafe(bound.hub.close_soon)
        with suppress(Exception):
            self._drop_client(bound.client)

    async def _on_client(self, operation: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """``await operation(client, *args)`` with the handle's client, on the client's loop.

        The one way any operation reaches the store: under trio, or from a loop other than the
        one the handle is bound to, it is bridged to the process-wide asyncio loop thread.
        """
        self._check_open()
        bound = self._here()
        if bound is None:
            return await LoopThread.shared().run(self._on_client, operation, *args)
        return await operation(bound.client, *args)

    def _hub(self) -> FeedHub:
        """The change feed hub of the binding of the running loop (made on first use)."""
        bound = self._bound
        assert bound is not None
        assert bound.loop is asyncio._get_running_loop()
        if bound.hub is None:
            client = bound.client
            bound.hub = FeedHub(
                partial(self._make_feed, client),
                timeout=self._timeout,
                ping_interval=self._ping_interval(),
                linger=self.FEED_LINGER,
                what=self._what("change feed"),
            )
        return bound.hub

    # -- the contract --------------------------------------------------------------------------

    async def get_state(self) -> tuple[bytes, Token] | None:
        bound = self._bound
        if bound is None or bound.loop is not asyncio._get_running_loop() or self._closed:
            return await self._on_client(self._read)
        return await self._read(bound.client)  # the hot path of _on_client, inlined

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self._check_open()
        state = contract.check_state(state, self._max_state_size)
        bound = self._bound
        if bound is None or bound.loop is not asyncio._get_running_loop():
            return await self._on_client(self._swap, state, token)
        return await self._swap(bound.client, state, token)  # _on_client's hot path, inlined

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        contract.check_timeout(timeout)

        def changed(current: tuple[bytes, Token] | None) -> bool:
            return current is not None and not same_token(current[1], token)

        result: tuple[bytes, Token] | None = await self._on_client(
            self._wait_for, self._topic(), self._read, changed, timeout, "wait_for_change",
            self._read_noticed,
        )
        return result

    async def _wait_for(
        self,
        client: Any,
        topic: Hashable,
        read: Callable[[Any], Awaitable[_T]],
        changed: Callable[[_T], bool],
        timeout: float | None,
        operation: str,
        noticed: Callable[[Any], Awaitable[_T]] | None = None,
    ) -> _T | None:
        """The waiting template: the first value of *topic* for which *changed* holds, or
        ``None`` once *timeout* seconds passed without one (see the module docstring). *read*
        reads the topic; *noticed*, if given, is the read after a notice (see
        :meth:`_read_noticed`)."""
        if timeout is not None and timeout <= 0:
            looked = await read(client)  # no wait, but still look
            return looked if changed(looked) else None
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        after_notice = None if noticed is None else partial(noticed, client)
        async with self._hub().watch(topic, partial(read, client), after_notice) as watch:
            # The first look is bounded by the handle's timeout, not the wait's: a change made
            # already is reported however short the wait.
            view = await watch.next_view()
            while True:
                if view.closed:
                    raise BackendClosedError(f"this {type(self).__name__} was closed")
                if view.error is None and changed(view.value):
                    value: _T = view.value
                    return value
                unreachable = self._outage(view, deadline, operation)
                with anyio.move_on_after(deadline - anyio.current_time()):
                    view = await watch.next_view()
                    continue
                if unreachable is not None:
                    # "No change" would be a guess: the store could not be asked.
                    raise RendezvousConnectionError(
                        f"{self._what(operation)}: the store was unreachable when the wait "
                        "timed out"
                    ) from unreachable
                return None

    def _outage(
        self, view: View, deadline: float, operation: str
    ) -> RendezvousConnectionError | None:
        """Apply the outage policy to a view; return its connection error, if it has one."""
        error = view.error
        if error is None:
            return None
        if isinstance(error, RendezvousStateError):
            raise RendezvousStateError(str(error)) from error
        assert isinstance(error, RendezvousConnectionError)
        now = anyio.current_time()
        waited = now - (now if view.outage_since is None else view.outage_since)
        if waited >= self._timeout:
            raise RendezvousConnectionError(
                f"{self._what(operation)}: the store was unreachable for {waited:.3g} s"
            ) from error
        if now >= deadline:
            raise RendezvousConnectionError(
                f"{self._what(operation)}: the store was unreachable when the wait timed out"
            ) from error
        return error

    # -- closing -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        bound = self._bound
        if (
            bound is not None
            and bound.bridged
            and bound.loop is not asyncio._get_running_loop()
            and bound.alive()
        ):
            # Close on the loop thread, where every call of the handle runs: a close from here
            # could race a call there that is just binding a new client.
            await LoopThread.shared().run(self.aclose)
            return
        if self._closed:
            return
        self._closed = True
        bound, self._bound = self._bound, None
        if bound is not None:
            await self._release(bound)

    async def _release(self, bound: _Binding) -> None:
        """Close *bound*'s client and feed on their loop, or drop them if it has stopped."""
        running = asyncio._get_running_loop()
        if running is bound.loop and bound.pid == os.getpid():
            # Shielded: closing must finish even if the caller is being cancelled, or sockets
            # leak; bounded: a hung server must not hang aclose().
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout) as scope:
                if bound.hub is not None:
                    await bound.hub.aclose(self._timeout)
                with suppress(Exception):
                    await self._close_client(bound.client)
            if scope.cancelled_caught:
                self._drop(bound)
            return
        if not bound.alive():
            self._drop(bound)
            return
        # The client's loop runs in another thread (the loop thread, for trio callers): close
        # there, and wait for it here without blocking this loop.
        done = anyio.Event()
        wake = threadsafe_setter(done)
        try:
            future = asyncio.run_coroutine_threadsafe(self._release(bound), bound.loop)
        except RuntimeError:  # its loop closed meanwhile
            self._drop(bound)
            return
        future.add_done_callback(lambda _: wake())
        with anyio.CancelScope(shield=True), anyio.move_on_after(2 * self._timeout):
            await done.wait()
