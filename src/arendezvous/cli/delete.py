"""``arendezvous delete URL RUN``: delete a run from its store -- its state and member records.

A run whose rendezvous is not closed may still be in use: deleting it would make its nodes start
it again from nothing, so ``delete`` refuses it (exit status 1) and says how to close it first,
unless ``--force`` is given; so it does for a run holding state that is not a rendezvous. A run
the store does not hold is an error too (a mistyped run id deletes nothing). On success it says
what it deleted. Credentials in the URL are never printed.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from .._errors import RendezvousStateError
from ..backends._url import open_backend
from ..backends._urlparse import redact_url
from ..rendezvous import RunStatus, read_status

__all__ = ("add_delete_command", "describe_deleted")


def describe_deleted(run_id: str, size: int | None, status: RunStatus | None) -> str:
    """What ``delete`` says it deleted: the run, its state's size, and the rendezvous it held
    (*status*; ``None``: the state was not a rendezvous)."""
    held = "no state" if size is None else f"{size} bytes of state"
    if status is None:
        what = "not a rendezvous"
    elif not status.exists:
        what = "no rendezvous record"
    else:
        joined = len(status.participants)
        what = (f"round {status.round}, {'closed' if status.closed else 'NOT closed'}, "
                f"{joined} participant{'' if joined == 1 else 's'}")
        if status.waiting:
            what += f", {len(status.waiting)} waiting"
    return f"deleted run {run_id!r}: {held} ({what}) and any member records"


async def _delete(args: argparse.Namespace) -> int:
    url = redact_url(args.url)
    async with open_backend(args.url, run_id=args.run_id) as backend:
        current = await backend.get_state()
        status: RunStatus | None
        try:
            status = await read_status(backend)
        except RendezvousStateError:
            status = None  # another program's state
        if not args.force:
            if status is None:
                print(f"arendezvous: run {args.run_id!r} on {url} holds state that is not a "
                      "rendezvous; --force deletes it anyway", file=sys.stderr)
                return 1
            if status.exists and not status.closed:
                print(f"arendezvous: run {args.run_id!r} on {url} is not closed (round "
                      f"{status.round}): its nodes may still use it. Close it first "
                      f"(arendezvous close URL {args.run_id}), or pass --force", file=sys.stderr)
                return 1
        # A closed run stays closed, so what was checked above still holds when it is deleted.
        try:
            deleted = await backend.delete_run()
        except NotImplementedError:
            print(f"arendezvous: the {backend.name} backend cannot delete runs ({url})",
                  file=sys.stderr)
            return 1
    if not deleted:
        print(f"arendezvous: no run {args.run_id!r} on {url}; nothing deleted", file=sys.stderr)
        return 1
    print(describe_deleted(args.run_id, None if current is None else len(current[0]), status))
    return 0


def add_delete_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``delete`` on the ``arendezvous`` command's subparsers, with its handler."""
    delete = subparsers.add_parser(
        "delete", help="delete a closed run: its state and member records"
    )
    delete.add_argument("url", help="backend URL, e.g. redis://127.0.0.1:6379/0")
    delete.add_argument("run_id", help="the run id")
    delete.add_argument("--force", action="store_true",
                        help="delete even a run that is not closed, or is not a rendezvous")
    delete.set_defaults(handler=lambda args: anyio.run(_delete, args))
