"""A throwaway Redis (or Valkey) server on 127.0.0.1 in a temp dir (tests, benchmarks, ``check``).

``RedisServer().start()`` picks a free port, starts ``redis-server`` with persistence off and
returns once the server has answered ``PING`` with ``PONG`` over a real connection: readiness is
asked of the server itself, never guessed with a sleep. ``kill()`` sends SIGKILL (a crash);
``restart()`` starts it again on the same port and dir, so clients that stay open see the same
server come back (empty: nothing is persisted, unless ``extra_args`` turn the append-only file on,
as ``arendezvous check`` does). ``stop()`` ends it and removes the temp dir.

``RedisServer(tls=True)`` serves TLS only, with a throwaway CA and server certificate made by the
``openssl`` command; :attr:`RedisServer.url` then is a ``rediss://`` URL naming the CA file.

The binary is ``$ARENDEZVOUS_REDIS_SERVER`` if set (e.g. ``valkey-server``), else ``redis-server``.

Used as a context manager::

    with RedisServer() as server:
        backend = open_backend(server.url, run_id="r")
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

from . import free_port
from ._process import ServerProcess

__all__ = ("RedisServer",)


class RedisServer(ServerProcess):
    """One Redis server listening on 127.0.0.1; see the module docstring.

    :param startup_timeout: seconds to wait for readiness before giving up (the process is then
        killed and ``RuntimeError`` raised with the tail of its log).
    :param tls: serve TLS only (needs a server built with TLS and the ``openssl`` command).
    :param extra_args: more command-line arguments for ``redis-server``.

    A missing binary raises :class:`~arendezvous.testing.servers.ServerNotFoundError`; a
    subclass may replace the :meth:`find_binary` hook.
    """

    _name = "redis"
    _program = "redis-server"
    _port_in_use = "Address already in use"

    def __init__(
        self,
        *,
        startup_timeout: float = 20.0,
        tls: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        name = os.environ.get("ARENDEZVOUS_REDIS_SERVER", "redis-server")
        self.binary = self.find_binary(name, debian_package="redis-server")
        super().__init__(startup_timeout=startup_timeout)
        self.port = free_port()
        self.tls = tls
        self.extra_args = extra_args
        self.data_dir = self._tmp / "data"
        self.data_dir.mkdir()
        if tls:
            self._make_certificates()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the server's (``tls=True`` only)."""
        return self._tmp / "ca.crt"

    @property
    def url(self) -> str:
        """The arendezvous URL of database 0 on this server."""
        if self.tls:
            return f"rediss://{self.endpoint}/0?tls_ca_file={self.ca_file}"
        return f"redis://{self.endpoint}/0"

    # -- TLS material ----------------------------------------------------------------------------

    def _make_certificates(self) -> None:
        run = self._openssl
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key",
            "-out", "ca.crt", "-subj", "/CN=arendezvous test CA")  # fmt: skip
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost")  # fmt: skip
        (self._tmp / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "server.ext",
            "-out", "server.crt")  # fmt: skip

    # -- process control -------------------------------------------------------------------------

    def _command(self) -> list[str]:
        if self.tls:
            listen = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self._tmp / "server.crt"),
                "--tls-key-file", str(self._tmp / "server.key"),
                "--tls-ca-cert-file", str(self.ca_file),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            listen = ["--port", str(self.port)]
        return [
            self.binary,
            *listen,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip

    def _start_once(self) -> bool:
        # redis-server writes its own log (--logfile): its output is not kept.
        self._popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self._poll_until(self._ping, time.monotonic() + self.startup_timeout, 0.1):
            return True
        self.kill()
        return False

    def _new_ports(self) -> None:
        self.port = free_port()

    def _startup_failure(self) -> str:
        return (
            f"redis-server did not answer PING on {self.endpoint} within "
            f"{self.startup_timeout} s; log tail:\n{self.log_tail()}"
        )

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as raw:
                if self.tls:
                    context = ssl.create_default_context(cafile=str(self.ca_file))
                    with context.wrap_socket(raw, server_hostname="127.0.0.1") as secure:
                        return _ping_over(secure)
                return _ping_over(raw)
        except OSError:
            return False

    def __repr__(self) -> str:
        return f"RedisServer({self.endpoint!r}, running={self.running})"


def _ping_over(sock: socket.socket) -> bool:
    # A server still loading answers "-LOADING"; only "+PONG" means it serves commands.
    sock.sendall(b"PING\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(64)
        if not chunk:
            return False
        reply += chunk
    return reply == b"+PONG\r\n"
