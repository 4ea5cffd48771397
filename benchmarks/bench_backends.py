"""Embedded backends and the sync adapter, each against a reference measured in the same run.

    python benchmarks/bench_backends.py [--seconds 1.0]

Prints one table. Every ratio compares arendezvous with the cheapest way to do the same work by
hand on this machine now, so the numbers travel between machines better than absolute ops/s:

* memory: ``get_state`` + ``set_state`` (one CAS) vs the same pair of calls on a bare dict with
  no lock and no checks, awaited the same way (the floor for any awaitable API);
* file: ``set_state`` vs one worker-thread hop running the same locked section by hand, and the same
  section built from aiofiles calls (a hop per call) for comparison;
* sync adapter: a blocking ``get_state`` vs a raw ``asyncio.run_coroutine_threadsafe`` round trip
  to a loop thread, and anyio's stock blocking portal for comparison;
* trio bridge: a network backend's ``get_state`` called from trio (run on the asyncio loop
  thread, cancellation carried across) vs the same call awaited on asyncio directly, on a
  throwaway ``redis-server`` (skipped, saying so, without one); and the bridge's bare round trip
  (an empty coroutine) beside anyio's ``to_thread.run_sync`` of an empty function, from trio.

Goals (issue #2): memory >= 0.5x, file >= 0.9x, sync adapter cost <= 1.5x; the bridge's cost is
reported (issue #9), not judged.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks._measure
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # servers

import anyio
import anyio.to_thread
from anyio.from_thread import start_blocking_portal
from benchmarks._measure import percentile

from arendezvous import FileBackend, MemoryBackend, MemoryStore, SyncBackend
from arendezvous.backends import _fileformat
from arendezvous.sync import LoopThread

Row = tuple[str, float, float, float]  # name, ops/s, p50 us, p99 us


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """p50 and p99 of *samples_ns*, in microseconds."""
    return percentile(samples_ns, 0.5) / 1000, percentile(samples_ns, 0.99) / 1000


def measure_sync(name: str, op: Callable[[], object], seconds: float) -> Row:
    """Ops/s from an untimed loop, then percentiles from a per-op timed loop."""
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + seconds / 2
    count = 0
    start = clock()
    while time.perf_counter() < deadline:
        for _ in range(100):
            op()
        count += 100
    rate = count / ((clock() - start) / 1e9)
    samples: list[int] = []
    deadline = time.perf_counter() + seconds / 2
    while time.perf_counter() < deadline and len(samples) < 200_000:
        t0 = clock()
        op()
        samples.append(clock() - t0)
    return (name, rate, *_percentiles(samples))


async def measure_async(name: str, op: Callable[[], Awaitable[object]], seconds: float) -> Row:
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + seconds / 2
    count = 0
    start = clock()
    while time.perf_counter() < deadline:
        for _ in range(100):
            await op()
        count += 100
    rate = count / ((clock() - start) / 1e9)
    samples: list[int] = []
    deadline = time.perf_counter() + seconds / 2
    while time.perf_counter() < deadline and len(samples) < 200_000:
        t0 = clock()
        await op()
        samples.append(clock() - t0)
    return (name, rate, *_percentiles(samples))


# -- memory ------------------------------------------------------------------------------------


def bench_memory(seconds: float) -> list[Row]:
    states: dict[str, tuple[bytes, int]] = {"run": (b"x", 0)}

    def dict_cas() -> None:
        state, token = states["run"]
        if states["run"][1] == token:
            states["run"] = (state, token + 1)

    async def bare_get() -> tuple[bytes, int] | None:
        return states.get("run")

    async def bare_set(state: bytes, token: int) -> tuple[bytes, int, bool]:
        current = states["run"]
        if current[1] != token:
            return current[0], current[1], False
        states["run"] = (state, token + 1)
        return state, token + 1, True

    async def run() -> list[Row]:
        async def bare_get_and_cas() -> None:
            current = await bare_get()
            assert current is not None
            await bare_set(current[0], current[1])

        backend = MemoryBackend("bench", MemoryStore())
        await backend.set_state(b"x")

        async def get_and_cas() -> None:
            current = await backend.get_state()
            assert current is not None
            await backend.set_state(current[0], current[1])

        return [
            await measure_async("bare dict CAS, awaited (reference)", bare_get_and_cas, seconds),
            await measure_async("memory get_state + set_state", get_and_cas, seconds),
            await measure_async("memory get_state", backend.get_state, seconds),
        ]

    rows = anyio.run(run)
    return [*rows, measure_sync("bare dict CAS, not awaited (for scale)", dict_cas, seconds)]


# -- file --------------------------------------------------------------------------------------


def _by_hand_cas(directory: Path, lock_fd: int, incarnation: bytes) -> None:
    """The file backend's locked section written out by hand (no fsync, as benchmarked)."""
    path = directory / "byhand.rdzv"
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        _, counter, state = _fileformat.decode(path.read_bytes())
        tmp = directory / f".byhand.{os.urandom(8).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, _fileformat.encode(incarnation, counter + 1, state))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)


