"""The S3 backend against aiobotocore's own client doing the same requests, measured in one run.

    python benchmarks/bench_s3.py [--seconds 2.0] [--state-size 256]

Starts a throwaway SeaweedFS S3 store on 127.0.0.1 (``tests/servers/seaweedfs.py``) and prints one
table:

* ``get_state`` vs ``get_object`` of the same key and reading its body (the one request it
  sends);
* ``set_state`` with the current token vs ``put_object`` with ``IfMatch`` of the ETag from the
  previous reply, a body of the same size whose first bytes change every time (as the backend's
  header does), on an aiobotocore client configured as the backend's is (no retries, no
  checksums the store does not require);
* 8 racing writers, each its own handle (its own client), doing CAS loops on one object: a loser
  re-reads with ``get_object`` (S3 does not return the current object on 412) and retries with
  what it read. Successful and failed CAS per second, for arendezvous and for aiobotocore.
  SeaweedFS makes racing conditional writes of one object wait for each other in steps of about
  a second, so these rows measure mostly that; they need a long ``--seconds`` to mean anything.

The two sides run in alternating rounds, so drift of a shared machine hits both alike; every row
is bounded by ``--seconds`` (and a cap on operations per round). Goal: ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks._measure

import aiobotocore
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from benchmarks import _measure
from benchmarks._measure import Op, Writer, comparison_row
from botocore.exceptions import ClientError

from arendezvous.backends.s3 import S3Backend
from servers.seaweedfs import SeaweedFSServer

ROUNDS = 4
MAX_OPS_PER_ROUND = 5_000
WRITERS = 8


async def compare(ours: Op, raw: Op, seconds: float) -> tuple[list[float], list[float]]:
    """Latencies of both sides, measured in alternating rounds after a short warm-up each."""
    return await _measure.compare(
        ours, raw, seconds, rounds=ROUNDS, max_ops=MAX_OPS_PER_ROUND, warmup=20
    )


class RawWriter:
    """A conditional PutObject loop done by hand: the ETag tracked from replies, a fresh body
    prefix per write (so every write changes the content, as the backend's header does)."""

    def __init__(self, client: Any, bucket: str, key: str, payload: bytes, etag: str) -> None:
        self.client, self.bucket, self.key, self.payload = client, bucket, key, payload
        self.etag = etag
        self.counter = 0

    async def set_state(self) -> bool:
        self.counter += 1
        body = os.urandom(16) + self.counter.to_bytes(8, "big") + self.payload
        try:
            reply = await self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, IfMatch=self.etag
            )
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] != 412:
                raise
            current = await self.client.get_object(Bucket=self.bucket, Key=self.key)
            async with current["Body"] as stream:
                await stream.read()
            self.etag = current["ETag"]
            return False
        self.etag = reply["ETag"]
        return True


async def race(writers: list[Writer], seconds: float) -> tuple[int, int]:
    """Run every writer's CAS loop concurrently for *seconds*; return (successes, failures)."""
    return await _measure.race(writers, seconds, MAX_OPS_PER_ROUND)


async def main(server: SeaweedFSServer, seconds: float, state_size: int) -> None:
    payload = os.urandom(state_size)
    bucket = server.bucket

    def handle(run_id: str) -> S3Backend:
        # SeaweedFS makes racing conditional writes of one object wait in steps of about a
        # second; a long timeout keeps such a wait from counting as an unreachable store (the raw
        # client's read timeout is botocore's default, 60 s).
        return S3Backend(
            bucket,
            run_id,
            endpoint_url=server.endpoint_url,
            region=server.region,
            profile=server.profile,
            timeout=30,
        )

    config = AioConfig(
        retries={"total_max_attempts": 1},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = AioSession(profile=server.profile)
    async with AsyncExitStack() as stack:

        async def raw_client() -> Any:
            return await stack.enter_async_context(
                session.create_client(
                    "s3", endpoint_url=server.endpoint_url, region_name=server.region, config=config
                )
            )

        client = await raw_client()
        print(f"aiobotocore {aiobotocore.__version__}, state {state_size} bytes, "
              f"{seconds:g} s per row\n")  # fmt: skip
        print("| operation | arendezvous ops/s | p50 us | p99 us | aiobotocore ops/s | p50 us "
              "| p99 us | ratio |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|")

        backend = handle(f"bench-{uuid.uuid4().hex}")
        _, token, _ = await backend.set_state(payload)

        async def raw_get() -> object:
            reply = await client.get_object(Bucket=bucket, Key=backend.key)
            async with reply["Body"] as stream:
                return await stream.read()

        ours, raw = await compare(backend.get_state, raw_get, seconds)
        print(comparison_row("get_state vs get_object", ours, raw))

        current: list[Any] = [token]

        async def our_set() -> object:
            _, current[0], written = await backend.set_state(payload, current[0])
            assert written
            return written

        raw_key = f"bench-raw-{uuid.uuid4().hex}"
        first = await client.put_object(Bucket=bucket, Key=raw_key, Body=payload, IfNoneMatch="*")
        raw_writer = RawWriter(client, bucket, raw_key, payload, first["ETag"])

        async def raw_set() -> object:
            written = await raw_writer.set_state()
            assert written
            return written

        ours, raw = await compare(our_set, raw_set, seconds)
        print(comparison_row("set_state vs put_object IfMatch", ours, raw))

        # -- racing writers ------------------------------------------------------------------
        run_id = f"bench-race-{uuid.uuid4().hex}"
        handles = [handle(run_id) for _ in range(WRITERS)]
        _, start_token, _ = await handles[0].set_state(payload)
        tokens: list[Any] = [start_token] * WRITERS

        def our_writer(index: int) -> Callable[[], Awaitable[bool]]:
            async def write() -> bool:
                _, tokens[index], written = await handles[index].set_state(payload, tokens[index])
                return written

            return write

        race_key = f"bench-race-raw-{uuid.uuid4().hex}"
        start = await client.put_object(Bucket=bucket, Key=race_key, Body=payload)
        raw_writers = [
            RawWriter(await raw_client(), bucket, race_key, payload, start["ETag"])
            for _ in range(WRITERS)
        ]
        our_writers = [our_writer(index) for index in range(WRITERS)]
        raw_calls: list[Callable[[], Awaitable[bool]]] = [w.set_state for w in raw_writers]
        await race(our_writers, 0.1)  # warm-up: open every client and connection
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
        raw_rate = raw_ok / raw_time
        ratio = f"{(ours_ok / ours_time) / raw_rate:.2f}" if raw_rate else "n/a"
        print(
            f"\n| {WRITERS} racing writers | successful CAS/s | failed CAS/s |\n|---|---:|---:|\n"
            f"| arendezvous | {ours_ok / ours_time:,.0f} | {ours_failed / ours_time:,.0f} |\n"
            f"| aiobotocore put_object IfMatch | {raw_rate:,.0f} "
            f"| {raw_failed / raw_time:,.0f} |\n"
            f"| ratio (successful) | {ratio} | |"
        )
        for backend_handle in (backend, *handles):
            await backend_handle.aclose()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="measurement time per row")
    parser.add_argument("--state-size", type=int, default=256, help="bytes of state written")
    args = parser.parse_args()
    with SeaweedFSServer() as server:
        os.environ.update(server.environ)
        asyncio.run(main(server, args.seconds, args.state_size))


if __name__ == "__main__":
    cli()
