"""The Redis backend against redis-py's own client doing the same command, measured in one run.

    python benchmarks/bench_redis.py [--seconds 2.0] [--state-size 256]

Starts a throwaway ``redis-server`` on 127.0.0.1 (``tests/servers/redis.py``) and prints one table:

* ``get_state`` vs ``redis.asyncio.Redis.hgetall`` of the same key (the one command it sends);
* ``set_state`` with the current token vs ``evalsha`` of the same script with the same arguments,
  the raw side tracking the token from the replies as the backend does;
* 8 racing writers, each its own handle (its own connection pool), doing CAS loops on one key
  (a loser retries with the token its failed call returned, no extra read): successful and
  failed CAS per second, for arendezvous and for redis-py.

The two sides run in alternating rounds, so drift of a shared machine hits both alike; every row
is bounded by ``--seconds`` (and a cap on operations per round). Goal: ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks._measure

import redis.asyncio
from benchmarks import _measure
from benchmarks._measure import Op, Writer, comparison_row

from arendezvous.backends.redis import SET_STATE_SCRIPT, RedisBackend, RedisToken
from arendezvous.backends.redis._members import member_key
from arendezvous.backends.redis._protocol import SET_STATE_SHA
from servers.redis import RedisServer

ROUNDS = 4
MAX_OPS_PER_ROUND = 20_000
WRITERS = 8


async def compare(ours: Op, raw: Op, seconds: float) -> tuple[list[float], list[float]]:
    """Latencies of both sides, measured in alternating rounds after a short warm-up each."""
    return await _measure.compare(
        ours, raw, seconds, rounds=ROUNDS, max_ops=MAX_OPS_PER_ROUND, warmup=200
    )


class RawWriter:
    """The backend's compare-and-swap done by hand: the same EVALSHA, the token from replies."""

    def __init__(
        self, client: redis.asyncio.Redis, key: bytes, member_key: bytes, token: RedisToken
    ) -> None:
        self.client = client
        self.key = key
        self.member_key = member_key
        self.incarnation = token.incarnation
        self.counter = token.counter
        self.prefix = os.urandom(8).hex()
        self.calls = itertools.count()

    async def set_state(self, state: bytes) -> bool:
        writer = f"{self.prefix}-{next(self.calls)}"
        reply: Any = await self.client.evalsha(
            SET_STATE_SHA, 2, self.key, self.member_key, state, b"1", self.incarnation,
            self.counter, writer, b"0",  # no expiry, as the backend without expire_after
        )
        self.counter = int(reply[2])
        return bool(reply[0] == 1)


async def race(writers: list[Writer], seconds: float) -> tuple[int, int]:
    """Run every writer's CAS loop concurrently for *seconds*; return (successes, failures)."""
    return await _measure.race(writers, seconds, MAX_OPS_PER_ROUND)


async def main(port: int, seconds: float, state_size: int) -> None:
    payload = os.urandom(state_size)
    host = "127.0.0.1"
    backend = RedisBackend(f"bench-{uuid.uuid4().hex}", host=host, port=port)
    client = redis.asyncio.Redis(host=host, port=port)
    await client.script_load(SET_STATE_SCRIPT)
    print(f"redis-py {redis.__version__}, state {state_size} bytes, {seconds:g} s per row\n")
    print("| operation | arendezvous ops/s | p50 us | p99 us | redis-py ops/s | p50 us | p99 us "
          "| ratio |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    _, token, _ = await backend.set_state(payload)
    key = backend.key

    async def raw_get() -> object:
        return await client.hgetall(key)

    ours, raw = await compare(backend.get_state, raw_get, seconds)
    print(comparison_row("get_state vs HGETALL", ours, raw))

    current: list[Any] = [token]

    async def our_set() -> object:
        _, current[0], written = await backend.set_state(payload, current[0])
        assert written
        return written

    raw_backend = RedisBackend(f"bench-raw-{uuid.uuid4().hex}", host=host, port=port)
    _, raw_token, _ = await raw_backend.set_state(payload)
    assert isinstance(raw_token, RedisToken)
    raw_writer = RawWriter(client, raw_backend.key, member_key(raw_backend.key), raw_token)

    async def raw_set() -> object:
        written = await raw_writer.set_state(payload)
        assert written
        return written

    ours, raw = await compare(our_set, raw_set, seconds)
    print(comparison_row("set_state vs EVALSHA", ours, raw))

    # -- racing writers ----------------------------------------------------------------------
    run_id = f"bench-race-{uuid.uuid4().hex}"
    handles = [RedisBackend(run_id, host=host, port=port) for _ in range(WRITERS)]
    _, start_token, _ = await handles[0].set_state(payload)
    tokens: list[Any] = [start_token] * WRITERS

    def our_writer(index: int) -> Callable[[], Awaitable[bool]]:
        async def write() -> bool:
            _, tokens[index], written = await handles[index].set_state(payload, tokens[index])
            return written

        return write

    raw_clients = [redis.asyncio.Redis(host=host, port=port) for _ in range(WRITERS)]
    raw_run = RedisBackend(f"bench-race-raw-{uuid.uuid4().hex}", host=host, port=port)
    _, raw_start, _ = await raw_run.set_state(payload)
    assert isinstance(raw_start, RedisToken)
    raw_members = member_key(raw_run.key)
    raw_writers = [RawWriter(c, raw_run.key, raw_members, raw_start) for c in raw_clients]
    our_writers = [our_writer(index) for index in range(WRITERS)]
    raw_calls: list[Callable[[], Awaitable[bool]]] = [
        functools.partial(writer.set_state, payload) for writer in raw_writers
    ]
    await race(our_writers, 0.1)  # warm-up: open every connection
    await race(raw_calls, 0.1)
    totals = {"ours": [0, 0, 0.0], "raw": [0, 0, 0.0]}
    per_round = seconds / ROUNDS / 2
    for _ in range(ROUNDS):
        for side, writers in (("ours", our_writers), ("raw", raw_calls)):
            started = time.perf_counter()
            ok, failed = await race(writers, per_round)
            totals[side][0] += ok
            totals[side][1] += failed
            totals[side][2] += time.perf_counter() - started
    ours_ok, ours_failed, ours_time = totals["ours"]
    raw_ok, raw_failed, raw_time = totals["raw"]
    print(
        f"\n| {WRITERS} racing writers | successful CAS/s | failed CAS/s |\n|---|---:|---:|\n"
        f"| arendezvous | {ours_ok / ours_time:,.0f} | {ours_failed / ours_time:,.0f} |\n"
        f"| redis-py EVALSHA | {raw_ok / raw_time:,.0f} | {raw_failed / raw_time:,.0f} |\n"
        f"| ratio (successful) | {(ours_ok / ours_time) / (raw_ok / raw_time):.2f} | |"
    )

    for handle in (backend, raw_backend, raw_run, *handles):
        await handle.aclose()
    for c in (client, *raw_clients):
        await c.aclose()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="measurement time per row")
    parser.add_argument("--state-size", type=int, default=256, help="bytes of state written")
    args = parser.parse_args()
    with RedisServer() as server:
        asyncio.run(main(server.port, args.seconds, args.state_size))


if __name__ == "__main__":
    cli()
