"""What a history is made of: operations (one call each, as a client saw it) and histories.

An :class:`Operation` is one ``get_state`` (``read``), ``set_state`` (``write``) or
``wait_for_change`` (``wait``) with its arguments, its outcome and when it started and ended; a
:class:`History` is operations ordered by invocation time. A :class:`PendingCall` is a call
that started and has not ended yet, as the recorder and the file reader hold it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal, overload

from ..._backend import Token

if TYPE_CHECKING:
    from .tokens import TokenCodec

__all__ = ("History", "Operation", "OperationKind", "Outcome", "PendingCall")

OperationKind = Literal["read", "write", "wait"]
"""``read`` is ``get_state``, ``write`` is ``set_state``, ``wait`` is ``wait_for_change``."""

Outcome = Literal["ok", "fail", "unknown"]
"""How a call ended; see the module documentation."""

def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Operation:
    """One call on a backend, as a client saw it.

    Times are nanoseconds on one monotonic clock. ``ret`` is ``None`` for a call that never
    completed. For a ``write``, ``state`` and ``token`` are the arguments and ``result`` is the
    returned ``(state, token)`` with ``written`` its flag; for a ``read``, ``result`` is what
    ``get_state`` returned; for a ``wait``, ``token`` is the argument and ``result`` the return
    value (``None`` after a timeout). ``id`` is the operation's position in its :class:`History`.
    """

    kind: OperationKind
    client: str
    key: str
    call: int
    ret: int | None
    outcome: Outcome
    state: bytes | None = None
    token: Token | None = None
    result: tuple[bytes, Token | None] | None = None
    written: bool | None = None
    error: str | None = None
    id: int = -1

    @classmethod
    def read(
        cls,
        client: str,
        call: int,
        ret: int,
        result: tuple[bytes, Token] | None,
        *,
        key: str = "run",
    ) -> Operation:
        """A ``get_state`` that returned *result* (for writing histories by hand)."""
        return cls("read", client, key, call, ret, "ok", result=result)

    @classmethod
    def write(
        cls,
        client: str,
        call: int,
        ret: int | None,
        state: bytes,
        token: Token | None,
        result: tuple[bytes, Token | None, bool] | None,
        *,
        key: str = "run",
    ) -> Operation:
        """A ``set_state(state, token)`` that returned *result* (``None``: outcome unknown)."""
        if result is None:
            return cls("write", client, key, call, ret, "unknown", state=state, token=token)
        return cls(
            "write",
            client,
            key,
            call,
            ret,
            "ok",
            state=state,
            token=token,
            result=(result[0], result[1]),
            written=result[2],
        )

    @classmethod
    def wait(
        cls,
        client: str,
        call: int,
        ret: int,
        token: Token | None,
        result: tuple[bytes, Token] | None,
        *,
        key: str = "run",
    ) -> Operation:
        """A ``wait_for_change(token)`` that returned *result* (``None``: it timed out)."""
        return cls("wait", client, key, call, ret, "ok", token=token, result=result)

    def describe(self) -> str:
        """The call and its outcome in one line, e.g. ``set_state(b'a', token=3) -> won 4``."""
        if self.kind == "read":
            text = "get_state()"
        elif self.kind == "write":
            text = f"set_state({_short(self.state)}, token={_short(self.token)})"
        else:
            text = f"wait_for_change(token={_short(self.token)})"
        if self.outcome == "unknown":
            return f"{text} -> unknown ({self.error or 'never returned'})"
        if self.outcome == "fail":
            return f"{text} -> failed ({self.error})"
        if self.result is None:
            return f"{text} -> None"
        state, token = self.result
        if self.kind == "write":
            verdict = "won" if self.written else "lost"
            return f"{text} -> {verdict} ({_short(state)}, {_short(token)})"
        return f"{text} -> ({_short(state)}, {_short(token)})"


class History(Sequence[Operation]):
    """Operations ordered by invocation time, each with ``id`` set to its position.

    Build one from a :class:`Recorder`, from :func:`load` or :func:`merge`, or by hand from
    :class:`Operation` values (their ``id`` is reassigned).
    """

    def __init__(self, operations: Iterable[Operation] = ()) -> None:
        ordered = sorted(operations, key=lambda op: (op.call, op.ret is None, op.ret or 0))
        self._operations = tuple(
            op if op.id == index else dataclasses.replace(op, id=index)
            for index, op in enumerate(ordered)
        )

    @overload
    def __getitem__(self, index: int) -> Operation: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Operation]: ...

    def __getitem__(self, index: int | slice) -> Operation | Sequence[Operation]:
        return self._operations[index]

    def __len__(self) -> int:
        return len(self._operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self._operations)

    def __repr__(self) -> str:
        return f"<History of {len(self)} operations on {len(self.keys())} keys>"

    def keys(self) -> list[str]:
        """The distinct keys (run ids), in order of first use."""
        return list(dict.fromkeys(op.key for op in self._operations))

    def by_key(self) -> dict[str, list[Operation]]:
        """The operations of each key: a register per run, checked separately."""
        parts: dict[str, list[Operation]] = {}
        for op in self._operations:
            parts.setdefault(op.key, []).append(op)
        return parts

    def select(self, **where: object) -> list[Operation]:
        """The operations whose attributes equal all of *where*: ``select(outcome="unknown")``."""
        return [
            op
            for op in self._operations
            if all(getattr(op, name) == wanted for name, wanted in where.items())
        ]

    def dump(
        self, file: str | os.PathLike[str] | IO[str], *, codec: TokenCodec | None = None
    ) -> None:
        """Write the history as JSON lines, as :class:`Recorder` does and :func:`load` reads."""
        if isinstance(file, (str, os.PathLike)):
            with open(file, "w", encoding="utf-8") as out:
                self._dump(out, codec)
        else:
            self._dump(file, codec)

    def _dump(self, out: IO[str], codec: TokenCodec | None) -> None:
        from .jsonlines import EventWriter  # the file format builds on this module

        writer = EventWriter(out, source="dump", codec=codec)
        for op in self._operations:
            writer.invoke(op.id, op.call, op.client, op.key, op.kind, op.state, op.token)
            if op.ret is not None or op.outcome != "unknown":
                end = op.ret if op.ret is not None else op.call
                writer.complete(op.id, op.outcome, end, op.result, op.written, op.error)


@dataclass
class PendingCall:
    """A call that started at *call* (nanoseconds) and has not ended yet."""

    call: int
    client: str
    key: str
    kind: OperationKind
    state: bytes | None
    token: Token | None

    def ended(
        self,
        ret: int | None,
        outcome: Outcome,
        result: tuple[bytes, Token | None] | None = None,
        written: bool | None = None,
        error: str | None = None,
    ) -> Operation:
        """The operation this call became when it ended at *ret* with *outcome*."""
        return Operation(
            self.kind,
            self.client,
            self.key,
            self.call,
            ret,
            outcome,
            self.state,
            self.token,
            result,
            written,
            error,
        )

    def unfinished(self) -> Operation:
        """The operation of a call that never ended: its outcome is ``unknown``."""
        return self.ended(None, "unknown")
