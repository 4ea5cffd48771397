"""The history file format: JSON lines, one event per line, written and read.

A file starts with a header line (``format``, ``version``, ``source``, ``clock``); then every call
is an ``invoke`` event and, once it ends, an ``ok``, ``fail`` or ``unknown`` event with the same
``op`` number. States are base64; tokens go through a token codec (see :mod:`.tokens`). A call
without an end event (its process was killed) loads as ``unknown``, and a torn last line is
ignored for the same reason.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from ..._backend import Token
from .operations import History, Operation, OperationKind, Outcome, PendingCall
from .tokens import JsonTokenCodec, OpaqueToken, TokenCodec, TokenKeys

__all__ = ("FORMAT", "VERSION", "EventWriter", "load", "merge")

FORMAT = "arendezvous-history"
"""The ``format`` field of a history file's header line."""

VERSION = 1
"""The version of the format this module writes and reads."""


class EventWriter:
    """Writes history events as JSON lines, one flushed line per event."""

    def __init__(self, out: IO[str], *, source: str, codec: TokenCodec | None) -> None:
        self._out = out
        self._codec: TokenCodec = codec or JsonTokenCodec()
        self._keys = TokenKeys()
        self._line(
            {
                "type": "header",
                "format": FORMAT,
                "version": VERSION,
                "source": source,
                "clock": "monotonic_ns",
            }
        )

    def _token(self, token: object) -> object:
        if token is None:
            return None
        encoded = self._codec.encode(token)
        if encoded is not None:
            return {"value": encoded}
        return {"repr": self._keys.key(token)}

    def _line(self, event: Mapping[str, object]) -> None:
        self._out.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._out.flush()

    def invoke(
        self,
        op: int,
        time_ns: int,
        client: str,
        key: str,
        kind: OperationKind,
        state: bytes | None,
        token: object,
    ) -> None:
        event: dict[str, object] = {
            "type": "invoke",
            "op": op,
            "time": time_ns,
            "client": client,
            "key": key,
            "kind": kind,
        }
        if state is not None:
            event["state"] = base64.b64encode(state).decode("ascii")
        if kind != "read":
            event["token"] = self._token(token)
        self._line(event)

    def complete(
        self,
        op: int,
        outcome: Outcome,
        time_ns: int,
        result: tuple[bytes, object] | None,
        written: bool | None,
        error: str | None,
    ) -> None:
        event: dict[str, object] = {"type": outcome, "op": op, "time": time_ns}
        if outcome == "ok":
            event["result"] = (
                None
                if result is None
                else [base64.b64encode(result[0]).decode("ascii"), self._token(result[1])]
            )
            if written is not None:
                event["written"] = written
        if error is not None:
            event["error"] = error
        self._line(event)


def _decode_token(data: Any, codec: TokenCodec, where: str) -> Token | None:
    if data is None:
        return None
    if isinstance(data, dict) and len(data) == 1:
        if "value" in data:
            return codec.decode(data["value"])
        if "repr" in data and isinstance(data["repr"], str):
            return OpaqueToken(data["repr"])
    raise ValueError(f"{where}: not a recorded token: {data!r}")


def _decode_bytes(data: Any, where: str) -> bytes:
    if not isinstance(data, str):
        raise ValueError(f"{where}: expected base64 text, got {data!r}")
    return base64.b64decode(data, validate=True)


def _parse(lines: Iterable[str], name: str, codec: TokenCodec) -> list[Operation]:
    pending: dict[int, PendingCall] = {}
    done: list[Operation] = []
    header_seen = False
    for number, line in enumerate(lines, 1):
        where = f"{name}:{number}"
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            if not line.endswith("\n"):
                break  # a torn last line: its writer was killed mid-write
            raise ValueError(f"{where}: not JSON: {exc}") from exc
        if not isinstance(event, dict):
            raise ValueError(f"{where}: not an event: {line!r}")
        kind = event.get("type")
        if not header_seen:
            if kind != "header" or event.get("format") != FORMAT:
                raise ValueError(f"{where}: not an arendezvous history file")
            if event.get("version") != VERSION:
                raise ValueError(f"{where}: unsupported history version {event.get('version')!r}")
            header_seen = True
            continue
        try:
            op = int(event["op"])
            time_ns = int(event["time"])
            if kind == "invoke":
                op_kind = event["kind"]
                if op_kind not in ("read", "write", "wait"):
                    raise ValueError(f"unknown operation kind {op_kind!r}")
                state = event.get("state")
                pending[op] = PendingCall(
                    time_ns,
                    str(event["client"]),
                    str(event["key"]),
                    op_kind,
                    None if state is None else _decode_bytes(state, where),
                    _decode_token(event.get("token"), codec, where),
                )
            elif kind in ("ok", "fail", "unknown"):
                started = pending.pop(op)
                raw = event.get("result")
                result = None
                if raw is not None:
                    result = (_decode_bytes(raw[0], where), _decode_token(raw[1], codec, where))
                written = event.get("written")
                done.append(
                    started.ended(
                        time_ns,
                        kind,
                        result,
                        None if written is None else bool(written),
                        event.get("error"),
                    )
                )
            else:
                raise ValueError(f"unknown event type {kind!r}")
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"{where}: malformed event {line.strip()!r}") from exc
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
    if not header_seen:
        raise ValueError(f"{name}: empty, not an arendezvous history file")
    done.extend(call.unfinished() for call in pending.values())
    return done


def load(source: str | os.PathLike[str] | IO[str], *, codec: TokenCodec | None = None) -> History:
    """Read a history written by :class:`Recorder` or :meth:`History.dump`.

    Calls whose completion is missing (the process was killed) load as ``unknown``; a torn last
    line is ignored for the same reason.

    :raises ValueError: the file is not a history file or an event in it is malformed.
    """
    token_codec: TokenCodec = codec or JsonTokenCodec()
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8") as file:
            return History(_parse(file, os.fspath(source), token_codec))
    name = getattr(source, "name", "<stream>")
    return History(_parse(source, str(name), token_codec))


def merge(*sources: History | str | os.PathLike[str], codec: TokenCodec | None = None) -> History:
    """One history of all *sources* (histories or files), ordered by invocation time.

    Times must come from one clock: ``time.monotonic_ns()`` of one machine.
    """
    operations: list[Operation] = []
    for source in sources:
        if isinstance(source, History):
            operations.extend(source)
        else:
            operations.extend(load(Path(source), codec=codec))
    return History(operations)
