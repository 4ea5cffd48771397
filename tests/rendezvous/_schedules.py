"""Random join / leave / crash / restart schedules against live rendezvous nodes.

A :class:`Schedule` (drawn by Hypothesis with :func:`schedules`) says which node does what, in
which order, with what pauses between ("settle" waits, boundedly, until the running nodes share a
round). :func:`run_schedule` plays it on real
:class:`AsyncRendezvous` nodes over any backend and records every round any node completed, then
lets every node run until one round holds all of them (or as many as fit) and checks:

* safety: every completed round has ranks exactly ``0..n-1``, every node of a round agrees on its
  participants, ``min_nodes <= n <= max_nodes``, and each node's rounds only grow;
* liveness: after the schedule, with every node running, a round with all of them completes.

Each node runs a driver: ``next_rendezvous()``, then ``wait_for_round_end()`` (or a "restart"
poke), and again. "leave" cancels a driver (the node leaves on the way out); "crash" makes the
node's store handle fail before cancelling it, so it cannot leave and must be evicted by the
others when its heartbeat runs out. A stopped node may be started again with the same id, as a
rebooted machine would be.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup
from hypothesis import strategies as st

from arendezvous import (
    AsyncRendezvousBackend,
    RendezvousConnectionError,
    RendezvousError,
    Token,
)
from arendezvous.rendezvous import AsyncRendezvous, RendezvousInfo, RoundEnd

__all__ = ("Schedule", "run_schedule", "schedules")

Step = tuple[str, int] | tuple[str, float]

HEARTBEAT = 0.03
HEARTBEAT_TIMEOUT = 0.15
LIVENESS_LIMIT = 10.0
SETTLE_LIMIT = 2.0


@dataclass(frozen=True)
class Schedule:
    """One scenario: the run's limits, how many nodes, and the steps in order."""

    min_nodes: int
    max_nodes: int
    last_call: float
    nodes: int
    steps: tuple[Step, ...]


@st.composite
def schedules(draw: st.DrawFn, *, max_nodes: int = 4, max_steps: int = 14) -> Schedule:
    """Hypothesis strategy of :class:`Schedule`."""
    low = draw(st.integers(1, 3))
    high = draw(st.integers(low, max_nodes))
    nodes = draw(st.integers(max(2, low), max_nodes + 1))  # enough for a round to complete
    node = st.integers(0, nodes - 1)
    step = st.one_of(
        st.tuples(st.just("start"), node),
        st.tuples(st.just("start"), node),
        st.tuples(st.just("leave"), node),
        st.tuples(st.just("crash"), node),
        st.tuples(st.just("restart"), node),
        st.tuples(st.just("pause"), st.sampled_from([0.0, 0.01, 0.05, 0.2])),
        st.tuples(st.just("settle"), st.just(0)),
        st.tuples(st.just("settle"), st.just(0)),
    )
    # Most schedules start with several nodes up, so that the steps act on running rounds.
    initial = draw(st.lists(node, unique=True, max_size=nodes))
    steps = [("start", index) for index in initial] + draw(st.lists(step, max_size=max_steps))
    return Schedule(
        min_nodes=low,
        max_nodes=high,
        # Liveness needs a last call longer than re-joining takes; with none, the nodes that
        # rejoin first complete the round at min_nodes every time and one can be left out forever
        # (as in PyTorch). test_rendezvous.py covers last_call=0 on its own.
        last_call=draw(st.sampled_from([0.05, 0.1])),
        nodes=nodes,
        steps=tuple(steps),
    )


class CrashableBackend(AsyncRendezvousBackend):
    """Delegates to a real backend until :meth:`crash`; then every call fails, as a dead host's."""

    def __init__(self, backend: AsyncRendezvousBackend) -> None:
        self._backend = backend
        self.crashed = False

    @property
    def name(self) -> str:
        return self._backend.name

    def crash(self) -> None:
        self.crashed = True

    def _check(self) -> None:
        if self.crashed:
            raise RendezvousConnectionError("this node crashed")

    async def get_state(self) -> tuple[bytes, Token] | None:
        self._check()
        return await self._backend.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self._check()
        return await self._backend.set_state(state, token)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self._check()
        return await self._backend.wait_for_change(token, timeout=timeout)

    async def aclose(self) -> None:
        await self._backend.aclose()


@dataclass
class _Node:
    name: str
    backend: CrashableBackend
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    poke: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    running: bool = False
    restart_requested: bool = False
    latest: RendezvousInfo | None = None


@dataclass
class _Record:
    infos: list[RendezvousInfo] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def add(self, node: _Node, info: RendezvousInfo) -> None:
        node.latest = info
        self.infos.append(info)
        self.changed.set()
        self.changed = anyio.Event()


