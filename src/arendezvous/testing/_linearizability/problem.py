"""One key's history compiled for the search: integer-coded calls, and the obvious violations.

Tokens become small integers (compared by ``==``), each call a node with a role (it must be
placed, may take effect or not, or stands in for a removed write), a kind (observe, wait for
no change, write, havoc) and the token it needs and produces. Results that no order can explain
-- a token two writes returned, a token seen with two states, a token no write produced -- are
raised as :class:`Violation` while compiling, so they need no search.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable

from .._history.tokens import TokenIds
from .._promises import tokens_equal
from ..history import Operation

__all__ = (
    "ANY",
    "EMPTY",
    "HAVOC",
    "NEVER",
    "NO_ARG",
    "OBSERVE",
    "OPTIONAL",
    "REMOVED",
    "REQUIRED",
    "WAIT_NONE",
    "WRITE",
    "Entries",
    "Problem",
    "RegisterTokens",
    "Violation",
    "check_alone",
    "compile_entries",
    "entries_until",
)

EMPTY = -1  # the register holds no state; also the "token" None as an argument
ANY = -2  # a token no kept operation produced (explanations only): bound when first observed
NO_ARG = -3  # a read has no token argument to differ from
NEVER = sys.maxsize  # the return time of a call that may take effect at any later time

OBSERVE = 0  # read-only: register == v and v != a
WAIT_NONE = 1  # read-only: register is empty or holds token a
WRITE = 2  # needs register == a; moves it to one of the candidate new tokens
HAVOC = 3  # stands in for a removed write (explanations only): moves the register to ANY

REQUIRED = 0  # completed: must be placed
OPTIONAL = 1  # a write that may take effect, or not
REMOVED = 2  # an optional stand-in for a removed write (explanations only)


Entries = list[tuple[Operation, int]]
"""Operations with their roles (``REQUIRED``, ``OPTIONAL``, ``REMOVED``)."""


class RegisterTokens(TokenIds):
    """Tokens as small integers, so the search compares integers; ``None`` (no state) is
    :data:`EMPTY`."""

    def id(self, token: object) -> int:
        """*token*'s number, or :data:`EMPTY` for ``None``."""
        return EMPTY if token is None else super().id(token)


class Violation(Exception):
    """Found without search: a result no order can explain."""

    def __init__(self, message: str, operations: Iterable[Operation]) -> None:
        super().__init__(message)
        self.message = message
        unique = {id(op): op for op in operations}  # tokens may be unhashable: no set()
        self.operations = tuple(sorted(unique.values(), key=lambda op: op.id))


class Problem:
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


def check_alone(op: Operation) -> None:
    """Raise :class:`Violation` if *op*'s result is impossible whatever else happened."""
    if op.kind == "write":
        if op.result is None or op.written is None:
            raise Violation(f"write #{op.id} completed without a result", (op,))
        state, token = op.result
        if op.written:
            if token is None:
                raise Violation(f"write #{op.id} won but returned the token None", (op,))
            if state != op.state:
                raise Violation(
                    f"write #{op.id} won but returned the state {state!r}, "
                    f"not the {op.state!r} it wrote",
                    (op,),
                )
            if tokens_equal(token, op.token):
                raise Violation(
                    f"write #{op.id} won but returned the token it was given, {token!r}: "
                    "a won write's token must be new",
                    (op,),
                )
            return
        if token is None and state != b"":
            raise Violation(
                f"write #{op.id} lost and returned the state {state!r} with the token None "
                "(only an empty run has no token, and its state is b'')",
                (op,),
            )
        if tokens_equal(token, op.token):
            what = "on no state with the token None" if token is None else "with the current token"
            raise Violation(f"write #{op.id} lost {what}: it should have won", (op,))
        return
    if op.result is not None:
        if op.result[1] is None:
            raise Violation(f"#{op.id} returned a state with the token None", (op,))
        if op.kind == "wait" and tokens_equal(op.result[1], op.token):
            raise Violation(
                f"wait_for_change #{op.id} returned the very token it was waiting to change",
                (op,),
            )


