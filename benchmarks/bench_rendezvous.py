"""The async rendezvous against PyTorch's ``DynamicRendezvousHandler``, one run, one table.

    python benchmarks/bench_rendezvous.py [--quick] [--no-torch] [--redis]

Rows (every time is from "go" until the last node holds its rank):

* N = 2, 8, 16 nodes as processes: arendezvous on the file backend (``durable=false``,
  ``poll_interval=0.005``; and on Redis with ``--redis``) vs torch's handler over its C10d backend
  on a ``TCPStore`` served by this script, with ``min = max = N``, and with ``last_call = 1 s``
  and ``max`` not reached (``min = N``, ``max = 2N``);
* N = 64 and 1,000 nodes as tasks in one process on the memory backend (arendezvous only:
  torch's handler is one thread per node);
* the last call's overshoot: completion minus the deadline written into the state (goal: 50 ms);
* a node's death: four processes in a round, one SIGKILLed; time until the survivors hold the
  next round (bounded below by the heartbeat timeout, 2 s here for both);
* the state's size at 1,000 nodes.

Workers are this script run with ``--worker``; each opens its store, reports ready, and waits for
the start line, so process start-up (and torch's import) is not timed. Goals (issue #4):
min = max = 16 at least 20x faster than torch's in the same run; last call within L + 50 ms;
1,000 in-process nodes under 5 s. ``--quick`` runs the smallest rows only (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from arendezvous import MemoryBackend, MemoryStore, open_backend
from arendezvous.rendezvous import AsyncRendezvous, RendezvousInfo, RoundEnd
from arendezvous.rendezvous._state import decode_state

LAST_CALL = 1.0
DEFAULT_HEARTBEAT = 5.0  # both libraries' default, for the rows that do not time a death
# The death row: a node is evicted after missing two heartbeats of 1 s, for both libraries.
# (Shorter is unsafe for torch's handler: a non-zero rank blocks its store client, and with it
# its heartbeat thread, until rank 0 has published its address.)
HEARTBEAT = 1.0
MAX_MISSED = 2


# -- workers (this script run with --worker) ------------------------------------------------------


def _report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _wait_for(line: str) -> None:
    while sys.stdin.readline().strip() != line:
        pass


async def _our_worker(url: str, run_id: str, node: str, low: int, high: int, last_call: float,
                      heartbeat: float, rounds: int) -> None:
    async with open_backend(url, run_id=run_id) as backend:
        rendezvous = AsyncRendezvous(backend, node, low, high, last_call=last_call,
                                     heartbeat=heartbeat, heartbeat_timeout=MAX_MISSED * heartbeat)
        async with rendezvous:
            print("ready", flush=True)
            await anyio.to_thread.run_sync(_wait_for, "go")
            for number in range(rounds):
                if number:
                    reason = await rendezvous.wait_for_round_end()
                    assert reason is RoundEnd.RESTARTED, reason
                info = await rendezvous.next_rendezvous()
                _report(done=time.time(), rank=info.rank, round=info.round,
                        world=info.world_size)
            await anyio.to_thread.run_sync(_wait_for, "exit")


def _torch_worker(port: int, run_id: str, node: str, low: int, high: int, last_call: float,
                  heartbeat: float, rounds: int) -> None:
    from datetime import timedelta

    from torch._C._distributed_c10d import TCPStore
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
        C10dRendezvousBackend,
    )
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        DynamicRendezvousHandler,
        RendezvousTimeout,
    )

    store = TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=120))
    backend = C10dRendezvousBackend(store, run_id)
    handler = DynamicRendezvousHandler.from_backend(
        run_id, store, backend, low, high, local_addr=node,
        timeout=RendezvousTimeout(last_call=timedelta(seconds=last_call)),
        keep_alive_interval=heartbeat,  # type: ignore[arg-type]  # a timedelta's seconds
        keep_alive_max_attempt=MAX_MISSED,
    )
    print("ready", flush=True)
    _wait_for("go")
    for number in range(rounds):
        if number:
            # torch's agent learns of a death from its workers failing and then calls
            # next_rendezvous(); here it is told at once, the best case for torch.
            _wait_for("again")
        info = handler.next_rendezvous()
        _report(done=time.time(), rank=info.rank, round=number, world=info.world_size)
    _wait_for("exit")


def worker_main(argv: list[str]) -> None:
    kind, target, run_id, node, low, high, last_call, heartbeat, rounds = argv
    if kind == "ours":
        anyio.run(_our_worker, target, run_id, node, int(low), int(high), float(last_call),
                  float(heartbeat), int(rounds))
    else:
        _torch_worker(int(target), run_id, node, int(low), int(high), float(last_call),
                      float(heartbeat), int(rounds))


# -- the parent ----------------------------------------------------------------------------------


class Worker:
    def __init__(self, kind: str, target: str, run_id: str, node: str, low: int, high: int,
                 last_call: float, heartbeat: float = DEFAULT_HEARTBEAT, rounds: int = 1) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, target, run_id, node, str(low),
             str(high), str(last_call), str(heartbeat), str(rounds)],
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
                self.process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def _start(workers: list[Worker]) -> float:
    for worker in workers:
        if worker.line() != "ready":
            raise RuntimeError("a worker did not start")
    started = time.time()
    for worker in workers:
        worker.send("go")
    return started


def _check(results: list[dict[str, Any]]) -> None:
    ranks = sorted(result["rank"] for result in results)
    if ranks != list(range(len(results))):
        raise RuntimeError(f"bad ranks: {ranks}")


@dataclass
class Store:
    """Where a process row's workers meet: our URL, or torch's TCPStore port."""

    kind: str
    target: str
    observe: Callable[[str], Any] | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def time_processes(store: Store, nodes: int, *, last_call: bool) -> tuple[float, float | None]:
    """Seconds until all *nodes* hold a rank; and for our last-call rows, the overshoot."""
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    low, high = (nodes, 2 * nodes) if last_call else (nodes, nodes)
    workers = [Worker(store.kind, store.target, run_id, f"node-{index:02d}", low, high,
                      LAST_CALL if last_call else 30.0) for index in range(nodes)]
    try:
        deadline_box: list[float] = []
        observer = None
        if store.observe is not None and last_call:
            observer = store.observe(run_id)
        started = _start(workers)
        if observer is not None:
            deadline_box.append(observer())
        results = [worker.result() for worker in workers]
    finally:
        for worker in workers:
            worker.finish()
    _check(results)
    done = max(result["done"] for result in results)
    overshoot = done - deadline_box[0] if deadline_box else None
    return done - started, overshoot


def time_death(store: Store) -> float:
    """Four nodes in a round; one is SIGKILLed: seconds until the three others hold the next."""
    run_id = f"death-{uuid.uuid4().hex[:8]}"
    workers = [Worker(store.kind, store.target, run_id, f"node-{index}", 3, 4, 0.05,
                      heartbeat=HEARTBEAT, rounds=2) for index in range(4)]
    try:
        _start(workers)
        _check([worker.result() for worker in workers])
        victim = workers.pop()
        killed = time.time()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        if store.kind == "torch":
            for worker in workers:
                worker.send("again")
        results = [worker.result() for worker in workers]
    finally:
        for worker in workers:
            worker.finish()
    _check(results)
    done: float = max(result["done"] for result in results)
    return done - killed


def _observer(url: str) -> Callable[[str], Callable[[], float]]:
    """Our rows' last-call deadline, as written into the state by the node that started it
    (only its value is used, not when this observer saw it)."""

    def observe(run_id: str) -> Callable[[], float]:
        def deadline() -> float:
            async def read() -> float:
                async with open_backend(url, run_id=run_id) as backend:
                    current = await backend.get_state()
                    while True:
                        if current is not None:
                            state = decode_state(current[0])
                            if state.last_call is not None:
                                return state.last_call / 1000
                        current = await backend.wait_for_change(
                            None if current is None else current[1])

            return anyio.run(read)

        return deadline

    return observe


# -- in-process rows ------------------------------------------------------------------------------


async def time_tasks(nodes: int, *, last_call: bool) -> tuple[float, float | None]:
    store = MemoryStore()
    low, high = (nodes, 2 * nodes) if last_call else (nodes, nodes)
    infos: list[RendezvousInfo] = []
    deadline: list[float] = []
    finished: list[float] = []

    async def node(index: int) -> None:
        rendezvous = AsyncRendezvous(MemoryBackend("bench", store), f"node-{index:04d}", low, high,
                                     last_call=LAST_CALL if last_call else 30.0)
        infos.append(await rendezvous.next_rendezvous())
        finished.append(time.time())

    async def observe() -> None:
        backend = MemoryBackend("bench", store)
        current = await backend.get_state()
        while True:
            if current is not None and decode_state(current[0]).last_call is not None:
                deadline.append(decode_state(current[0]).last_call / 1000)  # type: ignore[operator]
                return
            current = await backend.wait_for_change(None if current is None else current[1])

    started = time.time()
    async with anyio.create_task_group() as group:
        if last_call:
            group.start_soon(observe)
        for index in range(nodes):
            group.start_soon(node, index)
    _check([{"rank": info.rank} for info in infos])
    done = max(finished)
    return done - started, (done - deadline[0] if deadline else None)


async def state_size(nodes: int) -> int:
    """Bytes of the stored state once *nodes* nodes completed a round."""
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


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _median(samples: list[tuple[float, float | None]]) -> tuple[float, float | None]:
    """The sample with the median time (and that sample's overshoot)."""
    ordered = sorted(samples, key=lambda sample: sample[0])
    return ordered[len(ordered) // 2]


def _ratio(reference: float | None, seconds: float) -> str:
    return "—" if reference is None else f"{reference / seconds:,.1f}x faster"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest rows only (smoke test)")
    parser.add_argument("--no-torch", action="store_true", help="skip torch's rows")
    parser.add_argument("--redis", action="store_true", help="also run our rows on Redis")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per process row, the median reported (default 3)")
    args = parser.parse_args()
    sizes = [2] if args.quick else [2, 8, 16]
    repeat = 1 if args.quick else args.repeat
    rows: list[tuple[str, str, str, str, str]] = []

    torch_store: Store | None = None
    if not args.no_torch:
        try:
            from torch._C._distributed_c10d import TCPStore
        except ImportError:
            print("torch is not installed: its rows are skipped", file=sys.stderr)
        else:
            tcp_store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
            torch_store = Store("torch", str(tcp_store.port))

    with tempfile.TemporaryDirectory() as directory:
        # Other processes' writes reach a file-backend waiter by polling: 5 ms here.
        file_url = f"file://{directory}?durable=false&poll_interval=0.005"
        ours = {"file": Store("ours", file_url, _observer(file_url))}
        redis_server = None
        if args.redis:
            from arendezvous.testing.servers.redis import RedisServer

            redis_server = RedisServer().start()
            ours["redis"] = Store("ours", redis_server.url, _observer(redis_server.url))
        try:
            for last_call in (False, True):
                for nodes in sizes:
                    what = (f"N={nodes} processes, last_call {LAST_CALL:g} s, max not reached"
                            if last_call else f"N={nodes} processes, min = max")
                    reference = None
                    if torch_store is not None:
                        reference, _ = _median([time_processes(torch_store, nodes,
                                                               last_call=last_call)
                                                for _ in range(repeat)])
                    for label, store in ours.items():
                        seconds, overshoot = _median([time_processes(store, nodes,
                                                                     last_call=last_call)
                                                      for _ in range(repeat)])
                        note = f"; overshoot {_ms(overshoot)}" if overshoot is not None else ""
                        goal = ("overshoot <= 50 ms" if last_call
                                else ">= 20x" if nodes == 16 else "")
                        rows.append((f"{what} ({label})", _ms(seconds) + note, _ms(reference),
                                     _ratio(reference, seconds), goal))
            for nodes in [64] if args.quick else [64, 1000]:
                for last_call in (False, True):
                    seconds, overshoot = anyio.run(partial(time_tasks, nodes, last_call=last_call))
                    what = (f"N={nodes} tasks, memory, "
                            + (f"last_call {LAST_CALL:g} s" if last_call else "min = max"))
                    note = f"; overshoot {_ms(overshoot)}" if overshoot is not None else ""
                    goal = "< 5 s" if nodes == 1000 else ""
                    rows.append((what, _ms(seconds) + note, "—", "—", goal))
            if not args.quick:
                reference = time_death(torch_store) if torch_store is not None else None
                for label, store in ours.items():
                    seconds = time_death(store)
                    rows.append((f"death of 1 of 4 -> next round of 3 ({label}; evicted "
                                 f"after {MAX_MISSED * HEARTBEAT:g} s)", _ms(seconds),
                                 _ms(reference), _ratio(reference, seconds), ""))
            count = 10 if args.quick else 1000
            size = anyio.run(state_size, count)
            rows.append((f"state size at {count:,} nodes", f"{size:,} bytes", "—", "—", ""))
        finally:
            if redis_server is not None:
                redis_server.stop()

    header = ("what", "arendezvous", "torch DynamicRendezvousHandler (same run)", "ratio", "goal")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(f"\nprocess rows: median of {repeat} runs; times from the start line to the last "
          "node holding its rank; overshoot: that minus the last-call deadline in the state")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        main()
