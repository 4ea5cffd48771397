"""A cross-process lost-update race: N OS processes increment one counter through CAS.

Each worker (``python -m arendezvous.testing._counter URL RUN_ID INCREMENTS``, a real process)
opens the backend by URL, reports ready, waits for the start line on stdin (so all race at once),
then performs its increments with ``set_state`` retries, each loser retrying with the state and
token its failed call returned. If any CAS were not atomic, two workers would both win with the
same token and the final count would fall short.
"""

from __future__ import annotations

import subprocess
import sys

import anyio

from .. import open_backend

__all__ = ("run_counter_race",)

_MAX_ATTEMPTS = 100_000  # per increment: a bound, far above what fair racing ever needs


def run_counter_race(
    url: str, run_id: str, *, processes: int = 4, increments: int = 50, timeout: float = 120.0
) -> tuple[int, int]:
    """Run the race; return ``(final_count, total_conflicts)``.

    :raises RuntimeError: a worker failed to start or exited with an error (its stderr says why).
    """
    command = [sys.executable, "-m", __name__, url, run_id, str(increments)]
    workers = [
        subprocess.Popen(
            command,
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
    return anyio.run(_final_count, url, run_id), conflicts


async def _final_count(url: str, run_id: str) -> int:
    async with open_backend(url, run_id=run_id) as backend:
        current = await backend.get_state()
        assert current is not None
        return int(current[0])


async def _worker(url: str, run_id: str, increments: int) -> None:
    async with open_backend(url, run_id=run_id) as backend:
        await backend.set_state(b"0")  # whoever is first creates the counter
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        conflicts = 0
        current = await backend.get_state()
        assert current is not None
        state, token = current
        for _ in range(increments):
            for _attempt in range(_MAX_ATTEMPTS):
                state, token, written = await backend.set_state(b"%d" % (int(state) + 1), token)
                if written:
                    break
                conflicts += 1
            else:
                raise RuntimeError(f"no increment won in {_MAX_ATTEMPTS} attempts")
        print(conflicts, flush=True)


if __name__ == "__main__":
    anyio.run(_worker, sys.argv[1], sys.argv[2], int(sys.argv[3]))
