"""``SyncBackend``: any async backend behind blocking methods, for threads and legacy callers.

PyTorch's ``DynamicRendezvousHandler`` and other blocking code call ``get_state``/``set_state``
from ordinary threads. The adapter runs the async backend on a private asyncio event loop in a
background thread of its own (a :class:`~arendezvous.sync.LoopThread`) and hands each call over:
measured in ``benchmarks/bench_backends.py``, that is the leanest safe path (anyio's stock blocking
portal costs more per call), and asyncio is the loop every bundled store client supports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._backend import AsyncRendezvousBackend, Token
from ._errors import BackendClosedError
from ._forksafe import renew_in_child
from ._loop_thread import LoopThread

__all__ = ("LoopThread", "SyncBackend")

_T = TypeVar("_T")
_THREAD_NAME = "arendezvous-sync-loop"


class SyncBackend:
    """Blocking ``get_state``/``set_state``/``wait_for_change`` over an async backend.

    Safe to call from many threads at once. Owns *backend*: ``close()`` closes it, stops the loop
    thread and joins it. In a child made by ``os.fork()`` the adapter starts a fresh loop thread on
    first use (the parent's thread does not exist there); the wrapped backend must itself be usable
    after a fork (the memory and file backends are). Calls made from inside a running event loop
    raise ``RuntimeError`` at once rather than deadlock.

    If the calling thread is interrupted (``KeyboardInterrupt``) while it waits, the call is
    cancelled on the loop; backends guarantee a cancelled write is applied entirely or not at all.
    """

    def __init__(self, backend: AsyncRendezvousBackend) -> None:
        if not isinstance(backend, AsyncRendezvousBackend):
            raise TypeError(
                f"SyncBackend wraps an AsyncRendezvousBackend, not {type(backend).__name__}"
            )
        self._backend = backend
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")  # a forked child can close its copy: see _forksafe
        self._closed = False
        self._loop_thread = LoopThread(_THREAD_NAME, owner="SyncBackend")

    @property
    def backend(self) -> AsyncRendezvousBackend:
        """The wrapped async backend."""
        return self._backend

    @property
    def loop_thread(self) -> LoopThread:
        """The loop thread the backend runs on; other blocking faces of the same backend (such as
        :class:`~arendezvous.SyncRendezvous`) hand their coroutines to it with
        :meth:`LoopThread.call`."""
        return self._loop_thread

    @property
    def name(self) -> str:
        """The wrapped backend's name."""
        return self._backend.name

    def __repr__(self) -> str:
        return f"SyncBackend({self._backend!r})"

    def _run(self, coroutine_function: Callable[..., Coroutine[Any, Any, _T]], *args: Any,
             **kwargs: Any) -> _T:  # fmt: skip
        if self._closed:
            raise BackendClosedError("this SyncBackend was closed")
        return self._loop_thread.call(coroutine_function, *args, **kwargs)

    def get_state(self) -> tuple[bytes, Token] | None:
        """Blocking :meth:`AsyncRendezvousBackend.get_state`."""
        return self._run(self._backend.get_state)

    def set_state(self, state: bytes, token: Token | None = None) -> tuple[bytes, Token, bool]:
        """Blocking :meth:`AsyncRendezvousBackend.set_state`."""
        return self._run(self._backend.set_state, state, token)

    def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        """Blocking :meth:`AsyncRendezvousBackend.wait_for_change`."""
        return self._run(self._backend.wait_for_change, token, timeout=timeout)

    def close(self) -> None:
        """Close the backend, stop the loop thread and wait for it to exit. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._loop_thread.check_caller()  # before anything changes
            try:
                self._loop_thread.call(self._backend.aclose)
            finally:
                self._closed = True
                self._loop_thread.stop()

    def __enter__(self) -> SyncBackend:
        return self

    def __exit__(self, kind: object, exc: object, traceback: object) -> None:
        self.close()
