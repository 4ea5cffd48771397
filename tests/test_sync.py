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
    BackendClosedError,
    FileBackend,
    MemoryBackend,
    MemoryStore,
    RendezvousStateError,
    SyncBackend,
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


def test_close_ends_blocked_waiters_inside_the_error_tree() -> None:
    """Threads blocked in a wait when the adapter closes get BackendClosedError, not a
    ``concurrent.futures.CancelledError`` from outside the tree."""
    backend = SyncBackend(MemoryBackend("sync-close-waiters", MemoryStore()))
    _, token, _ = backend.set_state(b"a")
    errors: list[BaseException] = []
    blocked = threading.Event()

    def wait() -> None:
        blocked.set()
        try:
            backend.wait_for_change(token, timeout=60)
        except BaseException as exc:  # what it is, is the point
            errors.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    blocked.wait(10)
    backend.close()
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], BackendClosedError), errors


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
