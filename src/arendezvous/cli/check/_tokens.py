"""Store tokens in history files: written with their type and fields, read back comparable.

Worker processes record their histories to files that the harness merges; the checker compares
tokens only with ``==``, so what comes back must be equal exactly when the tokens were.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..._backend import Token
from ...testing.history import JsonTokenCodec

__all__ = ("DecodedToken", "StoreTokenCodec")


@dataclass(frozen=True)
class DecodedToken:
    """A store's token read back from a history file: equal exactly when the tokens were equal.

    The checker only compares tokens, so it needs no instance of the store's own class.
    """

    kind: str
    fields: tuple[object, ...]

    def __repr__(self) -> str:
        name = self.kind.rpartition(".")[2]
        return f"{name}{self.fields!r}"


class StoreTokenCodec(JsonTokenCodec):
    """:class:`~arendezvous.testing.history.JsonTokenCodec` plus frozen dataclass tokens.

    The Redis, etcd and PostgreSQL tokens are frozen dataclasses of ``str``, ``int`` and
    ``bytes``; their ``repr`` is shortened for people, so the default fallback (``repr``) could
    make two different tokens equal once merged. Here their type and every field are written, so
    histories of several processes merge exactly.
    """

    def encode(self, token: Token) -> object | None:
        encoded = super().encode(token)
        if encoded is not None:
            return encoded
        kind = type(token)
        params = getattr(kind, "__dataclass_params__", None)
        if params is None or not params.frozen or not dataclasses.is_dataclass(token):
            return None
        fields: list[object] = []
        for field in dataclasses.fields(token):
            value = getattr(token, field.name)
            item = None if value is None else super().encode(value)
            if value is not None and item is None:
                return None
            fields.append(item)
        return {"dataclass": [f"{kind.__module__}.{kind.__qualname__}", fields]}

    def decode(self, data: Any) -> Token:
        if isinstance(data, dict) and len(data) == 1 and "dataclass" in data:
            described = data["dataclass"]
            if (
                not isinstance(described, list)
                or len(described) != 2
                or not isinstance(described[0], str)
                or not isinstance(described[1], list)
            ):
                raise ValueError(f"not an encoded token: {data!r}")
            kind, fields = described
            decoded = []
            for item in fields:  # a loop, not a generator: super() needs this frame
                decoded.append(super().decode(item))
            return DecodedToken(kind, tuple(decoded))
        return super().decode(data)
