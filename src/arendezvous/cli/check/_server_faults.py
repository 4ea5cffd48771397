"""``--faults kill-server``: SIGKILL the started server at the fault points; restart it."""

from __future__ import annotations

import random
import time

import anyio
import anyio.to_thread

from ._budget import OpBudget
from ._faults import FaultReport
from ._progress import Progress
from ._servers import Server

__all__ = ("ServerUp", "kill_server")

_DOWNTIME = (0.05, 0.5)
"""Seconds a killed server stays down before it is started again (uniform)."""


class ServerUp:
    """Whether the started server is up; clients that met an error wait on it during an outage."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.event.set()

    def down(self) -> None:
        """The server was killed: clients that meet an error wait from now on."""
        if self.event.is_set():
            self.event = anyio.Event()

    def up(self) -> None:
        """The server is back (or the run is over): release the waiting clients."""
        self.event.set()


async def kill_server(
    server: Server,
    budget: OpBudget,
    points: list[int],
    rng: random.Random,
    status: ServerUp,
    progress: Progress,
    report: FaultReport,
) -> None:
    """Kill *server* as the run reaches each of *points*; keep it down a moment; restart it.

    A server that does not come back ends the run (recorded as a crash).
    """
    for point in points:
        await budget.reached(point).wait()
        if budget.finished:
            return
        status.down()
        progress.server_down = True
        await anyio.to_thread.run_sync(server.kill)
        report.server_kills += 1
        progress.kills += 1
        downtime = rng.uniform(*_DOWNTIME)
        started = time.monotonic()
        await anyio.sleep(downtime)  # the fault itself: the server stays down this long
        try:
            await anyio.to_thread.run_sync(server.start)
        except (RuntimeError, OSError) as exc:
            # Nothing can run against a server that will not come back: end the run here.
            report.crashed.append(f"the server did not restart: {exc}")
            budget.finish()
            status.up()
            return
        report.downtimes.append(time.monotonic() - started)
        progress.server_down = False
        status.up()