def bench_file(seconds: float) -> list[Row]:
    import aiofiles
    import aiofiles.os

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        incarnation = os.urandom(16)
        (directory / "byhand.rdzv").write_bytes(_fileformat.encode(incarnation, 1, b"x" * 64))
        lock_fd = os.open(directory / "byhand.lock", os.O_RDWR | os.O_CREAT, 0o600)

        async def run() -> None:
            async def one_hop() -> None:
                await anyio.to_thread.run_sync(_by_hand_cas, directory, lock_fd, incarnation)

            rows.append(await measure_async("one thread hop by hand (reference)", one_hop, seconds))

            backend = FileBackend(directory, "bench", durable=False)
            await backend.set_state(b"x" * 64)
            token_box = [(await backend.get_state() or (b"", None))[1]]

            async def cas() -> None:
                _, token_box[0], _ = await backend.set_state(b"x" * 64, token_box[0])

            rows.append(await measure_async("file set_state (durable=False)", cas, seconds))
            rows.append(await measure_async("file get_state", backend.get_state, seconds))
            durable = FileBackend(directory, "durable")
            await durable.set_state(b"x" * 64)
            durable_box = [(await durable.get_state() or (b"", None))[1]]

            async def durable_cas() -> None:
                _, durable_box[0], _ = await durable.set_state(b"x" * 64, durable_box[0])

            rows.append(
                await measure_async("file set_state (durable, fsync)", durable_cas, seconds)
            )

            path = directory / "aio.rdzv"
            path.write_bytes(_fileformat.encode(incarnation, 1, b"x" * 64))

            async def aiofiles_cas() -> None:
                async with aiofiles.open(directory / "aio.lock", "a+b") as lock:
                    await anyio.to_thread.run_sync(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
                    try:
                        async with aiofiles.open(path, "rb") as current:
                            _, counter, state = _fileformat.decode(await current.read())
                        tmp = directory / f".aio.{os.urandom(8).hex()}.tmp"
                        async with aiofiles.open(tmp, "wb") as new:
                            await new.write(_fileformat.encode(incarnation, counter + 1, state))
                        await aiofiles.os.replace(tmp, path)
                    finally:
                        await anyio.to_thread.run_sync(fcntl.flock, lock.fileno(), fcntl.LOCK_UN)

            rows.append(await measure_async("same CAS from aiofiles calls", aiofiles_cas, seconds))

        asyncio.run(run())  # aiofiles runs only on asyncio
        os.close(lock_fd)
    return rows


# -- sync adapter ------------------------------------------------------------------------------


def bench_sync(seconds: float) -> list[Row]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    backend = MemoryBackend("bench-sync", MemoryStore())

    def raw_round_trip() -> None:
        asyncio.run_coroutine_threadsafe(backend.get_state(), loop).result()

    rows = [measure_sync("raw run_coroutine_threadsafe (reference)", raw_round_trip, seconds)]
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()

    with SyncBackend(MemoryBackend("bench-sync", MemoryStore())) as adapter:
        rows.append(measure_sync("SyncBackend.get_state", adapter.get_state, seconds))
    with start_blocking_portal() as portal:
        rows.append(
            measure_sync("anyio portal.call(get_state)", lambda: portal.call(backend.get_state),
                         seconds)
        )
    return rows


# -- trio bridge -------------------------------------------------------------------------------


def bench_bridge(seconds: float) -> list[Row]:
    """A network backend from trio, through the loop thread, against asyncio direct."""
    rows: list[Row] = []
    try:
        from arendezvous.backends.redis import RedisBackend
        from arendezvous.testing.servers import ServerNotFoundError
        from servers.redis import RedisServer

        server: RedisServer | None = RedisServer().start()
    except (ImportError, ServerNotFoundError) as missing:
        print(f"(trio bridge on Redis skipped: {missing})")
        server = None
    if server is not None:
        try:
            backend = RedisBackend("bench-bridge", host=server.host, port=server.port)
            anyio.run(backend.set_state, b"x" * 64)

            async def direct() -> Row:
                return await measure_async(
                    "redis get_state, asyncio direct (reference)", backend.get_state, seconds
                )

            async def bridged() -> Row:
                return await measure_async(
                    "redis get_state, trio via loop thread", backend.get_state, seconds
                )

            rows.append(anyio.run(direct))
            anyio.run(backend.aclose)
            backend = RedisBackend("bench-bridge", host=server.host, port=server.port)
            rows.append(anyio.run(bridged, backend="trio"))
            anyio.run(backend.aclose, backend="trio")
        finally:
            server.stop()

    async def empty() -> None:
        pass

    def nothing() -> None:
        pass

    thread = LoopThread.shared()

    async def bare() -> list[Row]:
        return [
            await measure_async(
                "bridge round trip (empty coroutine), trio", lambda: thread.run(empty), seconds
            ),
            await measure_async(
                "anyio to_thread.run_sync (empty), trio",
                lambda: anyio.to_thread.run_sync(nothing),
                seconds,
            ),
        ]

    return [*rows, *anyio.run(bare, backend="trio")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per row (default 1.0)")
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 0.1), 10.0)

    sections: list[tuple[str, list[Row], str, float | None]] = [
        ("memory", bench_memory(seconds), "ops/s", 0.5),
        ("file", bench_file(seconds), "ops/s", 0.9),
        ("sync adapter", bench_sync(seconds), "cost", 1.5),
    ]
    bridge = bench_bridge(seconds)
    if len(bridge) > 2:  # with Redis: its reference row first
        sections.append(("trio bridge", bridge, "cost", None))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {seconds:.1f} s per row\n")
    header = f"{'operation':44} {'ops/s':>12} {'p50 us':>9} {'p99 us':>9} {'vs ref':>8}"
    verdicts = []
    for title, rows, kind, goal in sections:
        print(f"== {title}")
        print(header)
        reference = rows[0][1]
        for name, rate, p50, p99 in rows:
            ratio = rate / reference if kind == "ops/s" else reference / rate
            print(f"{name:44} {rate:12,.0f} {p50:9.1f} {p99:9.1f} {ratio:7.2f}x")
        first = rows[1][1]
        ratio = first / reference if kind == "ops/s" else reference / first
        measure = "throughput" if kind == "ops/s" else "cost per call"
        if goal is None:
            added = (rows[1][2] - rows[0][2]) if title == "trio bridge" else 0.0
            verdicts.append(f"{title}: {ratio:.2f}x ({measure}; +{added:.0f} us p50; reported)")
        else:
            met = ratio >= goal if kind == "ops/s" else ratio <= goal
            verdicts.append(
                f"{title}: {ratio:.2f}x ({measure}; goal {'>=' if kind == 'ops/s' else '<='} "
                f"{goal}x) {'met' if met else 'NOT met'}"
            )
        print()
    print("\n".join(verdicts))
    _ = statistics  # percentiles are computed by hand to avoid interpolation surprises


if __name__ == "__main__":
    main()
