"""The linearizability checker: hand-made histories, a brute-force cross-check, recordings."""

from __future__ import annotations

import itertools
from typing import Any, Literal

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from arendezvous import MemoryBackend, MemoryStore, Token
from arendezvous.testing.history import History, Operation, Recorder, RecordingBackend
from arendezvous.testing.linearizability import CheckResult, check

read = Operation.read
write = Operation.write
wait = Operation.wait


def verdict(*ops: Operation, **kwargs: Any) -> str:
    return check(list(ops), **kwargs).verdict


# -- hand-written linearizable histories ------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    result = check([])
    assert result.verdict == "ok"
    assert result.ok
    assert result.explanation is None
    assert result.stats.operations == 0


def test_sequential_history() -> None:
    assert (
        verdict(
            read("a", 0, 1, None),
            write("a", 2, 3, b"x", None, (b"x", 1, True)),
            read("b", 4, 5, (b"x", 1)),
            write("b", 6, 7, b"y", 1, (b"y", 2, True)),
            write("a", 8, 9, b"z", 1, (b"y", 2, False)),
            wait("a", 10, 11, 1, (b"y", 2)),
            wait("a", 12, 13, 2, None),
        )
        == "ok"
    )


def test_lost_write_on_an_empty_register_sees_no_state() -> None:
    assert verdict(write("a", 0, 1, b"x", 7, (b"", None, False))) == "ok"
    assert verdict(wait("a", 0, 1, None, None)) == "ok"


def test_concurrent_writers_one_winner_losers_see_it() -> None:
    # Three writers race with token 1; b wins, a and c see b's write.
    assert (
        verdict(
            write("w", 0, 1, b"x", None, (b"x", 1, True)),
            write("a", 10, 20, b"a", 1, (b"b", 2, False)),
            write("b", 11, 15, b"b", 1, (b"b", 2, True)),
            write("c", 12, 25, b"c", 1, (b"b", 2, False)),
            read("d", 13, 14, (b"x", 1)),  # a read concurrent with the winner may see the old
            read("e", 14, 16, (b"b", 2)),  # ... or the new state
        )
        == "ok"
    )


def test_read_during_a_write_may_see_either_side_but_not_go_back() -> None:
    base = [
        write("w", 0, 1, b"x", None, (b"x", 1, True)),
        write("w", 10, 20, b"y", 1, (b"y", 2, True)),
    ]
    assert verdict(*base, read("r", 12, 13, (b"y", 2)), read("r", 14, 15, (b"y", 2))) == "ok"
    assert verdict(*base, read("r", 12, 13, (b"x", 1)), read("r", 14, 15, (b"y", 2))) == "ok"
    result = check([*base, read("r", 12, 13, (b"y", 2)), read("r", 14, 15, (b"x", 1))])
    assert result.verdict == "violation"


def test_unknown_write_that_took_effect_later() -> None:
    # The write raised at 5 yet took effect afterwards: another client saw its state at 30.
    assert (
        verdict(
            write("w", 0, 1, b"x", None, (b"x", 1, True)),
            write("a", 2, 5, b"y", 1, None),
            read("b", 10, 11, (b"x", 1)),
            read("b", 30, 31, (b"y", 9)),
            write("b", 32, 33, b"z", 9, (b"z", 10, True)),
        )
        == "ok"
    )


def test_unknown_write_that_never_took_effect() -> None:
    assert (
        verdict(
            write("w", 0, 1, b"x", None, (b"x", 1, True)),
            write("a", 2, None, b"y", 1, None),
            read("b", 10, 11, (b"x", 1)),
            write("b", 12, 13, b"z", 1, (b"z", 2, True)),
        )
        == "ok"
    )


def test_each_key_is_its_own_register() -> None:
    result = check(
        [
            write("a", 0, 1, b"x", None, (b"x", 1, True), key="one"),
            write("b", 0, 1, b"x", None, (b"x", 1, True), key="two"),
            read("c", 2, 3, (b"x", 1), key="one"),
            read("c", 2, 3, None, key="three"),
        ]
    )
    assert result.verdict == "ok"
    assert result.keys == {"one": "ok", "two": "ok", "three": "ok"}


def test_failed_calls_are_ignored() -> None:
    failed = Operation("write", "a", "run", 2, 3, "fail", b"y", 1, error="TypeError")
    failed_read = Operation("read", "a", "run", 4, 5, "fail", error="RendezvousConnectionError")
    result = check([write("w", 0, 1, b"x", None, (b"x", 1, True)), failed, failed_read])
    assert result.ok
    assert result.stats.failed == 2


