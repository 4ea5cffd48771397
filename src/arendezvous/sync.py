"""``SyncBackend``: any async backend behind blocking methods, for threads and legacy callers.

PyTorch's ``DynamicRendezvousHandler`` and other blocking code call ``get_state``/``set_state``
from ordinary threads. The adapter runs the async backend on one private asyncio event loop in a
background thread and hands each call over with ``asyncio.run_coroutine_threadsafe``: measured in
``benchmarks/bench_backends.py``, that is the leanest safe path (anyio's stock blocking portal costs
two to three times as much per call), and asyncio is the loop every bundled store client supports.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from ._backend import AsyncRendezvousBackend, Token
from ._errors import BackendClosedError

__all__ = ("SyncBackend",)

_T = TypeVar("_T")
_THREAD_NAME = "arendezvous-sync-loop"


def _check_no_running_loop() -> None:
    # Blocking on our loop from inside an event loop would stall that loop, or deadlock if it is
    # ours; refuse at once instead.
    if asyncio._get_running_loop() is not None:
        raise RuntimeError(
            "SyncBackend methods block; they cannot be called from a running asyncio event loop. "
            "Await the async backend directly, or call from a worker thread "
            "(anyio.to_thread.run_sync)."
        )
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        raise RuntimeError(
            "SyncBackend methods block; they cannot be called from inside trio.run(). "
            "Await the async backend directly, or call from a worker thread."
        )


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
        self._closed = False
        self._start_loop()

    def _start_loop(self) -> None:
        self._pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(started,), name=_THREAD_NAME, daemon=True
        )
        self._thread.start()
        started.wait()

    def _run_loop(self, started: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)

        async def serve() -> None:
            started.set()
            await self._stop.wait()

        try:
            # run_until_complete (not run_forever) gives anyio a root task, so its worker threads
            # are stopped when the loop stops.
            loop.run_until_complete(serve())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    @property
    def backend(self) -> AsyncRendezvousBackend:
        """The wrapped async backend."""
        return self._backend

    @property
    def name(self) -> str:
        """The wrapped backend's name."""
        return self._backend.name

    def __repr__(self) -> str:
        return f"SyncBackend({self._backend!r})"

    def _run(self, coroutine_function: Callable[..., Coroutine[Any, Any, _T]], *args: Any,
             **kwargs: Any) -> _T:
        if self._pid != os.getpid():
            self._restart_after_fork()
        if self._closed:
            raise BackendClosedError("this SyncBackend was closed")
        _check_no_running_loop()
        future = asyncio.run_coroutine_threadsafe(coroutine_function(*args, **kwargs), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _restart_after_fork(self) -> None:
        # Only this thread exists in the child; the parent's lock may have been held at the fork.
        self._lock = threading.Lock()
        with self._lock:
            if self._pid != os.getpid():
                self._start_loop()

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
        if self._pid != os.getpid():
            self._restart_after_fork()
        with self._lock:
            if self._closed:
                return
            _check_no_running_loop()
            self._closed = True
            try:
                asyncio.run_coroutine_threadsafe(self._backend.aclose(), self._loop).result()
            finally:
                self._loop.call_soon_threadsafe(self._stop.set)
                self._thread.join()

    def __enter__(self) -> SyncBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
