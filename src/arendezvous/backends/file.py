"""The local-file backend: one file per run, shared by every process on one machine.

A write takes an advisory lock (``flock``) on a per-run lock file, re-reads and checks the current
file, writes the new state to a temporary file, ``fsync``s it, renames it over the old one and
``fsync``s the directory. Readers never lock: a rename is atomic, so they see the old file or the
new one, never a mix, and a writer killed at any point leaves one of the two.

The whole locked section runs in one worker-thread hop (``anyio.to_thread.run_sync``); measured in
``benchmarks/bench_backends.py`` against the same section built from per-call async file I/O, one
hop is several times faster and runs on trio as well as asyncio.

The run lifecycle: a run is its files, ``<run>.rdzv`` (state), ``<run>.members`` (member records)
and ``<run>.lock``. :meth:`FileBackend.delete_run` removes all three under the run's lock, so a
concurrent writer either finishes first or starts afresh after; a writer that had opened the
lock file before it was removed notices, once it holds the lock, that the file it locked is no
longer the one at the path, and locks the new one (two writers never hold two different lock
files of one run). :meth:`FileBackend.list_runs` lists the runs of the directory; with
``expire_after``, a run whose files nobody modified for that long (by their modification times
and this machine's clock) is removed by ``list_runs()``, by a read that finds it, and by a write,
which then starts the run afresh.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import json
import logging
import os
import stat
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
    RunInfo,
    Token,
    check_run_id,
    check_state,
    check_timeout,
)
from .._errors import RendezvousConnectionError, RendezvousError, RendezvousStateError
from .._forksafe import renew_in_child
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
from ._lifecycle import check_expire_after, log_run_deleted, log_run_expired
from ._names import decode_run_name, is_hashed_name, run_name

__all__ = ("DEFAULT_POLL_INTERVAL", "FileBackend", "FileMemberTable", "from_url")

_T = TypeVar("_T")

logger = logging.getLogger("arendezvous.backends.file")

DEFAULT_POLL_INTERVAL = 0.05
"""Seconds between re-reads of the file while waiting for another process's write."""

_STATE, _MEMBERS, _LOCK = "rdzv", "members", "lock"

MAX_MEMBER_FILE = 64 << 20
"""The largest member file read, in bytes: some 7,000 records of the largest size (a record
holds at most a 1 KiB value), several hundred thousand typical ones; a bigger file is refused
as damaged rather than read."""

_MAX_LOCK_FILE = 1 << 20
"""The largest lock file read (it holds a run id) when a listing names a hashed run."""

# Handles in this process wake each other at once; other processes are seen by polling.
_local_changes = ChangeNotifier()


def _run_id_of(directory: Path, stem: str) -> str | None:
    """The run id whose files are named *stem*, or ``None`` if the name does not say.

    A stem that keeps the whole run id decodes back to it. A hashed one (a long run id) cannot:
    its lock file holds the run id (written when the file was created, see
    :meth:`_RunFiles.create_lock_file`). Either way the answer is checked to map back to *stem*.
    """
    if is_hashed_name(stem):
        try:
            found = _read_file(directory / f"{stem}.{_LOCK}", _MAX_LOCK_FILE, formatted=False)
            named = "" if found is None else found[0].decode()
        except (RendezvousError, UnicodeDecodeError):
            named = ""
        if named and run_name(named) == stem:
            return named
    return decode_run_name(stem)