def test_a_pending_read_is_ignored() -> None:
    pending = Operation("read", "a", "run", 2, None, "unknown")
    assert check([write("w", 0, 1, b"x", None, (b"x", 1, True)), pending]).ok


def test_garbage_tokens_are_merely_stale() -> None:
    assert (
        verdict(
            write("w", 0, 1, b"x", None, (b"x", 1, True)),
            write("a", 2, 3, b"y", "invalid", (b"x", 1, False)),
            write("a", 4, 5, b"y", ("incarnation", 1), (b"x", 1, False)),
        )
        == "ok"
    )


# -- hand-written violations -------------------------------------------------------------------


def explained(*ops: Operation) -> CheckResult:
    result = check(list(ops))
    assert result.verdict == "violation", result
    assert result.explanation is not None
    assert str(result.explanation)
    return result


def ids(result: CheckResult) -> list[int]:
    assert result.explanation is not None
    return [op.id for op in result.explanation.operations]


def test_two_winners_with_one_token_are_named() -> None:
    result = explained(
        write("w", 0, 1, b"x", None, (b"x", 1, True)),
        read("r", 2, 3, (b"x", 1)),
        write("a", 10, 20, b"a", 1, (b"a", 2, True)),
        write("b", 11, 21, b"b", 1, (b"b", 3, True)),
        read("r", 30, 31, (b"b", 3)),
    )
    assert result.explanation is not None
    assert ids(result) == [2, 3]
    assert {op.client for op in result.explanation.operations} == {"a", "b"}
    assert "2 writes won with the same token 1" in result.explanation.message
    assert result.explanation.minimal
    assert result.explanation.culprit is not None
    assert result.explanation.culprit.id == 3
    assert result.explanation.prefix_end == 21


def test_stale_read_after_a_completed_write() -> None:
    result = explained(
        write("w", 0, 1, b"x", None, (b"x", 1, True)),
        write("w", 2, 3, b"y", 1, (b"y", 2, True)),
        read("r", 4, 5, (b"x", 1)),
    )
    assert ids(result) == [1, 2]
    assert result.explanation is not None
    assert "stale read" in result.explanation.message


def test_read_of_no_state_after_a_create() -> None:
    result = explained(write("w", 0, 1, b"x", None, (b"x", 1, True)), read("r", 2, 3, None))
    assert ids(result) == [0, 1]


def test_losing_write_that_should_have_won() -> None:
    result = explained(
        write("w", 0, 1, b"x", None, (b"x", 1, True)),
        write("a", 2, 3, b"y", 1, (b"x", 1, False)),
    )
    assert ids(result) == [1]


def test_create_that_lost_on_an_empty_register() -> None:
    result = explained(write("a", 0, 1, b"y", None, (b"", None, False)))
    assert ids(result) == [0]


def test_loser_reports_a_state_overwritten_before_it_started() -> None:
    result = explained(
        write("w", 0, 1, b"x", None, (b"x", 1, True)),
        write("w", 2, 3, b"y", 1, (b"y", 2, True)),
        write("a", 4, 5, b"z", 7, (b"x", 1, False)),
    )
    assert ids(result) == [1, 2]


def test_wait_reporting_a_change_that_did_not_happen() -> None:
    explained(write("w", 0, 1, b"x", None, (b"x", 1, True)), wait("r", 2, 3, 1, (b"x", 1)))
    explained(write("w", 0, 1, b"x", None, (b"x", 1, True)), wait("r", 2, 3, 5, None))


def test_repeated_token_is_aba() -> None:
    result = explained(
        write("w", 0, 1, b"x", None, (b"x", "h", True)),
        write("w", 2, 3, b"y", "h", (b"y", "g", True)),
        write("w", 4, 5, b"x", "g", (b"x", "h", True)),
    )
    assert result.explanation is not None
    assert "never repeat" in result.explanation.message
    assert ids(result) == [0, 2]


def test_won_write_returning_its_own_token() -> None:
    result = explained(
        write("w", 0, 1, b"x", None, (b"x", 1, True)),
        write("w", 2, 3, b"y", 1, (b"y", 1, True)),
    )
    assert ids(result) == [1]


