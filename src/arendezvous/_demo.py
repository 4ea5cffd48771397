"""``python -m arendezvous demo``: N nodes form rounds through the async rendezvous.

Every node is an :class:`~arendezvous.rendezvous.AsyncRendezvous` on its own backend handle (the
handles add a simulated network latency before each write and count what they do). The demo
plays four acts:

1. all N nodes race to join round 0 (``min_nodes = N - 1``, ``max_nodes = N``); each join is a
   compare-and-swap, and a node that loses retries from the state the losing call returned;
2. one node drops out without a word (its store handle goes silent); the others, waiting on
   ``wait_for_round_end()``, evict it when its heartbeat runs out, and form round 1 without it;
3. it comes back: it waits for the next round, the others see it waiting, and round 2 has all N;
4. one node closes the run; everybody sees it closed.

Nothing polls: every node waits on the store's change notifications or on a deadline. The output
shows each join, each round with its ranks, and ends with the round-0 join order, the CAS
conflicts and the operations per second, and a table of the rounds.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TextIO

import anyio

from ._backend import AsyncRendezvousBackend, Token
from .backends._url import open_backend
from .rendezvous import AsyncRendezvous, RendezvousInfo, RoundEnd
from .rendezvous._state import decode_state

__all__ = ("DemoResult", "RoundSummary", "print_summary", "run_demo")

HEARTBEAT = 0.05
HEARTBEAT_TIMEOUT = 0.25
LAST_CALL = 0.2


@dataclass
class RoundSummary:
    """One completed round: its number, participants in rank order, and what started it."""

    round: int
    participants: tuple[str, ...]
    seconds: float
    trigger: str


@dataclass
class DemoResult:
    """What the demo measured. ``order``, ``operations`` and ``seconds`` are about the race for
    round 0, and ``conflicts`` counts each node's lost writes until it joined round 0."""

    order: list[str] = field(default_factory=list)
    conflicts: dict[str, int] = field(default_factory=dict)
    operations: int = 0
    seconds: float = 0.0
    rounds: list[RoundSummary] = field(default_factory=list)
    total_operations: int = 0
    total_seconds: float = 0.0


class _DemoBackend(AsyncRendezvousBackend):
    """A node's handle: counts calls and lost writes, adds latency, and can go silent."""

    def __init__(self, demo: _Demo, node: str, backend: AsyncRendezvousBackend) -> None:
        self._demo = demo
        self._node = node
        self._backend = backend
        self.silent = False

    @property
    def name(self) -> str:
        return self._backend.name

    async def _gone(self) -> None:
        if self.silent:
            await anyio.sleep_forever()  # a host that vanished: no answer, no error

    async def get_state(self) -> tuple[bytes, Token] | None:
        await self._gone()
        self._demo.operations += 1
        return await self._backend.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        await self._gone()
        await anyio.sleep(self._demo.rng.uniform(0, self._demo.latency))
        await self._gone()
        self._demo.operations += 1
        result = await self._backend.set_state(state, token)
        if result[2]:
            self._demo.wrote(self._node, state)
        else:
            self._demo.conflicts[self._node] = self._demo.conflicts.get(self._node, 0) + 1
        return result

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        await self._gone()
        self._demo.operations += 1
        return await self._backend.wait_for_change(token, timeout=timeout)

    async def aclose(self) -> None:
        await self._backend.aclose()


class _Demo:
    """The shared bookkeeping and printing of one demo run."""

    def __init__(self, nodes: int, latency: float, rng: random.Random, out: TextIO) -> None:
        self.nodes = nodes
        self.latency = latency
        self.rng = rng
        self.out = out
        self.operations = 0
        self.conflicts: dict[str, int] = {}
        self.result = DemoResult()
        self.joined: dict[str, int] = {}  # node -> the last round it was seen joining
        self.reports: dict[int, list[RendezvousInfo]] = {}
        self.completed: list[RendezvousInfo] = []
        self.changed = anyio.Event()
        self.trigger = "start"
        self.round_started = time.perf_counter()

    def say(self, text: str) -> None:
        print(text, file=self.out)

    def wrote(self, node: str, data: bytes) -> None:
        """A node's write won: print who got into a round by it (the writer joining, or nodes
        moved in from the waiting list when the writer started the round)."""
        state = decode_state(data)
        for member in state.participants:
            if self.joined.get(member) == state.round:
                continue
            self.joined[member] = state.round
            position = (len(state.participants) if state.complete
                        else state.participants.index(member) + 1)
            if member != node:
                self.say(f"  {member} moved into round {state.round} from the waiting list "
                         f"({position} in)")
            elif state.round == 0 and self.trigger == "start":
                bar = "#" * position + "." * (self.nodes - position)
                self.result.order.append(member)
                self.result.conflicts[member] = self.conflicts.get(member, 0)
                self.say(f"  [{bar}] {member} joined as #{position} after "
                         f"{self.conflicts.get(member, 0)} conflict(s)")
            else:
                self.say(f"  {member} joined round {state.round} ({position} in)")

    def report(self, info: RendezvousInfo) -> None:
        """A node holds its rank; print the round once all its participants do."""
        members = self.reports.setdefault(info.round, [])
        members.append(info)
        if len(members) < info.world_size:
            return
        seconds = time.perf_counter() - self.round_started
        if info.round == 0 and not self.result.rounds:
            self.result.operations = self.operations
            self.result.seconds = seconds
        self.result.rounds.append(RoundSummary(info.round, info.participants, seconds,
                                               self.trigger))
        ranks = ", ".join(f"{rank}:{node}" for rank, node in enumerate(info.participants))
        self.say(f"round {info.round} complete in {seconds * 1000:.1f} ms: world size "
                 f"{info.world_size}; ranks {ranks}")
        self.completed.append(info)
        self.changed.set()
        self.changed = anyio.Event()

    def next_round(self, trigger: str) -> None:
        self.trigger = trigger
        self.round_started = time.perf_counter()

    async def until_rounds(self, count: int) -> RendezvousInfo:
        with anyio.fail_after(60):
            while len(self.completed) < count:
                await self.changed.wait()
        return self.completed[count - 1]


