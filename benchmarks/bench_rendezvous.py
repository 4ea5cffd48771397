"""The async rendezvous at scale, beside PyTorch's ``DynamicRendezvousHandler``, in one table.

    python benchmarks/bench_rendezvous.py [--quick] [--no-torch] [--stores redis,etcd,postgres]
                                          [--sizes 64,256,1000] [--repeat 3]

Rows (every time runs from "go" until the last node holds its rank; store calls are the requests
the nodes' backends and member tables made, counted by a wrapper, divided by N -- a wait answered
by the handle's shared change feed counts once, when it returns):

* **scale**: N = 64, 256, 1,000 nodes (``min = max = N``) on each store, as tasks spread over
  worker processes (at most 8), each node with its own backend handle (PostgreSQL: one handle
  per process, shared by its nodes: a thousand handles would need two thousand connections);
* **torch**: its handler over its C10d backend on a ``TCPStore`` served by this script, same
  shape, N = 64 and 128 as threads over 4 processes; the ratio is torch's time over ours;
* **steady state**: a formed round of N = 64 and 256 waits in ``wait_for_round_end()`` while
  heartbeats go on (``heartbeat = 0.5 s``, evicted after 3 missed): store calls per node per
  heartbeat interval, and how many waiters on the round record were woken (should be none);
* **small rounds** as processes (N = 2, 8, 16; file backend and each store; ``min = max``), and
  the last call's overshoot: completion minus (the moment the last call started + L);
* **a death**: four processes in a round, one SIGKILLed: time until the three others hold the
  next round (bounded below by the heartbeat timeout, 2 s here, for both libraries);
* N = 1,000 tasks on the memory backend, and the round record's size at 1,000 nodes.

Workers are this script run with ``--worker``; each opens its handles (and connects them, with
one read each), reports ready, and waits for the start line, so process start-up, connection
set-up and torch's import are not timed. Goals (issue #8):
Redis N=256 <= 0.6 s and N=1,000 <= 3 s; etcd N=256 <= 1.5 s; PostgreSQL in the same range;
N=128 at least 50x faster than torch's handler; at most 2 store calls per node per heartbeat in a
formed round, none waking a waiter; last call within L + 50 ms. ``--quick`` runs tiny rows only
(a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from arendezvous import (
    AsyncRendezvousBackend,
    Member,
    MemberPut,
    MemberTable,
    MemoryBackend,
    MemoryStore,
    Token,
    open_backend,
)
from arendezvous.rendezvous import AsyncRendezvous, RendezvousInfo, RoundEnd
from arendezvous.rendezvous._record import decode_record

LAST_CALL = 1.0
DEFAULT_HEARTBEAT = 5.0  # both libraries' default, for the rows that do not time deaths
# The death row: a node is evicted after missing two heartbeats of 1 s, for both libraries.
# (Shorter is unsafe for torch's handler: a non-zero rank blocks its store client, and with it
# its heartbeat thread, until rank 0 has published its address.)
DEATH_HEARTBEAT = 1.0
MAX_MISSED = 2
STEADY_HEARTBEAT = 0.5
STEADY_INTERVALS = 6
MAX_PROCESSES = 8


# -- counting store calls ------------------------------------------------------------------------


class Counter:
    """What one process's nodes asked of their stores.

    ``calls`` counts requests: every backend and member-table call, and a wait on the round
    record once it returns (the handle's one shared change feed answers it, and the read that
    woke it is the request); a member table's wait is not counted (it is the store's push,
    etcd's watch event, and the read the watcher makes after it is counted as a get).
    ``woken`` counts waits on the round record that returned: waiters woken.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.woken = 0


class CountedBackend(AsyncRendezvousBackend):
    """Delegates to a backend and its member table, counting every call."""

    def __init__(self, backend: AsyncRendezvousBackend, counter: Counter) -> None:
        self._backend = backend
        self._counter = counter
        table = backend.member_table()
        self._table = None if table is None else CountedTable(table, counter)

    @property
    def name(self) -> str:
        return self._backend.name

    async def get_state(self) -> tuple[bytes, Token] | None:
        self._counter.calls += 1
        return await self._backend.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self._counter.calls += 1
        return await self._backend.set_state(state, token)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        changed = await self._backend.wait_for_change(token, timeout=timeout)
        if changed is not None:
            self._counter.calls += 1
            self._counter.woken += 1
        return changed

    async def aclose(self) -> None:
        await self._backend.aclose()

    def member_table(self) -> MemberTable | None:
        return self._table