def test_won_write_returning_another_state() -> None:
    assert ids(explained(write("w", 0, 1, b"x", None, (b"q", 1, True)))) == [0]


def test_one_token_with_two_states() -> None:
    result = explained(
        write("w", 0, 1, b"x", None, (b"x", 1, True)),
        read("r", 2, 3, (b"z", 1)),
    )
    assert ids(result) == [0, 1]
    assert result.explanation is not None
    assert "two different states" in result.explanation.message


def test_token_from_nowhere() -> None:
    result = explained(read("r", 0, 1, (b"x", 5)))
    assert ids(result) == [0]
    assert result.explanation is not None
    assert "before any write that could have produced it" in result.explanation.message
    # With a write around that could have, in time, only the history as it is shows the fault.
    result = explained(read("r", 0, 3, (b"x", 5)), write("w", 1, 2, b"y", None, (b"y", 1, True)))
    assert ids(result) == [0]
    assert result.explanation is not None
    assert "which no write produced" in result.explanation.message


def test_unknown_write_cannot_explain_a_read_before_it_was_invoked() -> None:
    explained(
        write("w", 0, 1, b"x", None, (b"x", 1, True)),
        read("r", 2, 3, (b"y", 9)),
        write("a", 5, None, b"y", 1, None),
    )


def test_unknown_write_cannot_produce_two_tokens() -> None:
    explained(
        write("w", 0, 1, b"x", None, (b"x", 1, True)),
        write("a", 2, None, b"y", 1, None),
        read("r", 5, 6, (b"y", 8)),
        read("r", 7, 8, (b"y", 9)),
    )


def test_violation_in_one_key_does_not_taint_another() -> None:
    result = check(
        [
            write("w", 0, 1, b"x", None, (b"x", 1, True), key="bad"),
            read("r", 2, 3, None, key="bad"),
            write("w", 0, 1, b"x", None, (b"x", 1, True), key="good"),
            read("r", 2, 3, (b"x", 1), key="good"),
        ]
    )
    assert result.verdict == "violation"
    assert result.keys == {"bad": "violation", "good": "ok"}
    assert result.explanation is not None
    assert result.explanation.key == "bad"


def test_minimal_core_inside_a_long_history() -> None:
    ops: list[Operation] = [write("w0", 0, 1, b"s0", None, (b"s0", 0, True))]
    now = 10
    for token in range(30):  # a long chain of correct writes and reads
        ops.append(
            write(
                "w",
                now,
                now + 5,
                b"s%d" % (token + 1),
                token,
                (b"s%d" % (token + 1), token + 1, True),
            )
        )
        ops.append(read("r", now + 2, now + 7, (b"s%d" % (token + 1), token + 1)))
        now += 10
    # then two writers both win with token 30
    ops.append(write("x", now, now + 5, b"x", 30, (b"x", 100, True)))
    ops.append(write("y", now + 1, now + 6, b"y", 30, (b"y", 101, True)))
    for token in range(5):
        ops.append(read("r", now + 10 + token, now + 11 + token, (b"y", 101)))
    result = explained(*ops)
    assert result.explanation is not None
    assert {op.client for op in result.explanation.operations} == {"x", "y"}
    assert result.explanation.minimal


def test_budget_gives_unknown() -> None:
    # Many overlapping writes of unknown outcome that all could produce the tokens seen: the
    # search must branch; a budget of one step cannot finish.
    ops = [write("w", 0, 1, b"s", None, (b"s", 0, True))]
    ops += [write(f"u{i}", 2, None, b"s", 0, None) for i in range(12)]
    ops += [read("r", 10 + i, 11 + i, (b"s", 100 + i)) for i in range(6)]
    result = check(ops, step_budget=1)
    assert result.verdict == "unknown"
    assert "budget" in result.reason
    assert check(ops).verdict == "violation"  # unbounded, it answers (six tokens, one write each)


def _sequential_writes(count: int) -> list[Operation]:
    ops = [write("w", 0, 1, b"0", None, (b"0", 0, True))]
    for token in range(count):
        start = 10 * (token + 1)
        new = b"%d" % (token + 1)
        ops.append(write("w", start, start + 5, new, token, (new, token + 1, True)))
    return ops


def test_time_budget_gives_unknown() -> None:
    ops = _sequential_writes(300)  # one search step per write: past the clock's first look
    result = check(ops, time_budget=0)
    assert result.verdict == "unknown"
    assert "time budget" in result.reason
    assert check(ops).ok


