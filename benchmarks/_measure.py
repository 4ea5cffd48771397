"""Measuring helpers the store benchmarks share (not a benchmark itself).

Each ``bench_*.py`` script imports this module from its own directory (Python puts a script's
directory first on ``sys.path``). Only logic that is really the same in every script lives here;
each script keeps its own warm-up, round counts, caps and table layout.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

__all__ = ("compare", "percentile", "race", "timed_round")

_Number = TypeVar("_Number", int, float)

Op = Callable[[], Awaitable[object]]
Writer = Callable[[], Awaitable[bool]]


def percentile(samples: Sequence[_Number], fraction: float) -> _Number:
    """The sample at *fraction* (0..1) of the sorted *samples*: a real sample, no interpolation.

    Interpolating would report latencies that no call had.
    """
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def timed_round(op: Op, seconds: float, max_ops: int) -> list[float]:
    """Latencies (s) of sequential calls of *op* for *seconds* (at most *max_ops* calls)."""
    clock = time.perf_counter
    samples: list[float] = []
    deadline = clock() + seconds
    while len(samples) < max_ops and clock() < deadline:
        start = clock()
        await op()
        samples.append(clock() - start)
    return samples


async def compare(
    ours: Op,
    raw: Op,
    seconds: float,
    *,
    rounds: int,
    max_ops: int,
    warmup: int,
    raw_first: bool = False,
) -> tuple[list[float], list[float]]:
    """Latencies of *ours* and of *raw*, measured in alternating rounds after a warm-up of each.

    Alternating rounds (*rounds* of each, ``seconds / rounds / 2`` long, *raw* first with
    *raw_first*) make drift of a shared machine hit both sides alike. The warm-up (*warmup* calls
    of each) opens connections and warms code paths outside the measurement.
    """
    for op in (ours, raw):
        for _ in range(warmup):
            await op()
    ours_samples: list[float] = []
    raw_samples: list[float] = []
    per_round = seconds / rounds / 2
    for _ in range(rounds):
        if raw_first:
            raw_samples += await timed_round(raw, per_round, max_ops)
        ours_samples += await timed_round(ours, per_round, max_ops)
        if not raw_first:
            raw_samples += await timed_round(raw, per_round, max_ops)
    return ours_samples, raw_samples


async def race(writers: list[Writer], seconds: float, max_ops_each: int) -> tuple[int, int]:
    """Run every writer's CAS loop concurrently for *seconds*; return (successes, failures).

    A writer returns whether its compare-and-swap won; each stops after *max_ops_each* calls.
    """
    counts = [0, 0]
    deadline = anyio.current_time() + seconds

    async def loop(write: Writer) -> None:
        done = 0
        while done < max_ops_each and anyio.current_time() < deadline:
            counts[0 if await write() else 1] += 1
            done += 1

    async with anyio.create_task_group() as group:
        for write in writers:
            group.start_soon(loop, write)
    return counts[0], counts[1]


def comparison_row(name: str, ours: list[float], raw: list[float]) -> str:
    """A markdown table row of two sides' latencies (seconds each): ops/s, p50 and p99 in
    microseconds for ours and the raw client's, and the throughput ratio ours / raw."""
    ours_rate, raw_rate = len(ours) / sum(ours), len(raw) / sum(raw)
    return (
        f"| {name} | {ours_rate:,.0f} | {percentile(ours, 0.5) * 1e6:.0f} "
        f"| {percentile(ours, 0.99) * 1e6:.0f} | {raw_rate:,.0f} "
        f"| {percentile(raw, 0.5) * 1e6:.0f} | {percentile(raw, 0.99) * 1e6:.0f} "
        f"| {ours_rate / raw_rate:.2f} |"
    )
