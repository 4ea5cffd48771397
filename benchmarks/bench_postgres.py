"""The PostgreSQL backend against asyncpg doing the same statements by hand, in the same run.

    python benchmarks/bench_postgres.py [--seconds 2.0] [--state-size 256]

Starts its own throwaway server on 127.0.0.1 (the test launcher, ``tests/servers/postgres.py``)
and prints one table:

* ``get_state``: the backend vs one raw asyncpg connection running the same ``SELECT``;
* ``set_state``: a winning CAS (the token is always current) vs the same single ``UPDATE``
  statement with the same pre-encoded bytes on one raw connection;
* ``get_state`` vs the same ``SELECT`` through a stock ``asyncpg.Pool`` (why the backend keeps
  its own small pool: the stock one resets each connection on release, a second round trip);
* 8 racing writers: 8 handles (8 pools) hammering one run, each writing with the last token it
  saw, vs 8 raw connections running the same statement; successful and failed CAS per second.

The raw side is the floor: no pool, no timeout, no encoding, no error mapping. Ten short rounds
alternate between the two sides; ops/s is the median round's, the ratio the median of the rounds'
arendezvous/raw ratios (goal >= 0.8), so a burst of load from a neighbour slows both sides alike
or is voted out. Every loop stops after ``--seconds`` per side or 200,000 ops.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks._measure

import asyncpg
from benchmarks import _measure
from benchmarks._measure import Op, Writer, percentile

from arendezvous.backends.postgres import PostgresBackend, PostgresToken
from arendezvous.backends.postgres._sql import channel, encode
from servers.postgres import PostgresServer

MAX_OPS = 200_000
ROUNDS = 10
WRITERS = 8


class Samples:
    """Per-op latencies (ns), and the rate of each round."""

    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.round_rates: list[float] = []

    def rate(self) -> float:
        return statistics.median(self.round_rates)

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) / 1000


async def timed(op: Op, seconds: float, samples: Samples) -> None:
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    start = clock()
    count = 0
    while count < MAX_OPS // ROUNDS:
        before = clock()
        await op()
        after = clock()
        samples.latencies.append(after - before)
        count += 1
        if after > deadline:
            break
    samples.round_rates.append(count / ((clock() - start) / 1e9))


async def compare(
    ours: Op, raw: Op, seconds: float, before_round: Callable[[bool], None] = lambda ours: None
) -> tuple[Samples, Samples, float]:
    """Alternate rounds of *ours* and *raw*; return both and the median of per-round ratios.

    The median of ratios of neighbouring rounds shrugs off a burst of load from other processes
    on the machine better than a ratio of totals does.
    """
    mine, theirs = Samples(), Samples()
    for _ in range(50):  # warm-up: connections, prepared statements
        before_round(True)
        await ours()
        before_round(False)
        await raw()
    for index in range(ROUNDS):
        # Alternate which side goes first, so neither always follows the other's cache effects.
        first_ours = index % 2 == 0
        for is_ours in (first_ours, not first_ours):
            before_round(is_ours)
            await timed(ours if is_ours else raw, seconds / ROUNDS, mine if is_ours else theirs)
    ratios = [a / b for a, b in zip(mine.round_rates, theirs.round_rates, strict=True)]
    return mine, theirs, statistics.median(ratios)


async def race(writers: list[Writer], seconds: float) -> tuple[int, int]:
    """Run every writer in a loop for *seconds*; return (successful, failed) CAS counts."""
    return await _measure.race(writers, seconds, MAX_OPS // len(writers))


async def main(dsn: str, seconds: float, state_size: int) -> list[tuple[str, ...]]:
    payload = os.urandom(state_size)
    stored = encode(payload)
    table = "bench_state"
    run_id = f"bench-{uuid.uuid4().hex}"
    rows: list[tuple[str, ...]] = []

    backend = PostgresBackend(dsn, run_id, table=table)
    raw = await asyncpg.connect(dsn)
    stock_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        _, token, _ = await backend.set_state(payload)
        assert type(token) is PostgresToken
        # Both sides write the same row with the same statement, taking turns: the token chain
        # is handed over between rounds, outside the timed loops.
        mine: dict[str, Any] = {"token": token}
        theirs = {"version": token.version}
        run_channel = channel(table, run_id)

        active = {"ours": False}

        def hand_over(to_ours: bool) -> None:
            if to_ours and not active["ours"]:
                mine["token"] = PostgresToken(token.incarnation, theirs["version"])
            elif not to_ours and active["ours"]:
                theirs["version"] = mine["token"].version
            active["ours"] = to_ours

        async def ours_get() -> object:
            return await backend.get_state()

        async def raw_get() -> object:
            return await raw.fetchrow(backend._sql.get, run_id)

        async def stock_pool_get() -> object:
            async with stock_pool.acquire() as connection:
                return await connection.fetchrow(backend._sql.get, run_id)

        async def ours_set() -> object:
            _, mine["token"], written = await backend.set_state(payload, mine["token"])
            assert written
            return written

        async def raw_set() -> object:
            row = await raw.fetchrow(
                backend._sql.update, run_id, theirs["version"], token.incarnation, stored,
                run_channel, stored, None,  # no expire_after, as the backend here
            )  # fmt: skip
            assert row["written"]
            theirs["version"] = row["version"]
            return row

        for name, ours_op, raw_op in (
            ("get_state", ours_get, raw_get),
            ("set_state (CAS wins)", ours_set, raw_set),
            ("get_state vs asyncpg.Pool", ours_get, stock_pool_get),
        ):
            hook = hand_over if ours_op is ours_set else (lambda ours: None)
            ours_samples, raw_samples, ratio = await compare(ours_op, raw_op, seconds, hook)
            rows.append(
                (
                    name,
                    f"{ours_samples.rate():,.0f}",
                    f"{ours_samples.percentile(0.5):.0f} / {ours_samples.percentile(0.99):.0f}",
                    f"{raw_samples.rate():,.0f}",
                    f"{raw_samples.percentile(0.5):.0f} / {raw_samples.percentile(0.99):.0f}",
                    f"{ratio:.2f}",
                )
            )
    finally:
        await stock_pool.close()
        await raw.close()
        await backend.aclose()

    # -- racing writers: 8 handles, then 8 raw connections, on one run each ------------------
    race_run = f"race-{uuid.uuid4().hex}"
    handles = [PostgresBackend(dsn, race_run, table=table) for _ in range(WRITERS)]
    raws = [await asyncpg.connect(dsn) for _ in range(WRITERS)]
    try:
        _, first, _ = await handles[0].set_state(payload)

        def backend_writer(handle: PostgresBackend) -> Callable[[], Awaitable[bool]]:
            seen = {"token": first}

            async def write() -> bool:
                _, seen["token"], written = await handle.set_state(payload, seen["token"])
                return written

            return write

        ours_won, ours_lost = await race([backend_writer(h) for h in handles], seconds)

        state = await handles[0].get_state()
        assert state is not None
        incarnation = state[1].incarnation  # type: ignore[attr-defined]
        race_channel = channel(table, race_run)

        def raw_writer(connection: Any) -> Callable[[], Awaitable[bool]]:
            seen = {"version": state[1].version}  # type: ignore[attr-defined]

            async def write() -> bool:
                row = await connection.fetchrow(
                    handles[0]._sql.update,
                    race_run,
                    seen["version"],
                    incarnation,
                    stored,
                    race_channel,
                    stored,
                    None,  # no expire_after
                )
                seen["version"] = row["version"]
                return bool(row["written"])

            return write

        raw_won, raw_lost = await race([raw_writer(c) for c in raws], seconds)
    finally:
        for connection in raws:
            await connection.close()
        for handle in handles:
            await handle.aclose()
    ours_total = (ours_won + ours_lost) / seconds
    raw_total = (raw_won + raw_lost) / seconds
    rows.append(
        (
            f"{WRITERS} racing writers: won / lost per s",
            f"{ours_won / seconds:,.0f} / {ours_lost / seconds:,.0f}",
            "",
            f"{raw_won / seconds:,.0f} / {raw_lost / seconds:,.0f}",
            "",
            f"{ours_total / raw_total:.2f}",
        )
    )
    return rows


def print_table(rows: list[tuple[str, ...]], state_size: int) -> None:
    header = (
        f"operation ({state_size} B state)",
        "arendezvous ops/s",
        "p50 / p99 us",
        "raw asyncpg ops/s",
        "p50 / p99 us",
        "ratio",
    )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print("| " + " | ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per side and row (<= 30)")
    parser.add_argument("--state-size", type=int, default=256, help="bytes per state")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 0.1), 30.0)
    with PostgresServer() as server:
        rows = anyio.run(main, server.dsn, seconds, args.state_size)
        version = server.postgres.split("/")[-3]
    print(f"PostgreSQL {version} on 127.0.0.1 (fsync off), asyncpg {asyncpg.__version__}")
    print_table(rows, args.state_size)


if __name__ == "__main__":
    cli()
