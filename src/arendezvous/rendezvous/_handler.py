"""``AsyncRendezvous``: who is in this round, my rank, the world size; a new round when it changes.

The protocol, its costs and where it departs from PyTorch are in the package docstring
(:mod:`arendezvous.rendezvous`). This module is the node's side of it: joining, waiting for the
round's end, leaving and closing; :mod:`._liveness` keeps the node's record alive and watches
another node's.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass
from enum import Enum
from itertools import count
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._backend import AsyncRendezvousBackend, Token
from .._emulated import emulate_member_table
from .._errors import (
    DuplicateNodeError,
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousTimeoutError,
)
from .._log import log_event
from .._members import Member, MemberTable, check_node
from ._liveness import Liveness
from ._record import RoundRecord, decode_record, encode_record, group_name
from ._status import RunStatus, close_register, run_id_of, status_of

__all__ = ("AsyncRendezvous", "Progress", "RendezvousInfo", "RoundEnd", "default_node_id")

logger = logging.getLogger("arendezvous.rendezvous")
"""Where the rendezvous logs (see :meth:`AsyncRendezvous._log`): INFO for what an operator
follows (rounds formed and ended, evictions, the run closed or deleted), WARNING for what needs
attention (an unreachable store, once per outage; a node evicted), DEBUG for the steps between."""

_node_counter = count()

# Several nodes may find the same last call due at once; the first to arrive at the round wakes
# on time and the next ones a few milliseconds apart (the rest are woken by its write).
_STAGGER = 0.005
_STAGGER_STEPS = 10

# Wake a little after a deadline rather than a little before it: timers may fire early by up to
# the clock's resolution, and an early wake-up would only find nothing to do and wait again.
_SLACK = 0.001

# A put of the node's own record that keeps losing (its record replaced again and again) gives up
# after this many attempts instead of spinning.
_PUT_ATTEMPTS = 64


def default_node_id() -> str:
    """A node id unique on this machine: ``<hostname>_<pid>_<counter>`` (PyTorch's scheme)."""
    return f"{socket.gethostname()}_{os.getpid()}_{next(_node_counter)}"


@dataclass(frozen=True)
class RendezvousInfo:
    """A completed round, as every participant sees it.

    :ivar node: this node's id.
    :ivar round: the round number; it grows with every round of the run's record, and a node that
        recreates a lost record continues from the highest round it saw.
    :ivar rank: this node's rank, ``0 <= rank < world_size``.
    :ivar participants: every participant's node id in rank order (sorted by node id), the
        same tuple on every node of the round.
    :ivar incarnation: the random id of the run's round record, drawn when the record was
        created; ``(incarnation, round)`` -- :attr:`round_id` -- never repeats within a run,
        even if the store loses its data and the record is created again.
    """

    node: str
    round: int
    rank: int
    participants: tuple[str, ...]
    incarnation: str = ""

    @property
    def world_size(self) -> int:
        """How many nodes are in the round."""
        return len(self.participants)

    @property
    def round_id(self) -> str:
        """``"<incarnation>/<round>"``: unique to this round within the run, forever."""
        return f"{self.incarnation}/{self.round}"


@dataclass(frozen=True)
class Progress:
    """How a join is going, as :meth:`AsyncRendezvous.progress` sees it (for an orchestrator to
    show while ``next_rendezvous()`` waits).

    :ivar status: the run as the store holds it (see :class:`~arendezvous.rendezvous.RunStatus`).
    :ivar joined: the nodes in the round being formed (or the complete round's participants).
    :ivar missing: how many more nodes the open round needs before it can complete
        (``min_nodes`` minus those joined, at least 0; 0 once complete).
    :ivar last_call_left: seconds left in the running last call, as this node times it on its own
        clock; ``None`` when no last call runs (or this node has not seen it start).
    """

    status: RunStatus
    joined: tuple[str, ...]
    missing: int
    last_call_left: float | None


class RoundEnd(Enum):
    """Why :meth:`AsyncRendezvous.wait_for_round_end` returned."""

    NODES_WAITING = "nodes_waiting"
    """Nodes are waiting to join: call ``next_rendezvous()`` to start a round that includes them."""
    RESTARTED = "restarted"
    """The round is over (a participant left, was evicted, or started the next round)."""
    CLOSED = "closed"
    """The run was closed."""


@dataclass(frozen=True)
class _View:
    """The round record this node last saw, and the token it was stored under."""

    record: RoundRecord | None
    token: Token | None


_EMPTY = _View(None, None)


def _phase(record: RoundRecord, paused: bool) -> str:
    """What a joining node waits for in *record*, in words (for the DEBUG log)."""
    if not record.complete:
        return "last call running" if record.last_call else "open"
    return "waiting for room in the full round" if paused else "waiting for the next round"


class AsyncRendezvous:
    """One node's handle on a run's rendezvous, over any backend (:mod:`arendezvous.rendezvous`).

    Use it as an async context manager: that keeps the node's member record alive (its
    heartbeat) and watches one other node's in background tasks, and leaves the rendezvous on
    exit::

        async with open_backend(url, run_id="job-42") as backend:
            async with AsyncRendezvous(backend, "node-a", min_nodes=2, max_nodes=4,
                                       last_call=1.0) as rendezvous:
                while True:
                    info = await rendezvous.next_rendezvous()
                    async with anyio.create_task_group() as group:
                        group.start_soon(train, info.rank, info.world_size)
                        reason = await rendezvous.wait_for_round_end()
                        group.cancel_scope.cancel()
                    if reason is RoundEnd.CLOSED:
                        break

    :param backend: the run's store; the rendezvous borrows it (closing it is the caller's job).
        A backend with a member table (every bundled one) gives the O(1) protocol; any other
        keeps the member records inside its one blob.
    :param node: this node's id, unique among the run's live nodes (:func:`default_node_id`
        makes one); a live duplicate raises :class:`~arendezvous.DuplicateNodeError`.
    :param min_nodes: the fewest participants a round may complete with.
    :param max_nodes: a round completes at once when this many have joined.
    :param last_call: seconds a round stays open for more nodes once ``min_nodes`` have joined,
        timed by each node on its own monotonic clock from when it saw the last call start.
    :param join_timeout: seconds :meth:`next_rendezvous` may take before it gives up.
    :param heartbeat: seconds between refreshes of this node's member record.
    :param heartbeat_timeout: a node whose record has not been refreshed for this long is
        evicted (default: three heartbeats, as PyTorch's ``keep_alive_max_attempt``).
    :param delete_when_closed: once the run is closed, the last node to leave it deletes it
        (``backend.delete_run()``: its state and every member record), so that a finished job
        leaves nothing in the store. "Last" means no node is left in the closed round or waiting
        for the next one when this node has removed its own record; two nodes leaving at once
        may both try, which is harmless. The cost: the run is gone, closed flag included, so a
        node that comes back later (a restarted process, a straggler that had not yet seen the
        run closed) finds no run and starts a new one, whose rounds it then waits for instead
        of being told the run is closed. A backend that cannot delete runs is left as it is
        (logged at DEBUG). Default: ``False``, the run stays, closed.

    One handle serves one node; its methods may be called from several tasks of one event loop,
    but only one :meth:`next_rendezvous` at a time.
    """

    def __init__(
        self,
        backend: AsyncRendezvousBackend,
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
        if not isinstance(backend, AsyncRendezvousBackend):
            raise TypeError(
                f"backend must be an AsyncRendezvousBackend, not {type(backend).__name__}"
            )
        self._node = check_node(node)
        for name, value in (("min_nodes", min_nodes), ("max_nodes", max_nodes)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 1 <= min_nodes <= max_nodes:
            raise ValueError("need 1 <= min_nodes <= max_nodes")
        if heartbeat_timeout is None:
            heartbeat_timeout = 3 * heartbeat
        for name, seconds, zero_allowed in (
            ("last_call", last_call, True),
            ("join_timeout", join_timeout, False),
            ("heartbeat", heartbeat, False),
            ("heartbeat_timeout", heartbeat_timeout, False),
        ):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise TypeError(f"{name} must be a number of seconds")
            if not (seconds >= 0 if zero_allowed else seconds > 0) or seconds == math.inf:
                kind = "non-negative" if zero_allowed else "positive"
                raise ValueError(f"{name} must be a finite, {kind} number of seconds")
        if heartbeat < 0.001:
            raise ValueError("heartbeat must be at least 1 ms")
        if heartbeat_timeout <= heartbeat:
            raise ValueError("heartbeat_timeout must be longer than heartbeat")
        if not isinstance(delete_when_closed, bool):
            raise TypeError("delete_when_closed must be True or False")
        self._backend = backend
        self._delete_when_closed = delete_when_closed
        self._run_id = run_id_of(backend)
        table = backend.member_table()
        if table is None:
            self._register, self._table = emulate_member_table(backend)
        else:
            self._register, self._table = backend, table
        self._min_nodes = min_nodes
        self._max_nodes = max_nodes
        self._last_call = float(last_call)
        self._join_timeout = float(join_timeout)
        self._liveness = Liveness(self, float(heartbeat), float(heartbeat_timeout))
        self._view: _View | None = None
        self._info: RendezvousInfo | None = None
        self._joining = False
        self._highest_round = -1
        # The largest size each group was seen to reach (puts and counts), and this node's
        # arrival position in it (the size its own put returned).
        self._sizes: dict[str, int] = {}
        self._positions: dict[str, int] = {}
        # When this node first saw the open round's last call running: (group, local time), and
        # the group whose last call it found with too few live joiners.
        self._last_call_seen: tuple[str, float] | None = None
        self._last_call_failed: str | None = None
        self._task_group: TaskGroup | None = None

    # -- properties ------------------------------------------------------------------------------

    @property
    def backend(self) -> AsyncRendezvousBackend:
        """The store the rendezvous runs on."""
        return self._backend

    @property
    def node(self) -> str:
        """This node's id."""
        return self._node

    @property
    def min_nodes(self) -> int:
        """The fewest participants a round may complete with."""
        return self._min_nodes

    @property
    def max_nodes(self) -> int:
        """The most participants a round may have."""
        return self._max_nodes

    @property
    def info(self) -> RendezvousInfo | None:
        """The round :meth:`next_rendezvous` last returned, until the node leaves; else ``None``."""
        return self._info

    @property
    def member_table(self) -> MemberTable:
        """Where the nodes' records live: the backend's own table, or one emulated in its blob."""
        return self._table

    def __repr__(self) -> str:
        return (
            f"AsyncRendezvous({self._backend!r}, node={self._node!r}, "
            f"min_nodes={self._min_nodes}, max_nodes={self._max_nodes})"
        )

    # -- the round record ------------------------------------------------------------------------

    def _clock(self) -> float:
        """This node's monotonic clock: the only clock it reads. Never compared with another
        node's; replaced in tests to show that offsets between nodes change nothing."""
        return anyio.current_time()

    def _log(self, level: int, event: str, sentence: str, **facts: Any) -> None:
        """Log *event* under ``arendezvous.rendezvous`` with this node's id and run id as facts
        (see :func:`arendezvous._log.log_event`)."""
        log_event(logger, level, event, sentence, stacklevel=2, node=self._node,
                  run_id=self._run_id, **facts)

    def _adopt(self, current: tuple[bytes, Token] | None) -> _View:
        view = _EMPTY if current is None else _View(decode_record(current[0]), current[1])
        if view.record is not None:
            self._highest_round = max(self._highest_round, view.record.round)
        self._view = view
        return view

    async def _read(self) -> _View:
        return self._adopt(await self._register.get_state())

    async def _write(self, view: _View, new: RoundRecord) -> tuple[_View, bool]:
        """Compare-and-swap *new* over *view*; on a lost race return the store's current view."""
        state, token, written = await self._register.set_state(encode_record(new), view.token)
        if written:
            return self._adopt((state, token)), True
        self._log(logging.DEBUG, "cas_lost",
                  "node %(node)r lost a write of the round record to another node's")
        return self._adopt(None if token is None else (state, token)), False

    async def _create(self) -> _View:
        """Create the run's record (after a store lost it, numbering on from the highest round
        this node saw)."""
        view, _ = await self._write(_EMPTY, RoundRecord.new(self._highest_round + 1))
        return view

    async def _end_round(self, view: _View, incarnation: str, round: int, reason: str) -> _View:
        """End round *round* of *incarnation* if the record still holds it complete; *reason*
        says why, for the log."""
        while True:
            record = view.record
            if (
                record is None
                or record.closed
                or not record.complete
                or (record.incarnation, record.round) != (incarnation, round)
            ):
                return view
            view, written = await self._write(view, record.ended())
            if written:
                self._log(logging.INFO, "round_ended",
                          "node %(node)r ended round %(round)d (%(reason)s); round %(next)d opens",
                          round=round, next=round + 1, reason=reason)

    async def _end_round_of(self, info: RendezvousInfo, reason: str) -> None:
        await self._end_round(await self._read(), info.incarnation, info.round, reason)

    # -- the node's member record ----------------------------------------------------------------

    def _stale(self, member: Member) -> bool:
        """Whether the store's clock says *member* has been silent past the heartbeat timeout."""
        return member.age is not None and member.age > self._liveness.timeout

    async def _enter(self, group: str) -> int:
        """Put this node's record into *group* (if it is not there yet); return the largest size
        of the group this node knows."""
        table, node, liveness = self._table, self._node, self._liveness
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
                    self._log(logging.DEBUG, "group_joined",
                              "node %(node)r joined group %(group)s as number %(position)d",
                              group=group, position=put.group_size)
                    return self._sizes[group]
                self._log(logging.DEBUG, "member_write_lost",
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
        table, liveness = self._table, self._liveness
        timeout = liveness.timeout
        started = self._clock()
        if table.has_clock:
            first_age = other.age if other.age is not None and other.age > 0 else 0.0
            while True:
                silent = first_age + (self._clock() - started)
                if silent > timeout:
                    self._log_takeover(silent)
                    return
                # A live node with our settings refreshes within one heartbeat of its last write:
                # look then, and again when the record would be past the timeout.
                due = liveness.interval - silent if silent < liveness.interval else timeout - silent
                await anyio.sleep(max(due, 0.0) + liveness.interval / 10 + _SLACK)
                seen = await table.get(self._node)
                if seen is None or seen.value == liveness.owner or self._stale(seen):
                    return
                if seen.version != other.version:
                    break
        else:
            if not await table.wait_for_change(self._node, other.version, timeout=timeout):
                self._log_takeover(timeout)
                return
            seen = await table.get(self._node)
            if seen is None or seen.value == liveness.owner:
                return
        raise DuplicateNodeError(
            self._node,
            f"its record was refreshed {self._clock() - started:.3g} s after this node found it; "
            "give every node a unique id (two processes started with the same id?)",
        )

    def _log_takeover(self, silence: float) -> None:
        self._log(logging.INFO, "record_taken_over",
                  "node %(node)r takes over the record of its id, left by a process silent for "
                  "%(silence).3g s", silence=silence)

    # -- the rendezvous --------------------------------------------------------------------------

    async def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round and wait until it completes; return this node's place in it.

        If this node is a participant of the current complete round, that round ends first:
        calling this means "I need a new round" (after a failure, or because nodes are waiting),
        as in PyTorch, where the round ends once its last participant has called it. Waits only
        on the store's change notifications and on deadlines.

        :raises RendezvousClosedError: the run is closed.
        :raises RendezvousTimeoutError: no round including this node completed within
            ``join_timeout`` (a node in the redundant list of a full round is not timed out until
            the round has room).
        :raises DuplicateNodeError: a live node of the run uses this node id.
        :raises RendezvousStateError: the stored state cannot be decoded.
        :raises RendezvousConnectionError: the store failed.

        Cancellation and errors: the node withdraws in a shielded step bounded by
        ``heartbeat_timeout`` that re-reads what the store holds, so a join whose write applied
        although its reply was lost is undone too; if the node had already been counted into a
        round that completed, it ends that round, so no round completes with a node that does
        not know it is in it. If even the withdrawal fails, the node's record stops being
        refreshed and the others evict it.
        """
        if self._joining:
            raise RuntimeError("next_rendezvous() is already running for this node")
        self._joining = True
        self._info = None
        completed = False
        try:
            info = await self._join()
            completed = True
            self._info = info
            self._liveness.watch_round(info)
            return info
        finally:
            self._joining = False
            if not completed:
                await self._withdraw_quietly()

    async def _join(self) -> RendezvousInfo:
        node = self._node
        clock = self._clock
        deadline = clock() + self._join_timeout
        paused = False  # parked in a full round: PyTorch does not time out redundant nodes
        joined: str | None = None  # the group of the open round this call joined
        self._liveness.watch(None)
        self._log(logging.DEBUG, "join_started",
                  "node %(node)r joins (min_nodes %(min_nodes)d, max_nodes %(max_nodes)d)",
                  min_nodes=self._min_nodes, max_nodes=self._max_nodes)
        view = await self._read()
        record = view.record
        if record is not None and record.complete and self._holds(record):
            view = await self._end_round(view, record.incarnation, record.round,
                                         "a participant asked for a new round")
        while True:
            if view.record is None:
                view = await self._create()
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
                full = len(record.participants) >= self._max_nodes
                self._liveness.watch_for_waiter(record)
                if not full and not record.waiting:
                    view, _ = await self._write(view, record.with_waiting(True))
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
            due = self._last_call_due(record)
            if due is not None:
                wait = min(wait, due - now)
            beat = self._liveness.beat_due()
            if beat is not None:
                wait = min(wait, beat - now)
            self._log(logging.DEBUG, "waiting",
                      "node %(node)r waits up to %(seconds).3g s for round %(round)d to change "
                      "(%(phase)s)", seconds=max(wait, 0.0), round=record.round,
                      phase=_phase(record, paused))
            changed = await self._register.wait_for_change(
                view.token, timeout=None if wait == math.inf else max(wait, 0.0) + _SLACK
            )
            if changed is not None:
                view = self._adopt(changed)
            elif beat is not None and clock() >= beat:
                await self._liveness.beat()

    def _formed(self, info: RendezvousInfo) -> RendezvousInfo:
        self._log(logging.INFO, "round_formed",
                  "node %(node)r is rank %(rank)d of world size %(world_size)d in round "
                  "%(round)d", round=info.round, rank=info.rank, world_size=info.world_size,
                  round_id=info.round_id)
        return info

    def _ended_with(self, record: RoundRecord, joined: str) -> bool:
        """Whether *record* opened right after the round of group *joined* completed with this
        node (this process: its member record is still in that group)."""
        member = self._liveness.member
        return (
            not record.complete
            and self._node in record.previous
            and joined == group_name(record.incarnation, record.round - 1)
            and member is not None
            and member.group == joined
        )

    def _holds(self, record: RoundRecord) -> bool:
        """Whether this node (this process, not merely this id) is a participant of *record*'s
        round: listed, and its own member record is in the round's group."""
        member = self._liveness.member
        return (
            self._node in record.participants
            and member is not None
            and member.group == record.group
        )

    def _last_call_due(self, record: RoundRecord) -> float | None:
        """When this node completes the open round's running last call (local monotonic time):
        the last call from when it first saw it running, plus a stagger by arrival. ``None`` when
        no last call runs, or when this node's own try found too few live joiners (a node that
        arrives later times a last call of its own)."""
        if record.complete or not record.last_call or self._last_call_failed == record.group:
            return None
        seen = self._last_call_seen
        if seen is None or seen[0] != record.group:
            seen = self._last_call_seen = (record.group, self._clock())
        position = self._positions.get(record.group, _STAGGER_STEPS + 1)
        return seen[1] + self._last_call + min(position - 1, _STAGGER_STEPS) * _STAGGER

    async def _advance(self, view: _View, size: int) -> _View | None:
        """What this joiner of the open round must write now, if anything; the resulting view,
        or ``None`` when there is nothing to do but wait."""
        record = view.record
        assert record is not None
        if size >= self._max_nodes or (self._last_call == 0 and size >= self._min_nodes):
            return await self._complete(view, expired=self._last_call == 0)
        if record.last_call:
            due = self._last_call_due(record)
            if due is None or self._clock() < due:
                return None
            completed = await self._complete(view, expired=True)
            if completed is None:
                self._last_call_failed = record.group
            return completed
        if size >= self._min_nodes:
            view, written = await self._write(view, record.with_last_call(True))
            if written:
                self._last_call_seen = (record.group, self._clock())
                self._log(logging.DEBUG, "last_call_started",
                          "node %(node)r started the last call of round %(round)d "
                          "(%(seconds)g s)", round=record.round, seconds=self._last_call)
            return view
        return None

    async def _complete(self, view: _View, *, expired: bool) -> _View | None:
        """Complete the open round with its live joiners, if there are enough (``max_nodes``, or
        ``min_nodes`` once the last call has *expired*). ``None`` when nothing was written."""
        record = view.record
        assert record is not None
        listed = await self._table.members(record.group)
        live: list[Member] = []
        for member in listed:
            if member.node != self._node and self._stale(member):
                # Silent past the timeout by the store's clock: it will never complete a round.
                if await self._table.delete(member.node, member.version):
                    self._log(logging.INFO, "node_evicted",
                              "node %(node)r evicted %(evicted)r from round %(round)d: its "
                              "record was silent for %(silence).3g s while it joined",
                              evicted=member.node, round=record.round, silence=member.age)
            else:
                live.append(member)
        self._sizes[record.group] = len(live)
        if len(live) >= self._max_nodes or (expired and len(live) >= self._min_nodes):
            chosen = tuple(member.node for member in live[: self._max_nodes])
            new_view, written = await self._write(view, record.completed(chosen))
            if written:
                self._log(logging.DEBUG, "round_completed",
                          "node %(node)r completed round %(round)d with %(world_size)d of "
                          "%(live)d live joiners", round=record.round, world_size=len(chosen),
                          live=len(live))
            return new_view
        return None

    async def _withdraw(self) -> None:
        """Remove this node: its record (re-read, so a write whose reply was lost is undone too)
        and its place in any round, fencing off anyone completing the round it was joining."""
        left = await self._liveness.drop_record()
        view = await self._read()
        while True:
            record = view.record
            if record is None:
                return
            if record.closed:
                if self._delete_when_closed:
                    await self._delete_if_last(record)
                return
            if record.complete and self._node in record.participants and left == record.group:
                await self._end_round(view, record.incarnation, record.round,
                                      "a participant left")
                return
            if not record.complete and left == record.group:
                # A node completing this round may have listed this node before it left; a write
                # of the record makes that node's compare-and-swap fail and list again.
                view, written = await self._write(view, record)
                if written:
                    return
                continue
            if (
                record.complete
                and record.waiting
                and left == record.next_group
                and await self._table.count(record.next_group) == 0
            ):
                # The last node waiting for the next round gave up: the round is not disturbed.
                view, written = await self._write(view, record.with_waiting(False))
                if not written:
                    continue
            return

    async def _delete_if_last(self, record: RoundRecord) -> None:
        """The run is closed and this node has left it: delete the run if nobody is left in it
        (see ``delete_when_closed``)."""
        table = self._table
        if await table.count(record.group) or await table.count(record.next_group):
            return  # the last of them deletes it
        try:
            deleted = await self._backend.delete_run()
        except NotImplementedError:
            self._log(logging.DEBUG, "delete_unsupported",
                      "node %(node)r leaves the closed run in the store: %(backend)s cannot "
                      "delete runs", backend=type(self._backend).__name__)
            return
        except RendezvousError as exc:
            # Best effort: this node has left whatever happens, and the run stays closed.
            self._log(logging.WARNING, "delete_failed",
                      "node %(node)r could not delete the closed run (%(error_type)s: "
                      "%(error)s); arendezvous delete removes it",
                      error=str(exc), error_type=type(exc).__name__)
            return
        if deleted:
            self._log(logging.INFO, "run_deleted",
                      "node %(node)r deleted the run: it was closed and this node was the last "
                      "to leave it")

    async def _withdraw_quietly(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._liveness.timeout):
            try:
                await self._withdraw()
            except RendezvousError as exc:
                self._liveness.health.failed("leaving (its record will expire)", exc)
                self._liveness.health.stopped("leaving (its record will expire)")

    async def leave(self) -> None:
        """Leave the rendezvous: this node's record is removed and its heartbeat stops.

        If it was a participant of a complete round, that round ends (the others see
        :attr:`RoundEnd.RESTARTED`). The node may join again later with :meth:`next_rendezvous`.
        Cancellation leaves the node listed or not, never half; a listed node whose record is no
        longer refreshed is evicted in time.
        """
        self._info = None
        await self._withdraw()

    async def close(self) -> None:
        """Close the run for every node: pending and future joins raise RendezvousClosedError.

        A closed run stays closed. Cancellation leaves it closed or not, never half.
        """
        if await close_register(self._register, self._highest_round + 1):
            self._log(logging.INFO, "run_closed", "node %(node)r closed the run")

    async def progress(self) -> Progress:
        """How the run's current round is going: who has joined, how many are missing, the time
        left in its last call (three store reads; writes nothing). Call it from another task
        while :meth:`next_rendezvous` waits, e.g. a few times a second, to show progress
        (``docs/operating.md`` has an orchestrator doing so).
        """
        view = await self._read()
        record = view.record
        status = await status_of(record, self._table)
        joined = tuple(node.node for node in status.participants)
        if record is None or record.complete:
            return Progress(status, joined, 0, None)
        due = self._last_call_due(record)
        left = None if due is None else max(0.0, due - self._clock())
        return Progress(status, joined, max(0, self._min_nodes - len(joined)), left)

    async def is_closed(self) -> bool:
        """Whether the run is closed (reads the store)."""
        record = (await self._read()).record
        return record is not None and record.closed

    async def num_nodes_waiting(self) -> int:
        """How many nodes wait for a round that does not include this node's current one.

        That is the nodes listed for the next round while the current one is complete and has
        room, plus, when the round this node completed is over, the nodes already gathering in
        the next one. A participant seeing a positive number should call :meth:`next_rendezvous`
        (PyTorch's agents poll this; :meth:`wait_for_round_end` awaits it). Nodes parked while
        the round is full are not counted: it has no room for them. One or two store reads.
        """
        record = (await self._read()).record
        if record is None:
            return 0
        if record.complete:
            if len(record.participants) >= self._max_nodes:
                return 0
            return await self._table.count(record.next_group)
        info = self._info
        if info is None or (info.incarnation, info.round) == (record.incarnation, record.round):
            return 0
        gathering = await self._table.count(record.group)
        mine = self._liveness.member
        return gathering - (1 if mine is not None and mine.group == record.group else 0)

    async def wait_for_round_end(self, *, timeout: float | None = None) -> RoundEnd | None:
        """Wait until this node's round should be re-formed; ``None`` if *timeout* passes first.

        Returns :attr:`RoundEnd.NODES_WAITING` when nodes wait to join, :attr:`RoundEnd.RESTARTED`
        when the round is over, :attr:`RoundEnd.CLOSED` when the run is closed. It reads the round
        record once, then only when the store says it changed: a heartbeat changes nothing it
        watches. (Evicting dead nodes is the background watch's job.) Cancelling it changes
        nothing.

        :raises RuntimeError: this node holds no completed round (call :meth:`next_rendezvous`).
        """
        info = self._info
        if info is None:
            raise RuntimeError("wait_for_round_end() needs a round: call next_rendezvous() first")
        with anyio.move_on_after(timeout):
            view = await self._read()
            while True:
                record = view.record
                if record is None or record.incarnation != info.incarnation:
                    return RoundEnd.RESTARTED
                if record.closed:
                    return RoundEnd.CLOSED
                if record.round != info.round or self._node not in record.participants:
                    return RoundEnd.RESTARTED
                if record.waiting:
                    return RoundEnd.NODES_WAITING
                view = self._adopt(await self._register.wait_for_change(view.token))
        return None

    # -- the background tasks --------------------------------------------------------------------

    async def __aenter__(self) -> AsyncRendezvous:
        if self._task_group is not None:
            raise RuntimeError("this AsyncRendezvous is already entered")
        group = anyio.create_task_group()
        await group.__aenter__()
        self._liveness.start(group)
        self._task_group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, self._task_group = self._task_group, None
        assert group is not None
        self._info = None
        try:
            # Leaving first, shielded: a cancelled block still tells the others it is gone.
            await self._withdraw_quietly()
        except BaseException:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
            raise
        group.cancel_scope.cancel()
        # The group must see a cancellation (it may be its own, to absorb), but not the body's
        # other errors, which it would wrap in an ExceptionGroup: a caller catching
        # RendezvousClosedError around the block should catch just that.
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            return await group.__aexit__(exc_type, exc, tb)
        await group.__aexit__(None, None, None)
        return None
