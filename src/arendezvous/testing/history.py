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

from ._history.jsonlines import FORMAT as FORMAT
from ._history.jsonlines import load as load
from ._history.jsonlines import merge as merge
from ._history.operations import History as History
from ._history.operations import Operation as Operation
from ._history.operations import OperationKind as OperationKind
from ._history.operations import Outcome as Outcome
from ._history.recording import Recorder as Recorder
from ._history.recording import RecordingBackend as RecordingBackend
from ._history.tokens import JsonTokenCodec as JsonTokenCodec
from ._history.tokens import OpaqueToken as OpaqueToken
from ._history.tokens import TokenCodec as TokenCodec

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
