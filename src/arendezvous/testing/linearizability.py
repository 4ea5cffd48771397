"""Decide whether a recorded history of a token-checked compare-and-swap register is linearizable.

A history (see :mod:`arendezvous.testing.history`) is *linearizable* when some total order of its
calls (1) respects real time -- a call that returned before another was invoked comes first --
and (2) explains every result when the calls are applied one at a time to the register of the
backend contract:

* the register holds *no state*, or ``(state, token)``;
* ``get_state()`` returns the register; ``wait_for_change(t)`` returns it with a token other
  than ``t``, or ``None`` when it holds no state or the token ``t``;
* ``set_state(s, t)`` *wins* when ``t`` is the register's token (or ``None`` on no state): the
  register becomes ``(s, new)`` and the call returns ``(s, new, True)`` with a token ``new`` that
  the run never held before (tokens never repeat);
* otherwise it *loses*: it changes nothing and returns the register, or ``(b"", None, False)``
  when there is no state.

Calls that failed without effect are ignored. A write whose outcome is *unknown* (a connection
error, a cancellation, a crash) may take effect at any time after its invocation -- even after it
raised -- or never; its new token is not known, so it may be whichever token later calls saw
that no known write returned. Tokens are compared with ``==`` (and hashed, to be compared
quickly: equal tokens must hash equal, as Python requires; an unhashable token equals only
itself).

Usage::

    from arendezvous.testing.history import Recorder, RecordingBackend
    from arendezvous.testing.linearizability import check

    recorder = Recorder()
    ...  # run clients on RecordingBackend(backend, recorder) handles
    result = check(recorder.history())
    assert result.ok, result  # str(result) is the report, with the explanation

:func:`check` partitions the history by key (run id: each run is its own register) and runs a
Wing & Gong search over each part: it repeatedly picks a call that may come next in real time,
applies it to the register, and backtracks when some call can no longer be explained. Lowe's
memoisation caches every configuration (calls applied, register, tokens held so far) already
explored, so equivalent interleavings are explored once. Three refinements keep the search near
linear on real histories (see ``benchmarks/bench_linearizability.py``): a read that matches the
register is applied at once without branching (tokens never repeat, so it can always go first);
a write of unknown outcome whose token argument the register has moved past is dead, and counts
as applied in the memo key (so orders that differ only in *which* of several similar unknown
writes took effect coincide); and a write is not applied while a call that must come first
could not observe its new token, which a later call needs. The cost grows with how many calls
overlap in time, not with the length of the history.

When a part is not linearizable, the report explains it:

* the *smallest failing prefix*: the earliest completion time ``T`` such that the calls that
  completed by ``T`` (with the writes still running at ``T`` allowed to take effect or not) can
  no longer be ordered, and the call that completed at ``T``;
* a *minimal set of operations that cannot be ordered* within that prefix: they cannot be
  ordered whatever every other write did -- took effect or not, at any time its call allows,
  with any state and a token of its own -- and removing any one of them makes the rest
  explainable. For a compare-and-swap that is not atomic this is the two writes that both won
  with the same token; for a stale read, the read and the write that had replaced what it saw.

Some violations need no search and are named directly: a token that two writes returned (ABA),
a token seen with two different states, a token no write produced, a malformed result.

A search may take exponential time on pathological histories; ``time_budget`` and
``step_budget`` bound it and yield the verdict ``"unknown"`` instead of an answer. The
explanation has its own budget; when that runs out, the report says so and is not minimal.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .history import History, Operation

__all__ = ("CheckResult", "CheckStats", "Explanation", "Verdict", "check")

Verdict = Literal["ok", "violation", "unknown"]
"""``ok``: linearizable; ``violation``: not; ``unknown``: the budget ran out first."""

_EMPTY = -1  # the register holds no state; also the "token" None as an argument
_ANY = -2  # a token no kept operation produced (explanations only): bound when first observed
_NO_ARG = -3  # a read has no token argument to differ from
_NEVER = sys.maxsize  # the return time of a call that may take effect at any later time

_OBSERVE = 0  # read-only: register == v and v != a
_WAIT_NONE = 1  # read-only: register is empty or holds token a
_WRITE = 2  # needs register == a; moves it to one of the candidate new tokens
_HAVOC = 3  # stands in for a removed write (explanations only): moves the register to _ANY

_REQUIRED = 0  # completed: must be placed
_OPTIONAL = 1  # a write that may take effect, or not
_REMOVED = 2  # an optional stand-in for a removed write (explanations only)

_Child = tuple[int, int, int, int]  # call placed, new register, tokens held, token it replaced


# -- public result types -----------------------------------------------------------------------


def _ms(ns: int | None, origin: int) -> str:
    if ns is None or ns >= _NEVER:
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


# -- compiling a history for the search --------------------------------------------------------


class _Budget:
    def __init__(self, seconds: float | None, steps: int | None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.steps_left = steps
        self.reason = ""

    def step(self, count: int) -> bool:
        """Charge one step (the *count*-th of a search); look at the clock every 128 steps."""
        if self.steps_left is not None or count & 127 == 0:
            return self.spend(1 if self.steps_left is not None else 0)
        return True

    def spend(self, steps: int) -> bool:
        """Charge *steps*; return ``False`` once a limit is passed."""
        if self.steps_left is not None:
            self.steps_left -= steps
            if self.steps_left < 0:
                self.reason = "the step budget ran out"
                return False
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "the time budget ran out"
            return False
        return True


class _Tokens:
    """Interns tokens by ``==`` to small integers, so the search compares integers."""

    def __init__(self) -> None:
        self._ids: dict[Any, int] = {}
        self._unhashable: list[tuple[object, int]] = []
        self.values: list[object] = []

    def id(self, token: object) -> int:
        if token is None:
            return _EMPTY
        try:
            found = self._ids.get(token)
        except TypeError:
            for other, number in self._unhashable:
                if other is token:
                    return number
            number = len(self.values)
            self.values.append(token)
            self._unhashable.append((token, number))
            return number
        if found is None:
            found = self._ids[token] = len(self.values)
            self.values.append(token)
        return found


class _Violation(Exception):
    """Found without search: a result no order can explain."""

    def __init__(self, message: str, operations: Iterable[Operation]) -> None:
        super().__init__(message)
        self.message = message
        unique = {id(op): op for op in operations}  # tokens may be unhashable: no set()
        self.operations = tuple(sorted(unique.values(), key=lambda op: op.id))


class _Problem:
    """One key's operations as integer-coded nodes, sorted by invocation time."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.roles: list[int] = []
        self.calls: list[int] = []
        self.rets: list[int] = []
        self.kinds: list[int] = []
        self.observed: list[int] = []
        self.args: list[int] = []
        self.outs: list[tuple[int, ...]] = []
        self.deadlines: list[int] = []
        self.reserved: list[int] = []  # tokens kept writes returned: no stand-in produces them


