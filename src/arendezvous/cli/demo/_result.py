"""What the demo measured, and the tables it ends with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

__all__ = ("DemoResult", "RoundSummary", "print_summary")


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
