"""The demo's bookkeeping and narration: who joined which round, what each round took, printed."""

from __future__ import annotations

import random
import time
from typing import TextIO

import anyio

from ...rendezvous import RendezvousInfo
from ._result import DemoResult, RoundSummary

__all__ = ("Demo",)


class Demo:
    """The shared bookkeeping and printing of one demo run."""

    def __init__(self, nodes: int, latency: float, rng: random.Random, out: TextIO,
                 heartbeat_timeout: float) -> None:
        self.nodes = nodes
        self.latency = latency
        self.rng = rng
        self.out = out
        self.heartbeat_timeout = heartbeat_timeout
        self.operations = 0
        self.per_node: dict[str, int] = {}
        self.result = DemoResult()
        self.reports: dict[int, list[RendezvousInfo]] = {}
        self.completed: list[RendezvousInfo] = []
        self.changed = anyio.Event()
        self.trigger = "start"
        self.round_started = time.perf_counter()

    def say(self, text: str) -> None:
        """Print one line of the story."""
        print(text, file=self.out)

    def count(self, node: str) -> None:
        """One store call by *node*."""
        self.operations += 1
        self.per_node[node] = self.per_node.get(node, 0) + 1

    def joined(self, node: str, group: str, position: int) -> None:
        """*node* put its member record into *group* (``<incarnation>/<round>``) as number
        *position*: one write, racing with nobody."""
        round = int(group.rpartition("/")[2])
        if round == 0 and self.trigger == "start":
            width = min(self.nodes, 40)  # the bar's scale: at most 40 characters
            done = min(position * width // self.nodes, width)
            bar = "#" * done + "." * (width - done)
            self.result.order.append(node)
            self.say(f"  [{bar}] {node} joined round 0 as #{position}")
        elif self.completed and round > self.completed[-1].round:
            self.say(f"  {node} joined round {round} (#{position} in it)")

    def evicted(self, watcher: str, node: str) -> None:
        """*watcher* deleted *node*'s record: silent past its heartbeat timeout."""
        self.say(f"  {watcher} evicted {node}: its record went {self.heartbeat_timeout:g} s "
                 "without a heartbeat")

    def report(self, info: RendezvousInfo) -> None:
        """A node holds its rank; print the round once all its participants do."""
        members = self.reports.setdefault(info.round, [])
        members.append(info)
        if info.round == 0 and self.trigger == "start":
            self.result.operations_per_node[info.node] = self.per_node.get(info.node, 0)
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
        """The next round to complete is started by *trigger*; its time counts from now."""
        self.trigger = trigger
        self.round_started = time.perf_counter()

    async def until_rounds(self, count: int) -> RendezvousInfo:
        """Wait until *count* rounds are complete; return the last of them."""
        with anyio.fail_after(60):
            while len(self.completed) < count:
                await self.changed.wait()
        return self.completed[count - 1]
