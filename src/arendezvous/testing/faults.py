"""A fault-injecting wrapper for any backend, so clients can be tested under failure.

:class:`FaultyBackend` passes every call to the backend it wraps, except that, at random but
reproducibly from a seed, it

* **delays** a call (sleeps before passing it on), which reshuffles how clients interleave;
* **drops the connection before** the store saw the call: raises
  :class:`~arendezvous.RendezvousConnectionError` and nothing is applied;
* **drops the connection after** the store applied it: the write *is* applied, then
  :class:`~arendezvous.RendezvousConnectionError` is raised -- the ambiguous case a client must
  handle by re-reading, never by assuming its write failed;
* **times out**: the call hangs for ``timeout_after`` seconds, then raises
  :class:`~arendezvous.RendezvousConnectionError` (caused by :class:`TimeoutError`); a write has
  been applied or not, at random, before the hang -- so other clients may see it while its writer
  still waits.

Every injected error has an :class:`InjectedFault` as its ``__cause__``, so a test can tell them
from real ones, and :attr:`FaultyBackend.injected` counts them. A ``state`` that is not ``bytes``
raises ``TypeError`` before any fault, as a real backend checks its input before any network
traffic; the size limit is the wrapped backend's, checked when the call reaches it.

Decisions come from a :class:`random.Random` seeded with *seed* and drawn in call order (four
numbers per call), so the same sequence of calls on a handle meets the same faults on every
run; concurrent calls get theirs in the order they are made. Give each handle its own seed
(``seed=(run, client)`` style strings work) for independent streams::

    backend = FaultyBackend(MemoryBackend("run"), seed="test-1", drop_after=0.1, delay=0.5)

Combine with :class:`~arendezvous.testing.history.RecordingBackend` (outermost) to record what the
client saw, and with :func:`~arendezvous.testing.linearizability.check` to prove the history
still linearizable. Injected delays and hangs are the only sleeps in the library: they are the
fault being simulated.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Literal, TypeVar

import anyio

from .._backend import DEFAULT_MAX_STATE_SIZE, AsyncRendezvousBackend, Token, check_state
from .._errors import RendezvousConnectionError
from .wrapper import BackendWrapper

_T = TypeVar("_T")

__all__ = ("Fault", "FaultyBackend", "InjectedFault")

Fault = Literal["drop_before", "drop_after", "timeout"]
"""The kinds of injected error (delays count as ``"delay"`` in :attr:`FaultyBackend.injected`)."""


class InjectedFault(ConnectionError):
    """The ``__cause__`` of every error :class:`FaultyBackend` injects."""


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


class FaultyBackend(BackendWrapper):
    """Wraps *backend* and injects faults into its calls, reproducibly from *seed*.

    :param seed: seeds the decisions (``int``, ``str`` or ``bytes``).
    :param delay: probability that a call is delayed first.
    :param max_delay: an injected delay lasts uniformly up to this many seconds.
    :param drop_before: probability of a dropped connection before the store sees the call.
    :param drop_after: probability of a dropped connection after the store applied the call.
    :param timeout: probability that the call hangs, then raises.
    :param timeout_after: how long a hang lasts, in seconds.
    :param reads: inject into ``get_state`` and ``wait_for_change`` too (default); ``False``
        confines faults to ``set_state``.

    ``drop_before + drop_after + timeout`` must not exceed 1. ``aclose`` is never faulted;
    ``name``, ``run_id`` and capabilities are the wrapped backend's (see
    :class:`~arendezvous.testing.wrapper.BackendWrapper`).
    Cancellation during an injected delay or hang propagates; the write was applied, or not,
    exactly as the wrapped backend left it.
    """

    def __init__(
        self,
        backend: AsyncRendezvousBackend,
        *,
        seed: int | str | bytes,
        delay: float = 0.0,
        max_delay: float = 0.01,
        drop_before: float = 0.0,
        drop_after: float = 0.0,
        timeout: float = 0.0,
        timeout_after: float = 0.05,
        reads: bool = True,
    ) -> None:
        super().__init__(backend)
        self._delay = _probability("delay", delay)
        self._drop_before = _probability("drop_before", drop_before)
        self._drop_after = _probability("drop_after", drop_after)
        self._timeout = _probability("timeout", timeout)
        if self._drop_before + self._drop_after + self._timeout > 1.0:
            raise ValueError("drop_before + drop_after + timeout must not exceed 1")
        if max_delay < 0 or timeout_after < 0:
            raise ValueError("max_delay and timeout_after must not be negative")
        self._max_delay = float(max_delay)
        self._timeout_after = float(timeout_after)
        self._reads = reads
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._injected: Counter[str] = Counter()
        self._calls = 0

    @property
    def injected(self) -> Counter[str]:
        """Faults injected so far by kind: delay, drop_before, drop_after, timeout (a copy)."""
        with self._lock:
            return Counter(self._injected)

    @property
    def calls(self) -> int:
        """How many calls drew decisions so far."""
        with self._lock:
            return self._calls

    def _decide(self) -> tuple[float, Fault | None, bool]:
        """Draw this call's delay, fault and (for a timeout) whether the write applies."""
        with self._lock:
            self._calls += 1
            # Always four draws, so one call's decisions never shift the next call's.
            delay_draw, length_draw, fault_draw, apply_draw = (
                self._random.random() for _ in range(4)
            )
            delay = self._max_delay * length_draw if delay_draw < self._delay else 0.0
            fault: Fault | None = None
            if fault_draw < self._drop_before:
                fault = "drop_before"
            elif fault_draw < self._drop_before + self._drop_after:
                fault = "drop_after"
            elif fault_draw < self._drop_before + self._drop_after + self._timeout:
                fault = "timeout"
            if delay:
                self._injected["delay"] += 1
            if fault is not None:
                self._injected[fault] += 1
            return delay, fault, apply_draw < 0.5

    async def _hang(self) -> None:
        await anyio.sleep(self._timeout_after)  # injected fault: a store that stopped answering

    @staticmethod
    def _error(fault: Fault, what: str) -> RendezvousConnectionError:
        if fault == "drop_before":
            text = f"injected fault: connection dropped before the store saw {what}"
        elif fault == "drop_after":
            text = f"injected fault: connection dropped after the store applied {what}"
        else:
            text = f"injected fault: {what} timed out"
        error = RendezvousConnectionError(text)
        cause: InjectedFault = InjectedFault(text)
        if fault == "timeout":
            cause.__cause__ = TimeoutError(text)
        error.__cause__ = cause
        return error

    async def _faulty(self, what: str, call: Callable[[], Awaitable[_T]], *, write: bool) -> _T:
        """Make *call* (the wrapped backend's *what*) through this call's drawn faults: a
        delay, a drop before or after the store sees it, or a timeout (after which a *write*
        applies or not, as drawn)."""
        delay, fault, applies = self._decide()
        if delay:
            await anyio.sleep(delay)  # injected fault: a slow network
        if fault == "drop_before":
            raise self._error(fault, what)
        if fault == "timeout":
            if write and applies:
                await call()
            await self._hang()
            raise self._error(fault, what)
        result = await call()
        if fault == "drop_after":
            raise self._error(fault, what)
        return result

    async def get_state(self) -> tuple[bytes, Token] | None:
        if not self._reads:
            return await self._backend.get_state()
        return await self._faulty("get_state", self._backend.get_state, write=False)

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        if not isinstance(state, bytes):
            check_state(state, DEFAULT_MAX_STATE_SIZE)  # raises TypeError before any fault
        return await self._faulty(
            "set_state", partial(self._backend.set_state, state, token), write=True
        )

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        if not self._reads:
            return await self._backend.wait_for_change(token, timeout=timeout)
        return await self._faulty(
            "wait_for_change", partial(self._backend.wait_for_change, token, timeout=timeout),
            write=False,
        )