def check_safety(schedule: Schedule, infos: list[RendezvousInfo]) -> None:
    """Every completed round agrees across nodes and has ranks 0..n-1; rounds only grow."""
    by_round: dict[int, list[RendezvousInfo]] = {}
    last_round: dict[str, int] = {}
    for info in infos:
        by_round.setdefault(info.round, []).append(info)
        assert info.round > last_round.get(info.node, -1), f"{info.node} went back to {info}"
        last_round[info.node] = info.round
    for round_number, members in by_round.items():
        participants = {info.participants for info in members}
        assert len(participants) == 1, f"round {round_number} disagrees: {participants}"
        (order,) = participants
        assert list(order) == sorted(order), "ranks must follow sorted node ids"
        assert len(set(order)) == len(order)
        assert schedule.min_nodes <= len(order) <= schedule.max_nodes, (round_number, order)
        ranks = [info.rank for info in members]
        assert len(set(ranks)) == len(ranks), f"round {round_number} repeats a rank: {members}"
        for info in members:
            assert 0 <= info.rank < len(order)
            assert order[info.rank] == info.node


async def run_schedule(
    schedule: Schedule, make_backend: Callable[[], Awaitable[AsyncRendezvousBackend]]
) -> list[RendezvousInfo]:
    """Play *schedule* on nodes whose handles come from *make_backend*; return every round seen.

    Raises ``AssertionError`` if safety or liveness fails.
    """
    record = _Record()
    nodes: dict[int, _Node] = {}
    handles: list[AsyncRendezvousBackend] = []

    async def new_node(index: int) -> _Node:
        handle = await make_backend()
        handles.append(handle)
        return _Node(f"node-{index}", CrashableBackend(handle))

    async def drive(node: _Node) -> None:
        rendezvous = AsyncRendezvous(
            node.backend, node.name, schedule.min_nodes, schedule.max_nodes,
            last_call=schedule.last_call, heartbeat=HEARTBEAT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT, join_timeout=LIVENESS_LIMIT,
        )
        with node.scope:
            try:
                async with rendezvous:
                    while True:
                        record.add(node, await rendezvous.next_rendezvous())
                        if not node.restart_requested:
                            with anyio.CancelScope() as node.poke:
                                reason = await rendezvous.wait_for_round_end()
                                assert reason is not RoundEnd.CLOSED
                        node.restart_requested = False
            except RendezvousError:
                # Only a crashed node's calls may fail (and its exit may not leave cleanly).
                assert node.backend.crashed
        node.running = False
        node.done.set()

    async def start(group: TaskGroup, index: int) -> None:
        node = nodes.get(index)
        if node is not None and node.running:
            return
        node = await new_node(index)
        nodes[index] = node
        node.running = True
        group.start_soon(drive, node)

    try:
        async with anyio.create_task_group() as group:
            for action, argument in schedule.steps:
                if action == "pause":
                    await anyio.sleep(argument)
                    continue
                if action == "settle":
                    # Give the running nodes time to form a round with all that fit; go on
                    # regardless after a while (liveness is checked at the end).
                    with anyio.move_on_after(SETTLE_LIMIT):
                        while True:
                            running = [node for node in nodes.values()
                                       if node.running and not node.backend.crashed]
                            fit = min(len(running), schedule.max_nodes)
                            if fit < schedule.min_nodes or _settled(running, fit):
                                break
                            await record.changed.wait()
                    continue
                index = int(argument)
                node = nodes.get(index)
                if action == "start":
                    await start(group, index)
                elif node is None or not node.running:
                    continue
                elif action == "leave":
                    node.scope.cancel()
                elif action == "crash":
                    node.backend.crash()
                    node.scope.cancel()
                elif action == "restart":
                    # Stop waiting (or skip the next wait): call next_rendezvous() again now.
                    node.restart_requested = True
                    node.poke.cancel()
            with anyio.fail_after(LIVENESS_LIMIT):
                # A stopped node's driver must be gone before the node can be started again.
                for node in nodes.values():
                    if node.scope.cancel_called:
                        await node.done.wait()
                for index in range(schedule.nodes):
                    await start(group, index)
                expected = min(schedule.nodes, schedule.max_nodes)
                while not _settled(list(nodes.values()), expected):
                    await record.changed.wait()
            group.cancel_scope.cancel()
    finally:
        for handle in handles:
            with anyio.CancelScope(shield=True):
                await handle.aclose()
    check_safety(schedule, record.infos)
    return record.infos


def _settled(nodes: list[_Node], expected: int) -> bool:
    """Whether *expected* running nodes hold the same round, of *expected* nodes."""
    holding: dict[int, int] = {}
    for node in nodes:
        if node.running and node.latest is not None and node.latest.world_size == expected:
            holding[node.latest.round] = holding.get(node.latest.round, 0) + 1
    return expected in holding.values()
