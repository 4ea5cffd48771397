"""A throwaway etcd server for tests: :mod:`arendezvous.testing.servers.etcd`.

A missing binary fails the test in CI and skips it locally (see :func:`servers.find_binary`).
"""

from __future__ import annotations

from arendezvous.testing.servers import etcd as _launcher

from . import find_binary

__all__ = ("EtcdServer",)


class EtcdServer(_launcher.EtcdServer):
    """The package\'s launcher, but a missing binary skips (locally) or fails (CI) the test."""

    find_binary = staticmethod(find_binary)
