"""Objects that misbehave on purpose, and the checks that look at what a backend did with them."""

from __future__ import annotations

from typing import Any

from arendezvous import Token
from arendezvous.backends.etcd import EtcdToken
from arendezvous.backends.memory import MemoryToken
from arendezvous.backends.postgres import PostgresToken
from arendezvous.backends.redis import RedisToken

__all__ = (
    "BytesEqualsEverything",
    "EqualsEverything",
    "EtcdTokenEqualsEverything",
    "Hostile",
    "HostileError",
    "HostileStr",
    "IntEqualsEverything",
    "LyingLength",
    "MemoryTokenEqualsEverything",
    "PostgresTokenEqualsEverything",
    "RedisTokenEqualsEverything",
    "SelfSatisfiedBytes",
    "StrEqualsEverything",
    "TupleEqualsEverything",
    "equals_everything",
    "hostile",
    "is_current",
    "message_chain",
)


class HostileError(Exception):
    """Raised by :class:`Hostile`: seeing it means a backend ran a caller's comparison."""


class Hostile:
    """A token whose every comparison, hash and truth test raises."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        raise HostileError("__eq__ of a caller's object was called")

    def __ne__(self, other: object) -> bool:
        raise HostileError("__ne__ of a caller's object was called")

    def __hash__(self) -> int:
        raise HostileError("__hash__ of a caller's object was called")

    def __bool__(self) -> bool:
        raise HostileError("__bool__ of a caller's object was called")

    def __repr__(self) -> str:
        return "Hostile()"


class HostileStr(str):
    """A ``str`` subclass, e.g. one field of a token of the right class, whose ``==`` raises: a
    backend must compare a caller's token fields only once it has checked they are exact
    ``str``s."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        raise HostileError("__eq__ of a caller's token field was called")

    __hash__ = str.__hash__


class EqualsEverything:
    """A token that claims to equal anything."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "EqualsEverything()"


def equals_everything(cls: type[Any]) -> type[Any]:
    """A subclass of *cls* whose instances claim to equal anything (a lookalike of a token)."""

    def eq(self: object, other: object) -> bool:
        return True

    def ne(self: object, other: object) -> bool:
        return False

    def hash_(self: object) -> int:
        return 0

    namespace = {"__slots__": (), "__eq__": eq, "__ne__": ne, "__hash__": hash_}
    return type(f"{cls.__name__}EqualsEverything", (cls,), namespace)


StrEqualsEverything = equals_everything(str)
BytesEqualsEverything = equals_everything(bytes)
IntEqualsEverything = equals_everything(int)
TupleEqualsEverything = equals_everything(tuple)
MemoryTokenEqualsEverything = equals_everything(MemoryToken)
RedisTokenEqualsEverything = equals_everything(RedisToken)
EtcdTokenEqualsEverything = equals_everything(EtcdToken)
PostgresTokenEqualsEverything = equals_everything(PostgresToken)


class LyingLength(bytes):
    """Bytes whose ``len()`` says 0, whatever they hold."""

    def __len__(self) -> int:
        return 0


class SelfSatisfiedBytes(bytes):
    """Bytes that claim to equal anything: a reader handed this object compares wrongly."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = bytes.__hash__


def hostile() -> Any:
    """A :class:`Hostile`, typed ``Any`` to stand where a token's fields expect other types."""
    return Hostile()


def is_current(token: object, current: Token) -> bool:
    """Whether *token* is the current token by the contract: the same type and ``==``.

    Only the backend's own class counts (a lookalike subclass or a foreign type is never current,
    whatever its ``__eq__`` says); a memory token is current only if it is the very object.
    Comparing runs the *current* token's ``__eq__``; a field that raises makes it not current.
    """
    if type(token) is not type(current):
        return False
    if isinstance(current, MemoryToken):
        return token is current
    try:
        return bool(current == token)
    except Exception:
        return False


def message_chain(exc: BaseException) -> str:
    """Every message a traceback of *exc* would show, causes and shown contexts included."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current} {current!r}")
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return "\n".join(parts)
