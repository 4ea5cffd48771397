"""The S3 backend's change feed: polling (S3 has no change notification), woken at once by the
writes of handles in this process.

A :class:`PollingFeed` is the handle's one change feed (:mod:`arendezvous.backends._feed`): it
hints "the run's object may have changed" after every pause of its :class:`PollSchedule` and at
once when a handle of this process wrote the object, and the feed hub re-reads it then, once for
all the handle's waiters.

The schedule restarts at its shortest pause when the feed opens (a wait begins) and when a handle
of this process writes (a reply is likely soon: in a rendezvous, a node that joined waits for the
others); it does not restart when a poll finds another process's write, so that a handle waiting
through a formed round, whose heartbeats change the object all the time, costs about one
``GetObject`` per longest pause, not one per shortest.

The reads are the hub's; after one that could not reach the store (the handle's
:class:`~arendezvous.backends.s3._client.S3Client` notes it), opening a new feed first proves the
store answers again: a feed of hints that needs no connection could not tell an outage from
silence.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Hashable
from contextlib import ExitStack, suppress

import anyio

from ..._errors import RendezvousStateError
from ..._notify import ChangeNotifier
from .._feed import ChangeFeed
from ._client import S3Client

__all__ = ("LOCAL_CHANGES", "PollSchedule", "PollingFeed")

LOCAL_CHANGES = ChangeNotifier()
"""Writes by handles in this process, by (endpoint, bucket, key): they wake the polling feeds of
every handle on the same object at once; other processes' writes are seen by polling."""


class PollSchedule:
    """The pauses between the polls of a :class:`PollingFeed`, in seconds.

    The interval starts at *first* and doubles after every pause up to *cap*: a change soon after
    a restart (common in a rendezvous, where writes come in bursts) is seen quickly, and a long
    wait costs at most about one ``GetObject`` per *cap* seconds. Each pause is drawn between 75%
    and 100% of the interval, so that many waiters do not poll in lockstep.
    """

    __slots__ = ("_cap", "_first", "_interval", "_uniform")

    def __init__(
        self,
        first: float,
        cap: float,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._first = first
        self._cap = cap
        self._uniform = uniform
        self._interval = first

    def restart(self) -> None:
        """Start again at the shortest pause."""
        self._interval = self._first

    def next_pause(self) -> float:
        """The next pause; the interval doubles (up to the cap) after it."""
        pause = self._interval * self._uniform(0.75, 1.0)
        self._interval = min(self._interval * 2, self._cap)
        return pause


class PollingFeed(ChangeFeed):
    """Hints for one topic (the run's object) after each pause, or at once after a local write.

    :param client: the handle's client, which notes whether its last read reached the store.
    :param topic: the hub's topic of the run's object.
    :param change_key: the object's key in :data:`LOCAL_CHANGES`.
    :param schedule: the pauses between polls.
    :param check: a read of the object, to prove the store answers again after an outage.
    """

    def __init__(
        self,
        client: S3Client,
        topic: Hashable,
        change_key: Hashable,
        schedule: PollSchedule,
        check: Callable[[], Awaitable[object]],
    ) -> None:
        self._client = client
        self._topic = topic
        self._change_key = change_key
        self._schedule = schedule
        self._check = check
        self._registration = ExitStack()
        self._changed: anyio.Event | None = None

    def _arm(self) -> None:
        # Registered before the read the next hint causes, so a local write after that read
        # always wakes the feed.
        self._registration.close()
        self._changed = self._registration.enter_context(LOCAL_CHANGES.watching(self._change_key))

    async def open(self, topics: frozenset[Hashable]) -> None:
        if self._client.unreachable:
            # Raises RendezvousConnectionError while the store is unreachable; a state error
            # means it answered (what it holds is for the reads to report).
            with suppress(RendezvousStateError):
                await self._check()
        self._schedule.restart()
        self._arm()

    async def next_hint(self, timeout: float) -> object:
        changed = self._changed
        assert changed is not None
        # poll-ok: S3 has no change notification; writes in this process end the pause early.
        with anyio.move_on_after(min(self._schedule.next_pause(), timeout)):
            await changed.wait()
        if changed.is_set():
            self._schedule.restart()
        self._arm()
        return self._topic

    async def ping(self) -> bool:
        return True  # every poll is a read: a store that stops answering shows there

    async def aclose(self) -> None:
        self._registration.close()
