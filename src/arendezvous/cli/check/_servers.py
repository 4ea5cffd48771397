"""The throwaway servers ``check --start`` runs: which launcher, how it is started, its URL."""

from __future__ import annotations

import importlib
import os
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

__all__ = (
    "CALL_TIMEOUT",
    "SERVERS",
    "Server",
    "ServerKind",
    "server_environment",
    "start_server",
    "with_timeout",
)

CALL_TIMEOUT = 2.0
"""Seconds per call on a server the harness starts: an outage shows as an error this soon."""


class ServerKind(NamedTuple):
    """One server ``--start`` can run."""

    #: The module of its launcher in :mod:`arendezvous.testing.servers`, and the launcher class.
    module: str
    launcher: str
    #: The server program's name, as the progress lines show it.
    program: str
    #: Seconds per call of the clients (the URL's ``timeout``).
    call_timeout: float = CALL_TIMEOUT


SERVERS = {
    "redis": ServerKind("arendezvous.testing.servers.redis", "RedisServer", "redis-server"),
    "etcd": ServerKind("arendezvous.testing.servers.etcd", "EtcdServer", "etcd"),
    "postgresql": ServerKind("arendezvous.testing.servers.postgres", "PostgresServer", "postgres"),
    # SeaweedFS makes racing conditional writes of one object wait for each other in steps of
    # about a second (docs/s3.md): with 2 s per call, a client would count such a wait as an
    # outage; a killed server still fails calls at once (the connection is refused).
    "seaweedfs": ServerKind(
        "arendezvous.testing.servers.seaweedfs", "SeaweedFSServer", "weed", call_timeout=15.0
    ),
}
"""``--start`` name -> what runs it."""


class Server(Protocol):
    """What the harness uses of the launchers in :mod:`arendezvous.testing.servers`."""

    @property
    def url(self) -> str: ...

    def start(self) -> Any: ...

    def kill(self) -> None: ...

    def stop(self) -> None: ...


def start_server(kind: str) -> Server:
    """Start a server of *kind* (a key of :data:`SERVERS`) on 127.0.0.1; stopped again on failure.

    The launcher is imported only here: a check of a URL never imports the test kit's servers.
    """
    server_kind = SERVERS[kind]
    launcher = getattr(importlib.import_module(server_kind.module), server_kind.launcher)
    extra: dict[str, Any] = {}
    if kind == "redis":
        # Durable across a SIGKILL: every write reaches the append-only file before the reply.
        extra["extra_args"] = ("--appendonly", "yes", "--appendfsync", "always")
    server: Server = launcher(**extra)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def server_environment(server: Server | None) -> Iterator[None]:
    """Within the block, this process's environment (and so its worker processes') holds what
    clients of *server* need besides its URL: for SeaweedFS, where botocore finds the
    credentials files (the files' names only; no secret goes into the environment)."""
    extra: Mapping[str, str] = getattr(server, "environ", {})
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def with_timeout(url: str, seconds: float = CALL_TIMEOUT) -> str:
    """*url* with the ``timeout`` option set to *seconds*."""
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    query.append(("timeout", f"{seconds:g}"))
    return urllib.parse.urlunsplit(parsed._replace(query=urllib.parse.urlencode(query)))
