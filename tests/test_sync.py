from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import pytest

from arendezvous import (
    BackendClosedError,
    FileBackend,
    MemoryBackend,
    MemoryStore,
    RendezvousStateError,
    SyncBackend,
)


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
    for thread in threading.enumerate():  # anyio's workers are told to stop with the loop
        if thread.name.startswith("AnyIO worker"):
            thread.join(10)
            assert not thread.is_alive()
    with pytest.raises(BackendClosedError):
        backend.get_state()
    with pytest.raises(BackendClosedError):
        anyio.run(inner.get_state)


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