class CountedTable(MemberTable):
    def __init__(self, table: MemberTable, counter: Counter) -> None:
        self._table = table
        self._counter = counter
        self.has_clock = table.has_clock  # type: ignore[misc]

    async def get(self, node: str) -> Member | None:
        self._counter.calls += 1
        return await self._table.get(node)

    async def members(self, group: str) -> list[Member]:
        self._counter.calls += 1
        return await self._table.members(group)

    async def count(self, group: str) -> int:
        self._counter.calls += 1
        return await self._table.count(group)

    async def put(self, node: str, group: str, value: bytes, version: Token | None) -> MemberPut:
        self._counter.calls += 1
        return await self._table.put(node, group, value, version)

    async def touch(self, node: str, version: Token) -> Member | None:
        self._counter.calls += 1
        return await self._table.touch(node, version)

    async def delete(self, node: str, version: Token) -> bool:
        self._counter.calls += 1
        return await self._table.delete(node, version)

    async def wait_for_change(
        self, node: str, version: Token | None, *, timeout: float | None = None
    ) -> bool:
        # Not a request: a table's wait is the store's push (etcd's watch event), and what the
        # watcher reads after it is counted as a get of its own.
        return await self._table.wait_for_change(node, version, timeout=timeout)


# -- workers (this script run with --worker) ------------------------------------------------------


def _report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _read_command() -> str:
    return sys.stdin.readline().strip()


@dataclass(frozen=True)
class Job:
    """What one worker process runs: nodes ``first .. first + count - 1`` of a run."""

    kind: str  # "ours" or "torch"
    target: str  # our URL, or torch's TCPStore port
    run_id: str
    first: int
    count: int
    low: int
    high: int
    last_call: float
    heartbeat: float
    shared_handle: bool = False
    rounds: int = 1
    missed: int = MAX_MISSED  # heartbeats missed before a node is evicted

    def argv(self) -> list[str]:
        return [self.kind, self.target, self.run_id, str(self.first), str(self.count),
                str(self.low), str(self.high), str(self.last_call), str(self.heartbeat),
                "1" if self.shared_handle else "0", str(self.rounds), str(self.missed)]

    @classmethod
    def parse(cls, argv: list[str]) -> Job:
        (kind, target, run_id, first, count, low, high, last_call, heartbeat, shared, rounds,
         missed) = argv
        return cls(kind, target, run_id, int(first), int(count), int(low), int(high),
                   float(last_call), float(heartbeat), shared == "1", int(rounds), int(missed))


async def _our_worker(job: Job) -> None:
    counter = Counter()
    handles: list[AsyncRendezvousBackend] = []
    shared = open_backend(job.target, run_id=job.run_id) if job.shared_handle else None
    if shared is not None:
        handles.append(shared)
    nodes: list[AsyncRendezvous] = []
    for index in range(job.first, job.first + job.count):
        handle = shared
        if handle is None:
            handle = open_backend(job.target, run_id=job.run_id)
            handles.append(handle)
        nodes.append(AsyncRendezvous(
            CountedBackend(handle, counter), f"node-{index:04d}", job.low, job.high,
            last_call=job.last_call, heartbeat=job.heartbeat,
            heartbeat_timeout=job.missed * job.heartbeat, join_timeout=600,
        ))
    try:
        # Connect every handle before the start line, as torch's workers open their store
        # clients before theirs: the row times the rendezvous, not connection set-up.
        for handle in handles:
            await handle.get_state()
        async with anyio.create_task_group() as group:
            for node in nodes:
                await group.start(_hold, node)
            print("ready", flush=True)
            assert await anyio.to_thread.run_sync(_read_command) == "go"
            for number in range(job.rounds):
                if number:
                    ends = await _all(nodes, _wait_for_round_end)
                    assert all(end is RoundEnd.RESTARTED for _, end in ends), ends
                joined = await _all(nodes, _next_rendezvous)
                _report(done=max(done for done, _ in joined),
                        ranks=[info.rank for _, info in joined],
                        round_id=joined[0][1].round_id, calls=counter.calls)
            while await anyio.to_thread.run_sync(_read_command) == "steady":
                calls, woken = await _steady(nodes, job.heartbeat, counter)
                _report(calls=calls, woken=woken)
            group.cancel_scope.cancel()
    finally:
        for handle in handles:
            with anyio.CancelScope(shield=True):
                await handle.aclose()


