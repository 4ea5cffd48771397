"""Throwaway store servers for tests: the package's launchers, with a test's view of a missing one.

The launchers live in :mod:`arendezvous.testing.servers` (``arendezvous check --start`` uses them
too); the modules here subclass them so that a missing server binary fails the test in CI (``CI``
set: CI installs every server) and skips it locally with a loud reason naming the package to
install, instead of raising ``FileNotFoundError``.
"""

from __future__ import annotations

from typing import Any

from _missing import missing
from arendezvous.testing.servers import ServerNotFoundError, free_port
from arendezvous.testing.servers import find_binary as _find_binary

__all__ = ("find_binary", "free_port")


def find_binary(name: str, **where: Any) -> str:
    """The path of server binary *name*, or fail (CI) / skip loudly (locally) if missing; *where*
    are the keyword arguments of :func:`arendezvous.testing.servers.find_binary`."""
    try:
        return _find_binary(name, **where)
    except ServerNotFoundError as absent:
        reason = str(absent)
    missing(reason)
