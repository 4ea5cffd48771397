"""``arendezvous check``: a Jepsen-style run of racing clients against a real store, under faults.

Clients do random reads and compare-and-swap writes (latest, stale, ``None`` and garbage tokens)
on a few fresh runs; the harness injects faults; every call is recorded
(:mod:`arendezvous.testing.history`) and the history is checked for linearizability
(:mod:`arendezvous.testing.linearizability`). The summary gives the operations, their outcomes,
the faults injected and the verdict, with the explanation of a violation. Exit status: 0 the
history is linearizable, 1 a violation, 2 no verdict (the checker's budget ran out, a worker
crashed, nothing succeeded) or a usage error.

Faults:

``none``
    clients are tasks of this process (any URL, ``memory://`` included).
``kill-server``
    for a server the harness starts itself (``--start redis|etcd|postgresql``, on 127.0.0.1 in a
    temp dir): SIGKILL it at random points of the run, keep it down a moment, start it again on
    the same port and data. Calls in flight fail or become unknown; clients wait for the restart
    and go on.
``kill-writer``
    clients are OS processes (``arendezvous._check_client``), each recording to its own file; at
    random points the harness SIGKILLs one the moment it starts a write (or, now and then, one
    doing whatever it does), and starts a replacement with the rest of its operations. The killed
    process's pending call is unknown. Works on every store shared by processes (``file://``
    above all); not on ``memory://``.

Every loop is bounded: by ``--ops`` and by ``--time-limit`` seconds (calls still running a grace
period later are cancelled or their process killed, and count as unknown).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import random
import shutil
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.buffered import BufferedByteReceiveStream

from ._backend import AsyncRendezvousBackend
from ._check_client import (
    Kind,
    StoreTokenCodec,
    close_handles,
    open_handles,
    run_client,
    worker_command,
)
from ._errors import RendezvousError
from .testing.history import History, Outcome, Recorder, load, merge
from .testing.linearizability import CheckResult, check

__all__ = ("CheckOptions", "add_check_command", "main", "run_check")

Faults = Literal["none", "kill-server", "kill-writer"]
FAULTS: tuple[Faults, ...] = ("none", "kill-server", "kill-writer")

_SERVERS = {
    "redis": ("arendezvous.testing.servers.redis", "RedisServer", "redis-server"),
    "etcd": ("arendezvous.testing.servers.etcd", "EtcdServer", "etcd"),
    "postgresql": ("arendezvous.testing.servers.postgres", "PostgresServer", "postgres"),
}

_ASYNCIO_ONLY = frozenset({"redis", "rediss", "etcd", "postgresql", "postgres"})

_CALL_TIMEOUT = 2.0
"""Seconds per call on a server the harness starts: an outage shows as an error this soon."""

_GRACE = 10.0
"""Seconds calls may run past the time limit before they are cancelled or their process killed."""

_WORKER_STARTUP = 60.0
"""Seconds a worker process may take to open its handles and say it is ready."""

_OPS_PER_KILL = 400
"""Without ``--kills``, one fault per this many operations (at least one)."""

_ANY_MOMENT = 0.25
"""Share of writer kills that strike at a random moment rather than as a write starts."""

_DOWNTIME = (0.05, 0.5)
"""Seconds a killed server stays down before it is started again (uniform)."""


class UsageError(Exception):
    """The options do not make a run (exit status 2)."""


@dataclass(frozen=True)
class CheckOptions:
    """What ``arendezvous check`` is asked to do; see ``arendezvous check --help``."""

    url: str | None = None
    start: str | None = None
    clients: int = 8
    ops: int = 2000
    runs: int = 3
    faults: Faults = "none"
    kills: int | None = None
    seed: int | None = None
    time_limit: float = 60.0
    check_time: float = 60.0
    history: str | None = None
    event_loop: str = "asyncio"

    def validate(self) -> None:
        """:raises UsageError: the options contradict each other or are out of range."""
        if (self.url is None) == (self.start is None):
            raise UsageError("give a backend URL or --start SERVER (one of them)")
        if self.start is not None and self.start not in _SERVERS:
            raise UsageError(f"--start takes one of {', '.join(_SERVERS)}")
        if self.faults not in FAULTS:
            raise UsageError(f"--faults takes one of {', '.join(FAULTS)}")
        if self.faults == "kill-server" and self.start is None:
            raise UsageError(
                "--faults kill-server needs a server the harness starts and may kill: "
                "use --start redis|etcd|postgresql instead of a URL"
            )
        scheme = (self.url or "").partition("://")[0].lower()
        if self.faults == "kill-writer" and scheme == "memory":
            raise UsageError(
                "memory:// state lives in one process; --faults kill-writer runs clients as "
                "processes: use a store they share (file://, redis://, ...)"
            )
        counts = (("--clients", self.clients), ("--ops", self.ops), ("--runs", self.runs))
        for name, value in counts:
            if value < 1:
                raise UsageError(f"{name} must be at least 1")
        if self.kills is not None and self.kills < 0:
            raise UsageError("--kills must not be negative")
        for name, seconds in (("--time-limit", self.time_limit), ("--check-time", self.check_time)):
            if not 0 < seconds < float("inf"):
                raise UsageError(f"{name} must be a positive number of seconds")
        if self.event_loop not in ("asyncio", "trio"):
            raise UsageError("--event-loop takes asyncio or trio")
        if self.event_loop == "trio" and (self.start is not None or scheme in _ASYNCIO_ONLY):
            raise UsageError(
                "the Redis, etcd and PostgreSQL backends run only on asyncio: drop --event-loop"
            )

    @property
    def fault_count(self) -> int:
        """How many faults to inject."""
        if self.faults == "none":
            return 0
        return self.kills if self.kills is not None else max(1, self.ops // _OPS_PER_KILL)


# -- progress ------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """Counters the clients update and the display reads."""

    total: int
    faults: Faults
    started: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    server_down: bool = False

    def invoked(self) -> None:
        self.started += 1

    def completed(self, outcome: Outcome, error: BaseException | str | None) -> None:
        self.outcomes[outcome] += 1
        if error is not None:
            self.errors[error if isinstance(error, str) else type(error).__name__] += 1

    def line(self, elapsed: float) -> str:
        text = (
            f"{elapsed:6.1f} s  ops {self.started}/{self.total}  ok {self.outcomes['ok']}  "
            f"fail {self.outcomes['fail']}  unknown {self.outcomes['unknown']}"
        )
        if self.faults == "kill-server":
            text += f"  server kills {self.kills}" + ("  (server down)" if self.server_down else "")
        elif self.faults == "kill-writer":
            text += f"  writers killed {self.kills}"
        return text


class _Display:
    """The progress display: one line rewritten in place on a TTY, periodic lines otherwise."""

    def __init__(self, stream: TextIO, progress: _Progress) -> None:
        self._stream = stream
        self._progress = progress
        self._tty = _isatty(stream)
        self._interval = 0.2 if self._tty else 2.0
        self._started = time.monotonic()
        self._dirty = False

    def show(self) -> None:
        line = self._progress.line(time.monotonic() - self._started)
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
            self._dirty = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """Show the final count and end the line."""
        self.show()
        self.end_line()

    def end_line(self) -> None:
        """End a line left open on a terminal, so that what follows starts on its own line."""
        if self._dirty:
            self._stream.write("\n")
            self._stream.flush()
            self._dirty = False

    async def run(self) -> None:
        """Redraw every interval until cancelled (a display refresh, not a wait for anything)."""
        while True:
            await anyio.sleep(self._interval)
            self.show()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- faults --------------------------------------------------------------------------------------


@dataclass
class _FaultReport:
    """What the harness did to the run."""

    server_kills: int = 0
    downtimes: list[float] = field(default_factory=list)
    killed_clients: list[str] = field(default_factory=list)
    random_moment_kills: int = 0
    replacements: int = 0
    timed_out_clients: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)


def _fault_points(ops: int, count: int, clients: int, rng: random.Random) -> list[int]:
    """Operation counts at which to strike: spread over the run, each jittered a little.

    The last leaves at least a tenth of the operations (and one per client) to run after it, so
    the run shows clients going on after the fault.
    """
    if count <= 0:
        return []
    spacing = ops / (count + 1)
    points = [
        round(spacing * (index + 1) + rng.uniform(-spacing / 3, spacing / 3))
        for index in range(count)
    ]
    last = max(ops - max(ops // 10, clients), 1)
    return sorted(min(max(point, 1), last) for point in points)


class _OpBudget:
    """Hands out the run's operations to in-process clients until the count or time runs out."""

    def __init__(self, total: int, deadline: float, progress: _Progress) -> None:
        self._total = total
        self._deadline = deadline
        self._progress = progress
        self._watchers: list[tuple[int, anyio.Event]] = []
        self.finished = False

    def take(self) -> bool:
        if self.finished:
            return False
        if self._progress.started >= self._total or time.monotonic() >= self._deadline:
            self.finish()
            return False
        self._progress.invoked()
        for point, event in self._watchers:
            if self._progress.started >= point:
                event.set()
        return True

    def finish(self) -> None:
        self.finished = True
        for _, event in self._watchers:
            event.set()

    def reached(self, point: int) -> anyio.Event:
        """An event set once *point* operations have started (or the run is over)."""
        event = anyio.Event()
        if self.finished or self._progress.started >= point:
            event.set()
        self._watchers.append((point, event))
        return event


