"""``AsyncRendezvous``: who is in this round, my rank, the world size; a new round when it changes.

The semantics are PyTorch's ``DynamicRendezvousHandler`` (``dynamic_rendezvous.py``), built
async-native on any :class:`~arendezvous.AsyncRendezvousBackend`:

* Nodes join the open round until ``max_nodes`` have joined, or until ``last_call`` seconds after
  the ``min_nodes``-th joined; then the round is *complete* and ranks are fixed (participants
  sorted by node id, so every node computes the same order).
* A node arriving while a round is complete waits for the next round: in the *waiting* list if
  the round has room, which tells the participants (:meth:`AsyncRendezvous.num_nodes_waiting`,
  :meth:`AsyncRendezvous.wait_for_round_end`) to start a new one, else in the *redundant* list.
* Every listed node keeps a heartbeat in the state. A node whose heartbeat is older than
  ``heartbeat_timeout`` is evicted by whichever node notices first; evicting, or the leaving of,
  a participant of a complete round ends that round, and a participant calling
  :meth:`~AsyncRendezvous.next_rendezvous` again starts the next one.
* A closed run stays closed.

Nothing polls. Every wait is the backend's ``wait_for_change`` bounded by the nearest deadline
(the join timeout, the last call, this node's next heartbeat, the next possible eviction), and a
compare-and-swap that loses continues from the state the store returned with it.

Where it departs from PyTorch's handler, and why:

* A complete round's membership never changes. PyTorch removes a dead or leaving participant
  and keeps the round "complete" until the last one has gone; here losing a participant ends the
  round at once (the issue's "the round restarts"), and the first participant to call
  ``next_rendezvous()`` ends it for all, instead of each waiting for the last to leave.
* A new round starts with the waiting (then redundant) nodes already in it, in the same write,
  so a node that restarts a round cannot complete it alone before they get in.
* :meth:`~AsyncRendezvous.num_nodes_waiting` also counts nodes already gathering in a newer
  round, so every old participant (and torch's agents, which poll it) sees that it must rejoin.
* When several nodes could do the same housekeeping at the same instant (complete a round at its
  last call, evict a dead node), the first-listed node wakes on time and the others a few
  milliseconds apart, up to 50 ms; they are woken by its write in the meantime.
* No rollback period after a join timeout: the node withdraws, then raises.
* The state is versioned JSON, never pickle.

Cost: every write (including each heartbeat) wakes every node waiting in ``next_rendezvous()``
or ``wait_for_round_end()``, which re-reads the state. With N nodes beating every *h* seconds,
each waiting node reads the state about N/h times per second; choose *h* accordingly for large N.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from enum import Enum
from itertools import count
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from .._backend import AsyncRendezvousBackend, Token
from .._errors import RendezvousClosedError, RendezvousError, RendezvousTimeoutError
from . import _state
from ._state import RendezvousState, Settings

__all__ = ("AsyncRendezvous", "RendezvousInfo", "RoundEnd", "default_node_id")

logger = logging.getLogger("arendezvous.rendezvous")

_node_counter = count()

# Housekeeping wake-ups are staggered by list position: 5 ms apart, for the first ten nodes.
_STAGGER_MS = 5
_STAGGER_STEPS = 10

# Wake a little after a deadline rather than a little before it: timers may fire early by up to
# the clock's resolution, and an early wake-up would only find nothing to do and wait again.
_SLACK = 0.001


def default_node_id() -> str:
    """A node id unique on this machine: ``<hostname>_<pid>_<counter>`` (PyTorch's scheme)."""
    return f"{socket.gethostname()}_{os.getpid()}_{next(_node_counter)}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class RendezvousInfo:
    """A completed round, as every participant sees it.

    :ivar node: this node's id.
    :ivar round: the round number; it only grows, and each round completes at most once.
    :ivar rank: this node's rank, ``0 <= rank < world_size``.
    :ivar participants: every participant's node id in rank order (sorted by node id), the
        same tuple on every node of the round.
    """

    node: str
    round: int
    rank: int
    participants: tuple[str, ...]

    @property
    def world_size(self) -> int:
        """How many nodes are in the round."""
        return len(self.participants)


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
    """What this node last saw: the decoded state and the token it was stored under."""

    state: RendezvousState
    token: Token | None

    @classmethod
    def of(cls, current: tuple[bytes, Token] | None) -> _View:
        if current is None:
            return _EMPTY
        return cls(_state.decode_state(current[0]), current[1])


_EMPTY = _View(RendezvousState(), None)


class AsyncRendezvous:
    """One node's handle on a run's rendezvous, over any backend (see the module docstring).

    Use it as an async context manager: that keeps the node's heartbeat alive in a background
    task (the background task only refreshes a heartbeat the node already has; it never adds the
    node anywhere) and leaves the rendezvous on exit::

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
    :param node: this node's id, unique within the run (:func:`default_node_id` makes one).
    :param min_nodes: the fewest participants a round may complete with.
    :param max_nodes: a round completes at once when this many have joined.
    :param last_call: seconds a round stays open for more nodes once ``min_nodes`` have joined.
    :param join_timeout: seconds :meth:`next_rendezvous` may take before it gives up.
    :param heartbeat: seconds between this node's heartbeats.
    :param heartbeat_timeout: a node whose last heartbeat is older than this is evicted
        (default: three heartbeats, as PyTorch's ``keep_alive_max_attempt``).

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
    ) -> None:
        if not isinstance(backend, AsyncRendezvousBackend):
            raise TypeError(
                f"backend must be an AsyncRendezvousBackend, not {type(backend).__name__}"
            )
        self._node = _state.check_node(node)
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
        self._backend = backend
        self._min_nodes = min_nodes
        self._max_nodes = max_nodes
        self._join_timeout = float(join_timeout)
        self._heartbeat = float(heartbeat)
        self._heartbeat_timeout = float(heartbeat_timeout)
        self._settings = Settings(
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            last_call_ms=round(last_call * 1000),
            heartbeat_ms=round(heartbeat * 1000),
            heartbeat_timeout_ms=round(heartbeat_timeout * 1000),
        )
        self._view: _View | None = None
        self._info: RendezvousInfo | None = None
        # Whether this node should be listed in the state: joining, or holding a completed round.
        # Only then does the heartbeat task refresh its heartbeat.
        self._active = False
        self._joining = False
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

    def __repr__(self) -> str:
        return (
            f"AsyncRendezvous({self._backend!r}, node={self._node!r}, "
            f"min_nodes={self._min_nodes}, max_nodes={self._max_nodes})"
        )

    # -- reading and writing the shared state ----------------------------------------------------

    async def _read(self) -> _View:
        view = _View.of(await self._backend.get_state())
        self._view = view
        return view

    async def _write(self, view: _View, new: RendezvousState) -> tuple[_View, bool]:
        """Compare-and-swap *new* over *view*; on a lost race return the store's current view."""
        state, token, written = await self._backend.set_state(_state.encode_state(new), view.token)
        if written:
            result = _View(new, token)
        elif token is None:
            result = _EMPTY  # no state at all: the next write creates it
        else:
            result = _View(_state.decode_state(state), token)
        self._view = result
        return result, written

    def _maintained(
        self, state: RendezvousState, now: int, *, beat_early: int = 0
    ) -> RendezvousState:
        """*state* with the housekeeping any node may do: evict the dead, complete an overdue
        round, and refresh this node's heartbeat when due (or *beat_early* ms before)."""
        new = _state.evict_dead(state, now, self._settings, spare=self._node)
        if (
            not new.complete
            and new.last_call is not None
            and now >= new.last_call
            and len(new.participants) >= self._min_nodes
        ):
            new = _state.complete_round(new)
        if (
            self._active
            and new.listed(self._node)
            and now - new.heartbeats[self._node] >= self._settings.heartbeat_ms - beat_early
        ):
            new = _state.beat(new, self._node, now)
        return new

    def _next_event(self, state: RendezvousState, now: int) -> float:
        """Seconds until the next time-driven change: a heartbeat due, an eviction, a last call."""
        times: list[int] = []
        if self._active and state.listed(self._node):
            times.append(state.heartbeats[self._node] + self._settings.heartbeat_ms)
        # Evictions and the last call fall due at one instant for every node; waking them all
        # then is a thundering herd (1,000 in-process nodes finished 0.4 s past the last call).
        # The first-listed node wakes on time, the next few a little later, and the rest are
        # woken by the first one's write.
        position = state.positions.get(self._node, _STAGGER_STEPS)
        stagger = min(position, _STAGGER_STEPS) * _STAGGER_MS
        oldest = state.oldest_heartbeat
        if oldest is not None:
            if oldest[1] != self._node:
                times.append(oldest[0] + self._settings.heartbeat_timeout_ms + 1 + stagger)
            elif len(state.heartbeats) > 1:
                others = min(at for node, at in state.heartbeats.items() if node != self._node)
                times.append(others + self._settings.heartbeat_timeout_ms + 1 + stagger)
        if (
            not state.complete
            and state.last_call is not None
            and len(state.participants) >= self._min_nodes
        ):
            times.append(state.last_call + stagger)
        if not times:
            return math.inf
        return max(0.0, (min(times) - now) / 1000) + _SLACK

    async def _settle(self, view: _View) -> _View:
        """Write the housekeeping *view* needs (none on a closed run), retrying from lost races;
        return the resulting view."""
        while not view.state.closed:
            new = self._maintained(view.state, _now_ms())
            if new is view.state:
                break
            view, _ = await self._write(view, new)
        return view

    # -- the rendezvous --------------------------------------------------------------------------

    async def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round and wait until it completes; return this node's place in it.

        If this node is a participant of the current complete round, that round ends first:
        calling this means "I need a new round" (after a failure, or because nodes are waiting),
        as in PyTorch, where the round ends once its last participant has called it. Waits only
        on the store's change notifications and on deadlines.

        :raises RendezvousClosedError: the run is closed.
        :raises RendezvousTimeoutError: no round including this node completed within
            ``join_timeout`` (the node withdraws before this is raised; a node in the redundant
            list of a full round is not timed out until it leaves that list).
        :raises RendezvousStateError: the stored state cannot be decoded.
        :raises RendezvousConnectionError: the store failed.

        Cancellation: the store holds this node as joined or not, never half; on cancellation
        (and on any error) the node withdraws in a shielded step bounded by
        ``heartbeat_timeout``, and if even that fails it is evicted when its heartbeat runs out.
        """
        if self._joining:
            raise RuntimeError("next_rendezvous() is already running for this node")
        self._joining = True
        self._active = True
        self._info = None
        completed = False
        try:
            info = await self._join()
            completed = True
            self._info = info
            return info
        finally:
            self._joining = False
            if not completed:
                self._active = False
                await self._withdraw_quietly()

    async def _join(self) -> RendezvousInfo:
        node, settings = self._node, self._settings
        deadline = anyio.current_time() + self._join_timeout
        view = await self._read()
        # The round this call must end first, if we are a participant of a complete one.
        first = view.state
        exit_round = first.round if first.complete and node in first.participant_set else None
        redundant_while_full = False
        while True:
            state = view.state
            if state.closed:
                raise RendezvousClosedError(f"the rendezvous run is closed (node {node!r})")
            now = _now_ms()
            new = self._maintained(state, now)
            if new.round == exit_round and new.complete and node in new.participant_set:
                new = _state.end_round(new, now, settings)
            # Done only when the *stored* state holds the complete round (a completion computed
            # here must be written first) and housekeeping did not just end it.
            if (
                state.complete
                and node in state.participant_set
                and new.complete
                and new.round == state.round
            ):
                return RendezvousInfo(node, state.round, state.rank_of(node), state.participants)
            # PyTorch does not time out a node parked in the redundant list of a full round; its
            # clock starts when it can join.
            full = new.complete and len(new.participants) >= self._max_nodes
            if node in new.redundant and full:
                redundant_while_full = True
            elif redundant_while_full:
                redundant_while_full = False
                deadline = anyio.current_time() + self._join_timeout
            if not redundant_while_full and anyio.current_time() >= deadline:
                raise RendezvousTimeoutError(
                    f"node {node!r} found no complete round within {self._join_timeout:g} s"
                )
            if new.complete:
                if node in new.participant_set:
                    pass  # completed just now by housekeeping: written below, then returned
                elif len(new.participants) < self._max_nodes:
                    if node not in new.waiting:
                        new = _state.add_waiting(new, node, now)
                elif node not in new.redundant and node not in new.waiting:
                    new = _state.add_redundant(new, node, now)
            elif node not in new.participant_set:
                if len(new.participants) < self._max_nodes:
                    new = _state.add_participant(new, node, now, settings)
                elif node not in new.redundant:
                    new = _state.add_redundant(new, node, now)  # another node's larger max_nodes
            if new is not state:
                view, _ = await self._write(view, new)
                continue
            timeout = self._next_event(state, now)
            if not redundant_while_full:
                timeout = min(timeout, max(0.0, deadline - anyio.current_time()) + _SLACK)
            changed = await self._backend.wait_for_change(
                view.token, timeout=None if timeout == math.inf else timeout
            )
            if changed is not None:
                view = _View.of(changed)
                self._view = view

    async def _withdraw(self) -> None:
        view = self._view if self._view is not None else await self._read()
        while True:
            new = _state.remove_node(view.state, self._node, _now_ms(), self._settings)
            if new is view.state:
                return
            view, _ = await self._write(view, new)

    async def _withdraw_quietly(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._heartbeat_timeout):
            try:
                await self._withdraw()
            except RendezvousError as exc:
                logger.warning("node %r could not withdraw (%s); its heartbeat will expire",
                               self._node, exc)

    async def leave(self) -> None:
        """Leave the rendezvous: this node is removed from the state and stops its heartbeat.

        If it was a participant of a complete round, that round ends (the others see
        :attr:`RoundEnd.RESTARTED`). The node may join again later with :meth:`next_rendezvous`.
        Cancellation leaves the node listed or not, never half; a listed node that no longer
        heartbeats is evicted in time.
        """
        self._active = False
        self._info = None
        await self._withdraw()

    async def close(self) -> None:
        """Close the run for every node: pending and future joins raise RendezvousClosedError.

        A closed run stays closed. Cancellation leaves it closed or not, never half.
        """
        view = self._view if self._view is not None else await self._read()
        while not view.state.closed:
            view, _ = await self._write(view, _state.close(view.state))

    async def is_closed(self) -> bool:
        """Whether the run is closed (reads the store)."""
        return (await self._read()).state.closed

    async def num_nodes_waiting(self) -> int:
        """How many live nodes wait for a round that does not include this node's current one.

        That is the waiting list, plus, when the round this node completed is over, the nodes
        already gathering in the next one. A participant seeing a positive number should call
        :meth:`next_rendezvous` (PyTorch's agents poll this; :meth:`wait_for_round_end` awaits it).
        Nodes in the redundant list are not counted: the round has no room for them.
        """
        view = await self._read()
        state = _state.evict_dead(view.state, _now_ms(), self._settings, spare=self._node)
        waiting = len(state.waiting)
        info = self._info
        if info is not None and not state.complete and state.round != info.round:
            waiting += sum(1 for node in state.participants if node != self._node)
        return waiting

    async def wait_for_round_end(self, *, timeout: float | None = None) -> RoundEnd | None:
        """Wait until this node's round should be re-formed; ``None`` if *timeout* passes first.

        Returns :attr:`RoundEnd.NODES_WAITING` when nodes wait to join, :attr:`RoundEnd.RESTARTED`
        when the round is over, :attr:`RoundEnd.CLOSED` when the run is closed. While it waits it
        also evicts dead nodes (which ends the round if one was a participant) and keeps this
        node's heartbeat alive. Cancelling it changes nothing but an in-flight heartbeat or
        eviction, which lands entirely or not at all.

        :raises RuntimeError: this node holds no completed round (call :meth:`next_rendezvous`).
        """
        info = self._info
        if info is None:
            raise RuntimeError("wait_for_round_end() needs a round: call next_rendezvous() first")
        with anyio.move_on_after(timeout):
            view = await self._read()
            while True:
                if view.state.closed:
                    return RoundEnd.CLOSED
                view = await self._settle(view)  # evict the dead first: they wait for nothing
                state = view.state
                if state.closed:
                    continue
                if state.round != info.round or self._node not in state.participant_set:
                    return RoundEnd.RESTARTED
                if state.waiting:
                    return RoundEnd.NODES_WAITING
                wait = self._next_event(state, _now_ms())
                changed = await self._backend.wait_for_change(
                    view.token, timeout=None if wait == math.inf else wait
                )
                if changed is not None:
                    view = _View.of(changed)
                    self._view = view
        return None

    # -- the heartbeat ---------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        delay = 0.0
        while True:
            await anyio.sleep(delay)
            delay = self._heartbeat  # also the retry interval after a failure
            if not self._active:
                continue
            view = self._view
            if view is not None and view.state.listed(self._node):
                until_due = view.state.heartbeats[self._node] / 1000 + self._heartbeat - time.time()
                if until_due > 0:
                    delay = until_due + _SLACK
                    continue
            try:
                view = view if view is not None else await self._read()
                while True:
                    # Beat a little early: the join loop's own beats make this one rarely needed.
                    new = self._maintained(
                        view.state, _now_ms(), beat_early=self._settings.heartbeat_ms // 10
                    )
                    if new is view.state or view.state.closed:
                        break
                    view, _ = await self._write(view, new)
            except RendezvousError as exc:
                logger.warning("node %r missed a heartbeat: %s", self._node, exc)
            else:
                if view.state.listed(self._node):
                    delay = view.state.heartbeats[self._node] / 1000 + self._heartbeat - time.time()
                    delay = max(delay, 0.0) + _SLACK

    async def __aenter__(self) -> AsyncRendezvous:
        if self._task_group is not None:
            raise RuntimeError("this AsyncRendezvous is already entered")
        group = anyio.create_task_group()
        await group.__aenter__()
        group.start_soon(self._heartbeat_loop)
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
        self._active = False
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
