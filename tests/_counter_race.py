"""A cross-process lost-update test: N OS processes increment one counter through CAS.

Each worker (``_counter_worker.py``, a real ``python`` process) opens the backend by URL, reports
ready, waits for the start line on stdin (so all race at once), then performs its increments with
``get_state``/``set_state`` retries. If any CAS were not atomic, two workers would both win with the
same token and the final count would fall short.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ("run_counter_race",)

_WORKER = Path(__file__).with_name("_counter_worker.py")


def run_counter_race(
    url: str, run_id: str, *, processes: int = 4, increments: int = 50, timeout: float = 120.0
) -> tuple[int, int]:
    """Run the race; return ``(final_count, total_conflicts)``. Raises if a worker fails."""
    workers = [
        subprocess.Popen(
            [sys.executable, str(_WORKER), url, run_id, str(increments)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            if line.strip() != "ready":
                _, err = worker.communicate(timeout=timeout)
                raise RuntimeError(f"worker did not start: {line!r} {err}")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        conflicts = 0
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            if worker.returncode != 0:
                raise RuntimeError(f"worker exited with {worker.returncode}: {err}")
            conflicts += int(out.split()[-1])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return _final_count(url, run_id), conflicts


def _final_count(url: str, run_id: str) -> int:
    import anyio

    from arendezvous import open_backend

    async def read() -> int:
        async with open_backend(url, run_id=run_id) as backend:
            current = await backend.get_state()
            assert current is not None
            return int(current[0])

    return anyio.run(read)
