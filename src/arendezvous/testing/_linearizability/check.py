"""The checker's entry point: each key's history compiled, searched and, if need be, explained."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..history import History, Operation
from .explain import explain_violation
from .problem import Violation, compile_entries, entries_until
from .results import CheckResult, CheckStats, Explanation, Verdict
from .search import Budget, Search

__all__ = ("check",)


def _max_concurrency(ops: Iterable[Operation]) -> int:
    events: list[tuple[int, int]] = []
    for op in ops:
        if op.ret is not None:
            events.append((op.call, 1))
            events.append((op.ret, -1))
    events.sort(key=lambda event: (event[0], -event[1]))
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def check(
    history: History | Iterable[Operation],
    *,
    time_budget: float | None = 60.0,
    step_budget: int | None = None,
    explain: bool = True,
    explain_budget: float | None = 30.0,
) -> CheckResult:
    """Check *history* for linearizability as a compare-and-swap register per key.

    :param history: a :class:`~arendezvous.testing.history.History`, or operations to build one.
    :param time_budget: seconds the search may take over all keys (``None``: no limit).
    :param step_budget: configurations the search may expand over all keys (``None``: no limit).
    :param explain: on a violation, find the smallest failing prefix and a minimal set of
        operations that cannot be ordered (this re-runs the search on sub-histories).
    :param explain_budget: seconds the explanation may take; past it, the report says what it
        found so far and is marked not minimal.
    :returns: the verdict ``"ok"``, ``"violation"`` (with an :class:`Explanation`) or
        ``"unknown"`` when a budget ran out before an answer.
    """
    if not isinstance(history, History):
        history = History(history)
    started = time.monotonic()
    budget = Budget(time_budget, step_budget)
    verdicts: dict[str, Verdict] = {}
    explanation: Explanation | None = None
    reason = ""
    steps = states = checked = 0
    explain_seconds = 0.0
    for key, ops in history.by_key().items():
        live = [op for op in ops if op.outcome == "ok" or op.outcome == "unknown"]
        entries = entries_until(live)
        checked += len(entries)
        verdict: Verdict
        try:
            problem = compile_entries(entries, exact=True)
        except Violation as violation:
            verdict = "violation"
            if explanation is None:
                if explain:
                    explain_started = time.monotonic()
                    explanation = explain_violation(
                        key, [op for op, _ in entries], Budget(explain_budget, None)
                    )
                    explain_seconds += time.monotonic() - explain_started
                else:
                    explanation = Explanation(
                        key, violation.message, violation.operations, origin=ops[0].call
                    )
        else:
            search = Search(problem, budget)
            result = search.run()
            steps += search.steps
            states += len(search.visited)
            if result is None:
                verdict = "unknown"
                reason = reason or f"key {key!r}: {budget.reason} before a verdict"
            elif result:
                verdict = "ok"
            else:
                verdict = "violation"
                if explanation is None:
                    if explain:
                        explain_started = time.monotonic()
                        explanation = explain_violation(
                            key,
                            [op for op, _ in entries],
                            Budget(explain_budget, None),
                            search.deepest,
                            search.suspect,
                        )
                        explain_seconds += time.monotonic() - explain_started
                    else:
                        explanation = Explanation(
                            key,
                            "not linearizable (explanation not requested)",
                            (),
                            minimal=False,
                            origin=ops[0].call,
                        )
        verdicts[key] = verdict
        if verdict == "unknown" and not budget.spend(0):
            for other in history.by_key():
                verdicts.setdefault(other, "unknown")
            break
    if explanation is not None:
        overall: Verdict = "violation"
        reason = explanation.message
    elif "unknown" in verdicts.values():
        overall = "unknown"
    else:
        overall = "ok"
    seconds = time.monotonic() - started - explain_seconds
    stats = CheckStats(
        operations=len(history),
        checked=checked,
        unknown=len(history.select(kind="write", outcome="unknown")),
        failed=len(history.select(outcome="fail")),
        keys=len(verdicts),
        max_concurrency=_max_concurrency(history),
        steps=steps,
        states=states,
        seconds=seconds,
        explain_seconds=explain_seconds,
    )
    return CheckResult(overall, explanation, stats, verdicts, reason)

