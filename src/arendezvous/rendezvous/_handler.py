"""``AsyncRendezvous``: who is in this round, my rank, the world size; a new round when it changes.

The protocol, its costs and where it departs from PyTorch are in the package docstring
(:mod:`arendezvous.rendezvous`). This module is the node's public handle on it: it checks the
arguments and builds the parts that do the work, which it owns: the node's shared core
(:mod:`._node`: its id, store, clock, log and view of the round record), its joins and
withdrawals (:mod:`._join`), and its heartbeat and watch (:mod:`._liveness`). The handle itself
answers the questions asked of a node (progress, closed, nodes waiting, the round's end) and runs
the background tasks inside ``async with``.
"""

from __future__ import annotations

import logging
import math
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from .._backend import AsyncRendezvousBackend
from .._members import MemberTable, check_node
from ._info import Progress, RendezvousInfo, RoundEnd
from ._join import Joiner
from ._liveness import Liveness
from ._node import Node
from ._status import close_register, status_of

__all__ = ("AsyncRendezvous",)


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
        node = check_node(node)
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
        self._node = Node(backend, node)
        self._liveness = Liveness(self._node, float(heartbeat), float(heartbeat_timeout))
        self._joiner = Joiner(
            self._node,
            self._liveness,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            last_call=float(last_call),
            join_timeout=float(join_timeout),
            delete_when_closed=delete_when_closed,
        )
        self._joining = False
        self._task_group: TaskGroup | None = None

    # -- properties ------------------------------------------------------------------------------

    @property
    def backend(self) -> AsyncRendezvousBackend:
        """The store the rendezvous runs on."""
        return self._node.backend

    @property
    def node(self) -> str:
        """This node's id."""
        return self._node.id

    @property
    def min_nodes(self) -> int:
        """The fewest participants a round may complete with."""
        return self._joiner.min_nodes

    @property
    def max_nodes(self) -> int:
        """The most participants a round may have."""
        return self._joiner.max_nodes

    @property
    def info(self) -> RendezvousInfo | None:
        """The round :meth:`next_rendezvous` last returned, until the node leaves; else ``None``."""
        return self._node.info

    @property
    def member_table(self) -> MemberTable:
        """Where the nodes' records live: the backend's own table, or one emulated in its blob."""
        return self._node.table

    def __repr__(self) -> str:
        return (
            f"AsyncRendezvous({self.backend!r}, node={self.node!r}, "
            f"min_nodes={self.min_nodes}, max_nodes={self.max_nodes})"
        )

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
        self._node.info = None
        completed = False
        try:
            info = await self._joiner.join()
            completed = True
            self._node.info = info
            self._liveness.watch_round(info)
            return info
        finally:
            self._joining = False
            if not completed:
                await self._joiner.withdraw_quietly()

    async def leave(self) -> None:
        """Leave the rendezvous: this node's record is removed and its heartbeat stops.

        If it was a participant of a complete round, that round ends (the others see
        :attr:`RoundEnd.RESTARTED`). The node may join again later with :meth:`next_rendezvous`.
        Cancellation leaves the node listed or not, never half; a listed node whose record is no
        longer refreshed is evicted in time.
        """
        self._node.info = None
        await self._joiner.withdraw()

    async def close(self) -> None:
        """Close the run for every node: pending and future joins raise RendezvousClosedError.

        A closed run stays closed. Cancellation leaves it closed or not, never half.
        """
        if await close_register(self._node.register, self._node.highest_round + 1):
            self._node.log(logging.INFO, "run_closed", "node %(node)r closed the run")

    async def progress(self) -> Progress:
        """How the run's current round is going: who has joined, how many are missing, the time
        left in its last call (three store reads; writes nothing). Call it from another task
        while :meth:`next_rendezvous` waits, e.g. a few times a second, to show progress
        (``docs/operating.md`` has an orchestrator doing so).
        """
        view = await self._node.read()
        record = view.record
        status = await status_of(record, self._node.table)
        joined = tuple(node.node for node in status.participants)
        if record is None or record.complete:
            return Progress(status, joined, 0, None)
        due = self._joiner.last_call_due(record)
        left = None if due is None else max(0.0, due - self._node.clock())
        return Progress(status, joined, max(0, self.min_nodes - len(joined)), left)

    async def is_closed(self) -> bool:
        """Whether the run is closed (reads the store)."""
        record = (await self._node.read()).record
        return record is not None and record.closed

    async def num_nodes_waiting(self) -> int:
        """How many nodes wait for a round that does not include this node's current one.

        That is the nodes listed for the next round while the current one is complete and has
        room, plus, when the round this node completed is over, the nodes already gathering in
        the next one. A participant seeing a positive number should call :meth:`next_rendezvous`
        (PyTorch's agents poll this; :meth:`wait_for_round_end` awaits it). Nodes parked while
        the round is full are not counted: it has no room for them. One or two store reads.
        """
        record = (await self._node.read()).record
        if record is None:
            return 0
        if record.complete:
            if len(record.participants) >= self.max_nodes:
                return 0
            return await self._node.table.count(record.next_group)
        info = self._node.info
        if info is None or (info.incarnation, info.round) == (record.incarnation, record.round):
            return 0
        gathering = await self._node.table.count(record.group)
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
        info = self._node.info
        if info is None:
            raise RuntimeError("wait_for_round_end() needs a round: call next_rendezvous() first")
        with anyio.move_on_after(timeout):
            view = await self._node.read()
            while True:
                record = view.record
                if record is None or record.incarnation != info.incarnation:
                    return RoundEnd.RESTARTED
                if record.closed:
                    return RoundEnd.CLOSED
                if record.round != info.round or self.node not in record.participants:
                    return RoundEnd.RESTARTED
                if record.waiting:
                    return RoundEnd.NODES_WAITING
                view = self._node.adopt(await self._node.register.wait_for_change(view.token))
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
        self._node.info = None
        try:
            # Leaving first, shielded: a cancelled block still tells the others it is gone.
            await self._joiner.withdraw_quietly()
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