async def _hold(node: AsyncRendezvous, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    async with node:
        task_status.started()
        await anyio.sleep_forever()


async def _next_rendezvous(node: AsyncRendezvous) -> RendezvousInfo:
    return await node.next_rendezvous()


async def _wait_for_round_end(node: AsyncRendezvous) -> RoundEnd | None:
    return await node.wait_for_round_end()


_T = TypeVar("_T")


async def _all(
    nodes: list[AsyncRendezvous], call: Callable[[AsyncRendezvous], Awaitable[_T]]
) -> list[tuple[float, _T]]:
    """Call *call* on every node at once; each result with when (``time.time()``) it came."""
    results: list[tuple[float, _T]] = []

    async def one(node: AsyncRendezvous) -> None:
        result = await call(node)
        results.append((time.time(), result))

    async with anyio.create_task_group() as group:
        for node in nodes:
            group.start_soon(one, node)
    return results


async def _steady(
    nodes: list[AsyncRendezvous], heartbeat: float, counter: Counter
) -> tuple[int, int]:
    """Every node waits for its round's end while STEADY_INTERVALS heartbeats go by; return the
    store calls made meanwhile and the waiters woken. Counting starts one heartbeat after the
    waits began, so the read each wait makes on entry is not counted."""
    ended: list[RoundEnd | None] = []

    async def wait(node: AsyncRendezvous) -> None:
        ended.append(await node.wait_for_round_end())

    async with anyio.create_task_group() as group:
        for node in nodes:
            group.start_soon(wait, node)
        await anyio.sleep(heartbeat)
        before = (counter.calls, counter.woken)
        await anyio.sleep(STEADY_INTERVALS * heartbeat)
        after = (counter.calls, counter.woken)
        group.cancel_scope.cancel()
    if ended:
        raise RuntimeError(f"a round ended during the steady-state row: {ended}")
    return after[0] - before[0], after[1] - before[1]


def _torch_worker(job: Job) -> None:
    """*job.count* torch handlers, each in a thread with its own store client and backend."""
    from datetime import timedelta

    from torch._C._distributed_c10d import TCPStore
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
        C10dRendezvousBackend,
    )
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        DynamicRendezvousHandler,
        RendezvousTimeout,
    )

    handlers = []
    for index in range(job.first, job.first + job.count):
        store = TCPStore("127.0.0.1", int(job.target), is_master=False,
                         timeout=timedelta(seconds=300))
        backend = C10dRendezvousBackend(store, job.run_id)
        handlers.append(DynamicRendezvousHandler.from_backend(
            job.run_id, store, backend, job.low, job.high, local_addr=f"node-{index:04d}",
            timeout=RendezvousTimeout(join=timedelta(seconds=600),
                                      last_call=timedelta(seconds=job.last_call)),
            keep_alive_interval=job.heartbeat,  # type: ignore[arg-type]  # a timedelta's seconds
            keep_alive_max_attempt=job.missed,
        ))
    print("ready", flush=True)
    assert _read_command() == "go"
    for number in range(job.rounds):
        if number:
            # torch's agent learns of a death from its workers failing and then calls
            # next_rendezvous(); here it is told at once, the best case for torch.
            assert _read_command() == "again"
        results: list[tuple[int, float]] = []
        threads = [threading.Thread(target=_torch_join, args=(handler, results))
                   for handler in handlers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        _report(done=max(done for _, done in results), ranks=[rank for rank, _ in results],
                round_id=str(number), calls=0)
    _read_command()
    os._exit(0)  # torch's handlers keep non-daemon heartbeat threads


def _torch_join(handler: Any, results: list[tuple[int, float]]) -> None:
    info = handler.next_rendezvous()
    results.append((info.rank, time.time()))  # list.append is atomic


def worker_main(argv: list[str]) -> None:
    job = Job.parse(argv)
    if job.kind == "ours":
        anyio.run(_our_worker, job)
    else:
        _torch_worker(job)


# -- the parent ----------------------------------------------------------------------------------


class Worker:
    """One worker process and its output lines."""

    def __init__(self, job: Job) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", *job.argv()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            # torch: no TCPStore server for the workers' bootstrap; time the rendezvous only.
            env={**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"},
        )

    def line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError(f"worker exited with {self.process.returncode}")
        return line.strip()

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.line())
        return result

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("exit")
                self.process.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


