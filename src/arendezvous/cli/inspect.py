"""``arendezvous inspect URL RUN``: print a run's stored state, as an operator's first look.

It reads the state once with ``get_state`` and prints its size, its token and its bytes (UTF-8,
undecodable bytes escaped); a run that was never written says so.
"""

from __future__ import annotations

import argparse

import anyio

from ..backends._url import open_backend

__all__ = ("add_inspect_command",)


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


def add_inspect_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``inspect`` on the ``arendezvous`` command's subparsers, with its handler."""
    inspect = subparsers.add_parser("inspect", help="print a run's stored state")
    inspect.add_argument("url", help="backend URL, e.g. file:///tmp/rdzv")
    inspect.add_argument("run_id", help="the run id")
    inspect.set_defaults(handler=_inspect)
