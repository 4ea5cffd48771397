"""What a check returns: the verdict, its statistics and, for a violation, the explanation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..history import Operation
from .problem import NEVER

__all__ = ("CheckResult", "CheckStats", "Explanation", "Verdict")

Verdict = Literal["ok", "violation", "unknown"]
"""``ok``: linearizable; ``violation``: not; ``unknown``: the budget ran out first."""


def _ms(ns: int | None, origin: int) -> str:
    if ns is None or ns >= NEVER:
        return "       never"
    return f"{(ns - origin) / 1e6:12.3f}"


@dataclass(frozen=True)
class Explanation:
    """Why a key's history is not linearizable.

    :ivar key: the run whose history fails.
    :ivar message: one line saying what is wrong.
    :ivar operations: the operations that cannot be ordered, by invocation time; with
        ``minimal`` true, removing any one of them makes the others explainable.
    :ivar culprit: the operation whose completion ends the smallest failing prefix, if found.
    :ivar prefix_end: when that prefix ends (the culprit's completion time), in nanoseconds.
    :ivar minimal: whether minimisation finished within its budget.
    :ivar origin: times print relative to this (the key's first invocation), in nanoseconds.
    """

    key: str
    message: str
    operations: tuple[Operation, ...]
    culprit: Operation | None = None
    prefix_end: int | None = None
    minimal: bool = True
    origin: int = 0

    def __str__(self) -> str:
        lines = [f"key {self.key!r}: {self.message}"]
        if self.operations:
            note = "" if self.minimal else " (minimisation ran out of budget: not minimal)"
            lines.append(f"operations that cannot be ordered{note} (times in ms):")
            lines.append(f"  {'op':>6}  {'client':<16} {'invoked':>12} {'returned':>12}  call")
            for op in self.operations:
                lines.append(
                    f"  #{op.id:<5}  {op.client:<16} {_ms(op.call, self.origin)} "
                    f"{_ms(op.ret, self.origin)}  {op.describe()}"
                )
        if self.culprit is not None and self.prefix_end is not None:
            lines.append(
                f"the smallest failing prefix ends at {_ms(self.prefix_end, self.origin).strip()}"
                f" ms, when #{self.culprit.id} ({self.culprit.client}) returned"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class CheckStats:
    """What a check looked at and what it cost.

    :ivar operations: operations in the history.
    :ivar checked: operations that entered the search (completed calls and unknown writes).
    :ivar unknown: writes whose outcome is unknown.
    :ivar failed: calls that failed without effect (ignored).
    :ivar keys: distinct keys (registers) checked.
    :ivar max_concurrency: the most completed calls that overlapped in time.
    :ivar steps: configurations expanded by the search (explanations excluded).
    :ivar states: configurations memoised.
    :ivar seconds: time spent searching.
    :ivar explain_seconds: time spent building the explanation.
    """

    operations: int = 0
    checked: int = 0
    unknown: int = 0
    failed: int = 0
    keys: int = 0
    max_concurrency: int = 0
    steps: int = 0
    states: int = 0
    seconds: float = 0.0
    explain_seconds: float = 0.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of :func:`check`.

    :ivar verdict: ``"ok"``, ``"violation"`` or ``"unknown"`` (a budget ran out).
    :ivar explanation: for a violation, why (the first key found failing).
    :ivar stats: what the check cost.
    :ivar keys: the verdict of every key checked.
    :ivar reason: one line: the violation's message, or which budget ran out.
    """

    verdict: Verdict
    explanation: Explanation | None
    stats: CheckStats
    keys: Mapping[str, Verdict] = field(default_factory=dict)
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether the history is linearizable."""
        return self.verdict == "ok"

    def __str__(self) -> str:
        stats = self.stats
        head = (
            f"{self.verdict}: {stats.operations} operations on {stats.keys} keys "
            f"({stats.unknown} unknown, {stats.failed} failed, up to {stats.max_concurrency} "
            f"concurrent); {stats.steps} steps, {stats.states} states, {stats.seconds:.3f} s"
        )
        if self.explanation is not None:
            return f"{head}\n{self.explanation}"
        if self.reason:
            return f"{head}\n{self.reason}"
        return head

