"""The helpers the contract offers backend authors: token comparison and error tables."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest

from arendezvous import (
    RendezvousConnectionError,
    RendezvousError,
    RendezvousStateError,
)
from arendezvous._backend import same_token
from arendezvous._errors import ErrorRule, map_exceptions, translate


@dataclasses.dataclass(frozen=True)
class _Token:
    name: str
    number: int


class _EqualsEverything:
    calls: ClassVar[list[object]] = []

    def __eq__(self, other: object) -> bool:
        _EqualsEverything.calls.append(other)
        return True

    __hash__ = object.__hash__


class _LyingStr(str):
    def __eq__(self, other: object) -> bool:
        _EqualsEverything.calls.append(other)
        return True

    __hash__ = str.__hash__


class _SubToken(_Token):
    def __eq__(self, other: object) -> bool:
        _EqualsEverything.calls.append(other)
        return True

    __hash__ = _Token.__hash__


def test_same_token_compares_only_what_is_exactly_the_same_kind() -> None:
    current = _Token("a", 1)
    assert same_token(current, _Token("a", 1))
    assert not same_token(current, _Token("a", 2))
    _EqualsEverything.calls.clear()
    for foreign in (
        _EqualsEverything(),
        _SubToken("a", 1),
        _Token(_LyingStr("a"), 1),
        _Token("a", True),  # bool is not int
        ("a", 1),
        None,
    ):
        assert not same_token(current, foreign), foreign
    assert _EqualsEverything.calls == [], "a caller's __eq__ ran"
    marker = object()
    assert same_token(marker, marker)  # plain identity tokens (the memory backend's kind)
    assert not same_token(marker, object())


class ClientError(Exception):
    """What a store client might raise."""


class ClientTimeout(ClientError):
    pass


TABLE = (
    ErrorRule((ClientTimeout,), detail="no answer within {timeout:g} s"),
    ErrorRule(
        (ClientError,),
        RendezvousStateError,
        detail="the key holds something else",
        when=lambda exc: "WRONGTYPE" in str(exc),
    ),
    ErrorRule((ClientError, OSError)),
)


@pytest.mark.parametrize(
    ("raised", "kind", "message"),
    [
        (ClientTimeout("slow"), RendezvousConnectionError, "get_state of run: no answer within 2 "),
        (ClientError("WRONGTYPE x"), RendezvousStateError, "get_state of run: the key holds"),
        (ClientError("boom"), RendezvousConnectionError, "get_state of run: ClientError: boom"),
        (ConnectionResetError("reset"), RendezvousConnectionError, "ConnectionResetError: reset"),
    ],
)
def test_an_error_table_maps_by_its_rows_in_order(
    raised: Exception, kind: type[RendezvousError], message: str
) -> None:
    with (
        pytest.raises(kind, match=message) as caught,
        map_exceptions(TABLE, what="get_state of run", timeout=2.0),
    ):
        raise raised
    assert caught.value.__cause__ is raised


def test_what_is_formatted_only_when_an_error_is_raised() -> None:
    calls: list[None] = []

    def what() -> str:
        calls.append(None)
        return "lazily"

    mapper = map_exceptions(TABLE, what=what, timeout=1.0)
    for _ in range(3):
        with mapper:  # one mapper, entered again and again
            pass
    assert calls == []
    with pytest.raises(RendezvousConnectionError, match=r"^lazily: "), mapper:
        raise ClientError("x")
    assert calls == [None]


def test_ours_unknown_and_cancellation_pass_through() -> None:
    ours = RendezvousStateError("already ours")
    for passing in (ours, KeyError("unknown"), KeyboardInterrupt()):
        with pytest.raises(type(passing)) as caught, map_exceptions(TABLE, what="x"):
            raise passing
        assert caught.value is passing
    assert translate(TABLE, KeyError("k"), "x") is None


def test_the_shorthand_of_two_rows() -> None:
    with (
        pytest.raises(RendezvousStateError, match=r"^decoding: ValueError: bad"),
        map_exceptions(state=(ValueError,), connection=(OSError,), what="decoding"),
    ):
        raise ValueError("bad")
    error: Any = translate((ErrorRule((OSError,), detail=lambda exc: "custom"),), OSError(), "w")
    assert str(error) == "w: custom"
