"""A throwaway SeaweedFS S3 store for tests: :mod:`arendezvous.testing.servers.seaweedfs`.

A missing binary fails the test in CI and skips it locally (see :func:`servers.find_binary`).
"""

from __future__ import annotations

from arendezvous.testing.servers import seaweedfs as _launcher

from . import find_binary

__all__ = ("SeaweedFSServer",)


class SeaweedFSServer(_launcher.SeaweedFSServer):
    """The package\'s launcher, but a missing binary skips (locally) or fails (CI) the test."""

    find_binary = staticmethod(find_binary)
