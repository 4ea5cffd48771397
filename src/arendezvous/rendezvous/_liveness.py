"""A node's liveness: refreshing its own member record, and watching one other node's.

Two background tasks per :class:`~arendezvous.rendezvous.AsyncRendezvous`:

* the **heartbeat** touches this node's record every ``heartbeat`` seconds (one store write; it
  wakes nobody) and notices at once when the record was deleted or taken over: the node was
  evicted, and a round it holds ends;
* the **watch** follows one other node: in a complete round, the next participant in rank order
  (so the participants form a ring and every death has a live watcher as long as anyone lives);
  while waiting for the next round, one participant of the current one (so a round whose nodes
  all died still ends). It declares the node dead when its record has not been refreshed for
  ``heartbeat_timeout``:

  - on a store with a clock, by the store's own clock: it reads the record's age, sleeps until
    the record would expire, and reads once more (about one read per two heartbeats);
  - on a store without one, by this node's monotonic clock: the store pushes every refresh of
    the watched record (``MemberTable.wait_for_change``), and a silence of ``heartbeat_timeout``
    is the verdict.

  Either way the verdict needs the record's version unchanged across the silence, so a store
  clock that jumps back, or a record "from the future", can delay an eviction but never prevent
  it, and no two machines' clocks are ever compared. The dead node's record is deleted (compare-
  and-swap on the version that went silent) and its round ended.

Both work on the node's shared core (:class:`._node.Node`: its id, clock, log, member table
and round record), never on the handle that owns them.

Both tasks retry when the store fails. :class:`StoreHealth` keeps the log readable through an
outage: one warning when the node's calls start failing, one when the store answers again, the
failures in between at DEBUG, however many heartbeats the outage lasts.
"""

from __future__ import annotations

import logging
import math
import os
import random

import anyio
from anyio.abc import TaskGroup

from .._errors import RendezvousError
from .._members import Member
from ._info import RendezvousInfo
from ._node import Node
from ._record import RoundRecord, group_name

__all__ = ("Liveness", "StoreHealth")

_SLACK = 0.002

# What the watch follows: (incarnation, round, group of the watched node's record, node).
_Target = tuple[str, int, str, str]


def _clamped(age: float | None, limit: float) -> float:
    """An age as a number in ``[0, limit]``: none, negative or NaN count as zero, so an odd store
    clock can delay a verdict but never hasten it."""
    if age is None or not age > 0:
        return 0.0
    return min(age, limit)


class StoreHealth:
    """Whether one node's calls to the store succeed, logged once per change.

    Each kind of call that retries (the heartbeat, the watch) reports its failures with
    :meth:`failed` and its successes with :meth:`reached`. The first failure while all was well
    logs one WARNING (``store_unreachable``, saying what failed and why); later failures log at
    DEBUG; once no kind of call is failing any more and one has succeeded, one WARNING says the
    store answers again (``store_reachable``, with the outage's length on this node's clock).
    A kind of call that stops without an outcome (a watch retargeted, a one-off withdrawal)
    reports :meth:`stopped`: it no longer counts as failing, and the next success of another
    ends the outage.
    """

    def __init__(self, node: Node, retry: float) -> None:
        self._node = node
        self._retry = retry
        self._failing: set[str] = set()
        self._since: float | None = None  # when the outage began; None: no outage

    @property
    def unreachable(self) -> bool:
        """Whether an outage is under way (its warning logged, its end not yet)."""
        return self._since is not None

    def failed(self, doing: str, exc: RendezvousError) -> None:
        """A call made while *doing* something failed with *exc*."""
        self._failing.add(doing)
        if self._since is None:
            self._since = self._node.clock()
            self._node.log(
                logging.WARNING, "store_unreachable",
                "node %(node)r cannot use the store while %(doing)s (%(error_type)s: %(error)s); "
                "retrying every %(retry).3g s, and saying once when it answers again",
                doing=doing, error=str(exc), error_type=type(exc).__name__, retry=self._retry)
        else:
            self._node.log(
                logging.DEBUG, "store_still_unreachable",
                "node %(node)r still cannot use the store while %(doing)s (%(error_type)s: "
                "%(error)s)",
                doing=doing, error=str(exc), error_type=type(exc).__name__)

    def reached(self, doing: str) -> None:
        """A call made while *doing* something succeeded."""
        self._failing.discard(doing)
        if self._since is not None and not self._failing:
            outage = self._node.clock() - self._since
            self._since = None
            self._node.log(
                logging.WARNING, "store_reachable",
                "the store answers node %(node)r again, after %(outage).3g s of failures",
                outage=outage)

    def stopped(self, doing: str) -> None:
        """Calls made while *doing* something stopped, neither failing nor succeeding."""
        self._failing.discard(doing)


