"""The faults of a run: when to strike, and the record of what the harness did."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ("FaultReport", "fault_points")


@dataclass
class FaultReport:
    """What the harness did to the run."""

    server_kills: int = 0
    downtimes: list[float] = field(default_factory=list)
    killed_clients: list[str] = field(default_factory=list)
    random_moment_kills: int = 0
    replacements: int = 0
    timed_out_clients: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)


def fault_points(ops: int, count: int, clients: int, rng: random.Random) -> list[int]:
    """Operation counts at which to strike: spread over the run, each jittered a little.

    The last leaves at least a tenth of the operations (and one per client) to run after it, so
    the run shows clients going on after the fault.
    """
    if count <= 0:
        return []
    spacing = ops / (count + 1)
    points = [
        round(spacing * (index + 1) + rng.uniform(-spacing / 3, spacing / 3))
        for index in range(count)
    ]
    last = max(ops - max(ops // 10, clients), 1)
    return sorted(min(max(point, 1), last) for point in points)