@contextmanager
def workers_for(jobs: list[Job]) -> Iterator[list[Worker]]:
    workers = [Worker(job) for job in jobs]
    try:
        for worker in workers:
            if worker.line() != "ready":
                raise RuntimeError("a worker did not start")
        yield workers
    finally:
        for worker in workers:
            worker.finish()


def split(nodes: int, processes: int) -> list[tuple[int, int]]:
    """``(first, count)`` of each process's nodes."""
    base, extra = divmod(nodes, processes)
    spans, first = [], 0
    for index in range(processes):
        count = base + (1 if index < extra else 0)
        spans.append((first, count))
        first += count
    return spans


@dataclass
class Outcome:
    seconds: float
    calls_per_node: float
    steady: tuple[float, int] | None = None  # calls per node per interval, waiters woken


def time_round(kind: str, target: str, nodes: int, *, processes: int, low: int | None = None,
               high: int | None = None, last_call: float = 30.0,
               heartbeat: float = DEFAULT_HEARTBEAT, shared_handle: bool = False,
               steady: bool = False, missed: int = MAX_MISSED) -> Outcome:
    """Time one round of *nodes* over *processes* workers (and the steady state after it)."""
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    low = nodes if low is None else low
    high = nodes if high is None else high
    jobs = [Job(kind, target, run_id, first, count, low, high, last_call, heartbeat,
                shared_handle, missed=missed) for first, count in split(nodes, processes)]
    with workers_for(jobs) as workers:
        started = time.time()
        for worker in workers:
            worker.send("go")
        results = [worker.result() for worker in workers]
        ranks = sorted(rank for result in results for rank in result["ranks"])
        if ranks != list(range(nodes)) or len({r["round_id"] for r in results}) != 1:
            raise RuntimeError(f"bad round: ranks {ranks[:10]}...")
        outcome = Outcome(max(r["done"] for r in results) - started,
                          sum(r["calls"] for r in results) / nodes)
        if steady:
            for worker in workers:
                worker.send("steady")
            measured = [worker.result() for worker in workers]
            outcome.steady = (sum(m["calls"] for m in measured) / nodes / STEADY_INTERVALS,
                              sum(m["woken"] for m in measured))
    return outcome


def time_last_call(url: str, nodes: int) -> tuple[float, float]:
    """*nodes* processes, ``min = N, max = 2N``: (seconds to the round, overshoot past L after
    the last call started, as an observer saw it start)."""
    run_id = f"last-{uuid.uuid4().hex[:8]}"
    jobs = [Job("ours", url, run_id, index, 1, nodes, 2 * nodes, LAST_CALL, DEFAULT_HEARTBEAT)
            for index in range(nodes)]
    with workers_for(jobs) as workers:
        seen: list[float] = []
        watching = threading.Event()
        thread = threading.Thread(target=lambda: seen.append(
            anyio.run(_last_call_seen, url, run_id, watching)))
        thread.start()
        watching.wait()
        started = time.time()
        for worker in workers:
            worker.send("go")
        results = [worker.result() for worker in workers]
        thread.join()
    done = max(r["done"] for r in results)
    return done - started, done - seen[0] - LAST_CALL


async def _last_call_seen(url: str, run_id: str, watching: threading.Event) -> float:
    """When the run's record first showed its last call running (this process's clock); sets
    *watching* once it has read the record, so that no change after that goes unseen."""
    async with open_backend(url, run_id=run_id) as backend:
        register = backend if backend.member_table() is not None else None
        if register is None:
            from arendezvous import emulate_member_table

            register, _ = emulate_member_table(backend)
        current = await register.get_state()
        watching.set()
        while True:
            if current is not None and decode_record(current[0]).last_call:
                return time.time()
            current = await register.wait_for_change(None if current is None else current[1])


