from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
import sniffio

from arendezvous import (
    AsyncRendezvousBackend,
    BackendClosedError,
    FileBackend,
    MemoryBackend,
    MemoryStore,
    RendezvousStateError,
    SyncBackend,
    Token,
)
from arendezvous.sync import LoopThread


@contextmanager
def anyio_fail_after_seconds(seconds: int) -> Iterator[None]:
    """Fail a blocking section that hangs, with SIGALRM (bounded; the main thread only)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "arendezvous-sync-loop"]


def test_blocking_calls_follow_the_contract() -> None:
    with SyncBackend(MemoryBackend("sync-basic", MemoryStore())) as backend:
        assert backend.name == "memory"
        assert backend.get_state() is None
        state, token, written = backend.set_state(b"a")
        assert (state, written) == (b"a", True)
        assert backend.set_state(b"b", "invalid") == (b"a", token, False)
        assert backend.get_state() == (b"a", token)
        assert backend.wait_for_change(token, timeout=0.01) is None
        assert backend.wait_for_change(None) == (b"a", token)
        with pytest.raises(TypeError, match="bytes"):
            backend.set_state("text")  # type: ignore[arg-type]
        assert "MemoryBackend" in repr(backend)


def test_errors_from_the_backend_propagate(tmp_path: Path) -> None:
    with SyncBackend(FileBackend(tmp_path, "corrupt")) as backend:
        (tmp_path / "corrupt.rdzv").write_bytes(b"junk")
        with pytest.raises(RendezvousStateError):
            backend.get_state()


def test_many_threads_lose_no_update() -> None:
    backend = SyncBackend(MemoryBackend("sync-threads", MemoryStore()))
    backend.set_state(b"0")
    increments, workers = 200, 8
    errors: list[BaseException] = []

    def work() -> None:
        try:
            current = backend.get_state()
            assert current is not None
            state, token = current
            for _ in range(increments):
                while True:
                    state, token, written = backend.set_state(b"%d" % (int(state) + 1), token)
                    if written:
                        break
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    current = backend.get_state()
    assert current is not None
    assert int(current[0]) == increments * workers
    backend.close()


def test_wait_for_change_is_woken_by_another_thread() -> None:
    store = MemoryStore()
    waiter = SyncBackend(MemoryBackend("sync-wait", store))
    writer = SyncBackend(MemoryBackend("sync-wait", store))
    _, token, _ = writer.set_state(b"before")
    result: list[object] = []
    thread = threading.Thread(
        target=lambda: result.append(waiter.wait_for_change(token, timeout=30))
    )
    thread.start()
    _, new_token, _ = writer.set_state(b"after", token)
    thread.join(30)
    assert result == [(b"after", new_token)]
    waiter.close()
    writer.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_calls_from_inside_an_event_loop_fail_at_once(anyio_backend: str) -> None:
    backend = SyncBackend(MemoryBackend("sync-in-loop", MemoryStore()))

    async def misuse() -> None:
        # were it to block, this loop's thread would wait on itself: it must raise instead
        with pytest.raises(RuntimeError, match="cannot be called from"):
            backend.get_state()

    anyio.run(misuse, backend=anyio_backend)
    assert backend.set_state(b"fine from a thread")[2] is True
    backend.close()


def test_close_stops_the_loop_thread_and_closes_the_backend(tmp_path: Path) -> None:
    before = set(_loop_threads())
    inner = FileBackend(tmp_path, "close")
    backend = SyncBackend(inner)
    backend.set_state(b"x")
    assert len(set(_loop_threads()) - before) == 1
    backend.close()
    backend.close()  # idempotent
    assert set(_loop_threads()) - before == set()
    with pytest.raises(BackendClosedError):
        backend.get_state()
    with pytest.raises(BackendClosedError):
        anyio.run(inner.get_state)


def test_close_waits_for_anyios_worker_threads(tmp_path: Path) -> None:
    # The file backend's calls run on anyio's worker threads of the adapter's loop; anyio only
    # tells them to stop with the loop. close() waits for them: none is left running after it.
    # (Before it did, one close in six or so returned while a worker was still exiting.)
    before = set(threading.enumerate())
    for attempt in range(30):
        backend = SyncBackend(FileBackend(tmp_path, f"workers-{attempt}"))
        backend.set_state(b"x")
        assert backend.get_state() is not None
        assert any(t.name.startswith("AnyIO worker") for t in threading.enumerate())
        backend.close()
        assert set(threading.enumerate()) - before == set(), attempt


def test_refuses_what_is_not_an_async_backend() -> None:
    with pytest.raises(TypeError, match="AsyncRendezvousBackend"):
        SyncBackend(object())  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")
def test_survives_fork(tmp_path: Path) -> None:
    backend = SyncBackend(FileBackend(tmp_path, "fork"))
    _, token, _ = backend.set_state(b"parent")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's loop thread does not exist here
        code = 1
        try:
            state, _, written = backend.set_state(b"child", token)
            backend.close()
            code = 0 if written and state == b"child" else 2
        finally:
            os.write(write_end, b"%d" % code)
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.read(read_end, 16) == b"0"
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    current = backend.get_state()
    assert current is not None
    assert current[0] == b"child"
    backend.close()


def _embedded_backend(kind: str, tmp_path: Path, run_id: str) -> AsyncRendezvousBackend:
    if kind == "memory":
        return MemoryBackend(run_id, MemoryStore())
    return FileBackend(tmp_path, run_id, durable=False)


_FORKS = 20


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")
@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")
@pytest.mark.parametrize("kind", ["file", "memory"])
def test_fork_while_threads_write_leaves_a_usable_child(kind: str, tmp_path: Path) -> None:
    """``os.fork()`` while four threads write and one waits: a lock held by one of them at the
    fork (the handle's, the store's, the change notifier's) would be inherited held by a child
    that has no such thread, and hang it. Every child must read and write within a bound (a hung
    one is ended by SIGALRM and reported by its exit status)."""
    backend = SyncBackend(_embedded_backend(kind, tmp_path, "fork-busy"))
    backend.set_state(b"0")
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            while not stop.is_set():
                current = backend.get_state()
                assert current is not None
                backend.set_state(b"parent", current[1])
        except BaseException as exc:  # reported below
            errors.append(exc)

    def wait() -> None:
        try:
            while not stop.is_set():
                current = backend.get_state()
                assert current is not None
                backend.wait_for_change(current[1])  # woken by the writers' next write
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    threads.append(threading.Thread(target=wait))
    for thread in threads:
        thread.start()
    try:
        for attempt in range(_FORKS):
            pid = os.fork()
            if pid == 0:  # the child: only this thread exists here
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.alarm(10)  # a hung child dies of it
                code = 1
                try:
                    current = backend.get_state()
                    assert current is not None
                    backend.set_state(b"child", current[1])
                    assert backend.get_state() is not None
                    backend.close()
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, (
                f"child {attempt + 1} of {_FORKS} ended with status "
                f"{os.waitstatus_to_exitcode(status)} (-{int(signal.SIGALRM)}: it hung)"
            )
    finally:
        stop.set()
        current = backend.get_state()
        assert current is not None
        backend.set_state(b"last", current[1])  # wakes the waiter
        for thread in threads:
            thread.join(30)
        backend.close()
    assert not errors


def _blocked_waiters(
    backend: SyncBackend, token: Token, count: int
) -> tuple[list[threading.Thread], list[BaseException]]:
    """*count* threads in ``backend.wait_for_change(token)`` (no timeout), each registered as a
    waiter on the loop before this returns; their exceptions are collected in the list."""
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            backend.wait_for_change(token)
        except BaseException as exc:  # what it is, is the point
            errors.append(exc)

    threads = [threading.Thread(target=wait) for _ in range(count)]
    for thread in threads:
        thread.start()

    async def all_waiting() -> None:
        # Every waiter's task is on this loop: once they all exist and all tasks are blocked,
        # all wait. Their creation cannot be awaited (run_coroutine_threadsafe makes them), so
        # this yields to the loop (no delay) until they are there, within a bound.
        with anyio.fail_after(10):
            while len(asyncio.all_tasks()) <= count:  # noqa: ASYNC110 - see above
                await asyncio.sleep(0)
        await anyio.wait_all_tasks_blocked()

    backend.loop_thread.call(all_waiting)
    return threads, errors


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_close_ends_blocked_waiters_inside_the_error_tree(kind: str, tmp_path: Path) -> None:
    """Threads blocked in a wait without timeout when the adapter closes get BackendClosedError,
    not a ``concurrent.futures.CancelledError`` from outside the tree."""
    backend = SyncBackend(_embedded_backend(kind, tmp_path, "sync-close-waiters"))
    _, token, _ = backend.set_state(b"a")
    threads, errors = _blocked_waiters(backend, token, 2)
    backend.close()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert len(errors) == 2
    assert all(isinstance(error, BackendClosedError) for error in errors), errors


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_closing_the_backend_wakes_blocked_threads(kind: str, tmp_path: Path) -> None:
    """The wrapped handle closed on the loop (the adapter still running): threads blocked in
    ``wait_for_change`` without timeout raise BackendClosedError from the backend itself."""
    async_backend = _embedded_backend(kind, tmp_path, "sync-aclose-waiters")
    backend = SyncBackend(async_backend)
    _, token, _ = backend.set_state(b"a")
    threads, errors = _blocked_waiters(backend, token, 2)
    backend.loop_thread.call(async_backend.aclose)
    for thread in threads:
        thread.join(10)
    try:
        assert not any(thread.is_alive() for thread in threads), "aclose() left waiters blocked"
        assert len(errors) == 2
        assert all(isinstance(error, BackendClosedError) for error in errors), errors
    finally:
        backend.close()  # ends waiters still blocked (before the fix), so the test can end


# -- the loop thread ---------------------------------------------------------------------------


def test_the_loop_thread_runs_coroutines_for_blocking_callers() -> None:
    thread = LoopThread("test-loop", owner="a test")

    async def add(a: int, b: int) -> int:
        await anyio.lowlevel.checkpoint()
        return a + b

    async def fail() -> None:
        raise KeyError("from the loop")

    assert thread.call(add, 1, b=2) == 3
    with pytest.raises(KeyError, match="from the loop"):
        thread.call(fail)
    thread.stop()
    thread.stop()  # idempotent
    with pytest.raises(BackendClosedError, match="a test was closed"):
        thread.call(add, 1, 2)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_the_shared_loop_thread_bridges_another_event_loop(anyio_backend: str) -> None:
    """From trio (or another asyncio loop) a coroutine runs on the loop thread as an asyncio
    task (anyio sees asyncio there, not the caller's loop), and its result or error comes back."""
    thread = LoopThread.shared()
    assert LoopThread.shared() is thread

    async def where() -> tuple[str, bool]:
        await anyio.lowlevel.checkpoint()
        library = sniffio.current_async_library()  # what anyio consults
        return library, LoopThread.is_shared_loop(asyncio.get_running_loop())

    async def fail() -> None:
        raise ValueError("bridged")

    async def main() -> None:
        assert await thread.run(where) == ("asyncio", True)
        with pytest.raises(ValueError, match="bridged"):
            await thread.run(fail)

    anyio.run(main, backend=anyio_backend)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_a_cancelled_bridge_call_settles_before_the_caller_goes_on(anyio_backend: str) -> None:
    """Cancelling the caller cancels the coroutine on the loop thread and waits until it has
    finished its cancellation handling: a shielded step completes first."""
    thread = LoopThread.shared()
    steps: list[str] = []

    async def slow_write() -> None:
        try:
            await anyio.sleep(60)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)  # settling, as a write in flight does
                steps.append("settled")

    async def main() -> None:
        with anyio.move_on_after(0.1):
            await thread.run(slow_write)
        steps.append("caller went on")

    with anyio_fail_after_seconds(30):
        anyio.run(main, backend=anyio_backend)
    assert steps == ["settled", "caller went on"]


def test_sync_rendezvous_runs_on_the_adapters_loop_thread() -> None:
    from arendezvous import SyncRendezvous

    backend = SyncBackend(MemoryBackend("sync-rdzv-thread", MemoryStore()))
    rendezvous = SyncRendezvous(backend, "node", 1, 1, last_call=0.01)
    loops: list[object] = []

    async def note() -> None:
        loops.append(asyncio.get_running_loop())

    rendezvous._call(note)
    backend.loop_thread.call(note)
    assert loops[0] is loops[1] is backend.loop_thread.loop
    backend.close()
