"""Wake-ups that cross threads and event loops, for backends that live in this process.

A waiter registers *before* it re-reads the state and a writer notifies *after* it wrote, so a
change can never slip between the two: either the re-read sees it, or the notification arrives.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager, suppress

import anyio

from ._forksafe import renew_in_child

__all__ = ("ChangeNotifier", "threadsafe_setter")


def threadsafe_setter(event: anyio.Event) -> Callable[[], None]:
    """Return a callable that sets *event* from any thread without blocking.

    Must be called inside the event loop that owns *event* (asyncio or trio). A wake-up aimed at a
    loop that has since finished is dropped: nobody is left to wait for it.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:

        def wake_asyncio() -> None:
            with suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(event.set)

        return wake_asyncio

    trio = sys.modules.get("trio")
    if trio is None:  # pragma: no cover - anyio supports only asyncio and trio
        raise RuntimeError("threadsafe_setter() needs a running asyncio or trio event loop")
    trio_token = trio.lowlevel.current_trio_token()
    run_finished = trio.RunFinishedError

    def wake_trio() -> None:
        with suppress(run_finished):
            trio_token.run_sync_soon(event.set)

    return wake_trio


class ChangeNotifier:
    """A registry of tasks waiting for a key to change, safe across threads and event loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")  # a notifier lives across fork(): see _forksafe
        self._waiters: dict[Hashable, set[Callable[[], None]]] = {}
        #: Whether anyone watches any key: a lock-free check that writers make before notify().
        self.has_waiters = False

    @contextmanager
    def watching(self, key: Hashable, *more_keys: Hashable) -> Iterator[anyio.Event]:
        """Register for changes of *key* (and of each of *more_keys*: a handle's own key, which
        its ``aclose()`` notifies) for the duration of the block; yield the event to await.

        The event fires at most once, whichever key is notified; open a new block to wait again.
        """
        event = anyio.Event()
        wake = threadsafe_setter(event)
        keys = (key, *more_keys)
        with self._lock:
            for each in keys:
                self._waiters.setdefault(each, set()).add(wake)
            self.has_waiters = True
        try:
            yield event
        finally:
            with self._lock:
                for each in keys:
                    waiters = self._waiters.get(each)
                    if waiters is not None:
                        waiters.discard(wake)
                        if not waiters:
                            del self._waiters[each]
                self.has_waiters = bool(self._waiters)

    def notify(self, key: Hashable) -> None:
        """Wake every task currently watching *key*. Cheap when nobody watches."""
        if not self.has_waiters:
            return
        with self._lock:
            waiters = self._waiters.pop(key, None)
            self.has_waiters = bool(self._waiters)
        if waiters:
            for wake in waiters:
                wake()
