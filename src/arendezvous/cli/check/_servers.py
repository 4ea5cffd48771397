"""The throwaway servers ``check --start`` runs: which launcher, how it is started, its URL."""

from __future__ import annotations

import importlib
import urllib.parse
from typing import Any, Protocol

__all__ = ("CALL_TIMEOUT", "SERVERS", "Server", "start_server", "with_timeout")

SERVERS = {
    "redis": ("arendezvous.testing.servers.redis", "RedisServer", "redis-server"),
    "etcd": ("arendezvous.testing.servers.etcd", "EtcdServer", "etcd"),
    "postgresql": ("arendezvous.testing.servers.postgres", "PostgresServer", "postgres"),
}
"""``--start`` name -> (module, launcher class, the server program's name)."""

CALL_TIMEOUT = 2.0
"""Seconds per call on a server the harness starts: an outage shows as an error this soon."""


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
    module_name, class_name, _ = SERVERS[kind]
    launcher = getattr(importlib.import_module(module_name), class_name)
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


def with_timeout(url: str) -> str:
    """*url* with the ``timeout`` option set to :data:`CALL_TIMEOUT`."""
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    query.append(("timeout", f"{CALL_TIMEOUT:g}"))
    return urllib.parse.urlunsplit(parsed._replace(query=urllib.parse.urlencode(query)))
