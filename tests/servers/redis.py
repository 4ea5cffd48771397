"""A throwaway Redis server for tests: :mod:`arendezvous.testing.servers.redis`.

A missing binary fails the test in CI and skips it locally (see :func:`servers.find_binary`).
"""

from __future__ import annotations

from arendezvous.testing.servers import redis as _launcher

from . import find_binary

__all__ = ("RedisServer",)


class RedisServer(_launcher.RedisServer):
    """The package\'s launcher, but a missing binary skips (locally) or fails (CI) the test."""

    find_binary = staticmethod(find_binary)
