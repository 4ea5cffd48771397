"""How tokens go into history files: codecs for token values, ``repr`` keys for the rest.

Tokens are opaque, so a history file stores one through a :class:`TokenCodec` when the codec can
encode it exactly (:class:`JsonTokenCodec` does ``str``, ``int``, ``bool``, ``bytes`` and tuples of
them), and otherwise as its ``repr``, which loads back as an :class:`OpaqueToken`.
:class:`TokenKeys` gives every distinct token of one file its own ``repr`` key, numbering
tokens by ``==`` with :class:`TokenIds` (which the linearizability checker uses too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..._backend import Token

__all__ = ("JsonTokenCodec", "OpaqueToken", "TokenCodec", "TokenIds", "TokenKeys")


class TokenCodec(Protocol):
    """Turns tokens into JSON values and back, for writing histories to files."""

    def encode(self, token: Token) -> object | None:
        """A JSON value for *token*, or ``None`` when this codec cannot encode it."""

    def decode(self, data: Any) -> Token:
        """The token that :meth:`encode` turned into *data*."""


class JsonTokenCodec:
    """Encodes ``str``, ``int``, ``bool``, ``bytes`` and tuples of them (with ``None`` inside).

    Only these exact types: a subclass might compare differently from its base.
    """

    def encode(self, token: Token) -> object | None:
        """``{"<type>": value}`` for a token of a supported type; ``None`` for any other."""
        kind = type(token)
        if kind is str:
            return {"str": token}
        if kind is bool:
            return {"bool": token}
        if kind is int:
            return {"int": token}
        if kind is bytes:
            assert isinstance(token, bytes)
            return {"bytes": token.hex()}
        if kind is tuple:
            assert isinstance(token, tuple)
            items: list[object] = []
            for item in token:
                if item is None:
                    items.append(None)
                    continue
                encoded = self.encode(item)
                if encoded is None:
                    return None
                items.append(encoded)
            return {"tuple": items}
        return None

    def decode(self, data: Any) -> Token:
        """The token that :meth:`encode` turned into *data*.

        :raises ValueError: *data* is not something :meth:`encode` makes.
        """
        if data is None:
            return None
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError(f"not an encoded token: {data!r}")
        ((kind, value),) = data.items()
        if kind == "str" and type(value) is str:
            return value
        if kind == "bool" and type(value) is bool:
            return value
        if kind == "int" and type(value) is int:
            return value
        if kind == "bytes" and type(value) is str:
            return bytes.fromhex(value)
        if kind == "tuple" and type(value) is list:
            return tuple(self.decode(item) for item in value)
        raise ValueError(f"not an encoded token: {data!r}")


@dataclass(frozen=True)
class OpaqueToken:
    """A token loaded from a file that stored only its ``repr``; equal to those of the same key."""

    key: str

    def __repr__(self) -> str:
        return self.key


class TokenIds:
    """Numbers distinct tokens 0, 1, 2, ... by ``==``; an unhashable token equals only itself.

    It holds every token it numbered, so an identity-based token stays alive -- and its number,
    and its ``repr`` (which shows its address), cannot pass to another token -- while it exists.
    """

    def __init__(self) -> None:
        self._ids: dict[Any, int] = {}
        self._unhashable: list[tuple[object, int]] = []
        self.values: list[object] = []

    def id(self, token: object) -> int:
        """The number of *token*: the same for tokens equal to it, a new one otherwise."""
        try:
            found = self._ids.get(token)
        except TypeError:
            for other, number in self._unhashable:
                if other is token:
                    return number
            self._unhashable.append((token, len(self.values)))
            self.values.append(token)
            return len(self.values) - 1
        if found is None:
            found = self._ids[token] = len(self.values)
            self.values.append(token)
        return found


class TokenKeys:
    """Gives every distinct token (by ``==``) its own ``repr`` key within one recorder."""

    def __init__(self) -> None:
        self._ids = TokenIds()
        self._keys: list[str] = []
        self._owners: set[str] = set()

    def key(self, token: object) -> str:
        """*token*'s key: its ``repr``, with a ``#n`` suffix if another token had it first."""
        number = self._ids.id(token)
        if number < len(self._keys):
            return self._keys[number]
        key = base = repr(token)
        suffix = 1
        while key in self._owners:
            suffix += 1
            key = f"{base}#{suffix}"
        self._owners.add(key)
        self._keys.append(key)
        return key