def _open_regular(path: Path, flags: int) -> tuple[int, os.stat_result] | None:
    """Open *path* with *flags* and return the descriptor and its status, or ``None`` if there
    is no such file.

    What the backend finds at its paths is not trusted: it is opened without blocking
    (``O_NONBLOCK``: an ``open`` of a FIFO would otherwise wait for a writer), and anything but a
    regular file -- a FIFO, a device such as ``/dev/zero`` (read forever), a directory, a socket
    -- is refused and left where it is. A symbolic link is followed (a link to a regular file
    may be an administrator's choice); what it points to must be a regular file.

    :raises RendezvousStateError: *path* is not a regular file.
    :raises RendezvousConnectionError: it cannot be opened or examined.
    """
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.ENXIO):  # a directory; a socket or FIFO
            raise RendezvousStateError(
                f"{path} is not a regular file: refused, and left as it is"
            ) from exc
        raise RendezvousConnectionError(f"cannot open {path}: {exc}") from exc
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise RendezvousStateError(
                f"{path} is not a regular file (mode {stat.filemode(status.st_mode)}): refused, "
                "and left as it is"
            )
    except OSError as exc:
        os.close(fd)
        raise RendezvousConnectionError(f"cannot read {path}: {exc}") from exc
    except BaseException:
        os.close(fd)
        raise
    return fd, status


