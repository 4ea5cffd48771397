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

import base64
import binascii
import fcntl
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
from .._errors import RendezvousConnectionError, RendezvousStateError
from .._members import (
    Member,
    MemberPut,
    MemberTable,
    check_group,
    check_member_value,
    check_node,
)
from .._notify import ChangeNotifier
from . import _fileformat
from ._names import run_name

__all__ = ("DEFAULT_POLL_INTERVAL", "FileBackend", "FileMemberTable", "from_url")

_T = TypeVar("_T")

DEFAULT_POLL_INTERVAL = 0.05
"""Seconds between re-reads of the file while waiting for another process's write."""

# Handles in this process wake each other at once; other processes are seen by polling.
_local_changes = ChangeNotifier()


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
        stem = run_name(run_id)
        self._path = self._directory / f"{stem}.rdzv"
        self._members_path = self._directory / f"{stem}.members"
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

    def _write_sync(self, path: Path, data: bytes, *, durable: bool) -> None:
        tmp_path = self._directory / f".{path.name}.{os.urandom(8).hex()}.tmp"
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_path, path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        if durable:
            dir_fd = os.open(self._directory, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _locked(self, section: Callable[[], _T]) -> _T:
        """Run *section* holding this handle's thread lock and the run's ``flock``."""
        with self._thread_lock:
            try:
                lock_fd = self._open_lock_sync()
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise RendezvousConnectionError(f"cannot lock {self._lock_path}: {exc}") from exc
            try:
                return section()
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def _compare_and_set_sync(self, state: bytes, token: Token | None) -> tuple[bytes, Token, bool]:
        def section() -> tuple[bytes, Token, bool]:
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
            data = _fileformat.encode(incarnation, counter, state)
            try:
                self._write_sync(self._path, data, durable=self._durable)
            except OSError as exc:
                raise RendezvousConnectionError(f"cannot write {self._path}: {exc}") from exc
            return state, _fileformat.format_token(incarnation, counter), True

        return self._locked(section)

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

    def member_table(self) -> FileMemberTable:
        """The run's member records, in ``<directory>/<run_id>.members`` (ages by this machine's
        monotonic clock, which every process on it shares)."""
        return FileMemberTable(self)


def _boot_id() -> str:
    """This boot of the machine: monotonic times of another boot are meaningless here."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip()
    except OSError:  # not Linux: a record from before a reboot merely looks fresh or stale
        return ""


_BOOT_ID = _boot_id()


class FileMemberTable(MemberTable):
    """The file backend's member table: every record of a run in one file, ``<run_id>.members``.

    A write takes the run's lock (the one ``set_state`` takes), re-reads the file, changes it and
    renames a new file over it, in one worker-thread hop; readers take no lock. Record writes are
    never ``fsync``-ed, even when the backend is durable: they say which processes are alive, and
    a machine crash ends every process they could speak of. Ages come from ``time.monotonic()``,
    one clock for every process of the machine, tagged with the boot they were taken in.

    The file is the state file's format (:mod:`._fileformat`) around JSON: the header's counter
    is the next number to hand out as a version or seq, its incarnation a random id drawn when the
    file is created, so versions never repeat (``"<incarnation hex>-<number>"``).
    """

    has_clock = True

    def __init__(self, backend: FileBackend) -> None:
        self._backend = backend
        self._path = backend._members_path

    def __repr__(self) -> str:
        return f"FileMemberTable({str(self._path)!r})"

    # -- the file, in worker threads -------------------------------------------------------------

    def _load(self) -> tuple[bytes, int, dict[str, list[Any]]]:
        """``(incarnation, next number, records)``; a new, empty table if there is no file."""
        try:
            with open(self._path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return os.urandom(16), 1, {}
        except OSError as exc:
            raise RendezvousConnectionError(f"cannot read {self._path}: {exc}") from exc
        incarnation, next_number, payload = _fileformat.decode(data)
        try:
            records = json.loads(payload)
            if type(records) is not dict:
                raise ValueError("not an object")
            for node, fields in records.items():
                check_node(node)
                group, value, version, seq, boot, written_at = fields
                check_group(group)
                base64.b64decode(value, validate=True)
                if not (type(version) is int and type(seq) is int and type(boot) is str
                        and type(written_at) is float):
                    raise ValueError("a field has the wrong type")
        except (ValueError, TypeError, binascii.Error) as exc:
            raise RendezvousStateError(f"member file {self._path} is malformed: {exc}") from exc
        return incarnation, next_number, records

    def _member(self, incarnation: bytes, node: str, fields: list[Any], now: float) -> Member:
        group, value, version, seq, boot, written_at = fields
        # A record of another boot was written by a process that no longer runs.
        age = max(0.0, now - written_at) if boot == _BOOT_ID else float(2**31)
        return Member(node, group, base64.b64decode(value),
                      _fileformat.format_token(incarnation, version), seq, age)

    def _read(self, node: str) -> Member | None:
        incarnation, _, records = self._load()
        fields = records.get(node)
        return None if fields is None else self._member(incarnation, node, fields,
                                                         time.monotonic())

    def _members(self, group: str) -> list[Member]:
        incarnation, _, records = self._load()
        now = time.monotonic()
        found = [self._member(incarnation, node, fields, now)
                 for node, fields in records.items() if fields[0] == group]
        return sorted(found, key=lambda member: member.seq)

    def _change(
        self, change: Callable[[bytes, int, dict[str, list[Any]]], tuple[bool, _T]]
    ) -> _T:
        """Apply *change* to the records under the run's lock; write the file if it says so."""
        backend = self._backend

        def section() -> _T:
            incarnation, next_number, records = self._load()
            write, result = change(incarnation, next_number, records)
            if write:
                payload = json.dumps(records, separators=(",", ":")).encode()
                data = _fileformat.encode(incarnation, next_number + 1, payload)
                try:
                    backend._write_sync(self._path, data, durable=False)
                except OSError as exc:
                    raise RendezvousConnectionError(f"cannot write {self._path}: {exc}") from exc
            return result

        return backend._locked(section)

    # -- the table -------------------------------------------------------------------------------

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        self._backend._check_open()
        return await anyio.to_thread.run_sync(function, *args)

    async def get(self, node: str) -> Member | None:
        check_node(node)
        return await self._run(self._read, node)

    async def members(self, group: str) -> list[Member]:
        check_group(group)
        return await self._run(self._members, group)

    async def count(self, group: str) -> int:
        return len(await self.members(group))

    async def put(
        self, node: str, group: str, value: bytes, version: Token | None
    ) -> MemberPut:
        check_node(node)
        check_group(group)
        value = check_member_value(value)

        def change(
            incarnation: bytes, next_number: int, records: dict[str, list[Any]]
        ) -> tuple[bool, MemberPut]:
            now = time.monotonic()
            current = records.get(node)
            if current is None:
                if version is not None:
                    return False, MemberPut(None, False, 0)
            elif not _same_token(_fileformat.format_token(incarnation, current[2]), version):
                return False, MemberPut(self._member(incarnation, node, current, now), False, 0)
            records[node] = [group, base64.b64encode(value).decode("ascii"), next_number,
                             next_number, _BOOT_ID, now]
            size = sum(1 for fields in records.values() if fields[0] == group)
            return True, MemberPut(self._member(incarnation, node, records[node], now), True, size)

        return await self._run(self._change, change)

    async def touch(self, node: str, version: Token) -> Member | None:
        check_node(node)

        def change(
            incarnation: bytes, next_number: int, records: dict[str, list[Any]]
        ) -> tuple[bool, Member | None]:
            current = records.get(node)
            if current is None or not _same_token(
                _fileformat.format_token(incarnation, current[2]), version
            ):
                return False, None
            now = time.monotonic()
            records[node] = [current[0], current[1], next_number, current[3], _BOOT_ID, now]
            return True, self._member(incarnation, node, records[node], now)

        return await self._run(self._change, change)

    async def delete(self, node: str, version: Token) -> bool:
        check_node(node)

        def change(
            incarnation: bytes, next_number: int, records: dict[str, list[Any]]
        ) -> tuple[bool, bool]:
            current = records.get(node)
            if current is None or not _same_token(
                _fileformat.format_token(incarnation, current[2]), version
            ):
                return False, False
            del records[node]
            return True, True

        return await self._run(self._change, change)


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