def test_stats_describe_the_history() -> None:
    ops = [
        *_sequential_writes(3),
        read("r", 12, 38, (b"2", 2)),  # overlaps two writes
        write("u", 41, None, b"x", 3, None),
        Operation("read", "f", "run", 42, 43, "fail", error="RendezvousConnectionError"),
        read("r", 0, 1, None, key="other"),
    ]
    stats = check(ops).stats
    assert stats.operations == 8
    assert stats.keys == 2
    assert stats.unknown == 1
    assert stats.failed == 1
    assert stats.checked == 7
    assert stats.max_concurrency == 2
    assert stats.steps >= 1
    assert stats.states >= stats.steps
    assert stats.seconds >= 0


def test_explanation_can_be_skipped() -> None:
    result = check(
        [write("w", 0, 1, b"x", None, (b"x", 1, True)), read("r", 2, 3, None)], explain=False
    )
    assert result.verdict == "violation"
    assert result.explanation is not None
    assert result.explanation.operations == ()


def test_report_prints_clients_times_and_calls() -> None:
    result = explained(
        write("w", 0, 1_000_000, b"x", None, (b"x", 1, True)),
        write("alice", 2_000_000, 3_000_000, b"a", 1, (b"a", 2, True)),
        write("bob", 2_500_000, 3_500_000, b"b", 1, (b"b", 3, True)),
    )
    text = str(result)
    assert "alice" in text
    assert "bob" in text
    assert "set_state(b'a', token=1) -> won (b'a', 2)" in text
    assert "2.000" in text
    assert "3.500" in text


# -- cross-check against brute force -----------------------------------------------------------


class _Fresh:
    """A token no operation mentions (brute force: what an unknown write may get)."""


Placed = tuple[Operation, str]  # an operation and how it may be placed: see brute_force


def _matches(register: tuple[bytes, Token] | None, token: Token | None) -> bool:
    if token is None:
        return register is None
    return register is not None and register[1] == token


_UNBOUND = b"<unbound>"  # the state a removed write left, bound when first observed


def _explains(
    order: list[Placed],
    register: tuple[bytes, Token] | None,
    used: list[Token],
    universe: list[Token],
    reserved: list[Token],
) -> bool:
    """Apply *order* to the register of the contract, branching on unknown tokens."""
    if not order:
        return True
    (op, mode), rest = order[0], order[1:]
    # A write of unknown outcome, or a removed one, gets a token never seen before and not one
    # that a kept write returned (tokens identify their writes).
    fresh = [
        new
        for new in [*universe, _Fresh()]
        if all(new != old for old in used) and all(new != mine for mine in reserved)
    ]
    if mode == "havoc":  # a removed write: any effect at all
        return any(
            _explains(rest, (_UNBOUND, new), [*used, new], universe, reserved) for new in fresh
        )
    if op.outcome == "ok" and op.kind != "write" and op.result is not None and op.result[1] is None:
        return False  # a state without a token: only a losing write on no state returns that
    if op.kind == "read":
        after = _observe(op.result, register)
        return after is not False and _explains(rest, after, used, universe, reserved)
    if op.kind == "wait":
        if op.result is None:
            fine = register is None or (op.token is not None and register[1] == op.token)
            return fine and _explains(rest, register, used, universe, reserved)
        after = _observe(op.result, register)
        return (
            after is not False
            and register is not None
            and register[1] != op.token
            and _explains(rest, after, used, universe, reserved)
        )
    assert op.state is not None
    if op.outcome == "unknown":
        return _matches(register, op.token) and any(
            _explains(rest, (op.state, new), [*used, new], universe, reserved) for new in fresh
        )
    assert op.result is not None
    if op.written:
        new = op.result[1]
        return (
            _matches(register, op.token)
            and op.result[0] == op.state
            and new is not None
            and all(new != old for old in used)
            and _explains(rest, (op.state, new), [*used, new], universe, reserved)
        )
    after = _observe(op.result, register)
    return (
        not _matches(register, op.token)
        and after is not False
        and _explains(rest, after, used, universe, reserved)
    )


def _observe(
    seen: tuple[bytes, Token | None] | None, register: tuple[bytes, Token] | None
) -> tuple[bytes, Token] | Literal[False] | None:
    """The register after an observation of *seen*, or ``False`` if it does not match."""
    if seen is None or seen == (b"", None) or register is None:
        return register if seen in (None, (b"", None)) and register is None else False
    if seen[1] != register[1]:
        return False
    if register[0] == _UNBOUND:
        return (seen[0], register[1])
    return register if seen[0] == register[0] else False


