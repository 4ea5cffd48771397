"""A throwaway single-member etcd on 127.0.0.1 in a temp dir (tests, benchmarks, ``check``).

``EtcdServer().start()`` picks free client and peer ports, starts ``etcd`` and returns once the
server has logged that it serves client traffic *and* answered ``/health``: readiness is read from
its own log, never guessed with a sleep. ``kill()`` sends SIGKILL (a crash); ``restart()`` starts it
again on the same ports and data dir, so clients that stay open see the same server (and the same
data) come back. ``stop()`` ends it and removes the temp dir.

:class:`EtcdCluster` starts several members on loopback that form one cluster (for failover
tests: freeze one member with :meth:`EtcdCluster.pause` and the others serve on).

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
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from . import free_port
from ._process import ServerProcess, StartStop

__all__ = ("EtcdCluster", "EtcdServer")

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
    :param name: the member's name (a cluster's members need distinct ones).

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
        name: str = "default",
    ) -> None:
        if client_cert_auth and not tls:
            raise ValueError("client_cert_auth needs tls=True")
        self.binary = self.find_binary(
            "etcd", debian_package="etcd-server", extra_paths=("/usr/bin/etcd",)
        )
        super().__init__(startup_timeout=startup_timeout)
        self.name = name
        self.port = free_port()
        self.peer_port = free_port()
        #: ``name=peer-url,...`` of every member; ``None``: a cluster of this member alone.
        self.initial_cluster: str | None = None
        #: Raft's heartbeat and election timeout (ms): quick for one member, which elects
        #: itself; a cluster uses etcd's defaults, so load on a small machine starts no election.
        self.raft_timing = (10, 100)
        self.tls = tls
        self.client_cert_auth = client_cert_auth
        self.extra_args = extra_args
        self.data_dir = self._tmp / "data"
        self.auth_password: str | None = None
        if tls:
            self._make_certificates()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def client_port(self) -> int:
        """The client port (also :attr:`port`)."""
        return self.port

    @property
    def peer_url(self) -> str:
        """Where the other members of a cluster reach this one."""
        return f"http://127.0.0.1:{self.peer_port}"

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
        query = {"tls_ca_file": str(self.ca_file)}
        if self.client_cert_auth:
            query["tls_cert_file"] = str(self.client_cert_file)
            query["tls_key_file"] = str(self.client_key_file)
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
        peer = self.peer_url
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
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
            "--initial-cluster-token", "arendezvous-test",
            "--heartbeat-interval", str(self.raft_timing[0]),
            "--election-timeout", str(self.raft_timing[1]),
            "--logger", "zap",
            "--log-outputs", "stderr",
            *tls,
            *self.extra_args,
        ]  # fmt: skip

    def _spawn(self) -> threading.Event:
        """Start the process; the event is set once it says it serves clients (or ended)."""
        env = dict(os.environ)
        machine = platform.machine().lower()
        if machine not in ("x86_64", "amd64"):
            # etcd 3.4 refuses to start on architectures it does not officially support.
            env.setdefault("ETCD_UNSUPPORTED_ARCH", {"aarch64": "arm64"}.get(machine, machine))
        return self._spawn_logged(self._command(), ready_markers=_READY_MARKERS, env=env)

    def _start_once(self) -> bool:
        if self._spawn().wait(self.startup_timeout) and self.running and self._healthy():
            return True
        self.kill()
        return False

    def _new_ports(self) -> None:
        self.port, self.peer_port = free_port(), free_port()

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


class EtcdCluster(StartStop):
    """*size* etcd members on loopback forming one cluster, each a :class:`EtcdServer`.

    ``start()`` starts every member at once (a member serves only once a quorum has formed) and
    returns when each has said it serves clients and answered ``/health``. :meth:`pause` freezes
    one member (SIGSTOP) while the others serve on; :meth:`leader` says which one leads.

    Used as a context manager::

        with EtcdCluster(3) as cluster:
            backend = open_backend(cluster.url, run_id="r")
    """

    def __init__(
        self, size: int = 3, *, startup_timeout: float = 30.0, extra_args: tuple[str, ...] = ()
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one member")
        self.startup_timeout = startup_timeout
        self.members: list[EtcdServer] = []
        try:
            for index in range(size):
                member = EtcdServer(
                    startup_timeout=startup_timeout, extra_args=extra_args, name=f"member{index}"
                )
                self.members.append(member)
        except BaseException:
            self.stop()
            raise
        initial = ",".join(f"{member.name}={member.peer_url}" for member in self.members)
        for member in self.members:
            member.initial_cluster = initial
            member.raft_timing = (100, 1000)

    @property
    def endpoints(self) -> list[str]:
        """Each member's ``127.0.0.1:PORT``, in order."""
        return [member.endpoint for member in self.members]

    @property
    def url(self) -> str:
        """The arendezvous URL naming every member, in order."""
        return "etcd://" + ",".join(self.endpoints)

    def start(self) -> EtcdCluster:
        """Start every member; return once each serves clients.

        :raises RuntimeError: a member did not become ready in time (with the tail of its log).
        """
        readiness = [member._spawn() for member in self.members]
        deadline = time.monotonic() + self.startup_timeout
        for member, ready in zip(self.members, readiness, strict=True):
            left = max(0.0, deadline - time.monotonic())
            if not (ready.wait(left) and member.running and member._healthy()):
                failure = member._startup_failure()
                self.stop()
                raise RuntimeError(f"etcd cluster member {member.name}: {failure}")
            member._started = True
        return self

    def status(self, index: int) -> dict[str, Any]:
        """Member *index*'s own view of the cluster (etcd's maintenance status, as JSON)."""
        request = urllib.request.Request(
            f"http://{self.members[index].endpoint}/v3/maintenance/status",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            status: dict[str, Any] = json.load(response)
        return status

    def leader(self) -> int:
        """The index of the member that leads (asked of the first member that answers)."""
        for index in range(len(self.members)):
            try:
                status = self.status(index)
            except OSError:
                continue
            for other in range(len(self.members)):
                if self.status(other)["header"]["member_id"] == status["leader"]:
                    return other
        raise RuntimeError("no member of the etcd cluster answered")

    def pause(self, index: int) -> None:
        """Freeze member *index* (SIGSTOP): its connections stay open, nothing answers."""
        self.members[index].pause()

    def resume(self, index: int) -> None:
        """Thaw member *index* after :meth:`pause`."""
        self.members[index].resume()

    def stop(self) -> None:
        """Stop every member and delete their temp dirs. Idempotent."""
        for member in self.members:
            member.stop()
