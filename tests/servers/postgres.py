"""A throwaway PostgreSQL server for tests: :mod:`arendezvous.testing.servers.postgres`.

A missing binary fails the test in CI and skips it locally (see :func:`servers.find_binary`).
"""

from __future__ import annotations

from arendezvous.testing.servers import postgres as _launcher

from . import find_binary

__all__ = ("PostgresServer",)


class PostgresServer(_launcher.PostgresServer):
    """The package\'s launcher, but a missing binary skips (locally) or fails (CI) the test."""

    find_binary = staticmethod(find_binary)
