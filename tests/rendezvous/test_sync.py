"""SyncRendezvous: the rendezvous from plain threads, through the sync adapter's loop thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from arendezvous import FileBackend, MemoryBackend, MemoryStore, SyncBackend
from arendezvous.rendezvous import RendezvousInfo, RoundEnd, SyncRendezvous

# Any: the rendezvous also takes keywords that are not seconds (delete_when_closed).
FAST: dict[str, Any] = {"heartbeat": 0.05, "heartbeat_timeout": 0.25, "join_timeout": 20.0}


def _loop_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "arendezvous-sync-loop")


def test_threads_rendezvous_with_distinct_ranks(tmp_path: Path) -> None:
    before = _loop_threads()
    infos: list[RendezvousInfo] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def node(index: int) -> None:
        try:
            backend = FileBackend(tmp_path, "threads", durable=False, poll_interval=0.01)
            with SyncRendezvous(backend, f"t{index}", 4, 4, **FAST) as rendezvous:
                info = rendezvous.next_rendezvous()
                infos.append(info)
                assert rendezvous.info == info
                assert rendezvous.num_nodes_waiting() == 0
                assert not rendezvous.is_closed()
                barrier.wait(timeout=20)  # nobody leaves (ending the round) before all saw it
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=node, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert sorted(info.rank for info in infos) == [0, 1, 2, 3]
    assert {info.participants for info in infos} == {("t0", "t1", "t2", "t3")}
    assert _loop_threads() == before  # each owned SyncBackend was closed on exit


def test_a_borrowed_sync_backend_stays_open_and_rounds_end() -> None:
    store = MemoryStore()
    with SyncBackend(MemoryBackend("sync-rdzv", store)) as first_backend, \
            SyncBackend(MemoryBackend("sync-rdzv", store)) as second_backend:
        first = SyncRendezvous(first_backend, "a", 2, 2, **FAST)
        second = SyncRendezvous(second_backend, "b", 2, 2, **FAST)
        assert first.backend is first_backend
        assert first.node == "a"
        assert "node='a'" in repr(first)
        results: list[RendezvousInfo] = []
        with first, second:
            joiner = threading.Thread(target=lambda: results.append(second.next_rendezvous()))
            joiner.start()
            results.append(first.next_rendezvous())
            joiner.join(20)
            assert {info.round for info in results} == {0}
            assert first.wait_for_round_end(timeout=0.01) is None
            second.leave()
            assert first.wait_for_round_end(timeout=20) is RoundEnd.RESTARTED
            first.close()
            assert second.is_closed()
        assert first_backend.get_state() is not None  # borrowed: still open


def test_blocking_calls_refuse_a_running_event_loop() -> None:
    rendezvous = SyncRendezvous(MemoryBackend("in-loop", MemoryStore()), "n", 1, 1)

    async def call() -> None:
        with pytest.raises(RuntimeError, match="running"):
            rendezvous.num_nodes_waiting()

    anyio.run(call)
    with rendezvous:
        assert rendezvous.next_rendezvous().world_size == 1
        with pytest.raises(RuntimeError, match="already entered"):
            rendezvous.__enter__()


def test_bad_backend() -> None:
    with pytest.raises(TypeError, match="SyncBackend or an AsyncRendezvousBackend"):
        SyncRendezvous("memory://", "n", 1, 1)  # type: ignore[arg-type]
