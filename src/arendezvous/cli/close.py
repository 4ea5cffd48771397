"""``arendezvous close URL RUN``: close a run's rendezvous for every node, without joining it.

Nodes waiting in ``next_rendezvous()`` get ``RendezvousClosedError`` and new joins are refused;
participants waiting for their round's end see it closed. A run that has no rendezvous is an
error (a mistyped run id should not create one); closing a closed run says so and succeeds.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from ..backends._url import open_backend
from ..backends._urlparse import redact_url
from ..rendezvous import close_run, read_status

__all__ = ("add_close_command",)


async def _close(args: argparse.Namespace) -> int:
    async with open_backend(args.url, run_id=args.run_id) as backend:
        if not (await read_status(backend)).exists:
            print(f"arendezvous: run {args.run_id!r} has no rendezvous on {redact_url(args.url)}; "
                  "nothing to close", file=sys.stderr)
            return 1
        closed = await close_run(backend)
    print(f"run {args.run_id!r}: " + ("closed" if closed else "was already closed"))
    return 0


def add_close_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``close`` on the ``arendezvous`` command's subparsers, with its handler."""
    close = subparsers.add_parser("close", help="close a run for every node, without joining it")
    close.add_argument("url", help="backend URL, e.g. redis://127.0.0.1:6379/0")
    close.add_argument("run_id", help="the run id")
    close.set_defaults(handler=lambda args: anyio.run(_close, args))
