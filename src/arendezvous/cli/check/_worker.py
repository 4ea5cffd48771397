"""A worker process: one client of ``arendezvous check --faults kill-writer``, run to be killed.

``python -m arendezvous.cli.check._worker --run-id R ... --client C --ops N ...``, with the store's
URL in the environment variable ``ARENDEZVOUS_CHECK_URL`` -- not on the command line, where any
user of the machine could read a password in it. It records its history to its own JSON-lines
file, flushed event by event, and tells the harness on stdout, one line per call, what it is doing
(the harness counts progress and times its kills from that).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import anyio
import anyio.to_thread

from ...testing.history import Outcome, Recorder
from ._handles import close_handles, open_handles
from ._tokens import StoreTokenCodec
from ._workload import Kind, run_client

__all__ = ("MODULE", "URL_VARIABLE", "main", "worker_command", "worker_environment")

URL_VARIABLE = "ARENDEZVOUS_CHECK_URL"
"""The environment variable that hands a worker the store's URL."""

MODULE = "arendezvous.cli.check._worker"
"""This module's name, as ``python -m`` runs it."""


def worker_command(
    run_ids: Sequence[str],
    *,
    client: str,
    ops: int,
    seed: int,
    history: str,
    deadline_ns: int,
    event_loop: str,
) -> list[str]:
    """The command line of one worker process (see :func:`main`); the URL is not on it."""
    command = [sys.executable, "-m", MODULE]
    for run_id in run_ids:
        command += ["--run-id", run_id]
    command += [
        "--client", client,
        "--ops", str(ops),
        "--seed", str(seed),
        "--history", history,
        "--deadline-ns", str(deadline_ns),
        "--event-loop", event_loop,
    ]  # fmt: skip
    return command


def worker_environment(url: str) -> dict[str, str]:
    """The environment of a worker process: this process's, plus the store's *url*."""
    return {**os.environ, URL_VARIABLE: url}


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def _work(url: str, args: argparse.Namespace, out: TextIO) -> None:
    def announce(kind: Kind) -> None:
        _say(out, f"> {kind}")

    with Recorder(args.history, source=args.client, codec=StoreTokenCodec()) as recorder:
        handles = open_handles(url, args.run_id, recorder, args.client, announce=announce)
        try:
            _say(out, "ready")
            # Start together with the other workers: the harness says when.
            if (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() != "go":
                return
            done = 0

            def take() -> bool:
                nonlocal done
                if done >= args.ops or time.monotonic_ns() >= args.deadline_ns:
                    return False
                done += 1
                return True

            async def completed(kind: Kind, outcome: Outcome, error: BaseException | None) -> None:
                detail = "" if error is None else f" {type(error).__name__}"
                _say(out, f"< {outcome}{detail}")

            await run_client(
                args.client,
                handles,
                random.Random(args.seed),
                take,
                on_complete=completed,
            )
        finally:
            await close_handles(handles)
    _say(out, "done")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m arendezvous.cli.check._worker --run-id R ... --client C --ops N ...``.

    The store's URL comes from the environment variable :data:`URL_VARIABLE`. Protocol on
    stdout: ``ready`` once the handles are open; after ``go`` on stdin, ``> KIND`` as each call
    reaches the store (its invocation already recorded) and ``< OUTCOME [ERROR]`` after it;
    ``done`` at the end. The history goes to ``--history`` as JSON lines, flushed event by event,
    so a SIGKILL loses nothing recorded.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--run-id", action="append", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--ops", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--history", required=True)
    parser.add_argument("--deadline-ns", type=int, required=True)
    parser.add_argument("--event-loop", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    url = os.environ.get(URL_VARIABLE)
    if not url:
        parser.error(f"the store's URL goes in the environment variable {URL_VARIABLE}")
    anyio.run(_work, url, args, sys.stdout, backend=args.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
