"""A rendezvous backend on one SQLite file, through the standard library: a third-party backend.

Many processes on one machine share a run through the file. A write is one ``BEGIN IMMEDIATE``
transaction (SQLite's write lock: the compare and the write are one step) run in a worker
thread, so the backend works on asyncio and trio alike, and a cancelled call still finishes
its transaction -- entirely or not at all. ``wait_for_change`` polls (SQLite has no change
notification). Open it with ``SQLiteBackend(path, run_id)`` or, once installed,
``open_backend("sqlite:///path/to/file.sqlite3", run_id=...)``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
from arendezvous.contract import (
    DEFAULT_MAX_STATE_SIZE,
    AsyncRendezvousBackend,
    RendezvousConnectionError,
    RendezvousStateError,
    RunHandle,
    Token,
    check_run_id,
    check_state,
    check_timeout,
)

__all__ = ("SCHEMA", "SQLiteBackend", "open_sqlite_backend")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS arendezvous_runs (run_id TEXT PRIMARY KEY, record BLOB, token TEXT)"
)
"""The one table: a run's record (magic, CRC-32, state) and its token."""

_MAGIC = b"ARSQ"
_T = TypeVar("_T")


def _encode(state: bytes) -> bytes:
    return _MAGIC + zlib.crc32(state).to_bytes(4, "big") + state


def _decode(record: object) -> bytes:
    if not isinstance(record, bytes) or record[:4] != _MAGIC:
        raise RendezvousStateError("the stored record is not an arendezvous-sqlite record")
    state = record[8:]
    if zlib.crc32(state).to_bytes(4, "big") != record[4:8]:
        raise RendezvousStateError("the stored record fails its checksum")
    return state


def _is_current(token: object, current: object) -> bool:
    # Exact types only: a str subclass, or any object with its own __eq__, never matches.
    return token is None if current is None else type(token) is str and token == current


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:  # locked past the timeout, I/O error, no such file
        raise RendezvousConnectionError(f"SQLite: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # the file is not a database, or is corrupt
        raise RendezvousStateError(f"SQLite: {exc}") from exc


class SQLiteBackend(RunHandle, AsyncRendezvousBackend):
    """Run *run_id*'s state in the SQLite file *path* (created mode 0600 if missing)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        run_id: str,
        *,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
        poll_interval: float = 0.05,
    ) -> None:
        self._run_id = check_run_id(run_id)
        self._closed = False
        self._path = os.fspath(path)
        self._max_state_size = max_state_size
        self._poll_interval = poll_interval
        self._lock = threading.Lock()  # one worker thread at a time on the connection
        self._db: sqlite3.Connection | None = None

    @property
    def name(self) -> str:
        """``"sqlite"``."""
        return "sqlite"

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock, _store_errors():
            self._check_open()  # again: aclose() may have run since the call began
            if self._db is None:
                os.close(os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600))
                # Autocommit: every transaction is explicit (BEGIN IMMEDIATE below).
                self._db = sqlite3.connect(
                    self._path, isolation_level=None, check_same_thread=False
                )
                self._db.execute(SCHEMA)
            return work(self._db)

    def _read(self, db: sqlite3.Connection) -> tuple[bytes, str] | None:
        row = db.execute(
            "SELECT record, token FROM arendezvous_runs WHERE run_id = ?", (self._run_id,)
        ).fetchone()
        return None if row is None else (_decode(row[0]), row[1])

    async def get_state(self) -> tuple[bytes, Token] | None:
        """The run's ``(state, token)``, or ``None``; one read in a worker thread."""
        self._check_open()
        return await anyio.to_thread.run_sync(self._run, self._read)

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        """Compare and swap in one ``BEGIN IMMEDIATE`` transaction, in a worker thread."""
        self._check_open()
        state = check_state(state, self._max_state_size)

        def compare_and_swap(db: sqlite3.Connection) -> tuple[bytes, Token, bool]:
            db.execute("BEGIN IMMEDIATE")
            try:
                current = self._read(db)
                if not _is_current(token, None if current is None else current[1]):
                    return (b"", None, False) if current is None else (*current, False)
                new_token = uuid.uuid4().hex  # random 128 bits: never issued twice
                db.execute(
                    "INSERT OR REPLACE INTO arendezvous_runs VALUES (?, ?, ?)",
                    (self._run_id, _encode(state), new_token),
                )
                db.execute("COMMIT")
                return state, new_token, True
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")

        return await anyio.to_thread.run_sync(self._run, compare_and_swap)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        """Poll every ``poll_interval`` seconds (SQLite has no change notification)."""
        check_timeout(timeout)
        deadline = None if timeout is None else anyio.current_time() + max(timeout, 0)
        while True:
            current = await self.get_state()
            if current is not None and not _is_current(token, current[1]):
                return current
            if deadline is not None and anyio.current_time() >= deadline:
                return None
            left = self._poll_interval if deadline is None else deadline - anyio.current_time()
            await anyio.sleep(max(0.0, min(self._poll_interval, left)))

    async def aclose(self) -> None:
        """Close the connection; later calls, and waiters at their next poll, raise
        ``BackendClosedError``."""
        self._closed = True
        await anyio.to_thread.run_sync(self._run_close)

    def _run_close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def open_sqlite_backend(url: str, *, run_id: str) -> SQLiteBackend:
    """``open_backend("sqlite:///path/to/file.sqlite3", run_id=...)`` (the entry point)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path or parts.query:
        raise ValueError("expected sqlite:///absolute/path/to/file.sqlite3, with no options")
    return SQLiteBackend(unquote(parts.path), run_id)
