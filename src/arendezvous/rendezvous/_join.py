"""Joining a round and withdrawing from it: what a node writes to get into a round and out.

:class:`Joiner` carries one node through ``next_rendezvous()``: it enters the open round's group
(waiting out a dead process that left a record under the same id, refusing a live one), starts
and times the last call, completes the round with its live joiners, and hands back the node's
place; a node whose round another participant ended before it read it complete still learns its
place from the next record's ``previous`` (the late-reader rule). A node waiting for the next
round parks in its group until the complete round has room or ends. Withdrawing undoes a join
(the node's member record, its place in a round, the "nodes waiting" flag), and deletes a closed
run when asked to and the node was the last to leave it.

It works on the node's shared core (:class:`._node.Node`) and its liveness
(:class:`._liveness.Liveness`: the member record it writes, the watch it points); the public
handle (:mod:`._handler`) checks the arguments and calls it.
"""

from __future__ import annotations

import logging
import math

import anyio

from .._errors import (
    DuplicateNodeError,
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousTimeoutError,
)
from .._members import Member
from ._info import RendezvousInfo
from ._liveness import Liveness
from ._node import Node, View
from ._record import RoundRecord, group_name

__all__ = ("Joiner",)

# The node that started the last call completes the round when it is due: it learnt of the last
# call first (from its own write), so its deadline is the earliest. Every other joiner, which
# learnt of it from a change notice a little later, waits a grace period longer, and then a few
# milliseconds more by arrival, so that they do not all race the same compare-and-swap when the
# node that started it is gone. The grace covers the starter's two calls (list the joiners,
# complete the round) on a loaded store.
_GRACE = 0.025
_STAGGER = 0.005
_STAGGER_STEPS = 5

# Wake a little after a deadline rather than a little before it: timers may fire early by up to
# the clock's resolution, and an early wake-up would only find nothing to do and wait again.
_SLACK = 0.001

# A put of the node's own record that keeps losing (its record replaced again and again) gives up
# after this many attempts instead of spinning.
_PUT_ATTEMPTS = 64


def _phase(record: RoundRecord, paused: bool) -> str:
    """What a joining node waits for in *record*, in words (for the DEBUG log)."""
    if not record.complete:
        return "last call running" if record.last_call else "open"
    return "waiting for room in the full round" if paused else "waiting for the next round"


