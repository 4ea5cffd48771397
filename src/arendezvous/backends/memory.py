"""The embedded backend: state held in this process, shared by every handle on one store.

It is the default for the demo and for single-process jobs, and the reference implementation of the
contract: a write is one dictionary update under a lock, so the cost measured in
``benchmarks/bench_backends.py`` is the price of the async interface itself.

The run lifecycle: :meth:`MemoryBackend.delete_run` and :meth:`MemoryBackend.list_runs`, and
runs that expire (``expire_after``) judged on this process's monotonic clock. Expiry needs no
background task: every call that touches the store first removes the runs whose time is up (a
check of one number while none is due), so an expired run is never seen, and its memory is
reclaimed at the next call on any run of the store.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import urllib.parse
from collections.abc import Hashable
from dataclasses import dataclass

import anyio

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
from ._lifecycle import check_expire_after, log_run_deleted, log_run_expired

__all__ = (
    "MemoryBackend",
    "MemoryMemberTable",
    "MemoryStore",
    "MemoryToken",
    "default_store",
    "from_url",
    "named_store",
)

logger = logging.getLogger("arendezvous.backends.memory")


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

    A run expires once nobody has written to it (state or member records) for the
    ``expire_after`` of the last handle with one that wrote it: a write by any handle keeps it
    alive, and a run no handle with ``expire_after`` ever wrote never expires. Give every handle
    of a store the same ``expire_after``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")  # a forked child keeps using its copy: see _forksafe
        self._states: dict[str, tuple[bytes, MemoryToken]] = {}
        self._rosters: dict[str, _Roster] = {}
        self._notifier = ChangeNotifier()
        # The lifecycle, by time.monotonic(). Write times are tracked only once a handle with
        # expire_after has written (then for good, so that no age is ever stale): a clock read
        # (75 ns measured here) and a dict write per write would cost the untracked hot path
        # (about 535 ns per get_state + set_state pair) close to a fifth of its speed, and
        # without expiry only list_runs' ages need them (they are None then).
        self._tracking = False
        self._written: dict[str, float] = {}
        self._expiry: dict[str, float] = {}  # run id: its expire_after
        # No run expires before this (math.inf: none can): one comparison says nothing is due.
        self._next_expiry = math.inf

    def _get(self, run_id: str) -> tuple[bytes, MemoryToken] | None:
        if self._expiry:
            self._expire_due()
        # No lock: one dict lookup is atomic, and the value is an immutable (state, token) pair,
        # so a reader sees the pair before a write or after it, never a mix.
        return self._states.get(run_id)

    # -- the lifecycle; methods ending in _locked run under self._lock ---------------------------

    def _wrote_locked(self, run_id: str, expire_after: float | None) -> None:
        """Note a write of *run_id* now by a handle with *expire_after* (while tracking, or to
        start it)."""
        now = time.monotonic()
        self._tracking = True
        self._written[run_id] = now
        if expire_after is not None:
            self._expiry[run_id] = expire_after
            self._next_expiry = min(self._next_expiry, now + expire_after)

    def _remove_locked(self, run_id: str) -> tuple[bool, list[Hashable]]:
        """Forget everything of *run_id*; return whether it held state or member records, and
        the notification keys of what was removed (to notify once the lock is released)."""
        state = self._states.pop(run_id, None)
        roster = self._rosters.pop(run_id, None)
        self._written.pop(run_id, None)
        self._expiry.pop(run_id, None)
        nodes = () if roster is None else tuple(roster.records)
        keys: list[Hashable] = [run_id, *((run_id, node) for node in nodes)]
        return state is not None or bool(nodes), keys

    def _expire_due(self) -> None:
        """Remove every run whose expiry has passed (one comparison when none has)."""
        now = time.monotonic()
        if now < self._next_expiry:
            return
        keys: list[Hashable] = []
        expired: list[tuple[str, float, float]] = []
        with self._lock:
            # Writes since the last look only moved deadlines later: find the real ones.
            next_expiry = math.inf
            for run_id, expire_after in list(self._expiry.items()):
                deadline = self._written[run_id] + expire_after
                if deadline > now:
                    next_expiry = min(next_expiry, deadline)
                    continue
                idle = now - self._written[run_id]
                held, removed = self._remove_locked(run_id)
                keys += removed
                if held:
                    expired.append((run_id, idle, expire_after))
            self._next_expiry = next_expiry
        self._notify(keys)
        for run_id, idle, expire_after in expired:
            log_run_expired(logger, run_id, idle, expire_after)

    def _notify(self, keys: list[Hashable]) -> None:
        if self._notifier.has_waiters:
            for key in keys:
                self._notifier.notify(key)

    def _delete(self, run_id: str) -> bool:
        if self._expiry:
            self._expire_due()
        with self._lock:
            held, keys = self._remove_locked(run_id)
        self._notify(keys)
        if held:
            log_run_deleted(logger, run_id)
        return held

    def _list(self) -> list[RunInfo]:
        if self._expiry:
            self._expire_due()
        with self._lock:
            now = time.monotonic()
            runs: list[RunInfo] = []
            for run_id in {*self._states, *self._rosters}:
                current = self._states.get(run_id)
                roster = self._rosters.get(run_id)
                members = 0 if roster is None else len(roster.records)
                if current is None and not members:
                    continue  # only an empty roster (its records were deleted): holds nothing
                written = self._written.get(run_id)
                runs.append(RunInfo(run_id, None if current is None else len(current[0]),
                                    None if written is None else max(0.0, now - written),
                                    members))
        return runs


_default_store = MemoryStore()
_named_stores: dict[str, MemoryStore] = {}
_named_stores_lock = threading.Lock()
renew_in_child(sys.modules[__name__], "_named_stores_lock")


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

    :param expire_after: seconds after which a run that nobody writes to (state or member
        records) disappears, as if deleted; ``None`` (the default): never. Judged on this
        process's monotonic clock and enforced by every call on the store (see
        :class:`MemoryStore` for handles with different settings).
    """

    def __init__(
        self,
        run_id: str,
        store: MemoryStore | None = None,
        *,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
        expire_after: float | None = None,
    ) -> None:
        self._run_id = check_run_id(run_id)
        self._store = _default_store if store is None else store
        if type(max_state_size) is not int or max_state_size < 0:
            raise ValueError("max_state_size must be a non-negative int")
        self._max_state_size = max_state_size
        self._expire_after = check_expire_after(expire_after)
        self._closed = False
        # This handle's own key in the store's notifier: its waiters watch it besides what they
        # wait for, and aclose() notifies it, so closing wakes them (and no other handle's).
        self._closing = object()

    @property
    def name(self) -> str:
        return "memory"

    @property
    def store(self) -> MemoryStore:
        """The store holding the state."""
        return self._store

    @property
    def expire_after(self) -> float | None:
        """Seconds without a write after which this handle's writes let a run expire, or
        ``None``."""
        return self._expire_after

    def __repr__(self) -> str:
        return f"MemoryBackend(run_id={self._run_id!r})"

    async def get_state(self) -> tuple[bytes, Token] | None:
        if self._closed:
            self._check_open()
        store = self._store
        if store._expiry:
            store._expire_due()
        return store._states.get(self._run_id)  # see MemoryStore._get

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        if self._closed:
            self._check_open()
        if type(state) is not bytes or len(state) > self._max_state_size:
            state = check_state(state, self._max_state_size)
        # The compare-and-swap, inlined: this is the hot path of every get+CAS loop.
        store = self._store
        if store._expiry:
            store._expire_due()
        states = store._states
        run_id = self._run_id
        with store._lock:
            current = states.get(run_id)
            if current is None:
                if token is not None:
                    return b"", None, False
            elif current[1] is not token:
                return current[0], current[1], False
            new_token = MemoryToken()
            states[run_id] = (state, new_token)
            if store._tracking or self._expire_after is not None:
                store._wrote_locked(run_id, self._expire_after)
        if store._notifier.has_waiters:
            store._notifier.notify(run_id)
        return state, new_token, True

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self._check_open()
        check_timeout(timeout)
        with anyio.move_on_after(timeout):
            while True:
                with self._store._notifier.watching(self._run_id, self._closing) as changed:
                    # Looked at once registered: a close before this is seen here, and one
                    # after it wakes the event.
                    self._check_open()
                    current = self._store._get(self._run_id)
                    if current is not None and current[1] is not token:
                        return current
                    await changed.wait()
        return None

    async def aclose(self) -> None:
        """Close the handle; tasks waiting on it (state or member records) raise
        ``BackendClosedError`` at once, while other handles' waiters keep waiting."""
        self._closed = True
        self._store._notifier.notify(self._closing)

    async def delete_run(self) -> bool:
        """Delete the run's state and member records at once (one critical section); waiters
        are woken and re-read. A run created again gets tokens and versions never seen before.
        """
        self._check_open()
        return self._store._delete(self._run_id)

    async def list_runs(self) -> list[RunInfo]:
        """Every run of this handle's :class:`MemoryStore` that holds state or member records,
        with its state's size, its number of member records and its age (since its last write,
        by this process's monotonic clock; ``None`` unless the store tracks write times, which it
        does from the first write of a handle with ``expire_after`` on)."""
        self._check_open()
        return self._store._list()

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

    def _begin(self) -> MemoryStore:
        """Check the handle is open and the store's expired runs are gone; return the store."""
        self._backend._check_open()
        store = self._store
        if store._expiry:
            store._expire_due()
        return store

    def _roster_locked(self) -> _Roster:
        """The run's roster, created if it has none (under the store's lock: a roster fetched
        before taking it could be one that delete_run() has just removed)."""
        roster = self._store._rosters.get(self._run_id)
        if roster is None:
            roster = self._store._rosters[self._run_id] = _Roster()
        return roster

    def _wrote_locked(self) -> None:
        store, expire_after = self._store, self._backend._expire_after
        if store._tracking or expire_after is not None:
            store._wrote_locked(self._run_id, expire_after)

    @staticmethod
    def _member(node: str, record: _Record, now: float) -> Member:
        return Member(node, record.group, record.value, record.version, record.seq,
                      max(0.0, now - record.written_at))

    def _notify(self, node: str) -> None:
        self._store._notifier.notify((self._run_id, node))

    def _record(self, node: str) -> _Record | None:
        # Reads create no roster: a run that is only read holds nothing.
        roster = self._store._rosters.get(self._run_id)
        return None if roster is None else roster.records.get(node)

    async def get(self, node: str) -> Member | None:
        check_node(node)
        store = self._begin()
        with store._lock:
            record = self._record(node)
            return None if record is None else self._member(node, record, time.monotonic())

    async def members(self, group: str) -> list[Member]:
        check_group(group)
        store = self._begin()
        with store._lock:
            roster = store._rosters.get(self._run_id)
            if roster is None:
                return []
            now = time.monotonic()
            found = [self._member(node, roster.records[node], now)
                     for node in roster.groups.get(group, ())]
        found.sort(key=lambda member: member.seq)
        return found

    async def count(self, group: str) -> int:
        check_group(group)
        store = self._begin()
        with store._lock:
            roster = store._rosters.get(self._run_id)
            return 0 if roster is None else len(roster.groups.get(group, ()))

    async def put(
        self, node: str, group: str, value: bytes, version: Token | None
    ) -> MemberPut:
        check_node(node)
        check_group(group)
        value = check_member_value(value)
        store = self._begin()
        with store._lock:
            now = time.monotonic()
            current = self._record(node)
            if current is None if version is None else (
                current is not None and current.version is version
            ):
                roster = self._roster_locked()
                if current is not None:
                    roster.leave_group(node, current.group)
                roster.seq += 1
                record = _Record(group, value, MemoryToken(), roster.seq, now)
                roster.records[node] = record
                members = roster.groups.setdefault(group, set())
                members.add(node)
                self._wrote_locked()
                result = MemberPut(self._member(node, record, now), True, len(members))
            else:
                shown = None if current is None else self._member(node, current, now)
                return MemberPut(shown, False, 0)
        self._notify(node)
        return result

    async def touch(self, node: str, version: Token) -> Member | None:
        check_node(node)
        store = self._begin()
        with store._lock:
            current = self._record(node)
            if current is None or current.version is not version:
                return None
            now = time.monotonic()
            record = _Record(current.group, current.value, MemoryToken(), current.seq, now)
            self._roster_locked().records[node] = record
            self._wrote_locked()
            touched = self._member(node, record, now)
        self._notify(node)
        return touched

    async def delete(self, node: str, version: Token) -> bool:
        check_node(node)
        store = self._begin()
        with store._lock:
            current = self._record(node)
            if current is None or current.version is not version:
                return False
            roster = self._roster_locked()
            del roster.records[node]
            roster.leave_group(node, current.group)
            self._wrote_locked()
        self._notify(node)
        return True

    async def wait_for_change(
        self, node: str, version: Token | None, *, timeout: float | None = None
    ) -> bool:
        check_node(node)
        check_timeout(timeout)
        store = self._begin()
        with anyio.move_on_after(timeout):
            while True:
                with store._notifier.watching(
                    (self._run_id, node), self._backend._closing
                ) as changed:
                    self._backend._check_open()  # once registered, as in MemoryBackend's wait
                    if store._expiry:
                        store._expire_due()
                    # Looked up afresh each time: delete_run() replaces the run's roster.
                    current = self._record(node)
                    if (current is None) != (version is None) or (
                        current is not None and current.version is not version
                    ):
                        return True
                    await changed.wait()
        return False


def from_url(url: str, *, run_id: str) -> MemoryBackend:
    """Open ``memory://`` (the default store) or ``memory://NAME`` (a named process-wide store).

    Accepted options: ``max_state_size`` (bytes), ``expire_after`` (seconds).
    """
    from ._url import parse_options, parse_seconds

    parsed = urllib.parse.urlsplit(url)
    if parsed.path not in ("", "/"):
        raise ValueError("memory:// URLs take no path (percent-encode '/' in a user or password)")
    options = parse_options(parsed, {"max_state_size": int, "expire_after": parse_seconds})
    store = named_store(parsed.netloc) if parsed.netloc else _default_store
    return MemoryBackend(run_id, store, **options)