def brute_force(history: list[Operation], modes: dict[int, str] | None = None) -> bool:
    """Every subset of the optional operations, every order consistent with real time.

    *modes* maps operation ids to ``"required"`` (default for completed calls), ``"optional"``
    (default for unknown writes: may take effect after invocation, or never) or ``"havoc"``
    (may take effect within its call, or never -- any call at all if unknown -- with any new
    token and state). Operations not in *modes* use the default; pass ``None`` for the whole
    history as recorded.
    """
    modes = modes or {}
    placed: list[Placed] = []
    for op in history:
        mode = modes.get(op.id, "required" if op.outcome == "ok" else "optional")
        if mode == "optional" and op.outcome == "ok" and op.written:
            # A write still running at the end of a prefix: it took effect or not, and if it
            # did its token is the one it will return.
            mode = "optional-known"
        if op.outcome == "ok" or op.kind == "write":
            placed.append((op, mode))
    required = [entry for entry in placed if entry[1] == "required"]
    optional = [entry for entry in placed if entry[1] != "required"]
    universe: list[Token] = []
    for op in history:
        for token in (op.token, None if op.result is None else op.result[1]):
            if token is not None and all(token != other for other in universe):
                universe.append(token)

    def bound(entry: Placed) -> float:
        op, mode = entry
        if mode == "required" or (mode == "havoc" and op.outcome == "ok"):
            assert op.ret is not None
            return op.ret
        return float("inf")

    def respects_real_time(order: tuple[Placed, ...]) -> bool:
        for earlier, later in itertools.combinations(order, 2):
            # `later` placed after `earlier`: it must not have returned before `earlier` began.
            if bound(later) < earlier[0].call:
                return False
        return True

    reserved = [
        op.result[1]
        for op, mode in placed
        if mode != "havoc" and op.outcome == "ok" and op.written and op.result is not None
    ]
    for count in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, count):
            for order in itertools.permutations([*required, *chosen]):
                steps = [
                    (op, "required") if mode == "optional-known" else (op, mode)
                    for op, mode in order
                ]
                if respects_real_time(order) and _explains(steps, None, [], universe, reserved):
                    return True
    return False


@st.composite
def small_histories(draw: st.DrawFn, corrupt: bool | None = None) -> list[Operation]:
    """A correct register run at random points of random intervals, then perhaps corrupted."""
    count = draw(st.integers(1, 6))
    specs = []
    for index in range(count):
        start = draw(st.integers(0, 12))
        length = draw(st.integers(0, 8))
        point = draw(st.integers(start, start + length))
        specs.append((point, index, start, start + length))
    register: tuple[bytes, int] | None = None
    issued: list[int] = []
    ops: list[Operation] = []
    for _point, index, start, end in sorted(specs):
        kind = draw(st.sampled_from(["read", "write", "write", "wait"]))
        client = f"c{index}"
        call, ret = start * 2, end * 2 + 1
        if kind == "read":
            ops.append(read(client, call, ret, register))
            continue
        choice = draw(st.sampled_from(["current", "current", "none", "stale", "garbage"]))
        token: Token | None
        if choice == "current":
            token = None if register is None else register[1]
        elif choice == "stale" and issued:
            token = draw(st.sampled_from(issued))
        elif choice == "garbage":
            token = 99
        else:
            token = None
        if kind == "wait":
            changed = register is not None and register[1] != token
            ops.append(wait(client, call, ret, token, register if changed else None))
            continue
        state = draw(st.sampled_from([b"a", b"b", b"c%d" % index]))
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "unknown"]))
        applies = outcome == "ok" or draw(st.booleans())
        wins = _matches(register, token) and applies
        result: tuple[bytes, Token | None, bool]
        if wins:
            new = len(issued) + 1
            issued.append(new)
            register = (state, new)
            result = (state, new, True)
        else:
            result = (b"", None, False) if register is None else (*register, False)
        if outcome == "unknown":
            ops.append(write(client, call, draw(st.sampled_from([ret, None])), state, token, None))
        else:
            ops.append(write(client, call, ret, state, token, result))
    if corrupt or (corrupt is None and draw(st.booleans())):
        ops = draw(_corrupt(ops, issued))
    return ops


