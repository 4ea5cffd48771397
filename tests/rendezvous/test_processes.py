"""The rendezvous across real processes: ranks; clocks an hour apart; a frozen node (SIGSTOP past
the heartbeat timeout, then SIGCONT) that learns it lost its rank; a killed node's eviction.

The skewed clocks are real: libfaketime (Debian's ``faketime`` package) shifts what the worker
process reads as the time of day, by an hour either way.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from _missing import missing

from ._processes import Worker, start_workers

_FAKETIME_LIBRARIES = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))


def skewed_clocks(*offsets: str, monotonic: bool) -> list[dict[str, str]]:
    """Environments running a worker with its clock moved by each offset (``"+1h"``, ``"-1h"``),
    through libfaketime; *monotonic*: move its monotonic clock too (a machine of its own)."""
    if not _FAKETIME_LIBRARIES:
        missing("libfaketime.so.1 is missing: install Debian's faketime package")
    return [
        {} if offset == "0" else {
            "LD_PRELOAD": str(_FAKETIME_LIBRARIES[0]),
            "FAKETIME": offset,
            "FAKETIME_DONT_FAKE_MONOTONIC": "0" if monotonic else "1",
            "FAKETIME_NO_CACHE": "1",
        }
        for offset in offsets
    ]


def check_processes_rendezvous(
    url: str,
    *,
    store_has_its_own_clock: bool = True,
    heartbeat: float = 0.1,
    last_call: float = 0.2,
    clock_offset: str = "1h",
) -> None:
    """Four processes, two with clocks *clock_offset* off either way (``"1h"``: an hour; a store
    that checks its clients' clocks, as S3 does, needs less), get ranks 0..3. One is frozen past
    the heartbeat timeout (four *heartbeat* intervals): the other three form a round (each waiting
    *last_call* for a fourth); thawed, it learns its round is over and all four meet again. One is
    killed: the other three form the next round. No rank of any round is ever held twice."""
    nodes = [f"proc-{index}" for index in range(4)]
    # On a file backend the store's clock is the machine's monotonic clock, which every process of
    # the machine shares; only the time of day may differ there.
    envs = skewed_clocks("0", f"+{clock_offset}", f"-{clock_offset}", "0",
                         monotonic=store_has_its_own_clock)  # fmt: skip
    workers = start_workers(url, "processes", nodes, min_nodes=3, max_nodes=4, envs=envs,
                            heartbeat=heartbeat, last_call=last_call)  # fmt: skip
    seen: list[dict[str, Any]] = []

    def round_of(group: list[Worker]) -> list[dict[str, Any]]:
        """The next round holding exactly *group*, as each of its workers reports it. (Under load
        a round may first complete without a slow node, by the last call; the node then waits
        and the next round has it: each worker reports both. A node starved past the heartbeat
        timeout may be evicted from a round before it read it: it rejoins, and the others meet
        it in the next round, which they report too.)"""
        expected = tuple(sorted(worker.node for worker in group))

        def next_of_group(worker: Worker, after: int) -> dict[str, Any]:
            for _ in range(10):
                info = worker.next_round()
                seen.append(info)
                if info["participants"] == expected and info["round"] >= after:
                    return info
            raise AssertionError(f"{worker.node} saw no round of {expected} in 10 rounds")

        infos = [next_of_group(worker, 0) for worker in group]
        latest = max(info["round"] for info in infos)
        infos = [info if info["round"] == latest else next_of_group(worker, latest)
                 for worker, info in zip(group, infos, strict=True)]
        assert len({info["round_id"] for info in infos}) == 1, infos
        assert sorted(info["rank"] for info in infos) == list(range(len(group)))
        return infos

    try:
        first = round_of(workers)
        assert first[0]["round"] == 0
        # Frozen (skewed clock and all) past the heartbeat timeout, as a stopped VM would be.
        sleeper = workers[1]
        sleeper.process.send_signal(signal.SIGSTOP)
        awake = [worker for worker in workers if worker is not sleeper]
        second = round_of(awake)
        assert second[0]["round"] > first[0]["round"]
        sleeper.process.send_signal(signal.SIGCONT)
        # Thawed, it finds its round over at once, rejoins, and all four meet again.
        third = round_of(workers)
        assert sleeper.ended[:1] == ["RoundEnd.RESTARTED"], sleeper.ended
        assert third[0]["round"] > second[0]["round"]
        victim = workers.pop(2)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        # The survivors evict it when its heartbeat runs out, and form a round without it.
        fourth = round_of(workers)
        assert fourth[0]["round"] > third[0]["round"]
        held = [(info["round_id"], info["rank"]) for info in seen]
        assert len(held) == len(set(held)), "a rank of a round was held twice"
    finally:
        for worker in workers:
            worker.process.send_signal(signal.SIGCONT)
            worker.stop()


def test_processes_on_the_file_backend(tmp_path: Path) -> None:
    url = f"file://{tmp_path}?durable=false&poll_interval=0.01"
    check_processes_rendezvous(url, store_has_its_own_clock=False)