def time_death(kind: str, target: str) -> float:
    """Four nodes in a round; one is SIGKILLed: seconds until the three others hold the next."""
    run_id = f"death-{uuid.uuid4().hex[:8]}"
    jobs = [Job(kind, target, run_id, index, 1, 3, 4, 0.05, DEATH_HEARTBEAT, rounds=2)
            for index in range(4)]
    with workers_for(jobs) as workers:
        for worker in workers:
            worker.send("go")
        for worker in workers:
            worker.result()
        victim = workers.pop()
        killed = time.time()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        if kind == "torch":
            for worker in workers:
                worker.send("again")
        results = [worker.result() for worker in workers]
    done: float = max(result["done"] for result in results)
    return done - killed


async def time_tasks(nodes: int) -> float:
    store = MemoryStore()
    infos: list[RendezvousInfo] = []

    async def node(index: int) -> None:
        rendezvous = AsyncRendezvous(MemoryBackend("bench", store), f"node-{index:04d}", nodes,
                                     nodes)
        infos.append(await rendezvous.next_rendezvous())

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(nodes):
            group.start_soon(node, index)
    if sorted(info.rank for info in infos) != list(range(nodes)):
        raise RuntimeError("bad ranks")
    return time.perf_counter() - started


async def record_size(nodes: int) -> int:
    """Bytes of the round record once *nodes* nodes completed a round."""
    store = MemoryStore()
    async with anyio.create_task_group() as group:
        for index in range(nodes):
            rendezvous = AsyncRendezvous(MemoryBackend("size", store), f"node-{index:04d}",
                                         nodes, nodes)
            group.start_soon(rendezvous.next_rendezvous)
    current = await MemoryBackend("size", store).get_state()
    assert current is not None
    return len(current[0])


# -- the table ------------------------------------------------------------------------------------