@st.composite
def _corrupt(draw: st.DrawFn, ops: list[Operation], issued: list[int]) -> list[Operation]:
    target = draw(st.integers(0, len(ops) - 1))
    op = ops[target]
    tokens = [*issued, 1, 2, 77]
    how = draw(st.sampled_from(["token", "state", "flip", "time", "empty"]))
    if how == "time":
        shift = draw(st.integers(-20, 20))
        ret = None if op.ret is None else max(op.call + abs(shift), op.ret + shift)
        ops[target] = Operation(
            op.kind,
            op.client,
            op.key,
            op.call + shift,
            ret,
            op.outcome,
            op.state,
            op.token,
            op.result,
            op.written,
        )
    elif op.outcome == "ok" and op.result is not None:
        state, token = op.result
        if how == "token":
            token = draw(st.sampled_from(tokens))
        elif how == "state":
            state = draw(st.sampled_from([b"a", b"b", b"zz"]))
        elif how == "empty":
            state, token = (b"", None) if op.kind == "write" else (state, token)
            if op.kind != "write":
                ops[target] = Operation(
                    op.kind, op.client, op.key, op.call, op.ret, "ok", token=op.token
                )
                return ops
        written = (not op.written) if how == "flip" and op.kind == "write" else op.written
        ops[target] = Operation(
            op.kind,
            op.client,
            op.key,
            op.call,
            op.ret,
            "ok",
            op.state,
            op.token,
            (state, token),
            written,
        )
    return ops


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_histories())
def test_agrees_with_brute_force(ops: list[Operation]) -> None:
    history = History(ops)
    result = check(history)
    assert result.verdict in ("ok", "violation")
    assert (result.verdict == "ok") == brute_force(list(history)), str(result)
    if result.explanation is not None and result.explanation.operations:
        core = list(result.explanation.operations)
        assert all(op in history for op in core)


def _relaxed(
    history: History, core: set[int], end: float
) -> tuple[list[Operation], dict[int, str]]:
    """The prefix ending at *end*, with the writes outside *core* as havoc (reads dropped)."""
    kept: list[Operation] = []
    modes: dict[int, str] = {}
    for op in history:
        finished = op.outcome == "ok" and op.ret is not None and op.ret <= end
        running_write = (
            op.kind == "write" and op.call <= end and (op.outcome == "unknown" or op.written)
        )
        if not (finished or running_write):
            continue
        if op.id in core:
            modes[op.id] = "required" if finished else "optional"
        elif op.kind == "write" and (op.outcome == "unknown" or op.written):
            modes[op.id] = "havoc"
        else:
            continue
        kept.append(op)
    return kept, modes


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(small_histories(corrupt=True))
def test_explanations_are_minimal_certificates(ops: list[Operation]) -> None:
    """The operations named cannot be ordered whatever the other writes did; any fewer can."""
    history = History(ops)
    result = check(history)
    assume(result.verdict == "violation")
    explanation = result.explanation
    assert explanation is not None
    assert explanation.minimal
    core = {op.id for op in explanation.operations}
    assert core
    end = float("inf") if explanation.prefix_end is None else explanation.prefix_end
    if "no write produced" not in explanation.message:  # that one needs the others as they are
        assert not brute_force(*_relaxed(history, core, end)), str(result)
    for dropped in core:
        assert brute_force(*_relaxed(history, core - {dropped}, end)), (dropped, str(result))


def test_generator_makes_both_verdicts() -> None:
    """The cross-check above is only as good as its mix of verdicts: see that both occur."""
    seen: set[bool] = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(small_histories())
    def collect(ops: list[Operation]) -> None:
        seen.add(brute_force(list(History(ops))))

    collect()
    assert seen == {True, False}


# -- recorded histories ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_recorded_memory_backend_history_is_linearizable() -> None:
    store = MemoryStore()
    recorder = Recorder()

    async def client(number: int) -> None:
        backend = RecordingBackend(MemoryBackend("counter", store), recorder)
        for _ in range(40):
            current = await backend.get_state()
            token = None if current is None else current[1]
            value = 0 if current is None else int(current[0])
            await backend.set_state(b"%d" % (value + 1), token)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        for number in range(6):
            group.start_soon(client, number)
    history = recorder.history()
    assert len(history) == 6 * 40 * 2
    result = check(history)
    assert result.verdict == "ok", result
