"""``--faults kill-writer``: client processes, SIGKILLed at the fault points and replaced.

Each client is a worker process (:mod:`._worker`) that records its own history file and says on
stdout what it is doing; the harness counts progress from those lines and times its kills by
them: most strike the moment a write starts, some a random live client at any moment.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.buffered import BufferedByteReceiveStream

from ...testing.history import Outcome, load
from ._faults import FaultReport, fault_points
from ._options import GRACE, CheckOptions
from ._progress import Display, Progress
from ._tokens import StoreTokenCodec
from ._worker import worker_command, worker_environment

__all__ = ("WriterKiller",)

_WORKER_STARTUP = 60.0
"""Seconds a worker process may take to open its handles and say it is ready."""

_ANY_MOMENT = 0.25
"""Share of writer kills that strike at a random moment rather than as a write starts."""


@dataclass
class _Worker:
    """One client process: its slot, its generation in that slot, its files, what it did."""

    slot: int
    generation: int
    client: str
    quota: int
    history: Path
    stderr: Path
    process: anyio.abc.Process
    ready: anyio.Event = field(default_factory=anyio.Event)
    started: int = 0
    done: bool = False
    killed: bool = False
    timed_out: bool = False


_OUTCOMES: dict[str, Outcome] = {"ok": "ok", "fail": "fail", "unknown": "unknown"}


def _invocations(history: Path) -> int:
    """How many calls a (possibly torn) history file records as invoked."""
    try:
        return len(load(history, codec=StoreTokenCodec()))
    except (OSError, ValueError):
        return 0  # killed before it wrote its header


class WriterKiller:
    """Runs the client processes, SIGKILLs them at the fault points and replaces them."""

    def __init__(
        self,
        options: CheckOptions,
        url: str,
        run_ids: list[str],
        seed: int,
        progress: Progress,
        report: FaultReport,
        directory: Path,
    ) -> None:
        self._options = options
        self._url = url
        self._run_ids = run_ids
        self._seed = seed
        self._progress = progress
        self._report = report
        self._directory = directory
        self._rng = random.Random(f"{seed}/faults")
        self._points = fault_points(
            options.ops, options.fault_count, options.clients, self._rng
        )
        # Kills due, oldest first: "write" strikes the next write to start, "any" a live client.
        self._due: list[str] = []
        self._deadline_ns = time.monotonic_ns() + int(options.time_limit * 1e9)
        self._workers: list[_Worker] = []
        self._live: dict[int, _Worker] = {}

    @property
    def histories(self) -> list[Path]:
        """Every worker's history file, in start order."""
        return [worker.history for worker in self._workers]

    async def run(self, display: Display) -> None:
        """Run the client processes to the end of the run, killing and replacing as planned.

        :raises RuntimeError: a first client process did not start in time.
        """
        quotas = [
            self._options.ops // self._options.clients
            + (1 if slot < self._options.ops % self._options.clients else 0)
            for slot in range(self._options.clients)
        ]
        slow_start: _Worker | None = None
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(display.run)
                with anyio.move_on_after(self._options.time_limit + GRACE):
                    async with anyio.create_task_group() as workers:
                        first = [
                            await self._spawn(workers, slot, 1, quota)
                            for slot, quota in enumerate(quotas)
                            if quota > 0
                        ]
                        with anyio.move_on_after(_WORKER_STARTUP):
                            for worker in first:
                                slow_start = worker
                                await worker.ready.wait()
                            slow_start = None
                        if slow_start is not None:
                            workers.cancel_scope.cancel()
                        else:
                            # Released together, so the first operations race.
                            for worker in first:
                                await self._go(worker)
                for worker in list(self._live.values()):
                    worker.timed_out = True
                    self._report.timed_out_clients.append(worker.client)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for worker in self._workers:
                    if worker.process.returncode is None:
                        worker.process.kill()
                    await worker.process.wait()
                    await worker.process.aclose()
        if slow_start is not None:
            raise RuntimeError(
                f"client process {slow_start.client} did not start within "
                f"{_WORKER_STARTUP:.0f} s: {self._stderr_tail(slow_start)}"
            )

    async def _spawn(
        self, group: anyio.abc.TaskGroup, slot: int, generation: int, quota: int
    ) -> _Worker:
        client = f"c{slot}.{generation}"
        history = self._directory / f"{client}.jsonl"
        stderr = self._directory / f"{client}.stderr"
        command = worker_command(
            self._run_ids,
            client=client,
            ops=quota,
            seed=random.Random(f"{self._seed}/{client}").randrange(2**32),
            history=str(history),
            deadline_ns=self._deadline_ns,
            event_loop=self._options.event_loop,
        )
        # The child writes to the file directly (its own copy of the descriptor); opening it
        # is one quick local call.
        with open(stderr, "wb") as errors:  # noqa: ASYNC230
            process = await anyio.open_process(
                command, stderr=errors, env=worker_environment(self._url)
            )
        worker = _Worker(slot, generation, client, quota, history, stderr, process)
        self._workers.append(worker)
        self._live[slot] = worker
        group.start_soon(self._watch, group, worker)
        return worker

    async def _go(self, worker: _Worker) -> None:
        assert worker.process.stdin is not None
        # One that died before the start is reported by its watcher.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await worker.process.stdin.send(b"go\n")

    async def _watch(self, group: anyio.abc.TaskGroup, worker: _Worker) -> None:
        assert worker.process.stdout is not None
        lines = BufferedByteReceiveStream(worker.process.stdout)
        while True:
            try:
                line = await lines.receive_until(b"\n", 4096)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                break
            self._line(worker, line.decode("utf-8", "replace").strip())
        code = await worker.process.wait()
        worker.ready.set()  # one that died starting must not be waited for
        if self._live.get(worker.slot) is worker:
            del self._live[worker.slot]
        if worker.killed:
            # A kill can land between recording an invocation and announcing it: the file counts.
            recorded = await anyio.to_thread.run_sync(_invocations, worker.history)
            remaining = worker.quota - max(worker.started, recorded)
            if remaining > 0 and time.monotonic_ns() < self._deadline_ns:
                replacement = await self._spawn(
                    group, worker.slot, worker.generation + 1, remaining
                )
                self._report.replacements += 1
                with anyio.move_on_after(_WORKER_STARTUP):
                    await replacement.ready.wait()
                await self._go(replacement)
        elif not worker.done and not worker.timed_out:
            last = self._stderr_tail(worker).splitlines()[-1]
            self._report.crashed.append(f"{worker.client} exited with status {code}: {last}")

    def _line(self, worker: _Worker, line: str) -> None:
        if line == "ready":
            worker.ready.set()
        elif line == "done":
            worker.done = True
        elif line.startswith("> "):
            worker.started += 1
            self._progress.invoked()
            while self._points and self._progress.started >= self._points[0]:
                self._points.pop(0)
                self._due.append("any" if self._rng.random() < _ANY_MOMENT else "write")
            if self._due and self._due[0] == "write" and line == "> write":
                self._kill(worker, at_random=False)
            elif self._due and self._due[0] == "any":
                self._kill(self._live[self._rng.choice(sorted(self._live))], at_random=True)
        elif line.startswith("< "):
            outcome, _, error = line[2:].partition(" ")
            if outcome in _OUTCOMES:
                self._progress.completed(_OUTCOMES[outcome], error or None)

    def _kill(self, worker: _Worker, *, at_random: bool) -> None:
        if worker.process.returncode is not None or worker.killed:
            return
        self._due.pop(0)
        if at_random:
            self._report.random_moment_kills += 1
        worker.killed = True
        worker.process.kill()
        self._report.killed_clients.append(worker.client)
        self._progress.kills += 1

    @staticmethod
    def _stderr_tail(worker: _Worker) -> str:
        try:
            text = worker.stderr.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return "\n".join(text.splitlines()[-15:]) or "(no output)"
