"""The rendezvous across real processes on the file backend: ranks, and a killed node's eviction."""

from __future__ import annotations

import signal
from pathlib import Path

from ._processes import start_workers


def check_processes_rendezvous(url: str) -> None:
    """Four processes get ranks 0..3; one is SIGKILLed; the other three form the next round."""
    nodes = [f"proc-{index}" for index in range(4)]
    workers = start_workers(url, "processes", nodes, min_nodes=3, max_nodes=4)
    try:
        first = [worker.next_round() for worker in workers]
        assert {info["round"] for info in first} == {0}
        assert sorted(info["rank"] for info in first) == [0, 1, 2, 3]
        assert {info["participants"] for info in first} == {tuple(nodes)}
        victim = workers.pop(1)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        # The survivors evict it when its heartbeat runs out, and form a round without it.
        second = [worker.next_round() for worker in workers]
        assert len({info["round"] for info in second}) == 1
        assert second[0]["round"] > 0
        assert sorted(info["rank"] for info in second) == [0, 1, 2]
        assert {info["participants"] for info in second} == {("proc-0", "proc-2", "proc-3")}
    finally:
        for worker in workers:
            worker.stop()


def test_processes_on_the_file_backend(tmp_path: Path) -> None:
    check_processes_rendezvous(f"file://{tmp_path}?durable=false&poll_interval=0.01")