class _Server(Protocol):
    """What the harness uses of the launchers in :mod:`arendezvous.testing.servers`."""

    @property
    def url(self) -> str: ...

    def start(self) -> Any: ...

    def kill(self) -> None: ...

    def stop(self) -> None: ...


class _ServerUp:
    """Whether the started server is up; clients that met an error wait on it during an outage."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.event.set()

    def down(self) -> None:
        if self.event.is_set():
            self.event = anyio.Event()

    def up(self) -> None:
        self.event.set()


async def _kill_server(
    server: _Server,
    budget: _OpBudget,
    points: list[int],
    rng: random.Random,
    status: _ServerUp,
    progress: _Progress,
    report: _FaultReport,
) -> None:
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


# -- in-process clients --------------------------------------------------------------------------


Opener = Callable[[str, str], AsyncRendezvousBackend]


async def _run_tasks(
    options: CheckOptions,
    url: str,
    run_ids: list[str],
    seed: int,
    progress: _Progress,
    display: _Display,
    report: _FaultReport,
    server: _Server | None,
    opener: Opener | None,
) -> History:
    recorder = Recorder(source="check")
    rng = random.Random(f"{seed}/faults")
    budget = _OpBudget(options.ops, time.monotonic() + options.time_limit, progress)
    status = _ServerUp()
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
                points = _fault_points(options.ops, options.fault_count, options.clients, rng)
                group.start_soon(
                    _kill_server, server, budget, points, rng, status, progress, report
                )
            with anyio.move_on_after(options.time_limit + _GRACE):
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


# -- client processes ----------------------------------------------------------------------------


@dataclass
class _Worker:
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


class _WriterKiller:
    """Runs the client processes, SIGKILLs them at the fault points and replaces them."""

    def __init__(
        self,
        options: CheckOptions,
        url: str,
        run_ids: list[str],
        seed: int,
        progress: _Progress,
        report: _FaultReport,
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
        self._points = _fault_points(
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

    async def run(self, display: _Display) -> None:
        quotas = [
            self._options.ops // self._options.clients
            + (1 if slot < self._options.ops % self._options.clients else 0)
            for slot in range(self._options.clients)
        ]
        slow_start: _Worker | None = None
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(display.run)
                with anyio.move_on_after(self._options.time_limit + _GRACE):
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
            self._url,
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
            process = await anyio.open_process(command, stderr=errors)
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


# -- the run -------------------------------------------------------------------------------------


def _start_server(kind: str) -> _Server:
    module_name, class_name, _ = _SERVERS[kind]
    launcher = getattr(importlib.import_module(module_name), class_name)
    extra: dict[str, Any] = {}
    if kind == "redis":
        # Durable across a SIGKILL: every write reaches the append-only file before the reply.
        extra["extra_args"] = ("--appendonly", "yes", "--appendfsync", "always")
    server: _Server = launcher(**extra)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def _with_timeout(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    query.append(("timeout", f"{_CALL_TIMEOUT:g}"))
    return urllib.parse.urlunsplit(parsed._replace(query=urllib.parse.urlencode(query)))


def _redact(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{user}:***@{netloc[2]}"))


def _summary(
    history: History,
    seconds: float,
    report: _FaultReport,
    progress: _Progress,
    options: CheckOptions,
    server_name: str | None,
) -> list[str]:
    kinds = Counter(op.kind for op in history)
    outcomes = Counter(op.outcome for op in history)
    writes = [op for op in history if op.kind == "write" and op.outcome == "ok"]
    won = sum(1 for op in writes if op.written)
    rate = len(history) / seconds if seconds > 0 else 0.0
    lines = [
        f"operations  {len(history)} in {seconds:.1f} s ({rate:.0f}/s): {kinds['read']} reads, "
        f"{kinds['write']} writes, {kinds['wait']} waits",
        f"outcomes    ok {outcomes['ok']} (writes won {won}, lost {len(writes) - won})  "
        f"fail {outcomes['fail']}  unknown {outcomes['unknown']}",
    ]
    if progress.errors:
        common = ", ".join(f"{name} x{count}" for name, count in progress.errors.most_common(4))
        lines.append(f"errors      {common}")
    if options.faults == "kill-server":
        if report.downtimes:
            down = f"down {min(report.downtimes):.2f}-{max(report.downtimes):.2f} s each"
        else:
            down = "not restarted"
        lines.append(
            f"faults      {server_name} SIGKILLed {report.server_kills} times and restarted "
            f"{len(report.downtimes)} ({down})"
        )
    elif options.faults == "kill-writer":
        killed = set(report.killed_clients)
        in_flight = {
            op.client
            for op in history
            if op.client in killed and op.ret is None and op.kind == "write"
        }
        at_write = len(killed) - report.random_moment_kills
        lines.append(
            f"faults      {len(killed)} client processes SIGKILLed ({at_write} as a write "
            f"started, {report.random_moment_kills} at a random moment)"
        )
        lines.append(
            f"            {len(in_flight)} died with a write in flight (outcome unknown); "
            f"{report.replacements} replacements took over the rest of their operations"
        )
    else:
        lines.append("faults      none")
    if report.timed_out_clients:
        lines.append(
            f"time limit  reached: {len(report.timed_out_clients)} clients stopped, "
            "their calls in flight count as unknown"
        )
    elif progress.started < options.ops:
        lines.append(f"time limit  reached after {progress.started} of {options.ops} operations")
    for crash in report.crashed:
        lines.append(f"crashed     {crash}")
    return lines


def _verdict(result: CheckResult, history: History, report: _FaultReport) -> tuple[int, list[str]]:
    """The exit status and the lines that say it."""
    stats = result.stats
    lines = [
        f"history     {stats.operations} operations on {stats.keys} runs, up to "
        f"{stats.max_concurrency} concurrent; checked in {stats.seconds:.2f} s"
    ]
    if result.verdict == "violation":
        if result.explanation is None:
            lines.append(f"verdict     VIOLATION: {result.reason}")
        else:
            lines.append("verdict     VIOLATION: the history is not linearizable")
            lines.extend(f"  {line}" for line in str(result.explanation).splitlines())
        return 1, lines
    if result.verdict == "unknown":
        lines.append(f"verdict     UNKNOWN: {result.reason} (raise --check-time)")
        return 2, lines
    if report.crashed:
        lines.append("verdict     UNKNOWN: linearizable, but the run is incomplete (see crashed)")
        return 2, lines
    if not any(op.outcome == "ok" for op in history):
        lines.append("verdict     UNKNOWN: no call succeeded; is the store reachable?")
        return 2, lines
    lines.append("verdict     OK: linearizable")
    return 0, lines


def run_check(
    options: CheckOptions,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    opener: Opener | None = None,
) -> int:
    """Run one check; print the summary to *out* and progress to *err*; return the exit status.

    :param opener: open a backend as ``opener(url, run_id)`` instead of by URL scheme (for
        backends that have none; in-process clients only, so not with ``kill-writer``).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        options.validate()
        if opener is not None and options.faults == "kill-writer":
            raise UsageError("an opener serves in-process clients; kill-writer runs processes")
    except UsageError as exc:
        print(f"arendezvous check: {exc}", file=err)
        return 2
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**32)
    # Fresh run ids: a run holding state from before would not start empty, as the check assumes.
    prefix = f"check-{uuid.uuid4().hex[:12]}"
    run_ids = [f"{prefix}-{index}" for index in range(options.runs)]
    progress = _Progress(options.ops, options.faults)
    report = _FaultReport()
    server: _Server | None = None
    server_name = None
    directory: Path | None = None
    display: _Display | None = None
    try:
        try:
            if options.start is not None:
                server_name = _SERVERS[options.start][2]
                print(f"starting {server_name} on 127.0.0.1 ...", file=err, flush=True)
                server = _start_server(options.start)
                url = _with_timeout(server.url)
            else:
                assert options.url is not None
                url = options.url
            print(
                f"arendezvous check: {_redact(url)}, {options.clients} clients on "
                f"{options.runs} runs, {options.ops} ops, faults {options.faults}"
                + (f" (up to {options.fault_count})" if options.faults != "none" else "")
                + f", seed {seed}",
                file=out,
                flush=True,
            )
            display = _Display(err, progress)
            started = time.monotonic()
            if options.faults == "kill-writer":
                directory = Path(tempfile.mkdtemp(prefix="arendezvous-check-"))
                killer = _WriterKiller(options, url, run_ids, seed, progress, report, directory)
                anyio.run(killer.run, display, backend=options.event_loop)
                seconds = time.monotonic() - started
                display.finish()
                files = [path for path in killer.histories if path.exists() and path.stat().st_size]
                history = merge(*files, codec=StoreTokenCodec())
            else:
                history = anyio.run(
                    _run_tasks,
                    options,
                    url,
                    run_ids,
                    seed,
                    progress,
                    display,
                    report,
                    server,
                    opener,
                    backend=options.event_loop,
                )
                seconds = time.monotonic() - started
                display.finish()
        finally:
            if display is not None:
                display.end_line()  # before any error message, and on Ctrl-C
    except (UsageError, ValueError, ImportError, FileNotFoundError, RuntimeError) as exc:
        print(f"arendezvous check: {exc}", file=err)
        return 2
    except RendezvousError as exc:
        print(f"arendezvous check: {type(exc).__name__}: {exc}", file=err)
        return 2
    finally:
        if server is not None:
            server.stop()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    for line in _summary(history, seconds, report, progress, options, server_name):
        print(line, file=out)
    if options.history is not None:
        # The default codec: tokens the JSON codec cannot write keep their equality within one
        # file through their repr, so plain ``load(path)`` reads it back.
        history.dump(options.history)
        print(f"history     written to {options.history}", file=out)
    print(f"checking {len(history)} operations ...", file=err, flush=True)
    result = check(history, time_budget=options.check_time, explain_budget=options.check_time)
    status, lines = _verdict(result, history, report)
    for line in lines:
        print(line, file=out)
    print(f"seed        {seed} (--seed {seed} repeats the choices; timing differs)", file=out)
    out.flush()
    return status


