"""Clients as tasks of the harness's own process (``--faults none`` and ``kill-server``)."""

from __future__ import annotations

import functools
import random
import time

import anyio

from ...testing.history import History, Outcome, Recorder
from ._budget import OpBudget
from ._faults import FaultReport, fault_points
from ._handles import Opener, close_handles, open_handles
from ._options import GRACE, CheckOptions
from ._progress import Display, Progress
from ._server_faults import ServerUp, kill_server
from ._servers import Server
from ._workload import Kind, run_client

__all__ = ("run_tasks",)


async def run_tasks(
    options: CheckOptions,
    url: str,
    run_ids: list[str],
    seed: int,
    progress: Progress,
    display: Display,
    report: FaultReport,
    server: Server | None,
    opener: Opener | None,
) -> History:
    """Run the clients as tasks of this process (and kill the server, with ``kill-server``).

    Every client has its own recorded handle per run; the merged history is returned.
    """
    recorder = Recorder(source="check")
    rng = random.Random(f"{seed}/faults")
    budget = OpBudget(options.ops, time.monotonic() + options.time_limit, progress)
    status = ServerUp()
    clients = [
        (f"c{index}", open_handles(url, run_ids, recorder, f"c{index}", opener))
        for index in range(options.clients)
    ]

    async def completed(kind: Kind, outcome: Outcome, error: BaseException | None) -> None:
        progress.completed(outcome, error)
        if error is not None and options.faults == "kill-server":
            await status.event.wait()  # hold back during an outage instead of spinning on errors

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(display.run)
            if server is not None and options.faults == "kill-server":
                points = fault_points(options.ops, options.fault_count, options.clients, rng)
                group.start_soon(
                    kill_server, server, budget, points, rng, status, progress, report
                )
            with anyio.move_on_after(options.time_limit + GRACE):
                async with anyio.create_task_group() as workers:
                    for name, handles in clients:
                        client = functools.partial(run_client, on_complete=completed)
                        workers.start_soon(
                            client, name, handles, random.Random(f"{seed}/{name}"), budget.take
                        )
            budget.finish()
            group.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(10, shield=True):
            for _, handles in clients:
                await close_handles(handles)
    return recorder.history()
