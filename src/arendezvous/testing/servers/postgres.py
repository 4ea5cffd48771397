"""A throwaway PostgreSQL server on 127.0.0.1 in a temp dir (tests, benchmarks, ``check``).

``PostgresServer().start()`` runs Debian's ``initdb`` once (a fresh cluster in a temp dir), starts
``postgres`` on a free port and returns once the server has logged "database system is ready to
accept connections" *and* ``pg_isready`` confirms it -- readiness is read, not guessed with a sleep.
``kill()`` sends SIGKILL to the whole server (postmaster and its backends: a crash),
``restart()`` starts it again on the same port and data dir (crash recovery included), so clients
that stay open see the same server come back; ``pause()``/``resume()`` freeze and thaw it (a hung
server). ``stop()`` ends it and removes the temp dir.

PostgreSQL refuses to run as root; started by root, the server runs as the ``postgres``
user (Debian's package creates it) and the temp dir is handed to that user.

Used as a context manager::

    with PostgresServer(password="secret") as server:
        backend = open_backend(server.url, run_id="r")
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

from . import free_port
from ._process import ServerProcess

__all__ = ("PostgresServer",)

_Server = TypeVar("_Server", bound="PostgresServer")

_READY_LINE = b"database system is ready to accept connections"
_SUPERUSER = "postgres"


def _debian_bin_dirs() -> list[str]:
    # Debian keeps server binaries off PATH, one directory per major version; newest first.
    def major(bin_dir: str) -> int:
        name = Path(bin_dir).parent.name
        return int(name) if name.isdigit() else 0

    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)


def _process_parents() -> list[tuple[int, int]]:
    """``(pid, parent pid)`` of every process, from ``/proc`` (Linux)."""
    parents = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as file:
                    stat = file.read()
            except OSError:
                continue
            # The command name may hold spaces and parentheses: fields resume after the last ")".
            fields = stat[stat.rindex(b")") + 2 :].split()
            parents.append((int(entry), int(fields[1])))
    return parents


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"


class PostgresServer(ServerProcess):
    """One PostgreSQL cluster listening on 127.0.0.1; see the module docstring.

    :param password: the superuser's password; ``None`` means trust authentication (no password).
        With a password, TCP connections must authenticate with SCRAM-SHA-256.
    :param startup_timeout: seconds to wait for readiness before giving up (the server is then
        killed and ``RuntimeError`` raised with the tail of its log).
    :param settings: more ``-c name=value`` server settings.
    :param tls: accept TCP connections over TLS only, with a server certificate for 127.0.0.1
        signed by a throwaway CA (:attr:`ca_file`) made with the ``openssl`` command.

    A missing binary raises :class:`~arendezvous.testing.servers.ServerNotFoundError`; a
    subclass may replace the :meth:`find_binary` hook.
    """

    _name = "postgres"
    _program = "postgres"

    def __init__(
        self,
        *,
        password: str | None = None,
        startup_timeout: float = 30.0,
        settings: dict[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        # A PATH entry may be a symlink into the versioned directory that holds the other tools.
        self.postgres = os.path.realpath(
            self.find_binary(
                "postgres",
                debian_package="postgresql",
                extra_paths=[f"{directory}/postgres" for directory in _debian_bin_dirs()],
            )
        )
        bin_dir = Path(self.postgres).parent
        self.initdb = str(bin_dir / "initdb")
        self.pg_isready = str(bin_dir / "pg_isready")
        super().__init__(startup_timeout=startup_timeout)
        self.password = password
        self.settings = dict(settings or {})
        self.port = free_port()
        self.user = _SUPERUSER
        self.database = "postgres"
        self.data_dir = self._tmp / "data"
        self.socket_dir = self._tmp
        self._run_as = self._unprivileged_user()
        if self._run_as is not None:
            os.chown(self._tmp, self._run_as.pw_uid, self._run_as.pw_gid)
        self.tls = tls
        self.ca_file = self._tmp / "ca.pem"
        if tls:
            self._make_certificates()

    @staticmethod
    def _unprivileged_user() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as"
            ) from None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """A libpq/asyncpg connection URL for the superuser, password included."""
        credentials = self.user if self.password is None else f"{self.user}:{self.password}"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{self.database}"

    @property
    def url(self) -> str:
        """The arendezvous URL of this server: :attr:`dsn`, verifying the CA with ``tls=True``."""
        if self.tls:
            return f"{self.dsn}?sslmode=verify-full&sslrootcert={self.ca_file}"
        return self.dsn

    # -- TLS material ------------------------------------------------------------------------

    def _make_certificates(self) -> None:
        tmp = self._tmp

        def run(arguments: str) -> None:
            self._openssl(*shlex.split(arguments))

        run("req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=arendezvous test CA' "
            "-keyout ca.key -out ca.pem")  # fmt: skip
        run("req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr")
        (tmp / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
            "-extfile server.ext -out server.pem")  # fmt: skip
        # The server refuses a key that others can read; it must also own it.
        for name in ("server.key", "server.pem"):
            (tmp / name).chmod(0o600)
            if self._run_as is not None:
                os.chown(tmp / name, self._run_as.pw_uid, self._run_as.pw_gid)

    def _require_tls(self) -> None:
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        # "host" lines accept TCP with or without TLS; "hostssl" only with it.
        hba.write_text(
            "\n".join(
                "hostssl" + line[len("host") :] if line.startswith("host ") else line
                for line in lines
            )
            + "\n"
        )

    # -- life cycle --------------------------------------------------------------------------

    def _popen_user(self) -> dict[str, Any]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._run_as is not None:
            env["HOME"] = self._run_as.pw_dir
            env["USER"] = env["LOGNAME"] = self._run_as.pw_name
        return env

    def _initdb(self) -> None:
        command = [
            self.initdb,
            "-D", str(self.data_dir),
            "-U", self.user,
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
            "--auth-local=trust",
        ]  # fmt: skip
        if self.password is None:
            command.append("--auth-host=trust")
        else:
            pwfile = self._tmp / "pwfile"
            pwfile.write_text(self.password + "\n")
            pwfile.chmod(0o600)
            if self._run_as is not None:
                os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
            command += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self._env(),
                timeout=120,
                check=False,
                **self._popen_user(),
            )
        finally:
            if self.password is not None:
                (self._tmp / "pwfile").unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({result.returncode}):\n{result.stderr.decode(errors='replace')}"
            )

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            # A throwaway cluster: surviving a machine crash is not what the tests measure. A
            # killed *server* still loses nothing: commits reach the kernel before they return.
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            **self.settings,
        }
        if self.tls:
            settings["ssl"] = "on"
            settings["ssl_cert_file"] = str(self._tmp / "server.pem")
            settings["ssl_key_file"] = str(self._tmp / "server.key")
        command = [self.postgres, "-D", str(self.data_dir)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        return command

    def _start_once(self) -> bool:
        # Initialises the cluster the first time; later starts (after kill() or stop_process())
        # find it on the same port and data dir.
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
            if self.tls:
                self._require_tls()
        # Its own process group (see _popen): kill() takes the backends too.
        ready = self._spawn_logged(
            self._command(), ready_markers=(_READY_LINE,), env=self._env(), **self._popen_user()
        )
        deadline = time.monotonic() + self.startup_timeout
        try:
            is_ready = self._wait_ready(ready, deadline)
        except BaseException:
            self.kill()  # never leave a server behind that nobody will stop
            raise
        if not is_ready:
            self.kill()
        return is_ready

    def _startup_failure(self) -> str:
        return (
            f"postgres did not become ready in {self.startup_timeout} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def _wait_ready(self, ready: threading.Event, deadline: float) -> bool:
        # The log line comes first; pg_isready then proves the TCP listener answers.
        while not ready.wait(0.1):
            if not self.running or time.monotonic() > deadline:
                return False
        if not self.running:  # the event is also set when the server's output ends
            return False
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [self.pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self._env(),
                timeout=10,
                check=False,
            )
            if probe.returncode == 0:
                return True
            if not self.running:
                return False
        return False

    def _server_pids(self) -> list[int]:
        """The postmaster and its children (each backend leads its own process group)."""
        process = self._process
        if process is None or process.poll() is not None:
            return []
        children = [pid for pid, ppid in _process_parents() if ppid == process.pid]
        return [process.pid, *children]

    def _signal_all(self, signum: int) -> list[int]:
        pids = self._server_pids()
        if pids:
            # Freeze the postmaster first so that it cannot fork a backend we would miss.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[0], signal.SIGSTOP if signum != signal.SIGCONT else signum)
            pids = self._server_pids() or pids
            for pid in reversed(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        return pids

    def _forget(self, pids: list[int], wait: float = 30.0) -> None:
        self._wait_process(wait)
        # Orphaned backends would keep the shared memory and the port: see them all gone.
        deadline = time.monotonic() + wait
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.01)  # poll-ok: bounded wait for the kernel to end killed processes
        self._forget_process(wait)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: a crash. :meth:`restart` brings it back."""
        self._forget(self._signal_all(signal.SIGKILL))

    def pause(self) -> None:
        """SIGSTOP the whole server: connections stay open but nothing answers (a hung server)."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal_all(signal.SIGCONT)

    def stop_process(self) -> None:
        """Shut the server down cleanly ("fast" mode) but keep its data dir for :meth:`restart`."""
        pids = self._signal_all(signal.SIGCONT)  # a paused server could not shut down
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[0], signal.SIGINT)
        self._forget(pids)

    def restart(self: _Server) -> _Server:
        """Start again on the same port and data dir, after :meth:`kill` or :meth:`stop_process`."""
        if self.running:
            self.stop_process()
        return self.start()

    def __enter__(self: _Server) -> _Server:
        # Unlike the other launchers, a failed start keeps the temp dir (and its log).
        return self.start()

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, running={self.running})"
