"""The embedded backend: state held in this process, shared by every handle on one store.

It is the default for the demo and for single-process jobs, and the reference implementation of the
contract: a write is one dictionary update under a lock, so the cost measured in
``benchmarks/bench_backends.py`` is the price of the async interface itself.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from dataclasses import dataclass

import anyio

from .._backend import (
    DEFAULT_MAX_STATE_SIZE,
    AsyncRendezvousBackend,
    RunHandle,
    Token,
    check_run_id,
    check_state,
    check_timeout,
)
from .._members import (
    Member,
    MemberPut,
    MemberTable,
    check_group,
    check_member_value,
    check_node,
)
from .._notify import ChangeNotifier

__all__ = (
    "MemoryBackend",
    "MemoryMemberTable",
    "MemoryStore",
    "MemoryToken",
    "default_store",
    "from_url",
    "named_store",
)


class MemoryToken:
    """A memory backend's token. Equal only to itself, so it can neither repeat nor be forged.

    (It carries no counter: an identity is all a token needs, and creating it is on the hot path.)
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<MemoryToken at {id(self):#x}>"


class MemoryStore:
    """In-process storage for any number of runs; hand one to several :class:`MemoryBackend`.

    Safe across tasks, threads and event loops: every write is a short critical section under a
    :class:`threading.Lock` with no await inside, a read is one atomic lookup of an immutable
    ``(state, token)`` pair, and waiters are woken through their own loop's thread-safe scheduling.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, tuple[bytes, MemoryToken]] = {}
        self._rosters: dict[str, _Roster] = {}
        self._notifier = ChangeNotifier()

    def _get(self, run_id: str) -> tuple[bytes, MemoryToken] | None:
        # No lock: one dict lookup is atomic, and the value is an immutable (state, token) pair,
        # so a reader sees the pair before a write or after it, never a mix.
        return self._states.get(run_id)


_default_store = MemoryStore()
_named_stores: dict[str, MemoryStore] = {}
_named_stores_lock = threading.Lock()


def default_store() -> MemoryStore:
    """The process-wide store that :class:`MemoryBackend` uses when given none."""
    return _default_store


def named_store(name: str) -> MemoryStore:
    """The process-wide store called *name* (``memory://NAME``), created on first use."""
    with _named_stores_lock:
        return _named_stores.setdefault(name, MemoryStore())


class MemoryBackend(RunHandle, AsyncRendezvousBackend):
    """A handle on one run's state in a :class:`MemoryStore` (the process-wide one by default).

    ``get_state`` and ``set_state`` never block and complete without yielding to the event loop;
    ``wait_for_change`` is woken by the write itself. Cancellation cannot interrupt a write.
    """

    def __init__(
        self,
        run_id: str,
        store: MemoryStore | None = None,
        *,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
    ) -> None:
        self._run_id = check_run_id(run_id)
        self._store = _default_store if store is None else store
        if type(max_state_size) is not int or max_state_size < 0:
            raise ValueError("max_state_size must be a non-negative int")
        self._max_state_size = max_state_size
        self._closed = False

    @property
    def name(self) -> str:
        return "memory"

    @property
    def store(self) -> MemoryStore:
        """The store holding the state."""
        return self._store

    def __repr__(self) -> str:
        return f"MemoryBackend(run_id={self._run_id!r})"

    async def get_state(self) -> tuple[bytes, Token] | None:
        if self._closed:
            self._check_open()
        return self._store._states.get(self._run_id)  # see MemoryStore._get

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        if self._closed:
            self._check_open()
        if type(state) is not bytes or len(state) > self._max_state_size:
            state = check_state(state, self._max_state_size)
        # The compare-and-swap, inlined: this is the hot path of every get+CAS loop.
        store = self._store
        states = store._states
        with store._lock:
            current = states.get(self._run_id)
            if current is None:
                if token is not None:
                    return b"", None, False
            elif current[1] is not token:
                return current[0], current[1], False
            new_token = MemoryToken()
            states[self._run_id] = (state, new_token)
        if store._notifier.has_waiters:
            store._notifier.notify(self._run_id)
        return state, new_token, True

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self._check_open()
        check_timeout(timeout)
        with anyio.move_on_after(timeout):
            while True:
                with self._store._notifier.watching(self._run_id) as changed:
                    current = self._store._get(self._run_id)
                    if current is not None and current[1] is not token:
                        return current
                    await changed.wait()
        return None

    async def aclose(self) -> None:
        self._closed = True

    def member_table(self) -> MemoryMemberTable:
        """The run's member records, kept in the same store (ages by this process's clock)."""
        return MemoryMemberTable(self)


@dataclass(frozen=True, slots=True)
class _Record:
    group: str
    value: bytes
    version: MemoryToken
    seq: int
    written_at: float  # time.monotonic() of the last put or touch


class _Roster:
    """One run's member records; guarded by the store's lock."""

    __slots__ = ("groups", "records", "seq")

    def __init__(self) -> None:
        self.records: dict[str, _Record] = {}
        self.groups: dict[str, set[str]] = {}
        self.seq = 0

    def leave_group(self, node: str, group: str) -> None:
        nodes = self.groups[group]
        nodes.discard(node)
        if not nodes:
            del self.groups[group]


class MemoryMemberTable(MemberTable):
    """The memory backend's member table: records in the backend's :class:`MemoryStore`.

    Every call is one critical section under the store's lock, with no await inside; ages come
    from ``time.monotonic()``, which every handle of the store shares (one process).
    """

    has_clock = True

    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend
        self._store = backend.store
        self._run_id = backend.run_id

    def __repr__(self) -> str:
        return f"MemoryMemberTable(run_id={self._run_id!r})"

    def _roster(self) -> _Roster:
        self._backend._check_open()
        roster = self._store._rosters.get(self._run_id)
        if roster is None:
            roster = self._store._rosters.setdefault(self._run_id, _Roster())
        return roster

    @staticmethod
    def _member(node: str, record: _Record, now: float) -> Member:
        return Member(node, record.group, record.value, record.version, record.seq,
                      max(0.0, now - record.written_at))

    def _notify(self, node: str) -> None:
        self._store._notifier.notify((self._run_id, node))

    async def get(self, node: str) -> Member | None:
        check_node(node)
        roster = self._roster()
        with self._store._lock:
            record = roster.records.get(node)
            return None if record is None else self._member(node, record, time.monotonic())

    async def members(self, group: str) -> list[Member]:
        check_group(group)
        roster = self._roster()
        with self._store._lock:
            now = time.monotonic()
            found = [self._member(node, roster.records[node], now)
                     for node in roster.groups.get(group, ())]
        found.sort(key=lambda member: member.seq)
        return found

    async def count(self, group: str) -> int:
        check_group(group)
        roster = self._roster()
        with self._store._lock:
            return len(roster.groups.get(group, ()))

    async def put(
        self, node: str, group: str, value: bytes, version: Token | None
    ) -> MemberPut:
        check_node(node)
        check_group(group)
        value = check_member_value(value)
        roster = self._roster()
        with self._store._lock:
            now = time.monotonic()
            current = roster.records.get(node)
            if current is None if version is None else (
                current is not None and current.version is version
            ):
                if current is not None:
                    roster.leave_group(node, current.group)
                roster.seq += 1
                record = _Record(group, value, MemoryToken(), roster.seq, now)
                roster.records[node] = record
                members = roster.groups.setdefault(group, set())
                members.add(node)
                result = MemberPut(self._member(node, record, now), True, len(members))
            else:
                shown = None if current is None else self._member(node, current, now)
                return MemberPut(shown, False, 0)
        self._notify(node)
        return result

    async def touch(self, node: str, version: Token) -> Member | None:
        check_node(node)
        roster = self._roster()
        with self._store._lock:
            current = roster.records.get(node)
            if current is None or current.version is not version:
                return None
            now = time.monotonic()
            record = _Record(current.group, current.value, MemoryToken(), current.seq, now)
            roster.records[node] = record
            touched = self._member(node, record, now)
        self._notify(node)
        return touched

    async def delete(self, node: str, version: Token) -> bool:
        check_node(node)
        roster = self._roster()
        with self._store._lock:
            current = roster.records.get(node)
            if current is None or current.version is not version:
                return False
            del roster.records[node]
            roster.leave_group(node, current.group)
        self._notify(node)
        return True

    async def wait_for_change(
        self, node: str, version: Token | None, *, timeout: float | None = None
    ) -> bool:
        check_node(node)
        check_timeout(timeout)
        roster = self._roster()
        with anyio.move_on_after(timeout):
            while True:
                with self._store._notifier.watching((self._run_id, node)) as changed:
                    current = roster.records.get(node)
                    if (current is None) != (version is None) or (
                        current is not None and current.version is not version
                    ):
                        return True
                    await changed.wait()
        return False


def from_url(url: str, *, run_id: str) -> MemoryBackend:
    """Open ``memory://`` (the default store) or ``memory://NAME`` (a named process-wide store).

    Accepted option: ``max_state_size`` (bytes).
    """
    from ._url import parse_options

    parsed = urllib.parse.urlsplit(url)
    if parsed.path not in ("", "/"):
        raise ValueError("memory:// URLs take no path (percent-encode '/' in a user or password)")
    options = parse_options(parsed, {"max_state_size": int})
    store = named_store(parsed.netloc) if parsed.netloc else _default_store
    return MemoryBackend(run_id, store, **options)
