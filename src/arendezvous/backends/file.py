"""The local-file backend: one file per run, shared by every process on one machine.

A write takes an advisory lock (``flock``) on a per-run lock file, re-reads and checks the current
file, writes the new state to a temporary file, ``fsync``s it, renames it over the old one and
``fsync``s the directory. Readers never lock: a rename is atomic, so they see the old file or the
new one, never a mix, and a writer killed at any point leaves one of the two.

The whole locked section runs in one worker-thread hop (``anyio.to_thread.run_sync``); measured in
``benchmarks/bench_backends.py`` against the same section built from per-call async file I/O, one
hop is several times faster and runs on trio as well as asyncio.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import urllib.parse
from pathlib import Path

import anyio
import anyio.to_thread

from .._backend import (
    DEFAULT_MAX_STATE_SIZE,
    AsyncRendezvousBackend,
    RunHandle,
    Token,
    check_run_id,
    check_state,
    check_timeout,
)
from .._errors import RendezvousConnectionError
from .._notify import ChangeNotifier
from . import _fileformat

__all__ = ("DEFAULT_POLL_INTERVAL", "FileBackend", "from_url")

DEFAULT_POLL_INTERVAL = 0.05
"""Seconds between re-reads of the file while waiting for another process's write."""

_MAX_NAME = 120

# Handles in this process wake each other at once; other processes are seen by polling.
_local_changes = ChangeNotifier()


def _file_stem(run_id: str) -> str:
    """A file name that is safe for any run id and distinct for distinct run ids."""
    stem = urllib.parse.quote(run_id, safe="")
    if stem.startswith("."):
        stem = "%2E" + stem[1:]
    if len(stem) > _MAX_NAME:
        digest = hashlib.sha256(run_id.encode()).hexdigest()
        stem = f"{stem[:_MAX_NAME - 65]}~{digest}"
    return stem


def _same_token(current: str, token: Token | None) -> bool:
    # A caller's token is untrusted: compare only with a str, whose __eq__ cannot misbehave.
    return type(token) is str and token == current


class FileBackend(RunHandle, AsyncRendezvousBackend):
    """A handle on one run's state stored in ``<directory>/<run_id>.rdzv``.

    :param directory: created (mode 0700) if missing; state files are created mode 0600.
    :param durable: ``fsync`` the file and the directory on every write, so that a completed
        ``set_state`` survives a machine crash. ``False`` still survives a crash of any process.
    :param poll_interval: how often ``wait_for_change`` re-reads the file to see writes made by
        other processes; writes by handles in this process wake it at once.

    Runs on asyncio and trio. Cancelling a call lets its worker thread finish the locked section,
    so a write is applied entirely or not at all; the cancellation is delivered after it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        run_id: str,
        *,
        durable: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
    ) -> None:
        self._run_id = check_run_id(run_id)
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self._directory = Path(directory).absolute()
        stem = _file_stem(run_id)
        self._path = self._directory / f"{stem}.rdzv"
        self._lock_path = self._directory / f"{stem}.lock"
        self._durable = durable
        self._poll_interval = poll_interval
        if type(max_state_size) is not int or max_state_size < 0:
            raise ValueError("max_state_size must be a non-negative int")
        self._max_state_size = max_state_size
        self._closed = False
        # flock excludes other open files, not other threads sharing ours: the thread lock does.
        self._thread_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._fd_pid = 0

    @property
    def name(self) -> str:
        return "file"

    @property
    def path(self) -> Path:
        """The file holding the run's state."""
        return self._path

    def __repr__(self) -> str:
        return f"FileBackend({str(self._directory)!r}, run_id={self._run_id!r})"

    # -- blocking halves, each run whole in one worker thread ------------------------------------

    def _read_sync(self) -> tuple[bytes, str] | None:
        try:
            with open(self._path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RendezvousConnectionError(f"cannot read {self._path}: {exc}") from exc
        incarnation, counter, state = _fileformat.decode(data)
        return state, _fileformat.format_token(incarnation, counter)

    def _open_lock_sync(self) -> int:
        pid = os.getpid()
        if self._lock_fd is not None and self._fd_pid != pid:
            # Inherited across fork(): the lock would be shared with the parent. Start afresh.
            self._lock_fd = None
        if self._lock_fd is None:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd_pid = pid
        return self._lock_fd

    def _write_sync(self, data: bytes) -> None:
        tmp_path = self._directory / f".{self._path.name}.{os.urandom(8).hex()}.tmp"
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self._durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_path, self._path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        if self._durable:
            dir_fd = os.open(self._directory, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _compare_and_set_sync(self, state: bytes, token: Token | None) -> tuple[bytes, Token, bool]:
        with self._thread_lock:
            try:
                lock_fd = self._open_lock_sync()
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise RendezvousConnectionError(f"cannot lock {self._lock_path}: {exc}") from exc
            try:
                current = self._read_sync()
                if current is None:
                    if token is not None:
                        return b"", None, False
                    incarnation, counter = os.urandom(16), 1
                else:
                    if not _same_token(current[1], token):
                        return current[0], current[1], False
                    incarnation_hex, _, counter_text = current[1].partition("-")
                    incarnation, counter = bytes.fromhex(incarnation_hex), int(counter_text) + 1
                try:
                    self._write_sync(_fileformat.encode(incarnation, counter, state))
                except OSError as exc:
                    raise RendezvousConnectionError(f"cannot write {self._path}: {exc}") from exc
                return state, _fileformat.format_token(incarnation, counter), True
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def _close_sync(self) -> None:
        with self._thread_lock:
            if self._lock_fd is not None and self._fd_pid == os.getpid():
                os.close(self._lock_fd)
            self._lock_fd = None

    # -- the contract ----------------------------------------------------------------------------

    async def get_state(self) -> tuple[bytes, Token] | None:
        self._check_open()
        return await anyio.to_thread.run_sync(self._read_sync)

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self._check_open()
        state = check_state(state, self._max_state_size)
        result = await anyio.to_thread.run_sync(self._compare_and_set_sync, state, token)
        if result[2]:
            _local_changes.notify(self._path)
        return result

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self._check_open()
        check_timeout(timeout)
        # The first look is outside the timeout, so that a change already made is reported
        # however short the timeout (a worker-thread hop can outlast a small one).
        current = await anyio.to_thread.run_sync(self._read_sync)
        if current is not None and not _same_token(current[1], token):
            return current
        if timeout is not None and timeout <= 0:
            return None
        with anyio.move_on_after(timeout):
            while True:
                with _local_changes.watching(self._path) as changed:
                    current = await anyio.to_thread.run_sync(self._read_sync)
                    if current is not None and not _same_token(current[1], token):
                        return current
                    # poll-ok: other processes' writes are only seen by re-reading the file.
                    with anyio.move_on_after(self._poll_interval):
                        await changed.wait()
        return None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await anyio.to_thread.run_sync(self._close_sync)


def from_url(url: str, *, run_id: str) -> FileBackend:
    """Open ``file:///absolute/dir``; options ``durable``, ``poll_interval``, ``max_state_size``."""
    from ._url import parse_bool, parse_options, parse_seconds

    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError("file:// URLs name a local directory: no host but localhost, no user")
    directory = urllib.parse.unquote(parsed.path)
    if not directory.startswith("/"):
        raise ValueError("file:// URLs need an absolute directory, e.g. file:///var/run/rdzv")
    options = parse_options(
        parsed,
        {"durable": parse_bool, "poll_interval": parse_seconds, "max_state_size": int},
    )
    return FileBackend(directory, run_id, **options)
