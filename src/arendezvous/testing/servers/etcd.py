"""A throwaway single-member etcd on 127.0.0.1 in a temp dir (tests, benchmarks, ``check``).

``EtcdServer().start()`` picks free client and peer ports, starts ``etcd`` and returns once the
server has logged that it serves client traffic *and* answered ``/health``: readiness is read from
its own log, never guessed with a sleep. ``kill()`` sends SIGKILL (a crash); ``restart()`` starts it
again on the same ports and data dir, so clients that stay open see the same server (and the same
data) come back. ``stop()`` ends it and removes the temp dir.

``EtcdServer(tls=True)`` serves clients over TLS only, with a throwaway CA, server and client
certificates made by the ``openssl`` command; with ``client_cert_auth=True`` it also demands a
client certificate signed by that CA. :meth:`EtcdServer.enable_auth` turns on etcd's user/password
authentication with a ``root`` user.

Used as a context manager::

    with EtcdServer() as server:
        backend = open_backend(server.url, run_id="r")
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import ssl
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from . import free_port
from ._process import ServerProcess

__all__ = ("EtcdServer",)

# etcd's zap logger says "serving client traffic (in)securely", its older logger "ready to serve
# client requests": either is written once the client listener accepts requests.
_READY_MARKERS = (b"serving client traffic", b"ready to serve client requests")


class EtcdServer(ServerProcess):
    """One etcd member listening on 127.0.0.1; see the module docstring.

    :param startup_timeout: seconds to wait for readiness before giving up (the process is then
        killed and ``RuntimeError`` raised with the tail of its log).
    :param tls: serve clients over TLS only (needs the ``openssl`` command).
    :param client_cert_auth: with *tls*, refuse clients without a certificate from the test CA.
    :param extra_args: more command-line flags for ``etcd``.

    A missing binary raises :class:`~arendezvous.testing.servers.ServerNotFoundError`; a
    subclass may replace the :meth:`find_binary` hook.
    """

    _name = "etcd"
    _program = "etcd"
    _port_in_use = "address already in use"

    def __init__(
        self,
        *,
        startup_timeout: float = 20.0,
        tls: bool = False,
        client_cert_auth: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if client_cert_auth and not tls:
            raise ValueError("client_cert_auth needs tls=True")
        self.binary = self.find_binary(
            "etcd", debian_package="etcd-server", extra_paths=("/usr/bin/etcd",)
        )
        super().__init__(startup_timeout=startup_timeout)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.tls = tls
        self.client_cert_auth = client_cert_auth
        self.extra_args = extra_args
        self.data_dir = self._tmp / "data"
        self.auth_password: str | None = None
        if tls:
            self._make_certificates()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` of the client listener."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the server's and the client's (``tls=True`` only)."""
        return self._tmp / "ca.crt"

    @property
    def client_cert_file(self) -> Path:
        """A client certificate (CN ``root``) signed by :attr:`ca_file` (``tls=True`` only)."""
        return self._tmp / "client.crt"

    @property
    def client_key_file(self) -> Path:
        """The private key of :attr:`client_cert_file`."""
        return self._tmp / "client.key"

    @property
    def url(self) -> str:
        """The arendezvous URL of this server, naming the certificate files when TLS is on."""
        if not self.tls:
            return f"etcd://{self.endpoint}"
        query = {"ca_cert": str(self.ca_file)}
        if self.client_cert_auth:
            query["cert_cert"] = str(self.client_cert_file)
            query["cert_key"] = str(self.client_key_file)
        return f"etcd://{self.endpoint}?{urllib.parse.urlencode(query)}"

    # -- TLS material ----------------------------------------------------------------------------

    def _make_certificates(self) -> None:
        run, tmp = self._openssl, self._tmp

        def issue(name: str, subject: str, extensions: str) -> None:
            run(
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.csr",
                "-subj",
                subject,
            )
            (tmp / f"{name}.ext").write_text(extensions)
            run(
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                f"{name}.ext",
                "-out",
                f"{name}.crt",
            )

        run(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=arendezvous test CA",
        )
        issue(
            "server",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        issue("client", "/CN=root", "extendedKeyUsage=clientAuth\n")  # fmt: skip

    # -- process control -------------------------------------------------------------------------

    def _command(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        client = f"{scheme}://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        tls: list[str] = []
        if self.tls:
            tls = [
                "--cert-file", str(self._tmp / "server.crt"),
                "--key-file", str(self._tmp / "server.key"),
            ]  # fmt: skip
            if self.client_cert_auth:
                tls += ["--client-cert-auth", "--trusted-ca-file", str(self.ca_file)]
        return [
            self.binary,
            "--name", "default",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
            "--heartbeat-interval", "10",
            "--election-timeout", "100",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *tls,
            *self.extra_args,
        ]  # fmt: skip

    def _start_once(self) -> bool:
        env = dict(os.environ)
        machine = platform.machine().lower()
        if machine not in ("x86_64", "amd64"):
            # etcd 3.4 refuses to start on architectures it does not officially support.
            env.setdefault("ETCD_UNSUPPORTED_ARCH", {"aarch64": "arm64"}.get(machine, machine))
        ready = self._spawn_logged(self._command(), ready_markers=_READY_MARKERS, env=env)
        if ready.wait(self.startup_timeout) and self.running and self._healthy():
            return True
        self.kill()
        return False

    def _new_ports(self) -> None:
        self.client_port, self.peer_port = free_port(), free_port()

    def _startup_failure(self) -> str:
        return (
            f"etcd did not become ready on {self.endpoint} within {self.startup_timeout} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.client_cert_file), str(self.client_key_file))
        return context

    def _healthy(self) -> bool:
        scheme = "https" if self.tls else "http"
        context = self._ssl_context() if self.tls else None
        try:
            with urllib.request.urlopen(
                f"{scheme}://{self.endpoint}/health", timeout=5, context=context
            ) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    # -- authentication --------------------------------------------------------------------------

    def enable_auth(self, password: str) -> None:
        """Add user ``root`` with *password* and the ``root`` role, then enable authentication.

        Uses etcd's own gRPC API through aetcd's generated stubs on a blocking channel.
        """
        grpc: Any = importlib.import_module("grpc")  # no type stubs
        rpc: Any = importlib.import_module("aetcd.rpc")

        if self.tls:
            credentials = grpc.ssl_channel_credentials(
                self.ca_file.read_bytes(),
                self.client_key_file.read_bytes(),
                self.client_cert_file.read_bytes(),
            )
            channel = grpc.secure_channel(self.endpoint, credentials)
        else:
            channel = grpc.insecure_channel(self.endpoint)
        with channel:
            auth = rpc.AuthStub(channel)
            auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=password), timeout=10)
            auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
            auth.AuthEnable(rpc.AuthEnableRequest(), timeout=10)
        self.auth_password = password
