"""Recording: a :class:`Recorder` collects calls; a :class:`RecordingBackend` makes them.

Wrap each handle in a :class:`RecordingBackend` sharing one :class:`Recorder`, and every call on
it becomes an operation with its arguments, outcome and times (see the public
:mod:`arendezvous.testing.history` for the outcomes' meaning).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import IO

from ..._backend import AsyncRendezvousBackend, Token
from ..._closing import ClosesOnExit
from ..._errors import RendezvousStateError
from ..wrapper import BackendWrapper
from .jsonlines import EventWriter
from .operations import History, Operation, OperationKind, Outcome, PendingCall
from .tokens import TokenCodec

__all__ = ("Recorder", "RecordingBackend")

# Errors set_state raises before anything is written: the call certainly had no effect.
_NO_EFFECT_ERRORS = (TypeError, ValueError, RendezvousStateError)


class Recorder(ClosesOnExit):
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
        self._pending: dict[int, PendingCall] = {}
        self._done: list[Operation] = []
        self._file: IO[str] | None = None
        self._writer: EventWriter | None = None
        if path is not None:
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._writer = EventWriter(self._file, source=self.source, codec=codec)

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
            self._pending[op] = PendingCall(now, client, key, kind, state, token)
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
            self._done.append(pending.ended(now, outcome, result, written, error))
            if self._writer is not None:
                self._writer.complete(op, outcome, now, result, written, error)

    def history(self) -> History:
        """Everything recorded so far; calls still running count as ``unknown``."""
        with self._lock:
            running = [call.unfinished() for call in self._pending.values()]
            return History([*self._done, *running])


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return type(exc).__name__ if not text else f"{type(exc).__name__}: {text}"


class RecordingBackend(BackendWrapper):
    """Wraps any backend and records every call on it in a :class:`Recorder`.

    :param client: the name this handle's calls carry (default: a fresh one from the recorder).
    :param key: the register the calls address (default: the backend's ``run_id``).

    It adds no await of its own, so it changes no interleaving; the recorded interval of a call
    contains the wrapped call. Cancellation and errors are recorded, then re-raised unchanged.
    ``run_id``, ``name`` and capabilities are the wrapped backend's (see
    :class:`~arendezvous.testing.wrapper.BackendWrapper`); :attr:`key` is what calls are recorded
    under.

    :raises TypeError: *key* is not given and the backend has no ``str`` ``run_id``.
    """

    def __init__(
        self,
        backend: AsyncRendezvousBackend,
        recorder: Recorder,
        *,
        client: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(backend)
        if key is None:
            key = self.run_id
            if key is None:
                raise TypeError(
                    f"{type(backend).__name__} has no str run_id; pass key= to name its register"
                )
        self._recorder = recorder
        self._client = client if client is not None else recorder.new_client()
        self._key = key

    @property
    def key(self) -> str:
        """The register calls are recorded under (the wrapped backend's run id by default)."""
        return self._key

    @property
    def client(self) -> str:
        """The client name on this handle's operations."""
        return self._client

    def __repr__(self) -> str:
        return f"RecordingBackend({self._backend!r}, client={self._client!r})"

    async def get_state(self) -> tuple[bytes, Token] | None:
        """The wrapped ``get_state()``, recorded as a ``read``."""
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
        """The wrapped ``set_state(state, token)``, recorded as a ``write``."""
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
        """The wrapped ``wait_for_change(token, timeout=timeout)``, recorded as a ``wait``."""
        recorder = self._recorder
        op = recorder.invoke(client=self._client, key=self._key, kind="wait", token=token)
        try:
            result = await self._backend.wait_for_change(token, timeout=timeout)
        except BaseException as exc:
            recorder.complete(op, "fail", error=_describe_error(exc))
            raise
        recorder.complete(op, "ok", result=result)
        return result
