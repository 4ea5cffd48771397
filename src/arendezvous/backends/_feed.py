"""One change feed per backend handle, shared by every task waiting on it.

A network store tells its clients about changes in its own way (Redis pub/sub, an etcd watch,
PostgreSQL ``LISTEN``); each backend wraps its way in a :class:`ChangeFeed`. A :class:`FeedHub`
runs one such feed for a handle in a background task, however many tasks wait on the handle: a
thousand waiters cost one subscription, one connection and one read per notice, not a thousand.

The hub keeps the contract's rules for notices (they are hints; nothing is missed):

* the feed is subscribed, and the store has confirmed it, before any read it serves begins, so a
  write after that read always produces a notice;
* every notice, and every (re)subscription, is followed by a read of the topics it concerns; a
  waiter only sees *views* from reads that began after it registered, so it never mistakes an
  older state for a change;
* a waiter's first look, and the first read after a (re)subscription, is a real read of the
  store; a read that a notice alone prompted may be answered from what the feed itself delivered
  (an etcd watch event carries the new value) when the topic has a *noticed* reader -- one that
  never answers with a state older than one a real read on the same subscription returned;
* reads are coalesced: a notice during a read marks the topic for one more read, not one per
  waiter or per notice;
* a silent subscription is checked (the feed's ping) every ``ping_interval`` seconds, and one whose
  check is unanswered within ``timeout`` counts as lost;
* a lost or refused subscription is retried with one backoff policy (50 ms doubling to 1 s), and
  every waiter is told about the outage and since when, so each can apply the handle's outage
  policy (see :mod:`arendezvous.backends._network`).

Topics are the keys or channels a feed watches; a handle's state is one topic, and other
components of the same handle (such as a member table) can watch more topics on the same hub.
A topic that a live subscription does not watch yet is added to it when the feed can
(:meth:`ChangeFeed.add`), else the feed subscribes again with it. The hub's feed stays subscribed
for ``linger`` seconds after its last waiter left, so a task that waits again and again does not
pay for a new subscription each time. A topic nobody has waited on for ``linger`` seconds is
forgotten -- the feed subscribes again without it while other topics still have waiters, and a
feed subscribed later leaves it out -- so a handle whose waiters move from key to key (a
rendezvous watching another node each round) watches only what is waited on.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import anyio

from .._errors import RendezvousConnectionError, RendezvousStateError

__all__ = ("ALL", "PONG", "ChangeFeed", "FeedHub", "View", "Watch")

ALL: Final = object()
"""A hint that any topic may have changed (the client reconnected, and may have lost notices)."""

PONG: Final = object()
"""The answer to a :meth:`ChangeFeed.ping`: the subscription is alive."""

FIRST_RETRY_DELAY: Final = 0.05
MAX_RETRY_DELAY: Final = 1.0
"""Reconnect backoff while the store is unreachable: quick for a restart, bounded so an outage
costs a few attempts per second, not a busy loop. The one backoff policy of every network store."""


class ChangeFeed(ABC):
    """One subscription to a store's change notices; each network backend implements one.

    A feed is opened once, read by one task, and closed once; a lost feed is replaced by a new one.
    """

    @abstractmethod
    async def open(self, topics: frozenset[Hashable]) -> None:
        """Subscribe to *topics*; return once the store has confirmed the subscription.

        :raises RendezvousConnectionError: the store could not be reached.
        """

    @abstractmethod
    async def next_hint(self, timeout: float) -> object:
        """Wait up to *timeout* seconds for the next notice.

        Returns a topic that may have changed, :data:`ALL`, :data:`PONG`, or ``None`` on silence.

        :raises RendezvousConnectionError: the subscription is lost.
        """

    async def add(self, topics: frozenset[Hashable]) -> bool:
        """Subscribe to more *topics* on this open subscription; return ``True`` once the store
        has confirmed them, ``False`` if this feed cannot (the hub then subscribes again with
        every topic, the default).

        :raises RendezvousConnectionError: the subscription is lost.
        """
        return False

    @abstractmethod
    async def ping(self) -> bool:
        """Check that the subscription is alive: ``True`` if it answered already, ``False`` if
        its answer will come as :data:`PONG` from :meth:`next_hint`.

        :raises RendezvousConnectionError: the check failed.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Close the subscription; never raises (the hub shields it from cancellation)."""


@dataclass(frozen=True, slots=True)
class View:
    """What a waiter learns from the hub: the outcome of one read of its topic, or an outage.

    :ivar value: what the topic's read returned (with no error).
    :ivar error: a :class:`RendezvousStateError` the read raised, or the
        :class:`RendezvousConnectionError` of an outage.
    :ivar outage_since: with a connection error, since when the store has been unreachable (on
        ``anyio.current_time()``'s clock).
    :ivar closed: the handle was closed.
    """

    value: Any = None
    error: BaseException | None = None
    outage_since: float | None = None
    closed: bool = False


class Watch:
    """One waiter's registration on one topic of a :class:`FeedHub`; see :meth:`FeedHub.watch`."""

    __slots__ = ("_event", "_view", "first_read")

    def __init__(self, first_read: int) -> None:
        #: The number of the first read whose view this waiter may see.
        self.first_read = first_read
        self._event = anyio.Event()
        self._view: View | None = None

    def _deliver(self, view: View) -> None:
        self._view = view
        self._event.set()

    async def next_view(self) -> View:
        """The next view of the topic: the latest one published since the previous call.

        Views between two calls are merged into the latest: a waiter compares tokens with the
        newest state, and an older one never matters.
        """
        await self._event.wait()
        self._event = anyio.Event()
        view = self._view
        assert view is not None
        return view


class _Topic:
    __slots__ = ("dirty", "fresh", "idle_since", "noticed", "read", "reads", "watchers")

    def __init__(
        self, read: Callable[[], Awaitable[Any]], noticed: Callable[[], Awaitable[Any]] | None
    ) -> None:
        self.read = read
        self.noticed = noticed
        self.reads = 0
        self.dirty = False
        #: Whether the next read must be a real one (a waiter's first look, a new subscription).
        self.fresh = True
        self.watchers: set[Watch] = set()
        #: When the last waiter left (meaningful while there is none).
        self.idle_since = 0.0


class _Cycle:
    """The state of one subscription's life: how it was lost, if it was."""

    __slots__ = ("doubt_since", "lost")

    def __init__(self) -> None:
        self.lost: RendezvousConnectionError | None = None
        #: Since when an answer to a liveness check has been overdue.
        self.doubt_since: float | None = None


class FeedHub:
    """Runs one :class:`ChangeFeed` for a handle on one asyncio event loop; see the module.

    :param make_feed: a new, unopened feed (called again after a feed is lost).
    :param timeout: the handle's timeout: bounds each subscription attempt, and the wait for the
        answer to a liveness check.
    :param ping_interval: seconds of silence after which the feed is checked.
    :param linger: seconds the feed stays subscribed after its last waiter left.
    :param what: says which handle, in error messages.
    """

    def __init__(
        self,
        make_feed: Callable[[], ChangeFeed],
        *,
        timeout: float,
        ping_interval: float,
        linger: float,
        what: str,
    ) -> None:
        self._make_feed = make_feed
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._linger = linger
        self._what = what
        self._topics: dict[Hashable, _Topic] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._wakeup = anyio.Event()
        self._closing = anyio.Event()
        self._outage_since: float | None = None
        self._idle_since = 0.0

    @property
    def watchers(self) -> int:
        """How many waiters are registered now (all topics)."""
        return sum(len(topic.watchers) for topic in self._topics.values())

    @property
    def running(self) -> bool:
        """Whether a feed task is running (subscribed, subscribing, or retrying)."""
        return self._task is not None and not self._task.done() and not self._stopping

    # -- waiters -----------------------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self,
        key: Hashable,
        read: Callable[[], Awaitable[Any]],
        noticed: Callable[[], Awaitable[Any]] | None = None,
    ) -> AsyncIterator[Watch]:
        """Register a waiter on topic *key* for the block; yield its :class:`Watch`.

        *read* reads the topic (bounded by the handle's timeout); *noticed*, if given, answers a
        read that only a notice prompted (see the module docstring). The first waiter's are the
        topic's. Leaving the block, by cancellation too, removes the registration.
        """
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = _Topic(read, noticed)
        watch = Watch(topic.reads + 1)
        topic.watchers.add(watch)
        topic.dirty = topic.fresh = True
        if self._closed:
            watch._deliver(View(closed=True))
        else:
            self._ensure_running()
        self._wakeup.set()
        try:
            yield watch
        finally:
            topic.watchers.discard(watch)
            if not topic.watchers:
                topic.idle_since = anyio.current_time()
                if not self.watchers:
                    self._idle_since = topic.idle_since
                self._wakeup.set()  # the feed task times the forgetting

    def _forget_idle_topics(self) -> float:
        """Forget the topics nobody has waited on for ``linger`` seconds; return when the next
        of the others is due (``math.inf``: none is idle)."""
        now = anyio.current_time()
        due = math.inf
        for key, topic in list(self._topics.items()):
            if not topic.watchers:
                expires = topic.idle_since + self._linger
                if expires <= now:
                    del self._topics[key]
                else:
                    due = min(due, expires)
        return due

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done() or self._stopping:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _publish(self, view: View, topic: _Topic | None = None, read: int = 0) -> None:
        """Hand *view* to *topic*'s waiters that registered before read number *read* began (to
        every waiter of every topic if *topic* is ``None``)."""
        topics = self._topics.values() if topic is None else (topic,)
        for each in topics:
            for watch in each.watchers:
                if topic is None or watch.first_read <= read:
                    watch._deliver(view)

    def _failed(self, error: RendezvousConnectionError, since: float) -> None:
        if self._outage_since is None:
            self._outage_since = since
        self._publish(View(error=error, outage_since=self._outage_since))

    # -- the feed task -----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = FIRST_RETRY_DELAY
        lost_at: float | None = None  # when a working subscription was lost, if it just was
        try:
            while not self._closed and not self._stopping:
                feed = self._make_feed()
                started = anyio.current_time()
                self._forget_idle_topics()
                topics = frozenset(self._topics)
                cycle = _Cycle()
                try:
                    try:
                        with anyio.fail_after(self._timeout):
                            await feed.open(topics)
                    except TimeoutError:
                        raise RendezvousConnectionError(
                            f"{self._what}: the subscription was not confirmed within "
                            f"{self._timeout:g} s"
                        ) from None
                    delay, lost_at = FIRST_RETRY_DELAY, None
                    for topic in self._topics.values():
                        # Notices may have been missed while unsubscribed: really read.
                        topic.dirty = topic.fresh = True
                    if await self._serve(feed, topics, cycle):
                        continue  # the topics changed: subscribe again at once
                    if cycle.lost is None:
                        return  # idle, or closed
                except RendezvousConnectionError as exc:
                    # An outage: since the lost subscription's first doubt, or this attempt.
                    self._failed(exc, lost_at or started)
                finally:
                    with anyio.CancelScope(shield=True):
                        await feed.aclose()
                if cycle.lost is not None:
                    # A subscription that worked was lost: try again at once. A connection that
                    # broke (a restart, a killed connection) is an outage only if that fails too;
                    # one that stopped answering has been unreachable since the unanswered check.
                    lost_at = cycle.doubt_since or anyio.current_time()
                    if cycle.doubt_since is not None:
                        self._failed(cycle.lost, cycle.doubt_since)
                    continue
                if not self.watchers:
                    return  # nobody to ride out the outage for
                with anyio.move_on_after(delay):
                    await self._closing.wait()
                delay = min(delay * 2, MAX_RETRY_DELAY)
        except Exception as exc:  # a bug must not leave waiters waiting forever
            self._failed(
                RendezvousConnectionError(f"{self._what}: the change feed failed: {exc!r}"),
                anyio.current_time(),
            )
            raise
        finally:
            if self._task is asyncio.current_task():
                self._stopping = True

    async def _serve(self, feed: ChangeFeed, topics: frozenset[Hashable], cycle: _Cycle) -> bool:
        """Pump the feed's hints and serve reads until idle, lost or closed; ``True`` if the
        topics changed (the feed must be opened again)."""
        resubscribe = False
        async with anyio.create_task_group() as group:
            group.start_soon(self._pump, feed, cycle)
            try:
                resubscribe = await self._serve_reads(feed, topics, cycle)
            except RendezvousConnectionError as exc:
                cycle.lost = exc
            finally:
                group.cancel_scope.cancel()
        return resubscribe

    async def _pump(self, feed: ChangeFeed, cycle: _Cycle) -> None:
        """Turn the feed's hints into dirty topics; check a silent feed; report a lost one."""
        try:
            while True:
                overdue = cycle.doubt_since is not None
                hint = await feed.next_hint(self._timeout if overdue else self._ping_interval)
                if hint is None:
                    if overdue:
                        raise RendezvousConnectionError(
                            f"{self._what}: no answer to a liveness check within "
                            f"{self._timeout:g} s"
                        )
                    cycle.doubt_since = anyio.current_time()
                    if await feed.ping():
                        cycle.doubt_since = None
                    continue
                cycle.doubt_since = None  # any message shows the connection is alive
                if hint is PONG:
                    continue
                for key, topic in self._topics.items():
                    if hint is ALL or hint == key:
                        topic.dirty = True
                self._wakeup.set()
        except RendezvousConnectionError as exc:
            cycle.lost = exc
            self._wakeup.set()

    async def _serve_reads(
        self, feed: ChangeFeed, topics: frozenset[Hashable], cycle: _Cycle
    ) -> bool:
        while True:
            self._wakeup = wakeup = anyio.Event()
            if cycle.lost is not None:
                raise cycle.lost
            if self._closed:
                return False
            # With waiters left, an idle topic is forgotten when due (a new subscription without
            # it); without any, the whole feed lingers and stops, and forgets them all then.
            forget_at = self._forget_idle_topics() if self.watchers else math.inf
            wanted = frozenset(self._topics)
            if wanted != topics:
                if not wanted > topics or not await feed.add(wanted - topics):
                    return True
                topics = wanted  # the new topics' first reads are dirty, and real, already
                continue
            dirty = [topic for topic in self._topics.values() if topic.dirty]
            if dirty:
                for topic in dirty:
                    await self._read(topic)
                continue
            if not self.watchers:
                if self._outage_since is not None:
                    return False
                left = self._idle_since + self._linger - anyio.current_time()
                if left <= 0:
                    self._stopping = True  # a new waiter from now on starts a new task
                    self._forget_idle_topics()
                    return False
                with anyio.move_on_after(left):
                    await wakeup.wait()
            else:
                with anyio.move_on_after(forget_at - anyio.current_time()):
                    await wakeup.wait()

    async def _read(self, topic: _Topic) -> None:
        fresh = topic.fresh
        read = topic.read if fresh or topic.noticed is None else topic.noticed
        topic.dirty = topic.fresh = False
        topic.reads += 1
        number = topic.reads
        started = anyio.current_time()
        try:
            value = await read()
        except RendezvousStateError as exc:
            self._outage_since = None
            self._publish(View(error=exc), topic, number)
        except RendezvousConnectionError:
            topic.dirty = True
            topic.fresh = topic.fresh or fresh
            self._outage_since = self._outage_since or started
            raise
        else:
            self._outage_since = None
            self._publish(View(value=value), topic, number)

    # -- closing -----------------------------------------------------------------------------

    async def aclose(self, timeout: float) -> None:
        """Tell every waiter the handle is closed, stop the feed task and wait for it (shielded,
        at most *timeout* seconds). Call on the hub's event loop."""
        self.close_soon()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
                await asyncio.wait({task})

    def close_soon(self) -> None:
        """Tell every waiter the handle is closed and let the feed task end by itself.

        For when the hub's loop is not the caller's; safe only on the hub's own thread.
        """
        if self._closed:
            return
        self._closed = True
        self._publish(View(closed=True))
        self._wakeup.set()
        self._closing.set()
