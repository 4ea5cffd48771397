"""``arendezvous check``'s arguments: registered on the ``arendezvous`` parser, or on their own."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from ._options import FAULTS, OPS_PER_KILL, CheckOptions
from ._run import run_check
from ._servers import SERVERS

__all__ = ("add_check_command", "main")


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


_DEFAULTS = CheckOptions()


def _handle(args: argparse.Namespace) -> int:
    fields = (field.name for field in dataclasses.fields(CheckOptions))
    return run_check(CheckOptions(**{name: getattr(args, name) for name in fields}))


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
        choices=list(SERVERS),
        help="start a throwaway server on 127.0.0.1 and check it (instead of a URL)",
    )
    counts = (
        ("--clients", _DEFAULTS.clients, "clients"),
        ("--ops", _DEFAULTS.ops, "operations in all"),
        ("--runs", _DEFAULTS.runs, "run ids (registers) in play"),
    )
    for flag, count, what in counts:
        parser.add_argument(
            flag, type=_positive_int, default=count, metavar="N", help=f"{what} (default {count})"
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
        help=f"how many faults to inject (default: one per {OPS_PER_KILL} ops, at least one)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="random seed (default: random)"
    )
    durations = (
        ("--time-limit", _DEFAULTS.time_limit, "stop starting operations after this many seconds"),
        (
            "--check-time",
            _DEFAULTS.check_time,
            "seconds the linearizability check may take before it answers unknown",
        ),
    )
    for flag, seconds, what in durations:
        parser.add_argument(
            flag, type=_seconds, default=seconds, metavar="S", help=f"{what} (default {seconds:g})"
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
