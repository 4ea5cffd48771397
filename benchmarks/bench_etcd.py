"""The etcd backend against aetcd's own client doing the same request, measured in one run.

    python benchmarks/bench_etcd.py [--seconds 2.0] [--state-size 256]

Starts a throwaway etcd on 127.0.0.1 (``tests/servers/etcd.py``) and prints one table:

* ``get_state`` vs ``aetcd.Client.get`` of the same key (one linearizable Range);
* ``set_state`` with the current token vs ``aetcd.Client.transaction`` with the same compare
  (``mod_revision == token``), success (put) and failure (get) branches;
* 8 racing writers, each its own handle (its own connection), doing read-modify-write CAS
  loops on one key: successful and failed CAS per second, for arendezvous and for aetcd.

The two sides run in alternating rounds so drift of the machine hits both alike; each row is
bounded by ``--seconds`` of measurement. Goal (issue on distributed stores): ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks._measure

import aetcd
from benchmarks import _measure
from benchmarks._measure import Op, percentile

from arendezvous.backends.etcd import EtcdBackend, EtcdToken
from arendezvous.backends.etcd._protocol import encode
from servers.etcd import EtcdServer

ROUNDS = 4
MAX_OPS_PER_ROUND = 5000
WRITERS = 8


async def compare(ours: Op, raw: Op, seconds: float) -> tuple[list[float], list[float]]:
    """Alternate rounds of *raw* and *ours*; return all latencies of each."""
    return await _measure.compare(
        ours, raw, seconds, rounds=ROUNDS, max_ops=MAX_OPS_PER_ROUND, warmup=50, raw_first=True
    )


def _row(name: str, samples: list[float]) -> tuple[str, float, float, float]:
    rate = len(samples) / sum(samples)
    return name, rate, percentile(samples, 0.5) * 1e3, percentile(samples, 0.99) * 1e3


async def bench_single(server: EtcdServer, seconds: float, state: bytes) -> list[str]:
    host, _, port_text = server.endpoint.partition(":")
    run_id = f"bench-{uuid.uuid4().hex}"
    backend = EtcdBackend(run_id, server.endpoint)
    client = aetcd.Client(host=host, port=int(port_text), timeout=5)
    await client.connect()
    key = backend.key
    value = encode(state)
    lines = []
    try:
        _, token, _ = await backend.set_state(state)

        async def our_get() -> None:
            result = await backend.get_state()
            assert result is not None

        async def raw_get() -> None:
            result = await client.get(key)
            assert result is not None

        ours, raw = await compare(our_get, raw_get, seconds)
        lines += _compare_lines("get_state", ours, raw)

        current: dict[str, Any] = {"token": token}

        async def our_set() -> None:
            _, current["token"], written = await backend.set_state(state, current["token"])
            assert written

        raw_revision = {"rev": 0}
        stored = await client.get(key)
        assert stored is not None
        raw_revision["rev"] = stored.mod_revision

        async def raw_set() -> None:
            txn = client.transactions
            succeeded, responses = await client.transaction(
                compare=[txn.mod(key) == raw_revision["rev"]],
                success=[txn.put(key, value)],
                failure=[txn.get(key)],
            )
            assert succeeded
            raw_revision["rev"] = responses[0].response_put.header.revision

        async def our_set_then_sync() -> None:
            await our_set()
            raw_revision["rev"] = current["token"].mod_revision

        assert isinstance(token, EtcdToken)
        cluster_id = token.cluster_id

        async def raw_set_then_sync() -> None:
            await raw_set()
            current["token"] = EtcdToken(cluster_id, key, raw_revision["rev"])

        ours, raw = await compare(our_set_then_sync, raw_set_then_sync, seconds)
        lines += _compare_lines("set_state (CAS)", ours, raw)
    finally:
        await backend.aclose()
        await client.close()
    return lines


def _compare_lines(name: str, ours: list[float], raw: list[float]) -> list[str]:
    _, our_rate, our_p50, our_p99 = _row(name, ours)
    _, raw_rate, raw_p50, raw_p99 = _row(name, raw)
    return [
        f"{name:<26} {'arendezvous':<12} {our_rate:>9.0f} {our_p50:>8.3f} {our_p99:>8.3f} "
        f"{our_rate / raw_rate:>6.2f}",
        f"{'':<26} {'aetcd':<12} {raw_rate:>9.0f} {raw_p50:>8.3f} {raw_p99:>8.3f} {'1.00':>6}",
    ]


async def bench_racing(server: EtcdServer, seconds: float, state: bytes) -> list[str]:
    """WRITERS handles do read-modify-write CAS loops on one key for *seconds*."""
    host, _, port_text = server.endpoint.partition(":")
    run_id = f"bench-race-{uuid.uuid4().hex}"
    backends = [EtcdBackend(run_id, server.endpoint) for _ in range(WRITERS)]
    clients = [aetcd.Client(host=host, port=int(port_text), timeout=5) for _ in range(WRITERS)]
    key = backends[0].key
    value = encode(state)
    lines = []
    try:
        await backends[0].set_state(state)

        async def ours(index: int, deadline: float, counts: list[int]) -> None:
            backend = backends[index]
            current = await backend.get_state()
            assert current is not None
            token = current[1]
            while time.perf_counter() < deadline:
                _, token, written = await backend.set_state(state, token)
                counts[0 if written else 1] += 1

        async def raw(index: int, deadline: float, counts: list[int]) -> None:
            client = clients[index]
            txn = client.transactions
            stored = await client.get(key)
            assert stored is not None
            revision = stored.mod_revision
            while time.perf_counter() < deadline:
                succeeded, responses = await client.transaction(
                    compare=[txn.mod(key) == revision],
                    success=[txn.put(key, value)],
                    failure=[txn.get(key)],
                )
                if succeeded:
                    revision = responses[0].response_put.header.revision
                    counts[0] += 1
                else:
                    revision = responses[0][0][1].mod_revision
                    counts[1] += 1

        for client in clients:
            await client.connect()
        results = {}
        for name, worker in (("aetcd", raw), ("arendezvous", ours)):
            counts = [0, 0]
            start = time.perf_counter()
            deadline = start + seconds / 2
            await asyncio.gather(*(worker(i, deadline, counts) for i in range(WRITERS)))
            elapsed = time.perf_counter() - start
            results[name] = (counts[0] / elapsed, counts[1] / elapsed)
        our_ok, our_failed = results["arendezvous"]
        raw_ok, raw_failed = results["aetcd"]
        label = f"{WRITERS} racing writers"
        lines.append(
            f"{label:<26} {'arendezvous':<12} {our_ok:>9.0f} ok/s, {our_failed:>6.0f} failed/s"
            f"   ratio (ok+failed) {(our_ok + our_failed) / (raw_ok + raw_failed):.2f}"
        )
        lines.append(f"{'':<26} {'aetcd':<12} {raw_ok:>9.0f} ok/s, {raw_failed:>6.0f} failed/s")
    finally:
        for backend in backends:
            await backend.aclose()
        for client in clients:
            await client.close()
    return lines


async def main(seconds: float, state_size: int) -> None:
    state = bytes(range(256)) * (state_size // 256) + b"x" * (state_size % 256)
    with EtcdServer() as server:
        version = server.log_tail(1000).split('"etcd-version":"', 1)[-1].split('"', 1)[0]
        print(f"etcd {version} on {server.endpoint}, state {state_size} bytes, "
              f"{seconds:g} s per row, {ROUNDS} alternating rounds")  # fmt: skip
        print()
        header = (
            f"{'operation':<26} {'client':<12} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'ratio':>6}"
        )
        print(header)
        print("-" * len(header))
        for line in await bench_single(server, seconds, state):
            print(line)
        for line in await bench_racing(server, seconds, state):
            print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measurement time per row")
    parser.add_argument("--state-size", type=int, default=256, help="state bytes per write")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.seconds, arguments.state_size))
