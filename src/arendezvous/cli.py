"""The ``arendezvous`` command (also ``python -m arendezvous``): the demo and a state inspector."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import anyio

from ._check import add_check_command
from ._errors import RendezvousError
from .backends._url import open_backend

__all__ = ("main",)


def _demo(args: argparse.Namespace) -> int:
    from ._demo import print_summary, run_demo

    result = anyio.run(
        lambda: run_demo(
            args.nodes, url=args.url, run_id=args.run_id, latency=args.latency, seed=args.seed,
            out=sys.stdout,
        ),
        backend=args.event_loop,
    )
    print_summary(result, sys.stdout)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    async def read() -> None:
        async with open_backend(args.url, run_id=args.run_id) as backend:
            current = await backend.get_state()
        if current is None:
            print(f"run {args.run_id!r}: no state")
            return
        state, token = current
        print(f"run {args.run_id!r}: {len(state)} bytes, token {token!r}")
        print(state.decode("utf-8", "backslashreplace"))

    anyio.run(read)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="arendezvous", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
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

    inspect = commands.add_parser("inspect", help="print a run's stored state")
    inspect.add_argument("url", help="backend URL, e.g. file:///tmp/rdzv")
    inspect.add_argument("run_id", help="the run id")
    inspect.set_defaults(handler=_inspect)

    add_check_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "nodes", 1) < 1:
        print("arendezvous: --nodes must be at least 1", file=sys.stderr)
        return 2
    try:
        status: int = args.handler(args)
    except (RendezvousError, ValueError, ImportError) as exc:
        print(f"arendezvous: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