def compile_entries(entries: list[tuple[Operation, int]], *, exact: bool) -> Problem:
    """Code *entries* (operation, role) for the search; raise :class:`Violation` if one is obvious.

    *exact* is false when removed writes stand in as havoc: then a token no kept write produced
    may have come from one of them.
    """
    tokens = RegisterTokens()
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
            raise Violation(
                f"token {tokens.values[token]!r} was seen with two different states: "
                f"{seen[0]!r} (#{seen[1].id}) and {state!r} (#{op.id})",
                (seen[1], op),
            )

    # Results impossible on their own come first: they make the smallest explanations.
    for op, role in entries:
        if role == REQUIRED:
            check_alone(op)

    # Completed calls first: what they saw fixes each token's state, and a write still running
    # (in a prefix) whose token or state clashes with them simply cannot take effect.
    for op, role in sorted(entries, key=lambda entry: entry[1] != REQUIRED):
        if op.kind == "write" and role == REMOVED:
            nodes.append((op, role, HAVOC, NO_ARG, NO_ARG, NO_ARG))
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
                    if role != REQUIRED:
                        # Still running: it took effect, returning this token, or it did not.
                        known = state_of.get(new)
                        if new in completed_tokens:
                            continue  # a completed write returned its token: it did not
                        if known is not None and known[0] != state:
                            clashing.setdefault(new, op)
                            continue  # calls saw its token with another state: it did not
                        producers.setdefault(new, op)
                        nodes.append((op, role, WRITE, NO_ARG, arg, new))
                        continue
                    if new in producers:
                        raise Violation(
                            f"writes #{producers[new].id} and #{op.id} both returned the token "
                            f"{token!r}: tokens must never repeat (ABA)",
                            (producers[new], op),
                        )
                    producers[new] = op
                    completed_tokens.add(new)
                    bind_state(new, state, op)
                    nodes.append((op, role, WRITE, NO_ARG, arg, new))
                    continue
                if role != REQUIRED:
                    continue  # a lost write still running in a prefix: it changes nothing
                if new != EMPTY:
                    bind_state(new, state, op)
                nodes.append((op, role, OBSERVE, new, arg, NO_ARG))
                continue
            unknown_writes.append(len(nodes))
            nodes.append((op, role, WRITE, NO_ARG, arg, NO_ARG))
            continue
        if role != REQUIRED:
            continue  # reads have no effect: one still running is simply left out
        if op.result is None:
            if op.kind == "read":
                nodes.append((op, role, OBSERVE, EMPTY, NO_ARG, NO_ARG))
            else:
                nodes.append((op, role, WAIT_NONE, NO_ARG, tokens.id(op.token), NO_ARG))
            continue
        state, token = op.result
        seen_token = tokens.id(token)
        bind_state(seen_token, state, op)
        arg = NO_ARG if op.kind == "read" else tokens.id(op.token)
        nodes.append((op, role, OBSERVE, seen_token, arg, NO_ARG))

    # Tokens the register must have held that no known write produced: an unknown write (or, in
    # an explanation, a removed one) must have produced each.
    mentioned: dict[int, None] = {}
    for node in nodes:
        if node[2] != HAVOC:
            for token in (node[3], node[4]):
                if token >= 0:
                    mentioned[token] = None
    for token, op in clashing.items():
        if token not in producers:
            seen = state_of[token]
            raise Violation(
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
            if role != REQUIRED:
                continue
            # A read saw v; a won write found a in the register: someone must have written it.
            needed = v if kind == OBSERVE else a if kind == WRITE else NO_ARG
            if needed >= 0 and needed not in producers and needed not in produceable:
                raise Violation(
                    f"#{op.id} saw the token {tokens.values[needed]!r}, which no write produced "
                    "(nor could any write of unknown outcome have)",
                    (op,),
                )

    # Latest time at which a required call needs each token; an optional write is useless once
    # every call that could observe its new token is placed.
    needed_until: dict[int, int] = {}
    for op, role, kind, v, a, _ in nodes:
        if kind == HAVOC:
            continue
        until = op.ret if role == REQUIRED and op.ret is not None else NEVER
        for token in (v, a):
            if token >= 0 and needed_until.get(token, -1) < until:
                needed_until[token] = until

    problem = Problem()
    problem.reserved = sorted(reserved)
    order = sorted(
        range(len(nodes)), key=lambda position: (nodes[position][0].call, nodes[position][0].id)
    )
    for position in order:
        op, role, kind, v, a, out = nodes[position]
        outs: tuple[int, ...] = ()
        deadline = NEVER
        if kind == WRITE:
            outs = candidates[position] if out == NO_ARG else (out,)
            if role != REQUIRED:
                deadline = max((needed_until.get(token, -1) for token in outs), default=-1)
                if deadline < 0:
                    continue  # nobody could ever see its token: taking effect would be a dead end
        if role == REQUIRED:
            assert op.ret is not None
            ret = op.ret
        elif role == REMOVED and op.outcome == "ok" and op.ret is not None:
            ret = op.ret
        else:
            ret = NEVER
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



def entries_until(ops: list[Operation], until: int | None = None) -> list[tuple[Operation, int]]:
    """The roles of *ops* in the history, or in its prefix of calls completed by *until*."""
    entries: list[tuple[Operation, int]] = []
    for op in ops:
        if op.outcome == "ok":
            assert op.ret is not None
            if until is None or op.ret <= until:
                entries.append((op, REQUIRED))
            elif op.call <= until and op.kind == "write" and op.written:
                try:
                    check_alone(op)
                except Violation:
                    # Its result, still to come, is impossible: until then it is merely running.
                    op = dataclasses.replace(op, outcome="unknown", result=None, written=None)
                entries.append((op, OPTIONAL))
        elif op.outcome == "unknown" and op.kind == "write" and (until is None or op.call <= until):
            entries.append((op, OPTIONAL))
    return entries

