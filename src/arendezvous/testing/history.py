"""Record what clients of a backend saw: every call, its outcome, and when it started and ended.

A :class:`Recorder` collects the calls of any number of handles (tasks, threads, event loops);
wrap each handle in a :class:`RecordingBackend` and every ``get_state``, ``set_state`` and
``wait_for_change`` becomes an :class:`Operation` with its arguments, its result and its
``time.monotonic_ns()`` invocation and completion times. Then
:func:`arendezvous.testing.linearizability.check` decides whether some order of the calls,
consistent with real time, explains every result::

    recorder = Recorder()
    clients = [RecordingBackend(MemoryBackend("run", store), recorder) for _ in range(8)]
    ...  # run the clients
    assert check(recorder.history()).ok

Each call ends in one of three outcomes:

``ok``
    it returned; its result is recorded.
``fail``
    it raised and certainly changed nothing: every error of ``get_state`` and
    ``wait_for_change`` (reads), and ``TypeError``, ``ValueError`` and
    :class:`~arendezvous.RendezvousStateError` from ``set_state`` (raised before anything is
    written). The checker ignores these calls.
``unknown``
    a ``set_state`` that raised anything else -- :class:`~arendezvous.RendezvousConnectionError`,
    cancellation, an unexpected error -- or never completed (its process was killed): the write may
    or may not have been applied, now or at any later time.

Processes. Give each process a recorder writing JSON lines to its own file (``Recorder(path)``);
every event is flushed as it happens, so a process killed mid-call leaves its invocation behind,
which loads as an ``unknown`` call. :func:`merge` loads the files and orders every call by its
invocation time: ``time.monotonic_ns()`` is one clock for every process of one machine (it is not
comparable between machines, so histories of several machines cannot be merged soundly).

Tokens in files. States are written as base64. Tokens are opaque, so they go through a
:class:`TokenCodec`; the default one, :class:`JsonTokenCodec`, writes ``str``, ``int``, ``bool``,
``bytes`` and tuples of them exactly, and they load back as equal values. Any other token is written
as its ``repr`` and loads as an :class:`OpaqueToken` that equals the opaque tokens with the same
``repr``. Within one recorder equal tokens always get the same ``repr`` key and unequal tokens
different keys (a collision gets a ``#n`` suffix), so equality survives inside one file. Across
files, equality survives when the token's ``repr`` shows its value -- true of the Redis, etcd and
PostgreSQL tokens (frozen dataclasses) -- and not for identity tokens such as the memory backend's,
which are meaningless outside their process anyway. Give ``codec=`` to :class:`Recorder` and
:func:`load` for any other token type.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Protocol, overload

from .._backend import AsyncRendezvousBackend, Token
from .._errors import RendezvousStateError

__all__ = (
    "FORMAT",
    "History",
    "JsonTokenCodec",
    "OpaqueToken",
    "Operation",
    "OperationKind",
    "Outcome",
    "Recorder",
    "RecordingBackend",
    "TokenCodec",
    "load",
    "merge",
)

OperationKind = Literal["read", "write", "wait"]
"""``read`` is ``get_state``, ``write`` is ``set_state``, ``wait`` is ``wait_for_change``."""

Outcome = Literal["ok", "fail", "unknown"]
"""How a call ended; see the module documentation."""

FORMAT = "arendezvous-history"
"""The ``format`` field of a history file's header line."""

_VERSION = 1
_NO_EFFECT_ERRORS = (TypeError, ValueError, RendezvousStateError)


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
        writer = _EventWriter(out, source="dump", codec=codec)
        for op in self._operations:
            writer.invoke(op.id, op.call, op.client, op.key, op.kind, op.state, op.token)
            if op.ret is not None or op.outcome != "unknown":
                end = op.ret if op.ret is not None else op.call
                writer.complete(op.id, op.outcome, end, op.result, op.written, op.error)


