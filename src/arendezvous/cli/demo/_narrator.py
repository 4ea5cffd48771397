"""The demo's bookkeeping and narration: who joined which round, what each round took, printed."""

from __future__ import annotations

import random
import time
from typing import TextIO

import anyio

from ...rendezvous import RendezvousInfo
from ...rendezvous._state import decode_state
from ._result import DemoResult, RoundSummary

__all__ = ("Demo",)


class Demo:
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
        """Print one line of the story."""
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
        """The next round to complete is started by *trigger*; its time counts from now."""
        self.trigger = trigger
        self.round_started = time.perf_counter()

    async def until_rounds(self, count: int) -> RendezvousInfo:
        """Wait until *count* rounds are complete; return the last of them."""
        with anyio.fail_after(60):
            while len(self.completed) < count:
                await self.changed.wait()
        return self.completed[count - 1]