def _same_token(a: object, b: object) -> bool:
    return a is b or (a is not None and b is not None and a == b)


def _check_alone(op: Operation) -> None:
    """Raise :class:`_Violation` if *op*'s result is impossible whatever else happened."""
    if op.kind == "write":
        if op.result is None or op.written is None:
            raise _Violation(f"write #{op.id} completed without a result", (op,))
        state, token = op.result
        if op.written:
            if token is None:
                raise _Violation(f"write #{op.id} won but returned the token None", (op,))
            if state != op.state:
                raise _Violation(
                    f"write #{op.id} won but returned the state {state!r}, "
                    f"not the {op.state!r} it wrote",
                    (op,),
                )
            if _same_token(token, op.token):
                raise _Violation(
                    f"write #{op.id} won but returned the token it was given, {token!r}: "
                    "a won write's token must be new",
                    (op,),
                )
            return
        if token is None and state != b"":
            raise _Violation(
                f"write #{op.id} lost and returned the state {state!r} with the token None "
                "(only an empty run has no token, and its state is b'')",
                (op,),
            )
        if _same_token(token, op.token):
            what = "on no state with the token None" if token is None else "with the current token"
            raise _Violation(f"write #{op.id} lost {what}: it should have won", (op,))
        return
    if op.result is not None:
        if op.result[1] is None:
            raise _Violation(f"#{op.id} returned a state with the token None", (op,))
        if op.kind == "wait" and _same_token(op.result[1], op.token):
            raise _Violation(
                f"wait_for_change #{op.id} returned the very token it was waiting to change",
                (op,),
            )


