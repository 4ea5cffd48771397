"""The process management the throwaway-server launchers share (private).

:class:`ServerProcess` owns the temp dir, the server's subprocess, the thread that copies its
output into the log file, and the life cycle built on them: a start that retries when a freshly
picked free port turns out to be taken, a SIGKILL (a crash), a clean stop, a restart on the same
ports and data, and the context-manager methods. Each launcher (Redis, etcd, PostgreSQL) subclasses
it and says only what differs: the command, how readiness is asked of the server, and (PostgreSQL)
how a server made of many processes is signalled.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from . import find_binary

__all__ = ("ServerProcess", "StartStop")

_Server = TypeVar("_Server", bound="ServerProcess")
_Started = TypeVar("_Started", bound="StartStop")


class StartStop:
    """``with thing:`` starts *thing* (stopping it again if the start fails) and stops it at the
    end; the launchers, the etcd cluster and the fault proxy share it."""

    def start(self: _Started) -> _Started:
        """Start; return self once ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop, and remove what was left behind. Idempotent."""
        raise NotImplementedError

    def __enter__(self: _Started) -> _Started:
        try:
            return self.start()
        except BaseException:
            self.stop()  # what never became ready leaves nothing behind
            raise

    def __exit__(self, kind: object, exc: object, traceback: object) -> None:
        self.stop()


class ServerProcess(StartStop):
    """One server subprocess with a temp dir of its own; the base of the launchers.

    Subclasses find their binary first (so that a missing one leaves no temp dir behind), then
    call ``super().__init__()``, and implement :meth:`_start_once` and :meth:`_startup_failure`.

    :param startup_timeout: seconds a start may wait for readiness before giving up.
    :ivar log_path: the server's log (its own log file, or its stderr copied by a reader thread).
    """

    find_binary = staticmethod(find_binary)

    #: Short name: the temp dir's prefix, the log file's and the reader thread's names.
    _name: ClassVar[str]
    #: The program, as failure messages name it.
    _program: ClassVar[str]
    #: Text in the log saying a port was taken; ``None``: a failed start is never retried.
    _port_in_use: ClassVar[str | None] = None
    #: The address clients connect to (every launcher listens on loopback only).
    host: ClassVar[str] = "127.0.0.1"
    port: int

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``: where clients connect."""
        return f"{self.host}:{self.port}"

    def __init__(self, *, startup_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self._tmp = Path(tempfile.mkdtemp(prefix=f"arendezvous-{self._name}-"))
        self.log_path = self._tmp / f"{self._name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._started = False

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    # -- hooks -----------------------------------------------------------------------------------

    def _start_once(self) -> bool:
        """Start the process and wait for readiness; on failure, leave it killed and say False."""
        raise NotImplementedError

    def _startup_failure(self) -> str:
        """The message of the ``RuntimeError`` a start that never became ready raises."""
        raise NotImplementedError

    def _new_ports(self) -> None:
        """Pick fresh free ports, after a first start found one taken (see :attr:`_port_in_use`)."""

    # -- TLS material ----------------------------------------------------------------------------

    def _openssl(self, *args: str) -> None:
        """Run the ``openssl`` command in the temp dir (for throwaway certificates)."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("tls=True needs the openssl command (Debian package 'openssl')")
        subprocess.run([openssl, *args], cwd=self._tmp, check=True, capture_output=True, timeout=60)

    # -- process control -------------------------------------------------------------------------

    def _popen(self, command: list[str], **options: Any) -> subprocess.Popen[bytes]:
        """Start *command* as the server process, with no stdin and in a session of its own.

        Its own session (and process group): a Ctrl-C in the test run does not reach the server
        first, and a server that forks (PostgreSQL) can be signalled as a whole.
        """
        self._process = process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, start_new_session=True, **options
        )
        return process

    def _spawn_logged(
        self, command: list[str], *, ready_markers: Iterable[bytes], **options: Any
    ) -> threading.Event:
        """Start *command* with its stdout and stderr going to :attr:`log_path`.

        A reader thread copies stderr line by line (so the server never blocks on a full pipe)
        and sets the returned event at the first line holding one of *ready_markers*, or when the
        output ends (the server exited), so that a wait on it never outlives the server.
        """
        markers = tuple(ready_markers)
        ready = threading.Event()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the reader thread closes it
        try:
            process = self._popen(command, stdout=log, stderr=subprocess.PIPE, **options)
        except BaseException:
            log.close()
            raise
        stderr = process.stderr
        assert stderr is not None

        def drain() -> None:
            with log, stderr:
                for line in stderr:
                    log.write(line)
                    log.flush()
                    if any(marker in line for marker in markers):
                        ready.set()
            ready.set()

        self._reader = threading.Thread(target=drain, name=f"{self._name}-log", daemon=True)
        self._reader.start()
        return ready

    def start(self: _Server) -> _Server:
        """Start the server (or start it again after :meth:`kill`); return once it is ready.

        How readiness is asked of the server is the launcher's own (see its module docstring).

        :raises RuntimeError: it is already running, or did not become ready in time (the
            message holds the tail of its log).
        """
        if self.running:
            raise RuntimeError(f"{self._program} is already running")
        for attempt in range(3):
            if self._start_once():
                self._started = True
                return self
            # free_port() races with other processes: before the first start a taken port is
            # replaced, but restart() must keep its ports, so then the failure is reported.
            if (
                self._started
                or attempt == 2
                or self._port_in_use is None
                or self._port_in_use not in self.log_tail()
            ):
                break
            self._new_ports()
        raise RuntimeError(self._startup_failure())

    def log_tail(self, lines: int = 30) -> str:
        """The last *lines* lines of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _poll_until(self, answers: Callable[[], bool], deadline: float, cap: float) -> bool:
        """Ask *answers* until it says yes (``True``), the process ends or the monotonic
        *deadline* passes (``False``), backing off from 5 ms to *cap* seconds between asks: a
        starting server announces nothing but its answers."""
        delay = 0.005
        while time.monotonic() < deadline:
            if not self.running:
                return False
            if answers():
                return True
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))  # poll-ok: see above
            delay = min(delay * 2, cap)
        return False

    def _wait_process(self, timeout: float) -> None:
        """Wait for the server process to end, SIGKILLing it if it has not within *timeout*."""
        process = self._process
        if process is None:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def _forget_process(self, timeout: float) -> None:
        """Join the log reader (the output has ended) and drop the ended process."""
        if self._reader is not None:
            self._reader.join(timeout=timeout)
            self._reader = None
        self._process = None

    def _terminate(self, sig: signal.Signals) -> None:
        """Send *sig* to the server process if it runs, wait for it to end, forget it."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            if sig != signal.SIGKILL:
                process.send_signal(signal.SIGCONT)  # a paused server could not act on it
            process.send_signal(sig)
            self._wait_process(10)
        self._forget_process(10)

    def pause(self) -> None:
        """SIGSTOP the server: its connections stay open but nothing answers (a hung server, a
        long GC pause, a frozen VM). :meth:`resume` thaws it."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; the ports and dir stay for :meth:`restart`."""
        self._terminate(signal.SIGKILL)

    def stop_process(self) -> None:
        """Stop the server cleanly (SIGTERM); the ports and dir stay for :meth:`restart`."""
        self._terminate(signal.SIGTERM)

    def restart(self: _Server) -> _Server:
        """Start the server again on the same ports and dir (killing it first if it runs)."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        """Stop the server and delete its temp dir. Idempotent."""
        self.stop_process()
        shutil.rmtree(self._tmp, ignore_errors=True)
