"""The contract's promises as checks that say, in words and with the values, which one broke.

The conformance classes and the state machine check results only through this module, so a
failure always reads the same way: the promise (numbered as in the README's "The backend
contract"), then what was called, what the contract required and what came back::

    promise 3 (tokens never repeat within a run: no ABA) broken: token 'e3b0c442' was issued
    twice: ABA (first by set_state(b'same') #1, again by set_state(b'same') #3)

Checks assert the contract, never an error's wording. They raise :class:`ContractViolation`
explicitly rather than with ``assert`` statements, so they still check under ``python -O``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from .._backend import Token

__all__ = (
    "CANCEL",
    "CAS",
    "CLOSED",
    "CORRUPT",
    "INPUT",
    "NAME",
    "NO_ABA",
    "READ",
    "RUNS",
    "STALE",
    "WAIT",
    "ContractViolation",
    "TokenLedger",
    "broken",
    "check_race",
    "check_read",
    "check_set_result",
    "check_unchanged",
    "check_written",
    "expect_error",
    "must_not_raise",
    "show",
    "tokens_equal",
)

_T = TypeVar("_T")

READ = "promise 1 (get_state returns None for a run with no state, else its (state, token))"
CAS = (
    "promise 2 (set_state is one atomic compare-and-swap: the current token writes and "
    "returns (state, new token, True))"
)
STALE = (
    "promise 2 (a token that is not current -- stale, None on existing state, from another "
    "run, of another type, garbage -- changes nothing, returns the current (state, token, "
    "False) and never raises)"
)
NO_ABA = "promise 3 (tokens never repeat within a run: no ABA)"
INPUT = (
    "promise 4 (state that is not bytes raises TypeError, state over the size limit raises "
    "ValueError, before anything is written)"
)
CORRUPT = (
    "promise 4 (stored bytes that cannot be decoded raise RendezvousStateError from get_state "
    "and set_state, and are never overwritten)"
)
WAIT = (
    "promise 5 (wait_for_change returns the new (state, token) as soon as the stored token "
    "differs -- at once if it already does -- or None on timeout)"
)
CANCEL = (
    "promise 6 (a cancelled call leaves the store consistent: a write happened entirely or "
    "not at all)"
)
RUNS = "one register per run (handles on a run share its state; other runs are apart)"
CLOSED = (
    "closing (aclose() is idempotent; afterwards every call raises BackendClosedError, and "
    "tasks waiting on the handle raise it at once)"
)
NAME = "the backend's name (a non-empty str)"


class ContractViolation(AssertionError):
    """A backend broke one of the contract's promises.

    An :class:`AssertionError`, so test runners report it as a failed check; its message names
    the promise and shows the call, what the contract required and what the backend did.

    :ivar promise: the promise, numbered as in the README's "The backend contract".
    :ivar detail: what happened, with the values.
    """

    def __init__(self, promise: str, detail: str) -> None:
        super().__init__(f"{promise} broken: {detail}")
        self.promise = promise
        self.detail = detail


def broken(promise: str, detail: str) -> ContractViolation:
    """The violation of *promise*, described by *detail* (for ``raise broken(...)``)."""
    return ContractViolation(promise, detail)


def show(value: object, limit: int = 60) -> str:
    """``repr(value)``, shortened; long bytes keep their length so sizes stay visible."""
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, bytes):
        return f"{value[: limit // 3]!r}... ({len(value)} bytes)"
    if isinstance(value, str):
        return f"{value[: limit // 2]!r}..."
    if isinstance(value, tuple):
        return "(" + ", ".join(show(item, limit // 2) for item in value) + ")"
    return text[: limit - 3] + "..."


def tokens_equal(a: object, b: object) -> bool:
    """Whether two tokens are the same, compared as the contract says: with ``==`` only
    (``None`` -- no state -- equals only ``None``)."""
    return a is b or (a is not None and b is not None and bool(a == b))


def check_set_result(result: object, call: str) -> tuple[bytes, Token, bool]:
    """*result* of *call* (a ``set_state``) as the ``(state, token, written)`` tuple it must be."""
    if (
        not isinstance(result, tuple)
        or len(result) != 3
        or not isinstance(result[0], bytes)
        or not isinstance(result[2], bool)
    ):
        raise broken(
            CAS,
            f"{call} must return a (state: bytes, token, written: bool) tuple; "
            f"it returned {show(result)}",
        )
    return result[0], result[1], result[2]


def check_written(result: object, state: bytes, old: Token | None, call: str) -> Token:
    """*call* had the current token *old*: it must have written *state* with a new token."""
    got_state, token, written = check_set_result(result, call)
    if not written or got_state != state:
        raise broken(
            CAS,
            f"{call} held the current token {show(old)}, so it must write and return "
            f"({show(state)}, <a new token>, True); it returned {show(result)}",
        )
    if token is None:
        raise broken(CAS, f"{call} wrote but returned the token None; a write returns a token")
    if tokens_equal(token, old):
        raise broken(
            NO_ABA,
            f"token {show(token)} was issued twice: ABA ({call} wrote and returned the very "
            "token it was given)",
        )
    return token


def check_unchanged(
    result: object, current: tuple[bytes, Token] | None, call: str, why: str
) -> None:
    """*call* had a token that is not current (*why* says which): it must have changed nothing
    and returned *current* -- or ``(b"", None, False)`` on a run with no state."""
    expected: tuple[bytes, Token | None, bool] = (
        (b"", None, False) if current is None else (current[0], current[1], False)
    )
    got = check_set_result(result, call)
    if got[2] or got[0] != expected[0] or not tokens_equal(got[1], expected[1]):
        raise broken(
            STALE,
            f"{call} passed {why}, so it must change nothing and return {show(expected)}; "
            f"it returned {show(result)}",
        )


def check_read(
    result: object,
    expected: tuple[bytes, Token] | None,
    call: str,
    why: str,
    promise: str = READ,
) -> None:
    """*call* (a ``get_state``, or a ``wait_for_change`` with ``promise=WAIT``) must have returned
    *expected*; *why* says where that comes from."""
    if expected is None:
        if result is not None:
            raise broken(promise, f"{call} {why} must return None; it returned {show(result)}")
        return
    if (
        not isinstance(result, tuple)
        or len(result) != 2
        or result[0] != expected[0]
        or not tokens_equal(result[1], expected[1])
    ):
        raise broken(
            promise, f"{call} {why} must return {show(expected)}; it returned {show(result)}"
        )


def check_race(
    results: Sequence[object],
    payloads: Sequence[bytes],
    token: Token | None,
    labels: Sequence[str] | None = None,
) -> int:
    """Racing writers all passed the current *token*: exactly one wrote its payload, and every
    other returned the winner's state and token. Returns the winner's index.

    *labels* name the racers in messages (default: ``writer 0``, ``writer 1``, ...).
    """
    names = list(labels) if labels is not None else [f"writer {i}" for i in range(len(results))]
    checked = [
        check_set_result(result, f"{name}'s set_state({show(payload)}, {show(token)})")
        for name, payload, result in zip(names, payloads, results, strict=True)
    ]
    winners = [index for index, result in enumerate(checked) if result[2]]
    if len(winners) != 1:
        raise broken(
            CAS,
            f"{len(winners)} of {len(results)} racing writers won with the same current token "
            f"{show(token)} ({', '.join(names[index] for index in winners) or 'none'} won); "
            "exactly one may win -- is the compare and the write one atomic step?",
        )
    (winner,) = winners
    state, new_token, _ = checked[winner]
    if state != payloads[winner]:
        raise broken(
            CAS,
            f"{names[winner]} won the race but returned the state {show(state)}, "
            f"not the {show(payloads[winner])} it wrote",
        )
    for index, result in enumerate(checked):
        if index != winner and (result[0] != state or not tokens_equal(result[1], new_token)):
            raise broken(
                CAS,
                f"{names[index]} lost the race and returned {show(result)}; a loser must return "
                f"the winner's state and token ({show(state)}, {show(new_token)}, False)",
            )
    return winner


class TokenLedger:
    """Every token a run's writes returned, to catch one issued twice (ABA)."""

    def __init__(self) -> None:
        self._issued: list[tuple[Token, str]] = []

    def __len__(self) -> int:
        return len(self._issued)

    def __getitem__(self, index: int) -> Token:
        return self._issued[index][0]

    def issue(self, token: Token, what: str) -> None:
        """Record that *what* (a write) returned *token*; fail if an earlier write did too."""
        for earlier, by in self._issued:
            if tokens_equal(token, earlier):
                raise broken(
                    NO_ABA,
                    f"token {show(token)} was issued twice: ABA (first by {by}, again by "
                    f"{what}); a stale writer holding it would now win",
                )
        self._issued.append((token, what))


async def must_not_raise(awaitable: Awaitable[_T], promise: str, call: str) -> _T:
    """Await *awaitable* (the call *call*); an exception from it breaks *promise*."""
    try:
        return await awaitable
    except Exception as exc:
        raise broken(promise, f"{call} raised {type(exc).__name__}: {exc}") from exc


async def expect_error(
    kind: type[BaseException], awaitable: Awaitable[Any], promise: str, call: str
) -> BaseException:
    """Await *awaitable* (the call *call*), which *promise* says raises *kind* -- any message."""
    try:
        result = await awaitable
    except kind as exc:
        return exc
    except Exception as exc:
        raise broken(
            promise, f"{call} must raise {kind.__name__}; it raised {type(exc).__name__}: {exc}"
        ) from exc
    raise broken(promise, f"{call} must raise {kind.__name__}; it returned {show(result)}")
