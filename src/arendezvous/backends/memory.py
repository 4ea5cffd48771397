"""The embedded backend: state held in this process, shared by every handle on one store.

It is the default for the demo and for single-process jobs, and the reference implementation of the
contract: a write is one dictionary update under a lock, so the cost measured in
``benchmarks/bench_backends.py`` is the price of the async interface itself.
"""

from __future__ import annotations

import threading
import urllib.parse

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
from .._notify import ChangeNotifier

__all__ = (
    "MemoryBackend",
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
