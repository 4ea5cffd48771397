"""``arendezvous demo``: N nodes form rounds through the async rendezvous: joins, ranks, a dropout.

The command's arguments and handler are here; the play itself is :func:`run_demo` (its four acts
are described there) and the closing tables :func:`print_summary`. ``scripts/demo`` runs it.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from ._play import run_demo
from ._result import DemoResult, RoundSummary, print_summary

__all__ = ("DemoResult", "RoundSummary", "add_demo_command", "print_summary", "run_demo")


def _demo(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        print("arendezvous: --nodes must be at least 1", file=sys.stderr)
        return 2
    result = anyio.run(
        lambda: run_demo(
            args.nodes, url=args.url, run_id=args.run_id, latency=args.latency, seed=args.seed,
            out=sys.stdout,
        ),
        backend=args.event_loop,
    )
    print_summary(result, sys.stdout)
    return 0


def add_demo_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo`` on the ``arendezvous`` command's subparsers, with its handler."""
    demo = subparsers.add_parser(
        "demo", help="nodes form rounds through the async rendezvous: joins, ranks, a dropout"
    )
    demo.add_argument("--nodes", "-n", type=int, default=8, help="how many nodes (default 8)")
    demo.add_argument("--url", default="memory://", help="backend URL (default memory://)")
    demo.add_argument("--run-id", default=None, help="run id (default: a fresh one)")
    demo.add_argument("--latency", type=float, default=0.002,
                      help="max simulated network seconds before each write (default 0.002)")
    demo.add_argument("--seed", type=int, default=None, help="random seed for the latencies")
    demo.add_argument("--event-loop", choices=["asyncio", "trio"], default="asyncio")
    demo.set_defaults(handler=_demo)