def _compile(entries: list[tuple[Operation, int]], *, exact: bool) -> _Problem:
    """Code *entries* (operation, role) for the search; raise :class:`_Violation` if one is obvious.

    *exact* is false when removed writes stand in as havoc: then a token no kept write produced
    may have come from one of them.
    """
    tokens = _Tokens()
    producers: dict[int, Operation] = {}
    state_of: dict[int, tuple[bytes, Operation]] = {}
    nodes: list[tuple[Operation, int, int, int, int, int]] = []  # op, role, kind, v, a, out
    unknown_writes: list[int] = []  # positions in nodes of writes with no known new token
    completed_tokens: set[int] = set()  # returned by completed winning writes
    reserved: set[int] = set()  # returned by any winning write: no other write produces them
    clashing: dict[int, Operation] = {}  # running writes whose token was seen with another state

    def bind_state(token: int, state: bytes, op: Operation) -> None:
        seen = state_of.get(token)
        if seen is None:
            state_of[token] = (state, op)
        elif seen[0] != state:
            raise _Violation(
                f"token {tokens.values[token]!r} was seen with two different states: "
                f"{seen[0]!r} (#{seen[1].id}) and {state!r} (#{op.id})",
                (seen[1], op),
            )

    # Results impossible on their own come first: they make the smallest explanations.
    for op, role in entries:
        if role == _REQUIRED:
            _check_alone(op)

    # Completed calls first: what they saw fixes each token's state, and a write still running
    # (in a prefix) whose token or state clashes with them simply cannot take effect.
    for op, role in sorted(entries, key=lambda entry: entry[1] != _REQUIRED):
        if op.kind == "write" and role == _REMOVED:
            nodes.append((op, role, _HAVOC, _NO_ARG, _NO_ARG, _NO_ARG))
            continue
        if op.kind == "write":
            assert op.state is not None or op.outcome != "ok"
            arg = tokens.id(op.token)
            if op.outcome == "ok":
                assert op.result is not None
                state, token = op.result
                new = tokens.id(token)
                if op.written:
                    reserved.add(new)
                    if role != _REQUIRED:
                        # Still running: it took effect, returning this token, or it did not.
                        known = state_of.get(new)
                        if new in completed_tokens:
                            continue  # a completed write returned its token: it did not
                        if known is not None and known[0] != state:
                            clashing.setdefault(new, op)
                            continue  # calls saw its token with another state: it did not
                        producers.setdefault(new, op)
                        nodes.append((op, role, _WRITE, _NO_ARG, arg, new))
                        continue
                    if new in producers:
                        raise _Violation(
                            f"writes #{producers[new].id} and #{op.id} both returned the token "
                            f"{token!r}: tokens must never repeat (ABA)",
                            (producers[new], op),
                        )
                    producers[new] = op
                    completed_tokens.add(new)
                    bind_state(new, state, op)
                    nodes.append((op, role, _WRITE, _NO_ARG, arg, new))
                    continue
                if role != _REQUIRED:
                    continue  # a lost write still running in a prefix: it changes nothing
                if new != _EMPTY:
                    bind_state(new, state, op)
                nodes.append((op, role, _OBSERVE, new, arg, _NO_ARG))
                continue
            unknown_writes.append(len(nodes))
            nodes.append((op, role, _WRITE, _NO_ARG, arg, _NO_ARG))
            continue
        if role != _REQUIRED:
            continue  # reads have no effect: one still running is simply left out
        if op.result is None:
            if op.kind == "read":
                nodes.append((op, role, _OBSERVE, _EMPTY, _NO_ARG, _NO_ARG))
            else:
                nodes.append((op, role, _WAIT_NONE, _NO_ARG, tokens.id(op.token), _NO_ARG))
            continue
        state, token = op.result
        seen_token = tokens.id(token)
        bind_state(seen_token, state, op)
        arg = _NO_ARG if op.kind == "read" else tokens.id(op.token)
        nodes.append((op, role, _OBSERVE, seen_token, arg, _NO_ARG))

    # Tokens the register must have held that no known write produced: an unknown write (or, in
    # an explanation, a removed one) must have produced each.
    mentioned: dict[int, None] = {}
    for node in nodes:
        if node[2] != _HAVOC:
            for token in (node[3], node[4]):
                if token >= 0:
                    mentioned[token] = None
    for token, op in clashing.items():
        if token not in producers:
            seen = state_of[token]
            raise _Violation(
                f"token {tokens.values[token]!r} was seen with the state {seen[0]!r} "
                f"(#{seen[1].id}) but the write that returns it, #{op.id}, wrote {op.state!r}",
                (seen[1], op),
            )
    orphans = [token for token in mentioned if token not in reserved]
    candidates: dict[int, tuple[int, ...]] = {}
    for position in unknown_writes:
        op = nodes[position][0]
        candidates[position] = tuple(
            token for token in orphans if token not in state_of or state_of[token][0] == op.state
        )
    if exact:
        produceable = {token for outs in candidates.values() for token in outs}
        for op, role, kind, v, a, _ in nodes:
            if role != _REQUIRED:
                continue
            # A read saw v; a won write found a in the register: someone must have written it.
            needed = v if kind == _OBSERVE else a if kind == _WRITE else _NO_ARG
            if needed >= 0 and needed not in producers and needed not in produceable:
                raise _Violation(
                    f"#{op.id} saw the token {tokens.values[needed]!r}, which no write produced "
                    "(nor could any write of unknown outcome have)",
                    (op,),
                )

    # Latest time at which a required call needs each token; an optional write is useless once
    # every call that could observe its new token is placed.
    needed_until: dict[int, int] = {}
    for op, role, kind, v, a, _ in nodes:
        if kind == _HAVOC:
            continue
        until = op.ret if role == _REQUIRED and op.ret is not None else _NEVER
        for token in (v, a):
            if token >= 0 and needed_until.get(token, -1) < until:
                needed_until[token] = until

    problem = _Problem()
    problem.reserved = sorted(reserved)
    order = sorted(
        range(len(nodes)), key=lambda position: (nodes[position][0].call, nodes[position][0].id)
    )
    for position in order:
        op, role, kind, v, a, out = nodes[position]
        outs: tuple[int, ...] = ()
        deadline = _NEVER
        if kind == _WRITE:
            outs = candidates[position] if out == _NO_ARG else (out,)
            if role != _REQUIRED:
                deadline = max((needed_until.get(token, -1) for token in outs), default=-1)
                if deadline < 0:
                    continue  # nobody could ever see its token: taking effect would be a dead end
        if role == _REQUIRED:
            assert op.ret is not None
            ret = op.ret
        elif role == _REMOVED and op.outcome == "ok" and op.ret is not None:
            ret = op.ret
        else:
            ret = _NEVER
        problem.ops.append(op)
        problem.roles.append(role)
        problem.calls.append(op.call)
        problem.rets.append(ret)
        problem.kinds.append(kind)
        problem.observed.append(v)
        problem.args.append(a)
        problem.outs.append(outs)
        problem.deadlines.append(deadline)
    return problem


