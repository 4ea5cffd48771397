"""``arendezvous inspect URL RUN``: a run's rendezvous, decoded, once or as it changes.

It prints the round (and its unique id), whether it is open, complete or closed, its participants
with their ranks and how long ago each refreshed its record, and the nodes waiting for the next
round. ``--json`` prints the same as one JSON object per line; ``--follow`` prints it again each
time the round record changes (``--every S`` also every S seconds, since joins and heartbeats do
not change the record; ``--count N`` stops after N prints); ``--raw`` prints the stored bytes
instead, for a run that holds something else. Credentials in the URL are never printed.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from .._errors import RendezvousStateError
from ..backends._url import open_backend
from ..backends._urlparse import redact_url
from ..rendezvous import NodeStatus, RunStatus, follow_status

__all__ = ("add_inspect_command", "describe")


def _age(node: NodeStatus) -> str:
    if node.heartbeat_age is None:
        return ""
    return f"  heartbeat {node.heartbeat_age:.1f} s ago"


def describe(run_id: str, status: RunStatus) -> str:
    """*status* as the lines ``inspect`` prints."""
    if not status.exists:
        return f"run {run_id!r}: no rendezvous yet (no node has joined it)"
    if status.closed:
        state = "closed"
    elif status.complete:
        state = f"complete, world size {len(status.participants)}"
    else:
        joined = len(status.participants)
        call = ", last call running" if status.last_call else ""
        state = f"open, {joined} joined{call}"
    lines = [f"run {run_id!r}: round {status.round} ({status.round_id}), {state}"]
    for node in status.participants:
        where = f"rank {node.rank}" if node.rank is not None else "joined"
        lines.append(f"  {where:8s} {node.node}{_age(node)}")
    if status.waiting:
        lines.append(f"  waiting for round {(status.round or 0) + 1}:")
        for node in status.waiting:
            lines.append(f"           {node.node}{_age(node)}")
    return "\n".join(lines)


def _show(args: argparse.Namespace, status: RunStatus) -> None:
    if args.json:
        print(json.dumps({"run_id": args.run_id, **status.to_json()}), flush=True)
    else:
        print(describe(args.run_id, status), flush=True)


async def _raw(args: argparse.Namespace) -> int:
    async with open_backend(args.url, run_id=args.run_id) as backend:
        current = await backend.get_state()
    if current is None:
        print(f"arendezvous: run {args.run_id!r}: no state on {redact_url(args.url)}",
              file=sys.stderr)
        return 1
    state, token = current
    print(f"run {args.run_id!r}: {len(state)} bytes, token {token!r}")
    print(state.decode("utf-8", "backslashreplace"))
    return 0


async def _decoded(args: argparse.Namespace) -> int:
    printed = 0
    async with open_backend(args.url, run_id=args.run_id) as backend:
        try:
            async for status in follow_status(backend, every=args.every):
                if not status.exists and not args.follow:
                    print(f"arendezvous: run {args.run_id!r}: no rendezvous on "
                          f"{redact_url(args.url)}",
                          file=sys.stderr)
                    return 1
                _show(args, status)
                printed += 1
                if not args.follow or (args.count is not None and printed >= args.count):
                    return 0
        except RendezvousStateError as exc:
            raise RendezvousStateError(
                f"{exc} (run {args.run_id!r} may hold another program's state: --raw shows its "
                "bytes)"
            ) from exc
    return 0


def _inspect(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        print("arendezvous: --count must be at least 1", file=sys.stderr)
        return 2
    if args.every is not None and not args.every > 0:
        print("arendezvous: --every must be a positive number of seconds", file=sys.stderr)
        return 2
    if args.raw:
        return anyio.run(_raw, args)
    try:
        return anyio.run(_decoded, args)
    except KeyboardInterrupt:  # --follow ends with Ctrl-C
        return 0


def add_inspect_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``inspect`` on the ``arendezvous`` command's subparsers, with its handler."""
    inspect = subparsers.add_parser(
        "inspect", help="print a run's rendezvous: round, ranks, heartbeats, waiting nodes"
    )
    inspect.add_argument("url", help="backend URL, e.g. file:///tmp/rdzv")
    inspect.add_argument("run_id", help="the run id")
    inspect.add_argument("--json", action="store_true", help="one JSON object per line")
    inspect.add_argument("--follow", "-f", action="store_true",
                         help="print again each time the round record changes")
    inspect.add_argument("--every", type=float, default=None, metavar="S",
                         help="with --follow, also print every S seconds")
    inspect.add_argument("--count", type=int, default=None, metavar="N",
                         help="with --follow, stop after N prints")
    inspect.add_argument("--raw", action="store_true",
                         help="print the stored bytes and token instead of decoding them")
    inspect.set_defaults(handler=_inspect)