def _read_at_most(fd: int, count: int) -> bytes:
    """Up to *count* bytes from *fd* (fewer only at the end of the file)."""
    chunks: list[bytes] = []
    while count > 0:
        chunk = os.read(fd, count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _read_file(path: Path, limit: int, *, formatted: bool = True) -> tuple[bytes, float] | None:
    """The bytes of the regular file *path* and its modification time, or ``None`` if there is
    no such file: the one way the backend reads what it finds (see :func:`_open_regular`).

    Never reads more than *limit* bytes and one: a file larger is refused, by its size before
    anything is read (a 512 MiB sparse file costs nothing), or once the read passes the limit (a
    file growing meanwhile). A *formatted* file (:mod:`._fileformat`: state and member files)
    is read no further than its header declares, and one byte more to see trailing garbage;
    after a header of another format, not at all.

    :raises RendezvousStateError: *path* is not a regular file, or is larger than *limit*.
    :raises RendezvousConnectionError: it cannot be read.
    """
    opened = _open_regular(path, os.O_RDONLY)
    if opened is None:
        return None
    fd, status = opened
    try:
        if status.st_size > limit:
            raise RendezvousStateError(
                f"{path} holds {status.st_size} bytes, more than the {limit} this handle reads: "
                "refused unread, and left as it is"
            )
        if formatted:
            data = _read_at_most(fd, _fileformat.HEADER_SIZE)
            size = _fileformat.declared_size(data)
            if size is not None:
                data += _read_at_most(fd, min(size, limit) + 1 - len(data))
        else:
            data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise RendezvousConnectionError(f"cannot read {path}: {exc}") from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RendezvousStateError(
            f"{path} holds more than the {limit} bytes this handle reads: refused, and left as "
            "it is"
        )
    return data, status.st_mtime


def _decode(path: Path, data: bytes) -> tuple[bytes, int, bytes]:
    """:func:`._fileformat.decode` of the file *path*'s bytes, its errors naming *path*."""
    try:
        return _fileformat.decode(data)
    except RendezvousStateError as exc:
        raise RendezvousStateError(f"{path}: {exc}") from exc


def _stat(path: Path) -> os.stat_result | None:
    """*path*'s status, or ``None`` if there is no such file."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RendezvousConnectionError(f"cannot read {path}: {exc}") from exc


def _fsync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _replace(directory: Path, path: Path, data: bytes, *, durable: bool) -> None:
    """Write *data* to a temporary file and rename it over *path* (``fsync``-ing both the file
    and the directory when *durable*)."""
    tmp_path = directory / f".{path.name}.{os.urandom(8).hex()}.tmp"
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
        _fsync_directory(directory)


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file *fd* is the file at *path* now."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (at_path.st_dev, at_path.st_ino)


class _RunFiles:
    """One run's files in a directory -- state, member records, lock -- and the run's lock.

    :param run_id: written into a lock file this creates, so that :func:`_run_id_of` can name
        a run whose stem is hashed; ``None`` when not known (a run found by listing).
    """

    def __init__(self, directory: Path, stem: str, run_id: str | None) -> None:
        self.directory = directory
        self.stem = stem
        self.state = directory / f"{stem}.{_STATE}"
        self.members = directory / f"{stem}.{_MEMBERS}"
        self.lock = directory / f"{stem}.{_LOCK}"
        self._run_id = run_id
        # flock excludes other open files, not other threads sharing ours: the thread lock does.
        # A forked child gets it back unlocked (see _forksafe) and opens a lock file of its own
        # (see _acquire): the parent's open file, and its flock, are shared with the child.
        self._thread_lock = threading.Lock()
        renew_in_child(self, "_thread_lock")
        self._fd: int | None = None
        self._fd_pid = 0

    @property
    def name(self) -> str:
        """The run id if known, else the stem (for messages)."""
        return self.stem if self._run_id is None else self._run_id

    def locked(self, section: Callable[[], _T]) -> _T:
        """Run *section* holding the thread lock and the run's ``flock``."""
        with self._thread_lock:
            try:
                fd = self._acquire()
            except OSError as exc:
                raise RendezvousConnectionError(f"cannot lock {self.lock}: {exc}") from exc
            try:
                return section()
            finally:
                if self._fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                # else remove() deleted the lock file and closed it, which released the lock

    def _acquire(self) -> int:
        pid = os.getpid()
        if self._fd is not None and self._fd_pid != pid:
            # Inherited across fork(): the lock would be shared with the parent. Start afresh.
            self._fd = None
        while True:
            if self._fd is None:
                self._fd, self._fd_pid = self._open(), pid
            fd = self._fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(fd, self.lock):
                    return fd
            except BaseException:
                self._fd = None
                os.close(fd)
                raise
            # The file was removed (delete_run, expiry) while this waited for it: nobody else
            # will ever lock that one. Lock the file at the path now.
            self._fd = None
            os.close(fd)

    def _open(self) -> int:
        """Open the lock file, created if missing; refuse one that is not a regular file (a
        FIFO, a device: see :func:`_open_regular`)."""
        while True:
            opened = _open_regular(self.lock, os.O_RDWR)
            if opened is not None:
                return opened[0]
            self.create_lock_file()

    def create_lock_file(self) -> None:
        """Create the lock file (mode 0600, in a directory created 0700) holding the run id,
        complete from its first instant: a temporary file, written, then hard-linked to the
        name, which fails if another process created it first. (Where the file system has no
        hard links, an empty file: listing then names the run from its file name alone.)"""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        content = b"" if self._run_id is None else self._run_id.encode()
        tmp_path = self.directory / f".{self.lock.name}.{os.urandom(8).hex()}.tmp"
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
            try:
                os.link(tmp_path, self.lock)
            except FileExistsError:
                pass
            except OSError:
                os.close(os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        finally:
            tmp_path.unlink(missing_ok=True)

    def newest(self) -> tuple[float | None, bool]:
        """The newest modification time of the run's files (``None``: it has none), and whether
        it holds state or member records."""
        newest: float | None = None
        held = False
        for path in (self.state, self.members, self.lock):
            stat = _stat(path)
            if stat is not None:
                newest = stat.st_mtime if newest is None else max(newest, stat.st_mtime)
                held = held or path != self.lock
        return newest, held

    def remove(self, *, keep_lock: bool, durable: bool) -> bool:
        """Under the lock: delete the state and member files, and the lock file unless
        *keep_lock* (a writer about to create the run afresh keeps it); return whether there was
        state or a member record."""
        held = False
        try:
            for path in (self.state, self.members):
                try:
                    path.unlink()
                    held = True
                except FileNotFoundError:
                    pass
            if not keep_lock:
                self.lock.unlink(missing_ok=True)
                if self._fd is not None:
                    # Closing releases the lock: a process waiting for it finds the file gone
                    # and locks the next one (see _acquire).
                    os.close(self._fd)
                    self._fd = None
            if durable:
                _fsync_directory(self.directory)
        except OSError as exc:
            raise RendezvousConnectionError(f"cannot delete run {self.name!r}: {exc}") from exc
        _local_changes.notify(self.state)
        return held

    def expire(self, expire_after: float, *, keep_lock: bool, durable: bool) -> bool:
        """Under the lock: remove the run if none of its files was modified for *expire_after*
        seconds (by this machine's clock); return whether it was removed."""
        newest, held = self.newest()
        if newest is None:
            return False
        idle = time.time() - newest
        if idle <= expire_after:
            return False
        if held or not keep_lock:
            self.remove(keep_lock=keep_lock, durable=durable)
        if held:
            log_run_expired(logger, self.name, idle, expire_after)
        return held

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None and self._fd_pid == os.getpid():
                os.close(self._fd)
            self._fd = None


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
    :param expire_after: seconds after which this handle treats a run whose files nobody
        modified (state or member records written) as gone and removes it; ``None`` (the
        default): never. Judged by the files' modification times against this machine's clock
        (``time.time()``: a clock set forward expires runs early), and enforced by this handle's
        ``list_runs()``, by its reads of an expired run and by its writes, never in the
        background. A handle without it removes nothing, so give every handle on a directory the
        same ``expire_after`` (the URL option does).

    What it finds at the run's paths is not trusted: a FIFO, a device, a directory (or a link to
    one) at the state, member or lock file's path, or a state file larger than the header plus
    ``max_state_size``, raises :class:`~arendezvous.RendezvousStateError` naming the path, at
    once and without reading it whole, and is left as it is.

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
        expire_after: float | None = None,
    ) -> None:
        self._run_id = check_run_id(run_id)
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self._directory = Path(directory).absolute()
        self._files = _RunFiles(self._directory, run_name(run_id), run_id)
        self._path = self._files.state
        self._durable = durable
        self._poll_interval = poll_interval
        if type(max_state_size) is not int or max_state_size < 0:
            raise ValueError("max_state_size must be a non-negative int")
        self._max_state_size = max_state_size
        self._expire_after = check_expire_after(expire_after)
        self._closed = False
        # This handle's own key in the process's notifier: its waiters watch it besides the
        # state file, and aclose() notifies it, so closing wakes them (and no other handle's).
        self._closing = object()

    @property
    def name(self) -> str:
        return "file"

    @property
    def path(self) -> Path:
        """The file holding the run's state."""
        return self._path

    @property
    def expire_after(self) -> float | None:
        """Seconds without a write after which this handle removes a run, or ``None``."""
        return self._expire_after

    def __repr__(self) -> str:
        return f"FileBackend({str(self._directory)!r}, run_id={self._run_id!r})"

    # -- blocking halves, each run whole in one worker thread ------------------------------------

    def _expired_sync(self, seen: float | None) -> bool:
        """For a reader that found the run's file modified at *seen* (``None``: no file): whether
        the run has expired, in which case it was removed (under the run's lock, after looking
        again). Costs nothing more than a comparison while the file is fresh."""
        expire_after = self._expire_after
        if expire_after is None:
            return False
        cutoff = time.time() - expire_after
        if seen is not None and seen >= cutoff:
            return False
        newest, held = self._files.newest()
        if not held or newest is None or newest >= cutoff:
            return False
        return self._files.locked(
            lambda: self._files.expire(expire_after, keep_lock=False, durable=self._durable)
        )

    def _expire_for_write(self, seen: float | None) -> bool:
        """Under the lock, before a write: remove the run if it expired (keeping the lock file,
        which this writer holds); return whether it did."""
        expire_after = self._expire_after
        if expire_after is None or (seen is not None and time.time() - seen <= expire_after):
            return False
        return self._files.expire(expire_after, keep_lock=True, durable=self._durable)

    def _read_state(self) -> tuple[bytes, float] | None:
        """The state file's bytes and modification time (``None``: no file), bounded by this
        handle's ``max_state_size`` and the header (see :func:`_read_file`)."""
        return _read_file(self._path, _fileformat.HEADER_SIZE + self._max_state_size)

    def _read_sync(self) -> tuple[bytes, str] | None:
        found = self._read_state()
        if self._expired_sync(None if found is None else found[1]) or found is None:
            return None
        incarnation, counter, state = _decode(self._path, found[0])
        return state, _fileformat.format_token(incarnation, counter)

    def _locked(self, section: Callable[[], _T]) -> _T:
        """Run *section* holding this handle's thread lock and the run's ``flock``."""
        return self._files.locked(section)

    def _compare_and_set_sync(self, state: bytes, token: Token | None) -> tuple[bytes, Token, bool]:
        def section() -> tuple[bytes, Token, bool]:
            found = self._read_state()
            if self._expire_for_write(None if found is None else found[1]):
                found = None
            if found is None:
                if token is not None:
                    return b"", None, False
                incarnation, counter = os.urandom(16), 1
            else:
                incarnation, counter, current = _decode(self._path, found[0])
                current_token = _fileformat.format_token(incarnation, counter)
                if not _same_token(current_token, token):
                    return current, current_token, False
                counter += 1
            data = _fileformat.encode(incarnation, counter, state)
            try:
                _replace(self._directory, self._path, data, durable=self._durable)
            except OSError as exc:
                raise RendezvousConnectionError(f"cannot write {self._path}: {exc}") from exc
            return state, _fileformat.format_token(incarnation, counter), True

        return self._locked(section)

    def _delete_sync(self) -> bool:
        held = self._locked(lambda: self._files.remove(keep_lock=False, durable=self._durable))
        if held:
            log_run_deleted(logger, self._run_id)
        return held

    def _list_sync(self) -> list[RunInfo]:
        try:
            entries = list(os.scandir(self._directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RendezvousConnectionError(f"cannot list {self._directory}: {exc}") from exc
        found: dict[str, dict[str, os.stat_result]] = {}
        for entry in entries:
            stem, dot, kind = entry.name.rpartition(".")
            # Names starting with "." are writes in progress (no stem starts with one).
            if not dot or entry.name.startswith(".") or kind not in (_STATE, _MEMBERS, _LOCK):
                continue
            stat = _stat(Path(entry.path))
            if stat is not None:
                found.setdefault(stem, {})[kind] = stat
        now = time.time()
        runs: list[RunInfo] = []
        for stem, files in found.items():
            newest = max(stat.st_mtime for stat in files.values())
            if self._expire_after is not None and now - newest > self._expire_after:
                files = self._expire_listed(stem)
                if not files:
                    continue
                newest = max(stat.st_mtime for stat in files.values())
            if _STATE not in files and _MEMBERS not in files:
                continue  # a lock file alone (a write that created nothing): no run
            run_id = _run_id_of(self._directory, stem)
            if run_id is None:
                logger.debug("%s: files that name no run id, not listed", stem)
                continue
            state = files.get(_STATE)
            runs.append(RunInfo(
                run_id,
                None if state is None else max(0, state.st_size - _fileformat.HEADER_SIZE),
                max(0.0, now - newest),
                _count_members(self._directory / f"{stem}.{_MEMBERS}"),
            ))
        return runs

    def _expire_listed(self, stem: str) -> dict[str, os.stat_result]:
        """Remove the run *stem*, found idle by a listing, if it still is once its lock is held;
        return what is left of its files (written meanwhile: all of them)."""
        expire_after = self._expire_after
        assert expire_after is not None
        files = self._files if stem == self._files.stem else _RunFiles(
            self._directory, stem, _run_id_of(self._directory, stem))
        try:
            files.locked(lambda: files.expire(expire_after, keep_lock=False, durable=self._durable))
        finally:
            if files is not self._files:
                files.close()
        left = {kind: _stat(path) for kind, path in
                ((_STATE, files.state), (_MEMBERS, files.members), (_LOCK, files.lock))}
        return {kind: stat for kind, stat in left.items() if stat is not None}

    def _close_sync(self) -> None:
        self._files.close()

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
                with _local_changes.watching(self._path, self._closing) as changed:
                    # Looked at once registered: a close before this is seen here, and one
                    # after it wakes the event.
                    self._check_open()
                    current = await anyio.to_thread.run_sync(self._read_sync)
                    if current is not None and not _same_token(current[1], token):
                        return current
                    # poll-ok: other processes' writes are only seen by re-reading the file.
                    with anyio.move_on_after(self._poll_interval):
                        await changed.wait()
        return None

    async def aclose(self) -> None:
        """Close the handle; tasks waiting on it raise ``BackendClosedError`` at once (a wait
        in the middle of a read of the file, once that read ends), while other handles' waiters
        keep waiting."""
        if not self._closed:
            self._closed = True
            _local_changes.notify(self._closing)
            await anyio.to_thread.run_sync(self._close_sync)

    async def delete_run(self) -> bool:
        """Remove the run's files -- state, member records, lock file -- under the run's lock,
        so that a concurrent writer of the run either finished before or starts it afresh after
        (a new random incarnation: no old token or member version matches it). Waiters in this
        process are woken and re-read. Cancelling it lets the deletion finish."""
        self._check_open()
        return await anyio.to_thread.run_sync(self._delete_sync)

    async def list_runs(self) -> list[RunInfo]:
        """Every run of the directory: its run id (decoded from the file names), its state's
        size, its age (since its files were last modified, by this machine's clock) and its
        number of member records (``None`` if its member file cannot be decoded). With
        ``expire_after``, expired runs are removed, not listed."""
        self._check_open()
        return await anyio.to_thread.run_sync(self._list_sync)

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


def _decode_members(
    path: Path, found: tuple[bytes, float] | None
) -> tuple[bytes, int, dict[str, list[Any]]]:
    """``(incarnation, next number, records)`` of the member file *path* whose bytes were
    *found*; a new, empty table (a new random incarnation) if there was no file.

    :raises RendezvousStateError: the file is not a valid member file.
    """
    if found is None:
        return os.urandom(16), 1, {}
    incarnation, next_number, payload = _decode(path, found[0])
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
        raise RendezvousStateError(f"member file {path} is malformed: {exc}") from exc
    return incarnation, next_number, records


def _count_members(path: Path) -> int | None:
    """How many records the member file *path* holds (0 without one); ``None`` if it cannot be
    read or decoded (listing reports what it can rather than fail on one damaged run)."""
    try:
        return len(_decode_members(path, _read_file(path, MAX_MEMBER_FILE))[2])
    except (RendezvousStateError, RendezvousConnectionError):
        return None


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
        self._path = backend._files.members

    def __repr__(self) -> str:
        return f"FileMemberTable({str(self._path)!r})"

    # -- the file, in worker threads -------------------------------------------------------------

    def _load(self) -> tuple[bytes, int, dict[str, list[Any]]]:
        """For readers: the records, or an empty table if the run has expired (and was removed)."""
        found = _read_file(self._path, MAX_MEMBER_FILE)
        if self._backend._expired_sync(None if found is None else found[1]):
            found = None
        return _decode_members(self._path, found)

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
            found = _read_file(self._path, MAX_MEMBER_FILE)
            if backend._expire_for_write(None if found is None else found[1]):
                found = None
            incarnation, next_number, records = _decode_members(self._path, found)
            write, result = change(incarnation, next_number, records)
            if write:
                payload = json.dumps(records, separators=(",", ":")).encode()
                data = _fileformat.encode(incarnation, next_number + 1, payload)
                try:
                    _replace(backend._directory, self._path, data, durable=False)
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
    """Open ``file:///absolute/dir``; options ``durable``, ``poll_interval``, ``max_state_size``,
    ``expire_after`` (seconds). An ``@`` in the directory is written ``%40``: a literal one is
    refused, as it would be a user or password mistyped into the path."""
    from ._url import parse_bool, parse_options, parse_seconds
    from ._urlparse import has_userinfo_before_query

    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc not in ("", "localhost") or has_userinfo_before_query(url):
        raise ValueError(
            "file:// URLs name a local directory: no host but localhost, no user or password "
            "(write %40 for an '@' in a directory name)"
        )
    directory = urllib.parse.unquote(parsed.path)
    if not directory.startswith("/"):
        raise ValueError("file:// URLs need an absolute directory, e.g. file:///var/run/rdzv")
    options = parse_options(
        parsed,
        {"durable": parse_bool, "poll_interval": parse_seconds, "max_state_size": int,
         "expire_after": parse_seconds},
    )
    return FileBackend(directory, run_id, **options)