# -- the search --------------------------------------------------------------------------------


class _Search:
    """Wing & Gong's search with Lowe's memoisation over one compiled key.

    A configuration is (calls placed, register, tokens the register has held). Besides placing
    matching reads at once (see :meth:`_closure`), two refinements keep equivalent
    configurations from being explored twice:

    * an optional write that can never take effect any more counts as placed in the memo key.
      Tokens never repeat, so once the register has moved past a write's token argument, that
      write is dead for good; configurations that differ only in *which* of several similar
      unknown writes took effect then coincide;
    * a write whose new token some later call must observe is not applied while an earlier
      call, which cannot observe that token, still has to be placed first (it could only be
      placed after the token is gone, and then the later call cannot see it).
    """

    def __init__(self, problem: _Problem, budget: _Budget, *, initial: int = _EMPTY) -> None:
        self.p = problem
        self.budget = budget
        self.initial = initial
        n = len(problem.calls)
        self.bits = [1 << i for i in range(n)]
        token_count = 1 + max(
            [
                *problem.observed,
                *problem.args,
                *(t for outs in problem.outs for t in outs),
                *problem.reserved,
                0,
            ]
        )
        self.tbits = [1 << t for t in range(token_count)]
        # A stand-in's token is one no kept write returned (tokens identify their writes).
        self.unbindable = 0
        for token in problem.reserved:
            self.unbindable |= self.tbits[token]
        self.req = [i for i in range(n) if problem.roles[i] == _REQUIRED]
        self.req_calls = [problem.calls[i] for i in self.req]
        self.by_ret = sorted(self.req, key=lambda i: problem.rets[i])
        optional = [i for i in range(n) if problem.roles[i] != _REQUIRED]
        self.opt_fin = [i for i in optional if problem.rets[i] < _NEVER]
        self.opt_fin_calls = [problem.calls[i] for i in self.opt_fin]
        # Every optional call before the first whose running maximum of return times reaches
        # the latest invocation placed has expired: the scan starts there.
        self.opt_fin_prefmax: list[int] = []
        for i in self.opt_fin:
            top = self.opt_fin_prefmax[-1] if self.opt_fin_prefmax else -1
            self.opt_fin_prefmax.append(max(top, problem.rets[i]))
        self.opt_inf = [i for i in optional if problem.rets[i] >= _NEVER]
        self.opt_inf_calls = [problem.calls[i] for i in self.opt_inf]

        # Masks of optional calls that die: by the token they need (once the register leaves
        # it), by deadline (once the frontier passes it), by return time (once a call invoked
        # after it is placed).
        self.dies_with: dict[int, int] = {}
        for i in optional:
            if problem.kinds[i] == _WRITE:
                arg = problem.args[i]
                self.dies_with[arg] = self.dies_with.get(arg, 0) | self.bits[i]
        self.by_deadline, self.deadline_masks = self._prefix_masks(
            [(problem.deadlines[i], i) for i in optional if problem.kinds[i] == _WRITE]
        )
        self.by_ret_optional, self.ret_masks = self._prefix_masks(
            [(problem.rets[i], i) for i in self.opt_fin]
        )

        # The latest invocation among required calls that mention each token.
        self.last_mention: dict[int, int] = {}
        self.last_mentioner: dict[int, int] = {}
        for i in self.req:
            token = problem.observed[i] if problem.kinds[i] == _OBSERVE else problem.args[i]
            if token >= 0 and self.last_mention.get(token, -1) < problem.calls[i]:
                self.last_mention[token] = problem.calls[i]
                self.last_mentioner[token] = i
        # Only stand-ins with deadlines (explanations) make the waits on an empty register a
        # choice rather than a certainty; see _closure.
        self.eager_empty = not self.opt_fin
        self.steps = 0
        self.visited: set[tuple[int, int, int, int]] = set()
        # The latest frontier any configuration reached: every prefix of calls completed
        # before it has a linearization (that configuration's order), so a violation's
        # smallest failing prefix ends there or later.
        self.deepest = -1
        # The return of a call that a move pruned at the latest frontier would have left
        # unable to see its token: where a failing prefix probably ends.
        self.suspect = -1
        self._suspect_frontier = -1

    def _prefix_masks(self, items: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        items.sort()
        masks = [0]
        for _, i in items:
            masks.append(masks[-1] | self.bits[i])
        return [value for value, _ in items], masks

    def _mentions(self, i: int, token: int) -> bool:
        p = self.p
        if p.kinds[i] == _OBSERVE:
            return p.observed[i] == token and p.args[i] != token
        return p.args[i] == token

    def _closure(self, lin: int, r: int, cp: int, rp: int) -> tuple[int, int, int, int]:
        """Place every read-only call that matches the register now; return the frontier.

        The frontier is the earliest return time of a required call not yet placed (``-1`` when
        all are placed): only calls invoked by then may come next. Placing a matching read at
        once loses nothing: the register cannot come back to its value later (tokens never
        repeat), so any order that places the read later can place it now. The exception is a
        ``wait_for_change`` that timed out on an empty register: it also matches the token it
        was given, so an order may place it later, after writes; moving it first would put those
        writes after it, which real time forbids for a stand-in whose call had already returned.
        """
        bits, req, by_ret = self.bits, self.req, self.by_ret
        rets, kinds, observed, args = self.p.rets, self.p.kinds, self.p.observed, self.p.args
        count = len(req)
        while True:
            while rp < count and lin & bits[by_ret[rp]]:
                rp += 1
            if rp == count:
                return lin, cp, rp, -1
            while lin & bits[req[cp]]:
                cp += 1
            frontier = rets[by_ret[rp]]
            if r == _ANY:
                return lin, cp, rp, frontier
            progressed = False
            for k in range(cp, bisect_right(self.req_calls, frontier, cp)):
                i = req[k]
                if lin & bits[i]:
                    continue
                kind = kinds[i]
                if (kind == _OBSERVE and r == observed[i] and r != args[i]) or (
                    kind == _WAIT_NONE and (r == args[i] or (r == _EMPTY and self.eager_empty))
                ):
                    lin |= bits[i]
                    progressed = True
            if not progressed:
                return lin, cp, rp, frontier

    def _writes(self, i: int, r: int, seen: int, out: list[_Child]) -> None:
        a = self.p.args[i]
        tbits = self.tbits
        if r == _ANY:
            if a == _EMPTY or (seen | self.unbindable) & tbits[a]:
                return
            seen |= tbits[a]
        elif r != a:
            return
        for t in self.p.outs[i]:
            if not seen & tbits[t]:
                out.append((i, t, seen | tbits[t], a))

    def _children(
        self, done: int, r: int, seen: int, cp: int, frontier: int, latest_call: int
    ) -> list[_Child]:
        """The moves from a configuration: (call placed, register, tokens held, token left)."""
        p, bits, tbits = self.p, self.bits, self.tbits
        kinds, observed, args, rets = p.kinds, p.observed, p.args, p.rets
        out: list[_Child] = []
        for k in range(cp, bisect_right(self.req_calls, frontier, cp)):
            i = self.req[k]
            if done & bits[i]:
                continue
            kind = kinds[i]
            if kind == _WRITE:
                self._writes(i, r, seen, out)
            elif kind == _WAIT_NONE and r == _EMPTY:
                out.append((i, r, seen, r))  # not placed by _closure: see there
            elif r == _ANY:
                # The unknown token a removed write left becomes the one this call observed.
                if kind == _OBSERVE:
                    token = observed[i] if observed[i] != args[i] else _EMPTY
                else:
                    token = args[i]
                if token >= 0 and not (seen | self.unbindable) & tbits[token]:
                    out.append((i, token, seen | tbits[token], _ANY))
        havoc = -1
        start = bisect_left(self.opt_fin_prefmax, latest_call)
        end = bisect_right(self.opt_fin_calls, frontier, start)
        for group in (
            self.opt_fin[start:end],
            self.opt_inf[: bisect_right(self.opt_inf_calls, frontier)],
        ):
            for i in group:
                if done & bits[i] or rets[i] < latest_call:
                    continue
                if kinds[i] == _HAVOC:
                    # Stand-ins are interchangeable but for their deadlines: spending the one
                    # that expires first leaves the others at least as useful.
                    if r != _ANY and (havoc < 0 or rets[i] < rets[havoc]):
                        havoc = i
                else:
                    self._writes(i, r, seen, out)
        if havoc >= 0:
            out.append((havoc, _ANY, seen, r))
        return out

    def run(self) -> bool | None:
        """``True`` if linearizable, ``False`` if not, ``None`` if the budget ran out."""
        p, bits = self.p, self.bits
        calls = p.calls
        finite = bool(self.opt_fin)
        lin, cp, rp, frontier = self._closure(0, self.initial, 0, 0)
        if frontier < 0:
            return True
        self.deepest = frontier
        dead = self.deadline_masks[bisect_left(self.by_deadline, frontier)]
        visited = self.visited
        visited.add((lin | dead, self.initial, 0, 0))
        latest = calls[lin.bit_length() - 1] if lin else -1
        stack = [
            (
                iter(self._children(lin | dead, self.initial, 0, cp, frontier, latest)),
                lin,
                dead,
                cp,
                rp,
            )
        ]
        budget = self.budget
        while stack:
            children, parent_lin, parent_dead, cp, rp = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            placed, r, seen, left = child
            lin, child_cp, child_rp, frontier = self._closure(parent_lin | bits[placed], r, cp, rp)
            if frontier < 0:
                return True
            if frontier > self.deepest:
                self.deepest = frontier
            if (
                r >= 0
                and r != left
                and self.last_mention.get(r, -1) > frontier
                and not self._mentions(self.by_ret[child_rp], r)
            ):
                blocked = p.rets[self.last_mentioner[r]]
                if frontier > self._suspect_frontier or (
                    frontier == self._suspect_frontier and blocked < self.suspect
                ):
                    self._suspect_frontier, self.suspect = frontier, blocked
                continue
            dead = parent_dead | self.deadline_masks[bisect_left(self.by_deadline, frontier)]
            if left != r and left != _ANY:
                dead |= self.dies_with.get(left, 0)
            latest = calls[lin.bit_length() - 1]
            if finite:
                dead |= self.ret_masks[bisect_left(self.by_ret_optional, latest)]
            done = lin | dead
            key = (done, r, seen, latest if finite else 0)
            if key in visited:
                continue
            visited.add(key)
            self.steps += 1
            if not budget.step(self.steps):
                return None
            stack.append(
                (
                    iter(self._children(done, r, seen, child_cp, frontier, latest)),
                    lin,
                    dead,
                    child_cp,
                    child_rp,
                )
            )
        return False


# -- explaining a violation --------------------------------------------------------------------


def _entries(ops: list[Operation], until: int | None = None) -> list[tuple[Operation, int]]:
    """The roles of *ops* in the history, or in its prefix of calls completed by *until*."""
    entries: list[tuple[Operation, int]] = []
    for op in ops:
        if op.outcome == "ok":
            assert op.ret is not None
            if until is None or op.ret <= until:
                entries.append((op, _REQUIRED))
            elif op.call <= until and op.kind == "write" and op.written:
                try:
                    _check_alone(op)
                except _Violation:
                    # Its result, still to come, is impossible: until then it is merely running.
                    op = dataclasses.replace(op, outcome="unknown", result=None, written=None)
                entries.append((op, _OPTIONAL))
        elif op.outcome == "unknown" and op.kind == "write" and (until is None or op.call <= until):
            entries.append((op, _OPTIONAL))
    return entries


def _fails(
    entries: list[tuple[Operation, int]], budget: _Budget, *, exact: bool = True
) -> bool | None:
    if not budget.spend(0):
        return None
    try:
        problem = _compile(entries, exact=exact)
    except _Violation:
        return True
    result = _Search(problem, budget).run()
    return None if result is None else not result


def _smallest_failing_prefix(
    ops: list[Operation], budget: _Budget, reached: int = -1, suspect: int = -1
) -> tuple[int, list[tuple[Operation, int]]] | None:
    """Binary search over completion times; linearizability is closed under prefixes.

    *reached* is the deepest frontier a failed search reached: no earlier prefix fails, and
    the one ending there often does, so it is tried first; *suspect* is a likely end after it.
    """
    ends = sorted({op.ret for op in ops if op.outcome == "ok" and op.ret is not None})
    low, high = bisect_left(ends, reached), len(ends) - 1

    def fails(index: int) -> bool | None:
        return _fails(_entries(ops, ends[index]), budget)

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
    return ends[low], _entries(ops, ends[low])
    return ends[low], _entries(ops, ends[low])


_Entries = list[tuple[Operation, int]]


def _relaxation(entries: _Entries) -> Callable[[_Entries, _Budget], bool | None]:
    """A test of whether some of *entries* fail with every other write of them as havoc.

    Stand-ins that returned before the first kept call was invoked can only act before every
    kept call, where one does what any number do; of those with no return that were invoked
    by then, no more are useful than there are kept calls. The rest are left out, which keeps
    each test's cost near the size of the kept part of a long history.
    """

    def fails(kept: _Entries, budget: _Budget) -> bool | None:
        chosen = {id(entry) for entry in kept}
        first_call = min(op.call for op, _ in kept)
        trial: _Entries = []
        early_done: tuple[Operation, int] | None = None
        early_open: _Entries = []
        for entry in entries:
            op = entry[0]
            if id(entry) in chosen:
                trial.append(entry)
            elif op.kind == "write" and (op.outcome != "ok" or op.written):
                # A removed read, or lost write, changed nothing: it is left out, not stood in.
                stand_in = (op, _REMOVED)
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
    budget: _Budget,
    start: list[tuple[Operation, int]] | None = None,
) -> tuple[list[tuple[Operation, int]], bool]:
    """Delta debugging: the fewest entries that still fail with every other write as havoc.

    Starts from *start* (a subset known to fail), or all *entries*. Returns the subset and
    whether it is 1-minimal (removing any one entry makes the rest explainable).
    """
    relaxed = _relaxation(entries)

    def fails(kept: _Entries) -> bool | None:
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