_BEATING = "refreshing its record"
_WATCH = "watching another node's record"


class Liveness:
    """The heartbeat and the watch of one node (see the module docstring)."""

    def __init__(self, node: Node, interval: float, timeout: float) -> None:
        self._node = node
        self.interval = interval
        self.timeout = timeout
        #: The value of this node's record: which process wrote it, so that a record left by a
        #: reply that was lost is recognised as ours and one of another process is not.
        self.owner = os.urandom(8).hex().encode()
        #: This node's record as last written, or ``None`` when it has none.
        self.member: Member | None = None
        self._written_at = -math.inf
        self._lock: anyio.Lock | None = None
        self._target: _Target | None = None
        self._retarget: anyio.Event | None = None
        self._has_member: anyio.Event | None = None
        self._watch_scope: anyio.CancelScope | None = None
        self._running = False
        #: One warning per outage of the store, one when it ends.
        self.health = StoreHealth(node, interval)

    @property
    def lock(self) -> anyio.Lock:
        """Serialises this node's own writes of its record (joins, heartbeats, withdrawals)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    def wrote(self, member: Member) -> None:
        """Note that this node's record now is *member* (just put or touched)."""
        self.member = member
        self._written_at = self._node.clock()
        if self._has_member is not None:
            self._has_member.set()

    async def drop_record(self) -> str | None:
        """Delete this node's record, whatever version it is at (re-read: a write whose reply was
        lost counts); return the group it was in, or ``None`` if there was none."""
        table, node = self._node.table, self._node.id
        self.watch(None)
        async with self.lock:
            self.member = None
            current = await table.get(node)
            while current is not None and current.value == self.owner:
                if await table.delete(node, current.version):
                    return current.group
                current = await table.get(node)
        return None

    # -- what the watch follows ------------------------------------------------------------------

    def watch(self, target: _Target | None) -> None:
        """Follow *target* from now on (``None``: nothing)."""
        if target == self._target:
            return
        self._target = target
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        if self._retarget is not None:
            self._retarget.set()

    def watch_round(self, info: RendezvousInfo) -> None:
        """Follow the participant after this node in rank order, in the round *info*."""
        size = len(info.participants)
        if size < 2:
            self.watch(None)
            return
        successor = info.participants[(info.rank + 1) % size]
        self.watch((info.incarnation, info.round, group_name(info.incarnation, info.round),
                    successor))

    def watch_for_waiter(self, record: RoundRecord) -> None:
        """While this node waits for the round after *record*, follow one of its participants."""
        member = self.member
        spread = member.seq if member is not None else 0
        participant = record.participants[spread % len(record.participants)]
        self.watch((record.incarnation, record.round, record.group, participant))

    # -- the tasks -------------------------------------------------------------------------------

    def start(self, group: TaskGroup) -> None:
        """Run the heartbeat and the watch in *group* (inside the event loop)."""
        self._running = True
        self._retarget = anyio.Event()
        self._has_member = anyio.Event()
        if self.member is not None:
            self._has_member.set()
        group.start_soon(self._beat_loop)
        group.start_soon(self._watch_loop)

    async def _beat_loop(self) -> None:
        clock = self._node.clock
        while True:
            if self.member is None:
                assert self._has_member is not None
                self._has_member = anyio.Event()
                await self._has_member.wait()
                continue
            due = self._written_at + self.interval
            if clock() < due:
                await anyio.sleep(due - clock() + _SLACK)
                continue
            try:
                lost = await self._beat()
            except RendezvousError as exc:
                self.health.failed(_BEATING, exc)
                self._written_at = clock()  # retry after one interval, not at once
                continue
            self.health.reached(_BEATING)
            if lost is not None:
                await self._lost(lost)

    def beat_due(self) -> float | None:
        """When a joining node must refresh its record itself (local monotonic time): ``None``
        when it has none or the background heartbeat runs (outside ``async with``, a node that
        waits in ``next_rendezvous()`` keeps its record alive on its own)."""
        if self._running or self.member is None:
            return None
        return self._written_at + self.interval

    async def beat(self) -> None:
        """Refresh this node's record now if it is due (what the heartbeat task does)."""
        lost = await self._beat()
        if lost is not None:
            await self._lost(lost)

    async def _beat(self) -> Member | None:
        """Touch this node's record; return the record it held if it turned out to be lost."""
        table, node = self._node.table, self._node.id
        async with self.lock:
            member = self.member
            if member is None or self._node.clock() < self._written_at + self.interval:
                return None
            touched = await table.touch(node, member.version)
            if touched is None:
                # Not current: maybe an earlier touch applied although its reply was lost.
                current = await table.get(node)
                if current is None or current.value != self.owner:
                    self.member = None
                    return member
                touched = await table.touch(node, current.version)
                if touched is None:
                    return None  # changed again meanwhile: the next beat looks again
            self.wrote(touched)
            return None

    async def _lost(self, member: Member) -> None:
        """This node's record was deleted or taken over: it was evicted (a freeze, a partition).
        A round it holds is over; make sure the others know."""
        me = self._node
        me.log(logging.WARNING, "record_lost",
               "node %(node)r lost its record in group %(group)s: it was evicted (silent for "
               "longer than heartbeat_timeout, %(timeout)g s, as the others saw it)",
               group=member.group, timeout=self.timeout)
        info = me.info
        if info is not None:
            me.info = None
            await me.end_round_of(info, "this node was evicted from it")

    async def _watch_loop(self) -> None:
        while True:
            target = self._target
            if target is None:
                assert self._retarget is not None
                self.health.stopped(_WATCH)
                self._retarget = anyio.Event()
                if self._target is None:
                    await self._retarget.wait()
                continue
            with anyio.CancelScope() as scope:
                self._watch_scope = scope
                try:
                    await self._follow(*target)
                except RendezvousError as exc:
                    self.health.failed(_WATCH, exc)
                    await anyio.sleep(self.interval)
                    continue
                if self._target == target:
                    self._target = None  # verdict given: nothing left to follow
            self._watch_scope = None

    async def _follow(self, incarnation: str, round: int, group: str, node: str) -> None:
        """Return once *node* is gone from *group* or proven dead, its round ended."""
        me = self._node
        table, clock, timeout = me.table, me.clock, self.timeout
        me.log(logging.DEBUG, "watch_started",
               "node %(node)r watches %(watched)r in round %(round)d", watched=node, round=round)
        if table.has_clock:
            # The watched node was alive a moment ago (it is in the round this node just got),
            # and the record's age will say how long it has been silent whenever it is read: the
            # first read can wait, spread over most of a heartbeat, rather than add N reads to
            # the moment a round forms. A verdict is not delayed (it is timed by the age).
            await anyio.sleep(self.interval * (0.5 + random.random() / 2))
        member = await table.get(node)
        self.health.reached(_WATCH)
        first_seen = read_at = clock()
        age = None if member is None else member.age
        if not table.has_clock and member is not None:
            # The silence counts from this read; the store's push of the record's changes can be
            # set up a little later, spread over the first part of a heartbeat, rather than add N
            # subscriptions to the moment a round forms (a change meanwhile is still seen: the
            # wait's first look compares the version).
            await anyio.sleep(min(self.interval / 2, timeout / 4) * random.random())
        while member is not None and member.group == group:
            if table.has_clock:
                # When the record expires by the store's clock, and at most `timeout` after this
                # node first saw it at this version by its own.
                deadline = min(read_at + timeout - _clamped(age, timeout), first_seen + timeout)
                await anyio.sleep(max(deadline - clock(), 0.0) + _SLACK)
                seen = await table.get(node)
                self.health.reached(_WATCH)
                read_at = clock()
                if seen is not None and seen.version == member.version:
                    age = seen.age
                    if (age is not None and age > timeout) or read_at - first_seen >= timeout:
                        silence = age if age is not None and age > timeout else read_at - first_seen
                        if await self._evict(member, round, silence):
                            break
                        seen = await table.get(node)
                        read_at = clock()
                    else:
                        continue
                member, first_seen = seen, read_at
                age = None if seen is None else seen.age
            else:
                changed = await table.wait_for_change(
                    node, member.version, timeout=max(first_seen + timeout - clock(), 0.0)
                )
                self.health.reached(_WATCH)
                if not changed and await self._evict(member, round, clock() - first_seen):
                    break
                member = await table.get(node)
                first_seen = read_at = clock()
        await me.end_round(await me.read(), incarnation, round, f"participant {node!r} is gone")

    async def _evict(self, member: Member, round: int, silence: float) -> bool:
        """Delete *member*'s record if still at the version that went silent."""
        if not await self._node.table.delete(member.node, member.version):
            return False  # refreshed at the last moment: alive after all
        self._node.log(
            logging.INFO, "node_evicted",
            "node %(node)r evicted %(evicted)r from round %(round)d: its record was silent for "
            "%(silence).3g s (heartbeat_timeout %(timeout)g s)",
            evicted=member.node, round=round, silence=silence, timeout=self.timeout)
        return True
