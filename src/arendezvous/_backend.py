"""The backend contract: one compare-and-swap register of bytes per run.

Every backend (in-memory, file, Redis, etcd, PostgreSQL, or a third party's) implements
:class:`AsyncRendezvousBackend`; everything above it (the sync adapter, the rendezvous, the test
kit) relies only on what this module promises.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from ._errors import BackendClosedError

if TYPE_CHECKING:
    from ._members import MemberTable

__all__ = (
    "DEFAULT_MAX_STATE_SIZE",
    "AsyncRendezvousBackend",
    "RunHandle",
    "RunInfo",
    "Token",
    "check_run_id",
    "check_state",
    "check_timeout",
    "same_token",
)

_Backend = TypeVar("_Backend", bound="AsyncRendezvousBackend")

Token: TypeAlias = Hashable
"""An opaque version of the stored state. Compare tokens only with ``==``; never build one."""

DEFAULT_MAX_STATE_SIZE = 1 << 20
"""Default upper bound, in bytes, on a state blob (1 MiB; fits every supported store's limits)."""


def check_state(state: object, max_size: int) -> bytes:
    """Validate *state* before anything is sent; return it typed as ``bytes``.

    :raises TypeError: *state* is not ``bytes`` (``bytearray`` and ``memoryview`` are refused too:
        they could change after the call).
    :raises ValueError: *state* is longer than *max_size*.
    """
    if type(state) is not bytes:
        if not isinstance(state, bytes):
            raise TypeError(f"state must be bytes, not {type(state).__name__}")
        # A subclass can override len(), == and hashing: keep its bytes, not the object.
        state = bytes(memoryview(state))
    if len(state) > max_size:
        raise ValueError(f"state is {len(state)} bytes; this backend accepts at most {max_size}")
    return state


def check_timeout(timeout: object) -> None:
    """Refuse a wait's timeout that is not ``None`` or a number, or is NaN.

    :raises TypeError: *timeout* is not ``None``, an ``int`` or a ``float``.
    :raises ValueError: *timeout* is NaN.
    """
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if math.isnan(timeout):
        raise ValueError("timeout must not be NaN")


def same_token(current: Token, candidate: object) -> bool:
    """Whether *candidate* is the token *current*, comparing without trusting *candidate*.

    *current* is a token the backend made itself; *candidate* is whatever a caller passed, so it
    is untrusted. The exact type is checked before ``==`` (a subclass or a foreign object never
    gets its ``__eq__`` called, so it can neither raise nor pretend to match), and for a
    dataclass token each field's exact type too (a dataclass compares its fields with ``==``,
    which would call a field's own ``__eq__``, e.g. of a ``str`` subclass). Backends use it
    wherever a caller's token meets a stored one outside the store, and so can third-party
    backends whose tokens are plain values or dataclasses.
    """
    if type(candidate) is not type(current):
        return False
    fields = getattr(type(current), "__dataclass_fields__", None)
    if fields is not None:
        for field in fields:
            if type(getattr(candidate, field)) is not type(getattr(current, field)):
                return False
    return bool(candidate == current)


def check_run_id(run_id: object) -> str:
    """Validate a run id: a non-empty ``str`` without NUL, naming one run's state within a store.

    NUL is refused because stores name a run's other keys (its member records) after the run id
    and a NUL: no run id may then be the prefix of another run's keys.

    :raises TypeError: *run_id* is not a ``str``.
    :raises ValueError: *run_id* is empty or contains NUL.
    """
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be str, not {type(run_id).__name__}")
    if not run_id:
        raise ValueError("run_id must not be empty")
    if "\x00" in run_id:
        raise ValueError("run_id must not contain NUL")
    return run_id


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run a store holds, as :meth:`AsyncRendezvousBackend.list_runs` reports it.

    :ivar run_id: the run's id.
    :ivar size: bytes of its state, or ``None`` if it has none (only member records).
    :ivar age: seconds since the run was last written (state or member records), by the store's
        own clock; ``None`` where the store cannot tell.
    :ivar members: how many member records it holds, or ``None`` where that is not known cheaply.
    """

    run_id: str
    size: int | None
    age: float | None
    members: int | None


class RunHandle:
    """What every bundled backend's handle has besides the contract: its run id and its closed
    flag. (Not part of the contract: third-party backends need not have it.)

    Subclasses set ``_run_id`` (through :func:`check_run_id`) and ``_closed`` in ``__init__``.
    """

    _run_id: str
    _closed: bool

    @property
    def run_id(self) -> str:
        """The run this handle reads and writes."""
        return self._run_id

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError(f"this {type(self).__name__} was closed")


class AsyncRendezvousBackend(ABC):
    """An awaitable compare-and-swap register holding one run's rendezvous state.

    The contract (see the README's "Backend contract" for the long form):

    * :meth:`get_state` returns ``None`` if no state was ever set, else ``(state, token)``.
    * :meth:`set_state` is one atomic compare-and-swap. It writes when *token* is the current token
      (or is ``None`` and no state exists) and returns ``(state, new_token, True)``; otherwise it
      changes nothing and returns the current ``(state, token, False)``. A token that is stale,
      foreign, of another type or plain garbage is simply not current: it never raises.
    * Tokens never repeat within a run, even when the same bytes are written again.
    * Handles are safe to share between tasks. Cancelling a call leaves the write applied entirely
      or not at all.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """A short, stable name of the backend kind, e.g. ``"memory"`` or ``"redis"``."""

    @abstractmethod
    async def get_state(self) -> tuple[bytes, Token] | None:
        """Return the stored ``(state, token)``, or ``None`` when no state was ever set.

        :raises RendezvousStateError: the stored bytes cannot be decoded.
        :raises RendezvousConnectionError: the store cannot be reached.
        """

    @abstractmethod
    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        """Write *state* if *token* is current; return ``(state, token, written)``.

        On success the returned state is *state* and the token is new. On failure nothing changed
        and the current state and token are returned; if no state exists at all (a non-``None``
        token was passed for an empty run) that is ``(b"", None, False)``, so a retry with the
        returned token ``None`` creates the state.

        :raises TypeError: *state* is not ``bytes``.
        :raises ValueError: *state* exceeds the backend's size limit.
        :raises RendezvousStateError: the stored bytes cannot be decoded (nothing is overwritten).
        :raises RendezvousConnectionError: the store cannot be reached; the write may or may not
            have been applied.
        """

    @abstractmethod
    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        """Wait until the stored token differs from *token*; return the new ``(state, token)``.

        Returns at once if it already differs, and ``None`` if *timeout* seconds pass first.
        ``token=None`` waits for the state to be created. Notifications are only hints: the
        state is re-read and tokens compared before returning, so a spurious wake-up is never
        reported as a change.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release the handle's resources. Idempotent; later calls raise ``BackendClosedError``."""

    def member_table(self) -> MemberTable | None:
        """The run's member table, if this backend offers that optional capability; else ``None``.

        Not part of the one-blob contract: a backend that returns ``None`` (this default) still
        carries a rendezvous, which then keeps its member records inside the blob. The bundled
        backends return a table that shares this handle's connections and lifetime; see
        :class:`~arendezvous.MemberTable`.
        """
        return None

    async def delete_run(self) -> bool:
        """Delete everything the store keeps for this handle's run (its state and member
        records), so that it starts afresh: a later write creates a new incarnation, and no token
        or version of the old one ever matches it. Return whether there was anything to delete.

        An optional capability of the lifecycle (every bundled backend offers it); deleting a run
        that nodes still use makes them start it again from nothing.

        :raises NotImplementedError: the backend cannot delete runs (this default).
        :raises RendezvousConnectionError: the store cannot be reached; the deletion may or may
            not have happened.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot delete runs")

    async def list_runs(self) -> list[RunInfo]:
        """Every run the store holds in this handle's namespace (its key prefix, table,
        directory...), in no particular order.

        An optional capability of the lifecycle (every bundled backend offers it).

        :raises NotImplementedError: the backend cannot list runs (this default).
        :raises RendezvousConnectionError: the store cannot be reached.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list runs")

    async def __aenter__(self: _Backend) -> _Backend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
