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
    """What the demo measured. ``order``, ``operations`` and ``seconds`` are about round 0, and
    ``operations_per_node`` counts each node's store calls until it had its rank in it."""

    order: list[str] = field(default_factory=list)
    operations_per_node: dict[str, int] = field(default_factory=dict)
    operations: int = 0
    seconds: float = 0.0
    rounds: list[RoundSummary] = field(default_factory=list)
    total_operations: int = 0
    total_seconds: float = 0.0


def print_summary(result: DemoResult, out: TextIO) -> None:
    """The tables the demo ends with."""
    print("\njoin order (store calls each node made until it had its rank):", file=out)
    for position, name in enumerate(result.order, 1):
        calls = result.operations_per_node.get(name, 0)
        print(f"  {position:3d}. {name:10s} {calls:3d} store calls", file=out)
    joined = len(result.order)
    per_node = result.operations / joined if joined else 0.0
    print(
        f"\n{joined} joined with {result.operations} store calls in "
        f"{result.seconds * 1000:.1f} ms: {per_node:.1f} per node, however many nodes join "
        "(each writes its own record; nobody races)",
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
