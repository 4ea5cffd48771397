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

from ._linearizability.check import check as check
from ._linearizability.results import CheckResult as CheckResult
from ._linearizability.results import CheckStats as CheckStats
from ._linearizability.results import Explanation as Explanation
from ._linearizability.results import Verdict as Verdict

__all__ = ("CheckResult", "CheckStats", "Explanation", "Verdict", "check")