# -- the command line ----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _handle(args: argparse.Namespace) -> int:
    options = CheckOptions(
        url=args.url,
        start=args.start,
        clients=args.clients,
        ops=args.ops,
        runs=args.runs,
        faults=args.faults,
        kills=args.kills,
        seed=args.seed,
        time_limit=args.time_limit,
        check_time=args.check_time,
        history=args.history,
        event_loop=args.event_loop,
    )
    return run_check(options)


def add_check_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``check`` on the ``arendezvous`` command's subparsers, with its handler."""
    parser = subparsers.add_parser(
        "check",
        help="race clients against a store under faults and check the history is linearizable",
        description=(
            "Clients do random reads and compare-and-swap writes on a few fresh runs while the "
            "harness injects faults; the recorded history is checked for linearizability. "
            "Exit status: 0 linearizable, 1 violation, 2 no verdict or usage error."
        ),
    )
    parser.add_argument(
        "url", nargs="?", help="backend URL, e.g. file:///tmp/rdzv (or use --start)"
    )
    parser.add_argument(
        "--start",
        choices=list(_SERVERS),
        help="start a throwaway server on 127.0.0.1 and check it (instead of a URL)",
    )
    parser.add_argument(
        "--clients", type=_positive_int, default=8, metavar="N", help="clients (default 8)"
    )
    parser.add_argument(
        "--ops",
        type=_positive_int,
        default=2000,
        metavar="N",
        help="operations in all (default 2000)",
    )
    parser.add_argument(
        "--runs",
        type=_positive_int,
        default=3,
        metavar="N",
        help="run ids (registers) in play (default 3)",
    )
    parser.add_argument(
        "--faults",
        choices=FAULTS,
        default="none",
        help="kill-server: SIGKILL and restart the --start server; kill-writer: SIGKILL client "
        "processes mid-write and replace them; none (default)",
    )
    parser.add_argument(
        "--kills",
        type=int,
        default=None,
        metavar="N",
        help=f"how many faults to inject (default: one per {_OPS_PER_KILL} ops, at least one)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="random seed (default: random)"
    )
    parser.add_argument(
        "--time-limit",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="stop starting operations after this many seconds (default 60)",
    )
    parser.add_argument(
        "--check-time",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds the linearizability check may take before it answers unknown (default 60)",
    )
    parser.add_argument(
        "--history", metavar="FILE", help="also write the history to FILE (JSON lines)"
    )
    parser.add_argument(
        "--event-loop",
        choices=["asyncio", "trio"],
        default="asyncio",
        help="the clients' event loop (default asyncio; the Redis, etcd and PostgreSQL clients "
        "need it)",
    )
    parser.set_defaults(handler=_handle)


def main(argv: Sequence[str] | None = None) -> int:
    """``arendezvous check ...`` on its own parser (for tests, and until the CLI registers it)."""
    parser = argparse.ArgumentParser(prog="arendezvous")
    add_check_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status
