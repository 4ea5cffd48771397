"""One worker of ``_counter_race``: ``python _counter_worker.py URL RUN_ID INCREMENTS``."""

from __future__ import annotations

import sys

import anyio

from arendezvous import open_backend


async def main(url: str, run_id: str, increments: int) -> None:
    async with open_backend(url, run_id=run_id) as backend:
        await backend.set_state(b"0")  # whoever is first creates the counter
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        conflicts = 0
        current = await backend.get_state()
        assert current is not None
        state, token = current
        for _ in range(increments):
            while True:
                state, token, written = await backend.set_state(b"%d" % (int(state) + 1), token)
                if written:
                    break
                conflicts += 1
        print(conflicts, flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