async def _node(
    demo: _Demo, rendezvous: AsyncRendezvous, scope: anyio.CancelScope
) -> None:
    with scope:
        async with rendezvous:
            while True:
                info = await rendezvous.next_rendezvous()
                demo.report(info)
                reason = await rendezvous.wait_for_round_end()
                if reason is RoundEnd.CLOSED:
                    return
                if demo.trigger == "in progress":
                    demo.trigger = ("a node dropped out" if reason is RoundEnd.RESTARTED
                                    else "a node was waiting")
                    why = ("a participant was evicted or left" if reason is RoundEnd.RESTARTED
                           else "a node is waiting to join")
                    demo.say(f"  {rendezvous.node} sees round {info.round} is over: {why}")


async def run_demo(
    nodes: int = 8,
    *,
    url: str = "memory://",
    run_id: str | None = None,
    latency: float = 0.002,
    seed: int | None = None,
    out: TextIO,
) -> DemoResult:
    """Play the demo with *nodes* nodes on the backend at *url*; print as it goes."""
    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    run_id = run_id or f"demo-{random.getrandbits(32):08x}"
    demo = _Demo(nodes, latency, random.Random(seed), out)
    names = [f"node-{index}" for index in range(nodes)]
    handles: list[AsyncRendezvousBackend] = []
    scopes: dict[str, anyio.CancelScope] = {}
    backends: dict[str, _DemoBackend] = {}

    def make(name: str) -> AsyncRendezvous:
        handle = open_backend(url, run_id=run_id)
        handles.append(handle)
        backends[name] = _DemoBackend(demo, name, handle)
        scopes[name] = anyio.CancelScope()
        return AsyncRendezvous(backends[name], name, max(1, nodes - 1), nodes,
                               last_call=LAST_CALL, heartbeat=HEARTBEAT,
                               heartbeat_timeout=HEARTBEAT_TIMEOUT)

    first = open_backend(url, run_id=run_id)
    handles.append(first)
    demo.say(f"{nodes} nodes racing to join run {run_id!r} on {first.name} ({url}): "
             f"min {max(1, nodes - 1)}, max {nodes} nodes, last call {LAST_CALL:g} s, "
             f"heartbeat {HEARTBEAT:g} s (evicted after {HEARTBEAT_TIMEOUT:g} s)")
    started = time.perf_counter()
    try:
        async with anyio.create_task_group() as group:
            demo.say("round 0:")
            for name in names:
                group.start_soon(_node, demo, make(name), scopes[name])
            info = await demo.until_rounds(1)
            if nodes > 1:
                victim = info.participants[-1]
                demo.say(f"{victim} drops out: its store handle goes silent, it never leaves")
                demo.next_round("in progress")
                backends[victim].silent = True
                scopes[victim].cancel()
                await demo.until_rounds(2)
                demo.say(f"{victim} comes back and asks to join")
                demo.next_round("in progress")
                group.start_soon(_node, demo, make(victim), scopes[victim])
                await demo.until_rounds(3)
            closer = AsyncRendezvous(first, "closer", 1, 1)
            demo.say("closing the run")
            await closer.close()
        demo.say("every node saw the run closed")
    finally:
        for handle in handles:
            with anyio.CancelScope(shield=True):
                await handle.aclose()
    demo.result.conflicts = {name: demo.result.conflicts.get(name, 0) for name in names}
    demo.result.total_operations = demo.operations
    demo.result.total_seconds = time.perf_counter() - started
    return demo.result


def print_summary(result: DemoResult, out: TextIO) -> None:
    """The tables the demo ends with."""
    print("\njoin order:", file=out)
    for position, name in enumerate(result.order, 1):
        print(f"  {position:3d}. {name:10s} {result.conflicts[name]:3d} CAS conflict(s)", file=out)
    total = sum(result.conflicts.values())
    rate = result.operations / result.seconds if result.seconds else 0.0
    print(
        f"\n{len(result.order)} joined, {total} CAS conflicts, {result.operations} backend "
        f"operations in {result.seconds * 1000:.1f} ms ({rate:,.0f} ops/s)",
        file=out,
    )
    print("\nround  world  formed in   started by", file=out)
    for summary in result.rounds:
        print(f"{summary.round:5d}  {len(summary.participants):5d}  "
              f"{summary.seconds * 1000:7.1f} ms  {summary.trigger}", file=out)
    total_rate = result.total_operations / result.total_seconds if result.total_seconds else 0.0
    print(f"\nin all: {result.total_operations} backend operations in "
          f"{result.total_seconds * 1000:.0f} ms ({total_rate:,.0f} ops/s; most of the time is "
          "the heartbeat timeout and the last call)", file=out)