# -- tokens in files ---------------------------------------------------------------------------


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


class _TokenKeys:
    """Gives every distinct token (by ``==``) its own ``repr`` key within one recorder."""

    def __init__(self) -> None:
        self._keys: dict[Any, str] = {}
        self._owners: set[str] = set()
        # Holding the tokens keeps identity-based tokens alive, so their repr (which shows the
        # address) cannot be reused by a different token while this recorder exists.
        self._unhashable: list[tuple[object, str]] = []

    def key(self, token: object) -> str:
        try:
            known = self._keys.get(token)
        except TypeError:
            for other, key in self._unhashable:
                if other is token:
                    return key
            known = None
            hashable = False
        else:
            hashable = True
        if known is not None:
            return known
        key = base = repr(token)
        suffix = 1
        while key in self._owners:
            suffix += 1
            key = f"{base}#{suffix}"
        self._owners.add(key)
        if hashable:
            self._keys[token] = key
        else:
            self._unhashable.append((token, key))
        return key


class _EventWriter:
    """Writes history events as JSON lines, one flushed line per event."""

    def __init__(self, out: IO[str], *, source: str, codec: TokenCodec | None) -> None:
        self._out = out
        self._codec: TokenCodec = codec or JsonTokenCodec()
        self._keys = _TokenKeys()
        self._line(
            {
                "type": "header",
                "format": FORMAT,
                "version": _VERSION,
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


# -- recording ---------------------------------------------------------------------------------


@dataclass
class _Pending:
    call: int
    client: str
    key: str
    kind: OperationKind
    state: bytes | None
    token: Token | None


class Recorder:
    """Collects the calls of any number of handles; thread-safe.

    :param path: also write every event to this file as JSON lines, flushed as it happens (for
        histories of several processes; see :func:`merge`).
    :param source: a name for this recorder in client names and the file header (default: the
        process id).
    :param codec: how tokens are written to *path*; see the module documentation.
    :param clock: nanoseconds on a clock shared by everything merged with this history.

    Use it as a context manager, or call :meth:`close`, to close the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        source: str | None = None,
        codec: TokenCodec | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.source = source if source is not None else f"pid{os.getpid()}"
        self.clock = clock
        self._lock = threading.Lock()
        self._next_op = 0
        self._next_client = 0
        self._pending: dict[int, _Pending] = {}
        self._done: list[Operation] = []
        self._file: IO[str] | None = None
        self._writer: _EventWriter | None = None
        if path is not None:
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._writer = _EventWriter(self._file, source=self.source, codec=codec)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file, if any. Calls recorded afterwards are kept in memory only."""
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file = None
            self._writer = None

    def new_client(self) -> str:
        """A fresh client name: ``<source>-c<n>``."""
        with self._lock:
            self._next_client += 1
            return f"{self.source}-c{self._next_client}"

    def invoke(
        self,
        *,
        client: str,
        key: str,
        kind: OperationKind,
        state: bytes | None = None,
        token: Token | None = None,
    ) -> int:
        """Record the start of a call now; return its number for :meth:`complete`."""
        with self._lock:
            op = self._next_op
            self._next_op += 1
            now = self.clock()
            self._pending[op] = _Pending(now, client, key, kind, state, token)
            if self._writer is not None:
                self._writer.invoke(op, now, client, key, kind, state, token)
            return op

    def complete(
        self,
        op: int,
        outcome: Outcome,
        *,
        result: tuple[bytes, Token | None] | None = None,
        written: bool | None = None,
        error: str | None = None,
    ) -> None:
        """Record the end of call *op* now."""
        with self._lock:
            now = self.clock()
            pending = self._pending.pop(op)
            self._done.append(
                Operation(
                    pending.kind,
                    pending.client,
                    pending.key,
                    pending.call,
                    now,
                    outcome,
                    pending.state,
                    pending.token,
                    result,
                    written,
                    error,
                )
            )
            if self._writer is not None:
                self._writer.complete(op, outcome, now, result, written, error)

    def history(self) -> History:
        """Everything recorded so far; calls still running count as ``unknown``."""
        with self._lock:
            running = [
                Operation(p.kind, p.client, p.key, p.call, None, "unknown", p.state, p.token)
                for p in self._pending.values()
            ]
            return History([*self._done, *running])


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return type(exc).__name__ if not text else f"{type(exc).__name__}: {text}"


class RecordingBackend(AsyncRendezvousBackend):
    """Wraps any backend and records every call on it in a :class:`Recorder`.

    :param client: the name this handle's calls carry (default: a fresh one from the recorder).
    :param key: the register the calls address (default: the backend's ``run_id``).

    It adds no await of its own, so it changes no interleaving; the recorded interval of a call
    contains the wrapped call. Cancellation and errors are recorded, then re-raised unchanged.
    """

    def __init__(
        self,
        backend: AsyncRendezvousBackend,
        recorder: Recorder,
        *,
        client: str | None = None,
        key: str | None = None,
    ) -> None:
        if key is None:
            key = getattr(backend, "run_id", None)
            if not isinstance(key, str):
                raise TypeError(
                    f"{type(backend).__name__} has no str run_id; pass key= to name its register"
                )
        self._backend = backend
        self._recorder = recorder
        self._client = client if client is not None else recorder.new_client()
        self._key = key

    @property
    def name(self) -> str:
        return self._backend.name

    @property
    def run_id(self) -> str:
        """The key calls are recorded under (the wrapped backend's run id by default)."""
        return self._key

    @property
    def client(self) -> str:
        """The client name on this handle's operations."""
        return self._client

    @property
    def backend(self) -> AsyncRendezvousBackend:
        """The wrapped backend."""
        return self._backend

    def __repr__(self) -> str:
        return f"RecordingBackend({self._backend!r}, client={self._client!r})"

    async def get_state(self) -> tuple[bytes, Token] | None:
        recorder = self._recorder
        op = recorder.invoke(client=self._client, key=self._key, kind="read")
        try:
            result = await self._backend.get_state()
        except BaseException as exc:
            recorder.complete(op, "fail", error=_describe_error(exc))
            raise
        recorder.complete(op, "ok", result=result)
        return result

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        recorder = self._recorder
        op = recorder.invoke(
            client=self._client,
            key=self._key,
            kind="write",
            state=state if type(state) is bytes else None,
            token=token,
        )
        try:
            result = await self._backend.set_state(state, token)
        except _NO_EFFECT_ERRORS as exc:
            recorder.complete(op, "fail", error=_describe_error(exc))
            raise
        except BaseException as exc:
            # A connection error, a cancellation or anything unexpected may have struck after
            # the store applied the write: only "unknown" is honest.
            recorder.complete(op, "unknown", error=_describe_error(exc))
            raise
        recorder.complete(op, "ok", result=(result[0], result[1]), written=result[2])
        return result

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        recorder = self._recorder
        op = recorder.invoke(client=self._client, key=self._key, kind="wait", token=token)
        try:
            result = await self._backend.wait_for_change(token, timeout=timeout)
        except BaseException as exc:
            recorder.complete(op, "fail", error=_describe_error(exc))
            raise
        recorder.complete(op, "ok", result=result)
        return result

    async def aclose(self) -> None:
        await self._backend.aclose()


# -- loading and merging -----------------------------------------------------------------------


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
    pending: dict[int, _Pending] = {}
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
            if event.get("version") != _VERSION:
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
                pending[op] = _Pending(
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
                    Operation(
                        started.kind,
                        started.client,
                        started.key,
                        started.call,
                        time_ns,
                        kind,
                        started.state,
                        started.token,
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
    done.extend(
        Operation(p.kind, p.client, p.key, p.call, None, "unknown", p.state, p.token)
        for p in pending.values()
    )
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
