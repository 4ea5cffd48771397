"""``LoopThread``: a private asyncio event loop in a daemon thread, and two ways to call into it.

Work reaches such a loop from two kinds of caller:

* blocking code (``SyncBackend``, ``SyncRendezvous``): :meth:`LoopThread.call` hands a coroutine to
  the loop and blocks the calling thread until it ends;
* code running on another event loop (trio above all): :meth:`LoopThread.run` awaits the
  coroutine's outcome without blocking that loop, and carries cancellation across: a cancelled
  caller cancels the coroutine and waits, shielded, until it has settled, so a write cancelled this
  way is applied entirely or not at all, as it would be on the loop itself.

The store clients of the bundled network backends (redis.asyncio, grpc.aio, asyncpg) run only on
asyncio; used from trio, their backends run them on the process-wide :meth:`LoopThread.shared`
thread. Calls are handed over with ``call_soon_threadsafe``/``run_coroutine_threadsafe`` directly:
measured in ``benchmarks/bench_backends.py``, that is the leanest safe path (anyio's blocking portal
costs more per call).

A loop thread survives ``os.fork()``: in the child (where the parent's thread does not exist) the
first call starts a fresh one.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any, TypeVar

import anyio

from ._errors import BackendClosedError
from ._forksafe import renew_in_child
from ._notify import threadsafe_setter

__all__ = ("LoopThread",)

_T = TypeVar("_T")


def _refuse_inside_event_loop(owner: str) -> None:
    # Blocking on a loop thread from inside an event loop would stall that loop, or deadlock if
    # it is the loop thread's own; refuse at once instead.
    if asyncio._get_running_loop() is not None:
        raise RuntimeError(
            f"{owner} methods block; they cannot be called from a running asyncio event loop. "
            "Await the async object directly, or call from a worker thread "
            "(anyio.to_thread.run_sync)."
        )
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        raise RuntimeError(
            f"{owner} methods block; they cannot be called from inside trio.run(). "
            "Await the async object directly, or call from a worker thread."
        )


class _BridgedCall:
    """One coroutine handed to the loop thread by :meth:`LoopThread.run`.

    Its task is created on the loop thread; ``wake`` is called (from that thread) once the task
    has finished, however it finished, so the caller can wait for the real end of the call.
    """

    __slots__ = ("args", "cancelled", "error", "function", "kwargs", "task", "wake")

    def __init__(
        self,
        function: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wake: Callable[[], None],
    ) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.wake = wake
        self.task: asyncio.Task[Any] | None = None
        self.error: BaseException | None = None
        self.cancelled = False

    def start(self) -> None:
        """Create the task (on the loop thread), unless the caller gave up first."""
        if self.cancelled:
            self.wake()
            return
        try:
            self.task = asyncio.get_running_loop().create_task(
                self.function(*self.args, **self.kwargs)
            )
        except BaseException as exc:  # the function raised before returning a coroutine
            self.error = exc
            self.wake()
            return
        self.task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.wake()

    def cancel(self) -> None:
        """Cancel the task (on the loop thread); its own cancellation handling settles it."""
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        assert self.task is not None
        if self.task.cancelled():
            # Not the caller's cancellation (that one is re-raised by run()): the loop thread
            # stopped under the call.
            raise BackendClosedError("the event-loop thread stopped while the call was running")
        return self.task.result()


def _join_anyio_workers(loop: asyncio.AbstractEventLoop) -> None:
    """Wait for the worker threads ``anyio.to_thread`` started for *loop* (the file backend's).

    anyio tells them to stop when the loop's root task ends but does not wait for them; waiting
    here means a stopped loop thread leaves no thread behind. Only workers already told to stop
    are waited for (anyio marks them ``stopping``): every call handed to them has returned by now,
    since the tasks that made the calls have ended.
    """
    for thread in threading.enumerate():
        if getattr(thread, "loop", None) is loop and getattr(thread, "stopping", False) is True:
            thread.join()


class LoopThread:
    """A private asyncio event loop running in a daemon thread; see the module docstring.

    :param name: the thread's name.
    :param owner: what the loop thread serves, as error messages name it (e.g. ``"SyncBackend"``).

    Safe to use from many threads at once. :meth:`stop` cancels what still runs on the loop, stops
    it and joins the thread; calls after it raise :class:`~arendezvous.BackendClosedError`.
    """

    def __init__(self, name: str = "arendezvous-loop", *, owner: str = "LoopThread") -> None:
        self._name = name
        self._owner = owner
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")  # a forked child starts a loop of its own under it
        self._stopped = False
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._loop = loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        self._stop_event = stop
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(loop, stop, started), name=self._name, daemon=True
        )
        self._thread.start()
        started.wait()

    @staticmethod
    def _serve(
        loop: asyncio.AbstractEventLoop, stop: asyncio.Event, started: threading.Event
    ) -> None:
        asyncio.set_event_loop(loop)

        async def serve() -> None:
            started.set()
            await stop.wait()

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
            _join_anyio_workers(loop)
        finally:
            loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (started again first if this is a forked child)."""
        return self._current_loop()

    def _current_loop(self) -> asyncio.AbstractEventLoop:
        if self._pid != os.getpid():
            # A forked child: its first caller starts its loop (the lock was renewed at the fork,
            # so that callers racing here all take the same one).
            with self._lock:
                if self._pid != os.getpid() and not self._stopped:
                    self._start()
        if self._stopped:
            raise BackendClosedError(f"this {self._owner} was closed: its loop thread is stopped")
        return self._loop

    def check_caller(self) -> None:
        """Refuse a blocking call from a thread that runs an event loop (it would stall it).

        :raises RuntimeError: the calling thread is inside a running asyncio or trio loop.
        """
        _refuse_inside_event_loop(self._owner)

    def call(self, function: Callable[..., Coroutine[Any, Any, _T]], /, *args: Any,
             **kwargs: Any) -> _T:  # fmt: skip
        """Run ``function(*args, **kwargs)`` on the loop and block until it returns.

        If the calling thread is interrupted (``KeyboardInterrupt``) while it waits, the coroutine
        is cancelled on the loop.

        :raises RuntimeError: called from inside a running event loop (it would block it).
        :raises BackendClosedError: the loop thread was stopped, or stopped during the call.
        """
        loop = self._current_loop()
        self.check_caller()
        # An empty context: the task must not inherit the caller's (sniffio's "trio" marker in
        # it would make anyio treat the loop thread's asyncio task as a trio task).
        future = contextvars.Context().run(
            asyncio.run_coroutine_threadsafe, function(*args, **kwargs), loop
        )
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise BackendClosedError(
                f"this {self._owner} was closed while the call was waiting"
            ) from None
        except BaseException:
            future.cancel()
            raise

    async def run(self, function: Callable[..., Coroutine[Any, Any, _T]], /, *args: Any,
                  **kwargs: Any) -> _T:  # fmt: skip
        """Await ``function(*args, **kwargs)`` run on the loop, from any other event loop.

        Cancelling the caller cancels the coroutine on the loop and waits (shielded) until it has
        finished, then re-raises the caller's cancellation: what the coroutine does when cancelled
        (a write applied entirely or not at all) holds for the caller too.
        """
        loop = self._current_loop()
        done = anyio.Event()
        bridged = _BridgedCall(function, args, kwargs, threadsafe_setter(done))
        # An empty context, as in call(): the caller's (a trio task's) must not leak in.
        loop.call_soon_threadsafe(bridged.start, context=contextvars.Context())
        try:
            await done.wait()
        except BaseException:
            with suppress(RuntimeError):  # the loop has closed: nothing is left to cancel
                loop.call_soon_threadsafe(bridged.cancel)
            with anyio.CancelScope(shield=True):
                await done.wait()
            raise
        result: _T = bridged.result()
        return result

    def stop(self, timeout: float | None = None) -> None:
        """Cancel what still runs on the loop, stop it and join the thread. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if self._pid != os.getpid():
                return  # a forked child that never used it: no thread of its own to stop
            with suppress(RuntimeError):  # already closed
                self._loop.call_soon_threadsafe(self._stop_event.set)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __repr__(self) -> str:
        return f"<LoopThread {self._name!r}{' stopped' if self._stopped else ''}>"

    # -- the process-wide loop thread --------------------------------------------------------

    @classmethod
    def shared(cls) -> LoopThread:
        """The process-wide loop thread on which asyncio-only store clients run for trio callers.

        Started on first use; stopped when the interpreter exits (so the connections on it are
        closed politely); started again in a forked child on its first use there.
        """
        thread = _shared[0]
        if thread is None:
            with _shared_lock:
                thread = _shared[0]
                if thread is None:
                    thread = cls("arendezvous-bridge-loop", owner="the asyncio bridge")
                    _shared[0] = thread
                    atexit.register(thread.stop, 5.0)
        return thread

    @staticmethod
    def is_shared_loop(loop: asyncio.AbstractEventLoop) -> bool:
        """Whether *loop* is the loop of the process-wide :meth:`shared` loop thread."""
        thread = _shared[0]
        return thread is not None and thread._loop is loop


_shared: list[LoopThread | None] = [None]
"""The process-wide loop thread, once started (a list: a module global set under a lock)."""
_shared_lock = threading.Lock()
renew_in_child(sys.modules[__name__], "_shared_lock")  # it may be held by a thread at a fork
