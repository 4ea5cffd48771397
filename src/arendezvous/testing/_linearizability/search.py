"""Wing & Gong's search with Lowe's memoisation, over one compiled key, within a budget."""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right

from .problem import ANY, EMPTY, HAVOC, NEVER, OBSERVE, REQUIRED, WAIT_NONE, WRITE, Problem

__all__ = ("Budget", "Search")

Child = tuple[int, int, int, int]  # call placed, new register, tokens held, token it replaced



class Budget:
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



class Search:
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

    def __init__(self, problem: Problem, budget: Budget, *, initial: int = EMPTY) -> None:
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
        self.req = [i for i in range(n) if problem.roles[i] == REQUIRED]
        self.req_calls = [problem.calls[i] for i in self.req]
        self.by_ret = sorted(self.req, key=lambda i: problem.rets[i])
        optional = [i for i in range(n) if problem.roles[i] != REQUIRED]
        self.opt_fin = [i for i in optional if problem.rets[i] < NEVER]
        self.opt_fin_calls = [problem.calls[i] for i in self.opt_fin]
        # Every optional call before the first whose running maximum of return times reaches
        # the latest invocation placed has expired: the scan starts there.
        self.opt_fin_prefmax: list[int] = []
        for i in self.opt_fin:
            top = self.opt_fin_prefmax[-1] if self.opt_fin_prefmax else -1
            self.opt_fin_prefmax.append(max(top, problem.rets[i]))
        self.opt_inf = [i for i in optional if problem.rets[i] >= NEVER]
        self.opt_inf_calls = [problem.calls[i] for i in self.opt_inf]

        # Masks of optional calls that die: by the token they need (once the register leaves
        # it), by deadline (once the frontier passes it), by return time (once a call invoked
        # after it is placed).
        self.dies_with: dict[int, int] = {}
        for i in optional:
            if problem.kinds[i] == WRITE:
                arg = problem.args[i]
                self.dies_with[arg] = self.dies_with.get(arg, 0) | self.bits[i]
        self.by_deadline, self.deadline_masks = self._prefix_masks(
            [(problem.deadlines[i], i) for i in optional if problem.kinds[i] == WRITE]
        )
        self.by_ret_optional, self.ret_masks = self._prefix_masks(
            [(problem.rets[i], i) for i in self.opt_fin]
        )

        # The latest invocation among required calls that mention each token.
        self.last_mention: dict[int, int] = {}
        self.last_mentioner: dict[int, int] = {}
        for i in self.req:
            token = problem.observed[i] if problem.kinds[i] == OBSERVE else problem.args[i]
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
        if p.kinds[i] == OBSERVE:
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
            if r == ANY:
                return lin, cp, rp, frontier
            progressed = False
            for k in range(cp, bisect_right(self.req_calls, frontier, cp)):
                i = req[k]
                if lin & bits[i]:
                    continue
                kind = kinds[i]
                if (kind == OBSERVE and r == observed[i] and r != args[i]) or (
                    kind == WAIT_NONE and (r == args[i] or (r == EMPTY and self.eager_empty))
                ):
                    lin |= bits[i]
                    progressed = True
            if not progressed:
                return lin, cp, rp, frontier

    def _writes(self, i: int, r: int, seen: int, out: list[Child]) -> None:
        a = self.p.args[i]
        tbits = self.tbits
        if r == ANY:
            if a == EMPTY or (seen | self.unbindable) & tbits[a]:
                return
            seen |= tbits[a]
        elif r != a:
            return
        for t in self.p.outs[i]:
            if not seen & tbits[t]:
                out.append((i, t, seen | tbits[t], a))

    def _children(
        self, done: int, r: int, seen: int, cp: int, frontier: int, latest_call: int
    ) -> list[Child]:
        """The moves from a configuration: (call placed, register, tokens held, token left)."""
        p, bits, tbits = self.p, self.bits, self.tbits
        kinds, observed, args, rets = p.kinds, p.observed, p.args, p.rets
        out: list[Child] = []
        for k in range(cp, bisect_right(self.req_calls, frontier, cp)):
            i = self.req[k]
            if done & bits[i]:
                continue
            kind = kinds[i]
            if kind == WRITE:
                self._writes(i, r, seen, out)
            elif kind == WAIT_NONE and r == EMPTY:
                out.append((i, r, seen, r))  # not placed by _closure: see there
            elif r == ANY:
                # The unknown token a removed write left becomes the one this call observed.
                if kind == OBSERVE:
                    token = observed[i] if observed[i] != args[i] else EMPTY
                else:
                    token = args[i]
                if token >= 0 and not (seen | self.unbindable) & tbits[token]:
                    out.append((i, token, seen | tbits[token], ANY))
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
                if kinds[i] == HAVOC:
                    # Stand-ins are interchangeable but for their deadlines: spending the one
                    # that expires first leaves the others at least as useful.
                    if r != ANY and (havoc < 0 or rets[i] < rets[havoc]):
                        havoc = i
                else:
                    self._writes(i, r, seen, out)
        if havoc >= 0:
            out.append((havoc, ANY, seen, r))
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
            if left != r and left != ANY:
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