@dataclass
class Table:
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        self.rows.append(cells)
        print("  " + " | ".join(cells), file=sys.stderr, flush=True)

    def print(self) -> None:
        header = ("what", "arendezvous", "store calls / node", "torch (same run)", "ratio",
                  "goal")
        rows = [header, *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in self.rows:
            print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _ratio(reference: float | None, seconds: float) -> str:
    return "—" if reference is None else f"{reference / seconds:,.1f}x faster"


def _median(samples: list[Outcome]) -> Outcome:
    return sorted(samples, key=lambda outcome: outcome.seconds)[len(samples) // 2]


_GOALS = {("redis", 256): "<= 0.6 s", ("redis", 1000): "<= 3 s", ("etcd", 256): "<= 1.5 s",
          ("postgres", 256): "<= 1.5 s", ("postgres", 1000): "<= 3 s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny rows only (a smoke test)")
    parser.add_argument("--no-torch", action="store_true", help="skip torch's rows")
    parser.add_argument("--stores", default="redis,etcd,postgres",
                        help="stores for the scale rows (default redis,etcd,postgres)")
    parser.add_argument("--sizes", default="64,256,1000", help="N of the scale rows")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per scale row, the median reported (default 1)")
    args = parser.parse_args()
    stores = [name for name in args.stores.split(",") if name]
    sizes = [8] if args.quick else [int(size) for size in args.sizes.split(",")]
    table = Table()

    with ExitStack() as stack:
        urls: dict[str, str] = {}
        directory = stack.enter_context(tempfile.TemporaryDirectory())
        urls["file"] = f"file://{directory}?durable=false&poll_interval=0.005"
        for name in stores:
            urls[name] = stack.enter_context(_server(name))
        torch_port: str | None = None
        if not args.no_torch:
            try:
                from torch._C._distributed_c10d import TCPStore
            except ImportError:
                print("torch is not installed: its rows are skipped", file=sys.stderr)
            else:
                tcp_store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
                torch_port = str(tcp_store.port)

        # -- scale ------------------------------------------------------------------------------
        torch_times: dict[int, float] = {}
        if torch_port is not None:
            for nodes in [8] if args.quick else [64, 128]:
                outcome = time_round("torch", torch_port, nodes, processes=4)
                torch_times[nodes] = outcome.seconds
                table.add(f"N={nodes}, min = max (torch's handler, threads in 4 processes)",
                          _ms(outcome.seconds), "—", _ms(outcome.seconds), "1.0x", "")
        for name in stores:
            for nodes in sizes:
                processes = min(MAX_PROCESSES, max(2, nodes // 32))
                outcome = _median([
                    time_round("ours", urls[name], nodes, processes=processes,
                               shared_handle=name == "postgres")
                    for _ in range(args.repeat)
                ])
                reference = torch_times.get(nodes)
                goal = _GOALS.get((name, nodes), ">= 50x" if nodes == 128 else "")
                table.add(f"N={nodes}, min = max ({name}, tasks in {processes} processes)",
                          _ms(outcome.seconds), f"{outcome.calls_per_node:.1f}",
                          _ms(reference), _ratio(reference, outcome.seconds), goal)
            for nodes in [] if args.quick else [128]:
                if nodes in sizes or torch_port is None:
                    continue
                outcome = time_round("ours", urls[name], nodes, processes=4,
                                     shared_handle=name == "postgres")
                reference = torch_times.get(nodes)
                table.add(f"N={nodes}, min = max ({name}, tasks in 4 processes)",
                          _ms(outcome.seconds), f"{outcome.calls_per_node:.1f}",
                          _ms(reference), _ratio(reference, outcome.seconds), ">= 50x")

        # -- steady state -----------------------------------------------------------------------
        for name in stores:
            for nodes in [8] if args.quick else [64, 256]:
                processes = min(MAX_PROCESSES, max(2, nodes // 32))
                # Evicted after 3 missed heartbeats: both libraries' default.
                outcome = time_round("ours", urls[name], nodes, processes=processes,
                                     heartbeat=STEADY_HEARTBEAT, shared_handle=name == "postgres",
                                     steady=True, missed=3)
                assert outcome.steady is not None
                per_interval, woken = outcome.steady
                table.add(f"formed round of {nodes}, per heartbeat interval ({name})",
                          f"{woken} waiters woken", f"{per_interval:.2f}", "—", "—",
                          "<= 2 calls, 0 woken")

        # -- small rounds, the last call, a death -----------------------------------------------
        small = ["file", *stores]
        for nodes in [2] if args.quick else [2, 8, 16]:
            reference = (time_round("torch", torch_port, nodes, processes=nodes).seconds
                         if torch_port is not None else None)
            for name in small:
                outcome = time_round("ours", urls[name], nodes, processes=nodes)
                table.add(f"N={nodes} processes, min = max ({name})", _ms(outcome.seconds),
                          f"{outcome.calls_per_node:.1f}", _ms(reference),
                          _ratio(reference, outcome.seconds), "")
        for name in small:
            nodes = 2 if args.quick else 16
            seconds, overshoot = time_last_call(urls[name], nodes)
            table.add(f"N={nodes} processes, last call {LAST_CALL:g} s, max not reached ({name})",
                      f"{_ms(seconds)}; overshoot {_ms(overshoot)}", "—", "—", "—",
                      "overshoot <= 50 ms")
        if not args.quick:
            reference = time_death("torch", torch_port) if torch_port is not None else None
            for name in small:
                seconds = time_death("ours", urls[name])
                table.add(f"death of 1 of 4 -> next round of 3 ({name}; evicted after "
                          f"{MAX_MISSED * DEATH_HEARTBEAT:g} s)", _ms(seconds), "—",
                          _ms(reference), _ratio(reference, seconds), "timeout + 100 ms")

        # -- in one process ---------------------------------------------------------------------
        count = 64 if args.quick else 1000
        seconds = anyio.run(partial(time_tasks, count))
        table.add(f"N={count:,} tasks, memory, min = max", _ms(seconds), "—", "—", "—",
                  "< 5 s" if count == 1000 else "")
        size = anyio.run(record_size, count)
        table.add(f"round record at {count:,} nodes", f"{size:,} bytes", "—", "—", "—", "")

    table.print()
    print("\ntimes from the start line to the last node holding its rank; store calls: every "
          "call of the nodes' backends and member tables, divided by N")


@contextmanager
def _server(name: str) -> Iterator[str]:
    """Start a throwaway server for *name* on 127.0.0.1; yield its URL."""
    from arendezvous.testing.servers.etcd import EtcdServer
    from arendezvous.testing.servers.postgres import PostgresServer
    from arendezvous.testing.servers.redis import RedisServer

    launcher = {"redis": RedisServer, "etcd": EtcdServer, "postgres": PostgresServer}[name]
    with launcher() as server:
        yield server.url


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        main()