class Joiner:
    """One node's joins and withdrawals (see the module docstring), with the settings they need.

    :param node: the node's shared core.
    :param liveness: the node's heartbeat and watch.
    :param min_nodes, max_nodes, last_call, join_timeout, delete_when_closed: as
        :class:`~arendezvous.rendezvous.AsyncRendezvous` takes them (already checked).
    """

    def __init__(
        self,
        node: Node,
        liveness: Liveness,
        *,
        min_nodes: int,
        max_nodes: int,
        last_call: float,
        join_timeout: float,
        delete_when_closed: bool,
    ) -> None:
        self._node = node
        self._liveness = liveness
        self.min_nodes = min_nodes
        self.max_nodes = max_nodes
        self._last_call = last_call
        self._join_timeout = join_timeout
        self._delete_when_closed = delete_when_closed
        # The largest size each group was seen to reach (puts and counts), and this node's
        # arrival position in it (the size its own put returned).
        self._sizes: dict[str, int] = {}
        self._positions: dict[str, int] = {}
        # When this node first saw the open round's last call running: (group, local time), the
        # group whose last call this node started, and the group whose last call it found with
        # too few live joiners.
        self._last_call_seen: tuple[str, float] | None = None
        self._last_call_started: str | None = None
        self._last_call_failed: str | None = None

    # -- the node's member record ----------------------------------------------------------------

    def _stale(self, member: Member) -> bool:
        """Whether the store's clock says *member* has been silent past the heartbeat timeout."""
        return member.age is not None and member.age > self._liveness.timeout

    async def _enter(self, group: str) -> int:
        """Put this node's record into *group* (if it is not there yet); return the largest size
        of the group this node knows."""
        table, node, liveness = self._node.table, self._node.id, self._liveness
        async with liveness.lock:
            member = liveness.member
            if member is not None and member.group == group:
                return self._sizes.get(group, 0)
            for _ in range(_PUT_ATTEMPTS):
                version = None if member is None else member.version
                put = await table.put(node, group, liveness.owner, version)
                if put.written:
                    assert put.member is not None
                    liveness.wrote(put.member)
                    self._positions[group] = put.group_size
                    self._sizes[group] = max(self._sizes.get(group, 0), put.group_size)
                    self._node.log(logging.DEBUG, "group_joined",
                                   "node %(node)r joined group %(group)s as number %(position)d",
                                   group=group, position=put.group_size)
                    return self._sizes[group]
                self._node.log(logging.DEBUG, "member_write_lost",
                               "node %(node)r lost a write of its member record; it looks again")
                member = put.member
                if member is None or member.value == liveness.owner:
                    continue  # gone (retry a create), or our own write whose reply was lost
                await self._wait_out(member)
            raise RendezvousConnectionError(
                f"node {node!r} could not write its member record: it changed under every one of "
                f"{_PUT_ATTEMPTS} attempts"
            )

    async def _wait_out(self, other: Member) -> None:
        """Another process's record holds this node id: raise if it is alive, return once it is
        proven dead (silent for the heartbeat timeout), so that the caller takes it over."""
        table, liveness = self._node.table, self._liveness
        node, clock = self._node.id, self._node.clock
        timeout = liveness.timeout
        started = clock()
        if table.has_clock:
            first_age = other.age if other.age is not None and other.age > 0 else 0.0
            while True:
                silent = first_age + (clock() - started)
                if silent > timeout:
                    self._log_takeover(silent)
                    return
                # A live node with our settings refreshes within one heartbeat of its last write:
                # look then, and again when the record would be past the timeout.
                due = liveness.interval - silent if silent < liveness.interval else timeout - silent
                await anyio.sleep(max(due, 0.0) + liveness.interval / 10 + _SLACK)
                seen = await table.get(node)
                if seen is None or seen.value == liveness.owner or self._stale(seen):
                    return
                if seen.version != other.version:
                    break
        else:
            if not await table.wait_for_change(node, other.version, timeout=timeout):
                self._log_takeover(timeout)
                return
            seen = await table.get(node)
            if seen is None or seen.value == liveness.owner:
                return
        raise DuplicateNodeError(
            node,
            f"its record was refreshed {clock() - started:.3g} s after this node found it; "
            "give every node a unique id (two processes started with the same id?)",
        )

    def _log_takeover(self, silence: float) -> None:
        self._node.log(logging.INFO, "record_taken_over",
                       "node %(node)r takes over the record of its id, left by a process silent "
                       "for %(silence).3g s", silence=silence)

    # -- joining ---------------------------------------------------------------------------------

    async def join(self) -> RendezvousInfo:
        """Join rounds until one including this node completes (see ``next_rendezvous()``);
        return this node's place in it. The caller withdraws the node if this raises."""
        node = self._node.id
        clock = self._node.clock
        deadline = clock() + self._join_timeout
        paused = False  # parked in a full round: PyTorch does not time out redundant nodes
        joined: str | None = None  # the group of the open round this call joined
        self._liveness.watch(None)
        self._node.log(logging.DEBUG, "join_started",
                       "node %(node)r joins (min_nodes %(min_nodes)d, max_nodes %(max_nodes)d)",
                       min_nodes=self.min_nodes, max_nodes=self.max_nodes)
        view = await self._node.read()
        record = view.record
        if record is not None and record.complete and self._holds(record):
            view = await self._node.end_round(view, record.incarnation, record.round,
                                              "a participant asked for a new round")
        while True:
            if view.record is None:
                view = await self._node.create()
                continue
            record = view.record
            if record.closed:
                raise RendezvousClosedError(f"the rendezvous run is closed (node {node!r})")
            if record.complete and self._holds(record):
                info = RendezvousInfo(node, record.round, record.rank_of(node),
                                      record.participants, record.incarnation)
                return self._formed(info)
            if joined is not None and self._ended_with(record, joined):
                # This node's round completed and another participant ended it before this node
                # read it: it still learns its place (and then that the round has ended).
                info = RendezvousInfo(node, record.round - 1, record.previous.index(node),
                                      record.previous, record.incarnation)
                return self._formed(info)
            if record.complete:
                await self._enter(record.next_group)
                full = len(record.participants) >= self.max_nodes
                self._liveness.watch_for_waiter(record)
                if not full and not record.waiting:
                    view, _ = await self._node.write(view, record.with_waiting(True))
                    continue
                if full != paused:
                    paused = full
                    deadline = clock() + self._join_timeout
            else:
                size = await self._enter(record.group)
                joined = record.group
                self._liveness.watch(None)
                advanced = await self._advance(view, size)
                if advanced is not None:
                    view = advanced
                    continue
            now = clock()
            if not paused and now >= deadline:
                raise RendezvousTimeoutError(
                    f"node {node!r} found no complete round within {self._join_timeout:g} s"
                )
            wait = math.inf if paused else deadline - now
            due = self.last_call_due(record)
            if due is not None:
                wait = min(wait, due - now)
            beat = self._liveness.beat_due()
            if beat is not None:
                wait = min(wait, beat - now)
            self._node.log(logging.DEBUG, "waiting",
                           "node %(node)r waits up to %(seconds).3g s for round %(round)d to "
                           "change (%(phase)s)", seconds=max(wait, 0.0), round=record.round,
                           phase=_phase(record, paused))
            changed = await self._node.register.wait_for_change(
                view.token, timeout=None if wait == math.inf else max(wait, 0.0) + _SLACK
            )
            if changed is not None:
                view = self._node.adopt(changed)
            elif beat is not None and clock() >= beat:
                await self._liveness.beat()

    def _formed(self, info: RendezvousInfo) -> RendezvousInfo:
        self._node.log(logging.INFO, "round_formed",
                       "node %(node)r is rank %(rank)d of world size %(world_size)d in round "
                       "%(round)d", round=info.round, rank=info.rank, world_size=info.world_size,
                       round_id=info.round_id)
        return info

    def _ended_with(self, record: RoundRecord, joined: str) -> bool:
        """Whether *record* opened right after the round of group *joined* completed with this
        node (this process: its member record is still in that group, put before the round was
        completed)."""
        member = self._liveness.member
        return (
            not record.complete
            and self._node.id in record.previous
            and joined == group_name(record.incarnation, record.round - 1)
            and member is not None
            and member.group == joined
            and member.seq <= record.previous_seq
        )

    def _holds(self, record: RoundRecord) -> bool:
        """Whether this node (this process, not merely this id) is a participant of *record*'s
        round: listed, and its own member record is in the round's group, put no later than the
        records the round was completed with (a process that took over the id of a dead
        participant afterwards is not that participant)."""
        member = self._liveness.member
        return (
            self._node.id in record.participants
            and member is not None
            and member.group == record.group
            and member.seq <= record.seq
        )

    def last_call_due(self, record: RoundRecord) -> float | None:
        """When this node completes the open round's running last call (local monotonic time):
        the last call from when it first saw it running; for any node but the one that started
        it, plus a grace period and a stagger by arrival. ``None`` when no last call runs, or
        when this node's own try found too few live joiners (a node that arrives later times a
        last call of its own)."""
        if record.complete or not record.last_call or self._last_call_failed == record.group:
            return None
        seen = self._last_call_seen
        if seen is None or seen[0] != record.group:
            seen = self._last_call_seen = (record.group, self._node.clock())
        if self._last_call_started == record.group:
            return seen[1] + self._last_call
        position = self._positions.get(record.group, _STAGGER_STEPS + 1)
        return seen[1] + self._last_call + _GRACE + min(position - 1, _STAGGER_STEPS) * _STAGGER

    async def _advance(self, view: View, size: int) -> View | None:
        """What this joiner of the open round must write now, if anything; the resulting view,
        or ``None`` when there is nothing to do but wait."""
        record = view.record
        assert record is not None
        if size >= self.max_nodes or (self._last_call == 0 and size >= self.min_nodes):
            return await self._complete(view, expired=self._last_call == 0)
        if record.last_call:
            due = self.last_call_due(record)
            if due is None or self._node.clock() < due:
                return None
            completed = await self._complete(view, expired=True)
            if completed is None:
                self._last_call_failed = record.group
            return completed
        if size >= self.min_nodes:
            view, written = await self._node.write(view, record.with_last_call(True))
            if written:
                self._last_call_seen = (record.group, self._node.clock())
                self._last_call_started = record.group
                self._node.log(logging.DEBUG, "last_call_started",
                               "node %(node)r started the last call of round %(round)d "
                               "(%(seconds)g s)", round=record.round, seconds=self._last_call)
            return view
        return None

    async def _complete(self, view: View, *, expired: bool) -> View | None:
        """Complete the open round with its live joiners, if there are enough (``max_nodes``, or
        ``min_nodes`` once the last call has *expired*). ``None`` when nothing was written."""
        record = view.record
        assert record is not None
        listed = await self._node.table.members(record.group)
        live: list[Member] = []
        for member in listed:
            if member.node != self._node.id and self._stale(member):
                # Silent past the timeout by the store's clock: it will never complete a round.
                if await self._node.table.delete(member.node, member.version):
                    self._node.log(logging.INFO, "node_evicted",
                                   "node %(node)r evicted %(evicted)r from round %(round)d: its "
                                   "record was silent for %(silence).3g s while it joined",
                                   evicted=member.node, round=record.round, silence=member.age)
            else:
                live.append(member)
        self._sizes[record.group] = len(live)
        if len(live) >= self.max_nodes or (expired and len(live) >= self.min_nodes):
            chosen = live[: self.max_nodes]
            new_view, written = await self._node.write(
                view, record.completed(tuple(member.node for member in chosen),
                                       max(member.seq for member in chosen))
            )
            if written:
                self._node.log(logging.DEBUG, "round_completed",
                               "node %(node)r completed round %(round)d with %(world_size)d of "
                               "%(live)d live joiners", round=record.round, world_size=len(chosen),
                               live=len(live))
            return new_view
        return None

    async def withdraw(self) -> None:
        """Remove this node: its record (re-read, so a write whose reply was lost is undone too)
        and its place in any round, fencing off anyone completing the round it was joining."""
        left = await self._liveness.drop_record()
        view = await self._node.read()
        while True:
            record = view.record
            if record is None:
                return
            if record.closed:
                if self._delete_when_closed:
                    await self._delete_if_last(record)
                return
            if record.complete and self._node.id in record.participants and left == record.group:
                await self._node.end_round(view, record.incarnation, record.round,
                                           "a participant left")
                return
            if not record.complete and left == record.group:
                # A node completing this round may have listed this node before it left; a write
                # of the record makes that node's compare-and-swap fail and list again.
                view, written = await self._node.write(view, record)
                if written:
                    return
                continue
            if (
                record.complete
                and record.waiting
                and left == record.next_group
                and await self._node.table.count(record.next_group) == 0
            ):
                # The last node waiting for the next round gave up: the round is not disturbed.
                view, written = await self._node.write(view, record.with_waiting(False))
                if not written:
                    continue
            return

    async def _delete_if_last(self, record: RoundRecord) -> None:
        """The run is closed and this node has left it: delete the run if nobody is left in it
        (see ``delete_when_closed``)."""
        table = self._node.table
        if await table.count(record.group) or await table.count(record.next_group):
            return  # the last of them deletes it
        try:
            deleted = await self._node.backend.delete_run()
        except NotImplementedError:
            self._node.log(logging.DEBUG, "delete_unsupported",
                           "node %(node)r leaves the closed run in the store: %(backend)s cannot "
                           "delete runs", backend=type(self._node.backend).__name__)
            return
        except RendezvousError as exc:
            # Best effort: this node has left whatever happens, and the run stays closed.
            self._node.log(logging.WARNING, "delete_failed",
                           "node %(node)r could not delete the closed run (%(error_type)s: "
                           "%(error)s); arendezvous delete removes it",
                           error=str(exc), error_type=type(exc).__name__)
            return
        if deleted:
            self._node.log(logging.INFO, "run_deleted",
                           "node %(node)r deleted the run: it was closed and this node was the "
                           "last to leave it")

    async def withdraw_quietly(self) -> None:
        """:meth:`withdraw`, shielded from cancellation and bounded by the heartbeat timeout; if
        the store fails, the failure is logged and the node's record is left to expire."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._liveness.timeout):
            try:
                await self.withdraw()
            except RendezvousError as exc:
                self._liveness.health.failed("leaving (its record will expire)", exc)
                self._liveness.health.stopped("leaving (its record will expire)")
