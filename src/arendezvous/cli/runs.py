"""``arendezvous runs URL``: the runs a store holds, with their age, size and member records.

One line per run, sorted by run id: the run id, how long ago it was last written (state or
member records, by the store's clock), the size of its state and how many member records it
holds; ``-`` where the store cannot tell. ``--json`` prints a JSON array of objects instead
(``run_id``, ``age`` in seconds, ``size`` in bytes, ``members``; ``null`` where unknown). A store
whose backend cannot list runs is a clear error, as is one that cannot be reached. Credentials in
the URL are never printed.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from .._backend import RunInfo
from ..backends._url import open_backend
from ..backends._urlparse import redact_url

__all__ = ("add_runs_command", "format_age", "format_runs")

# Listing needs a handle, and a handle names a run: this one, whose files or keys are never made
# by listing.
_LISTING_RUN_ID = "arendezvous-runs"


def format_age(seconds: float | None) -> str:
    """*seconds* for a person: ``"42 s"``, ``"7.5 min"``, ``"3.2 h"``, ``"12.0 d"``; ``"-"`` when
    unknown."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def format_runs(runs: list[RunInfo]) -> str:
    """*runs* as the table ``runs`` prints (sorted by run id), header included."""
    rows = [("RUN", "AGE", "SIZE", "MEMBERS")]
    for run in sorted(runs, key=lambda run: run.run_id):
        rows.append((
            run.run_id,
            format_age(run.age),
            "-" if run.size is None else f"{run.size} B",
            "-" if run.members is None else str(run.members),
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join(
        f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
        f"{row[3]:>{widths[3]}}".rstrip()
        for row in rows
    )


async def _runs(args: argparse.Namespace) -> int:
    async with open_backend(args.url, run_id=_LISTING_RUN_ID) as backend:
        try:
            runs = await backend.list_runs()
        except NotImplementedError:
            print(f"arendezvous: the {backend.name} backend cannot list runs "
                  f"({redact_url(args.url)})", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps([
            {"run_id": run.run_id, "age": run.age, "size": run.size, "members": run.members}
            for run in sorted(runs, key=lambda run: run.run_id)
        ]))
    elif runs:
        print(format_runs(runs))
    else:
        print(f"no runs on {redact_url(args.url)}")
    return 0


def add_runs_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``runs`` on the ``arendezvous`` command's subparsers, with its handler."""
    runs = subparsers.add_parser(
        "runs", help="list the runs of a store: run id, age, size, member records"
    )
    runs.add_argument("url", help="backend URL, e.g. file:///tmp/rdzv")
    runs.add_argument("--json", action="store_true", help="print a JSON array")
    runs.set_defaults(handler=lambda args: anyio.run(_runs, args))
