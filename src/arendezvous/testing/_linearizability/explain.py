"""Explain a violation: the smallest failing prefix, and a minimal set of calls that cannot be
ordered (delta debugging, with every other write standing in as havoc)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from ..history import Operation
from .problem import (
    REMOVED,
    REQUIRED,
    Entries,
    Violation,
    compile_entries,
    entries_until,
)
from .results import Explanation
from .search import Budget, Search

__all__ = ("explain_violation",)

def _fails(
    entries: list[tuple[Operation, int]], budget: Budget, *, exact: bool = True
) -> bool | None:
    if not budget.spend(0):
        return None
    try:
        problem = compile_entries(entries, exact=exact)
    except Violation:
        return True
    result = Search(problem, budget).run()
    return None if result is None else not result


def _smallest_failing_prefix(
    ops: list[Operation], budget: Budget, reached: int = -1, suspect: int = -1
) -> tuple[int, list[tuple[Operation, int]]] | None:
    """Binary search over completion times; linearizability is closed under prefixes.

    *reached* is the deepest frontier a failed search reached: no earlier prefix fails, and
    the one ending there often does, so it is tried first; *suspect* is a likely end after it.
    """
    ends = sorted({op.ret for op in ops if op.outcome == "ok" and op.ret is not None})
    low, high = bisect_left(ends, reached), len(ends) - 1

    def fails(index: int) -> bool | None:
        return _fails(entries_until(ops, ends[index]), budget)

    # Probe where the failure probably is; then gallop down from the earliest failing end found
    # (the smallest failing prefix is usually right there); then bisect what is left.
    for probe in (low, bisect_left(ends, suspect)):
        if low <= probe < high:
            failed = fails(probe)
            if failed is None:
                return None
            if failed:
                high = probe
            else:
                low = probe + 1
    distance = 1
    while low < high:
        probe = max(low, high - distance)
        failed = fails(probe)
        if failed is None:
            return None
        if not failed:
            low = probe + 1
            break
        high = probe
        distance *= 2
    while low < high:
        middle = (low + high) // 2
        failed = fails(middle)
        if failed is None:
            return None
        if failed:
            high = middle
        else:
            low = middle + 1
    return ends[low], entries_until(ops, ends[low])
    return ends[low], entries_until(ops, ends[low])


def _relaxation(entries: Entries) -> Callable[[Entries, Budget], bool | None]:
    """A test of whether some of *entries* fail with every other write of them as havoc.

    Stand-ins that returned before the first kept call was invoked can only act before every
    kept call, where one does what any number do; of those with no return that were invoked
    by then, no more are useful than there are kept calls. The rest are left out, which keeps
    each test's cost near the size of the kept part of a long history.
    """

    def fails(kept: Entries, budget: Budget) -> bool | None:
        chosen = {id(entry) for entry in kept}
        first_call = min(op.call for op, _ in kept)
        trial: Entries = []
        early_done: tuple[Operation, int] | None = None
        early_open: Entries = []
        for entry in entries:
            op = entry[0]
            if id(entry) in chosen:
                trial.append(entry)
            elif op.kind == "write" and (op.outcome != "ok" or op.written):
                # A removed read, or lost write, changed nothing: it is left out, not stood in.
                stand_in = (op, REMOVED)
                if op.outcome == "ok" and op.ret is not None and op.ret < first_call:
                    if early_done is None or op.ret > (early_done[0].ret or 0):
                        early_done = stand_in
                elif op.outcome != "ok" and op.call < first_call:
                    early_open.append(stand_in)
                else:
                    trial.append(stand_in)
        trial.extend(early_open[-(len(kept) + 1) :])
        if early_done is not None:
            trial.append(early_done)
        return _fails(trial, budget, exact=False)

    return fails


def _minimise(
    entries: list[tuple[Operation, int]],
    budget: Budget,
    start: list[tuple[Operation, int]] | None = None,
) -> tuple[list[tuple[Operation, int]], bool]:
    """Delta debugging: the fewest entries that still fail with every other write as havoc.

    Starts from *start* (a subset known to fail), or all *entries*. Returns the subset and
    whether it is 1-minimal (removing any one entry makes the rest explainable).
    """
    relaxed = _relaxation(entries)

    def fails(kept: Entries) -> bool | None:
        return relaxed(kept, budget)

    current = list(entries if start is None else start)
    if fails(current) is not True:
        return current, False
    chunks = 2
    while len(current) >= 2:
        size = -(-len(current) // chunks)
        parts = [current[first : first + size] for first in range(0, len(current), size)]
        reduced = False
        for index in range(len(parts)):
            complement = [entry for j, part in enumerate(parts) if j != index for entry in part]
            result = fails(complement)
            if result is None:
                return current, False
            if result:
                current = complement
                chunks = max(chunks - 1, 2)
                reduced = True
                break
        if not reduced:
            if chunks >= len(current):
                break
            chunks = min(len(current), chunks * 2)
    return current, True


def _failing_window(entries: Entries, culprit: Operation, budget: Budget) -> Entries | None:
    """The shortest run of entries ending with the last invoked that fails on its own (others
    as havoc), doubling its length; violations are usually local to the culprit."""
    ordered = sorted(entries, key=lambda entry: (entry[0].call, entry[0].id))
    relaxed = _relaxation(entries)
    length = 8
    while length < len(ordered):
        window = ordered[-length:]
        if all(op is not culprit for op, _ in window):
            window.extend(entry for entry in entries if entry[0] is culprit)
        result = relaxed(window, budget)
        if result is None:
            return None
        if result:
            return window
        length *= 2
    return None


def _token_key(token: object) -> object:
    try:
        hash(token)
    except TypeError:
        return ("unhashable", id(token))
    return token


def _describe(entries: Entries) -> str:
    """One line saying what is wrong with a minimal set of operations."""
    try:
        compile_entries(entries, exact=False)
    except Violation as violation:
        return violation.message
    core = [op for op, _ in entries]
    if len(core) == 1:
        (op,) = core
        if op.result is not None and op.result[1] is not None:
            return (
                f"#{op.id} ({op.client}) saw the token {op.result[1]!r} before any write that "
                "could have produced it had been invoked"
            )
    won: dict[object, list[Operation]] = {}
    for op in core:
        if op.kind == "write" and op.outcome == "ok" and op.written:
            won.setdefault(_token_key(op.token), []).append(op)
    for winners in won.values():
        if len(winners) >= 2:
            names = ", ".join(f"#{op.id} ({op.client})" for op in winners)
            return (
                f"{len(winners)} writes won with the same token {winners[0].token!r}: {names}; "
                "a compare-and-swap lets one write win per token (is it atomic?)"
            )
    for reader in core:
        if reader.outcome != "ok" or reader.result is None or reader.written:
            continue
        seen = _token_key(reader.result[1])
        for writer in won.get(seen, []):
            if writer.ret is not None and writer.ret < reader.call:
                saw = "no state" if reader.result[1] is None else f"the token {reader.result[1]!r}"
                return (
                    f"#{reader.id} ({reader.client}) saw {saw} after #{writer.id} "
                    f"({writer.client}) had replaced it (a stale read)"
                )
    if all(op.kind != "write" or op.written is False for op in core):
        return (
            "these calls saw the register's states in an order that no sequence of writes "
            "explains (a stale read: the register went back)"
        )
    return "no order of these operations that respects real time explains all their results"


def explain_violation(
    key: str, ops: list[Operation], budget: Budget, reached: int = -1, suspect: int = -1
) -> Explanation:
    origin = min(op.call for op in ops)
    found = _smallest_failing_prefix(ops, budget, reached, suspect)
    if found is None:
        return Explanation(
            key,
            f"not linearizable; the explanation ran out of budget ({budget.reason})",
            (),
            minimal=False,
            origin=origin,
        )
    end, prefix = found
    culprit = next(op for op, role in prefix if role == REQUIRED and op.ret == end)
    start = None
    try:
        compile_entries(prefix, exact=True)
    except Violation as violation:
        named = {id(op) for op in violation.operations}
        start = [entry for entry in prefix if id(entry[0]) in named]
        if _relaxation(prefix)(start, budget) is not True:
            # Only the history as it is shows this one (a token no write produced): there is
            # nothing to relax.
            return Explanation(
                key, violation.message, violation.operations, culprit, end, True, origin
            )
    if start is None:
        start = _failing_window(prefix, culprit, budget)
    core, complete = _minimise(prefix, budget, start)
    operations = tuple(sorted((op for op, _ in core), key=lambda op: op.id))
    return Explanation(key, _describe(core), operations, culprit, end, complete, origin)

