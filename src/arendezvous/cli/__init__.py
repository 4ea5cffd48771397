"""The ``arendezvous`` command (also ``python -m arendezvous``): the parser and ``main``.

Each command lives in its own module of this package and registers itself on the parser:
:mod:`~arendezvous.cli.demo` (nodes form rounds through the async rendezvous),
:mod:`~arendezvous.cli.runs` (the runs a store holds), :mod:`~arendezvous.cli.inspect` (a run's
rendezvous, decoded, once or as it changes), :mod:`~arendezvous.cli.close` (close a run from
outside), :mod:`~arendezvous.cli.delete` (delete a closed run) and :mod:`~arendezvous.cli.check`
(race clients against a store under faults and check the history is linearizable).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._errors import RendezvousError
from .check import add_check_command
from .close import add_close_command
from .delete import add_delete_command
from .demo import add_demo_command
from .inspect import add_inspect_command
from .runs import add_runs_command

__all__ = ("build_parser", "main")

_DESCRIPTION = (
    "Async rendezvous backends: the demo, listing, inspecting, closing and deleting runs, and a "
    "fault checker."
)

_EXPECTED = (RendezvousError, ValueError, ImportError)
"""Errors a command reports in one line (exit status 1) instead of a traceback: a store that
cannot be reached, a bad URL or option, a missing extra. Their messages never hold credentials."""


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, every command registered (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="arendezvous", description=_DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    add_demo_command(commands)
    add_runs_command(commands)
    add_inspect_command(commands)
    add_close_command(commands)
    add_delete_command(commands)
    add_check_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on *argv* (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except Exception as exc:  # filtered just below: only the expected kinds are reported
        expected = _expected_errors(exc)
        if not expected:
            raise
        # Nodes of the demo fail together against a store that is down: say each thing once.
        for message in dict.fromkeys(str(error) for error in expected):
            print(f"arendezvous: {message}", file=sys.stderr)
        return 1
    return status


def _expected_errors(exc: BaseException) -> list[BaseException]:
    """*exc*, or every error inside it if it is an exception group; empty if any is unexpected.

    Commands that run tasks (the demo's nodes) see errors wrapped in an exception group. The
    group is recognised by its ``exceptions`` tuple because the ``ExceptionGroup`` builtin only
    exists from Python 3.11 on.
    """
    nested = getattr(exc, "exceptions", None)
    if not isinstance(nested, tuple):
        return [exc] if isinstance(exc, _EXPECTED) else []
    leaves = [_expected_errors(inner) for inner in nested]
    if not all(leaves):
        return []
    return [leaf for group in leaves for leaf in group]