def _failing_window(entries: _Entries, culprit: Operation, budget: _Budget) -> _Entries | None:
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


def _describe(entries: _Entries) -> str:
    """One line saying what is wrong with a minimal set of operations."""
    try:
        _compile(entries, exact=False)
    except _Violation as violation:
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


def _explain(
    key: str, ops: list[Operation], budget: _Budget, reached: int = -1, suspect: int = -1
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
    culprit = next(op for op, role in prefix if role == _REQUIRED and op.ret == end)
    start = None
    try:
        _compile(prefix, exact=True)
    except _Violation as violation:
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


# -- the entry point ---------------------------------------------------------------------------


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
    budget = _Budget(time_budget, step_budget)
    verdicts: dict[str, Verdict] = {}
    explanation: Explanation | None = None
    reason = ""
    steps = states = checked = 0
    explain_seconds = 0.0
    for key, ops in history.by_key().items():
        live = [op for op in ops if op.outcome == "ok" or op.outcome == "unknown"]
        entries = _entries(live)
        checked += len(entries)
        verdict: Verdict
        try:
            problem = _compile(entries, exact=True)
        except _Violation as violation:
            verdict = "violation"
            if explanation is None:
                if explain:
                    explain_started = time.monotonic()
                    explanation = _explain(
                        key, [op for op, _ in entries], _Budget(explain_budget, None)
                    )
                    explain_seconds += time.monotonic() - explain_started
                else:
                    explanation = Explanation(
                        key, violation.message, violation.operations, origin=ops[0].call
                    )
        else:
            search = _Search(problem, budget)
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
                        explanation = _explain(
                            key,
                            [op for op, _ in entries],
                            _Budget(explain_budget, None),
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
