"""The one exception tree every part of arendezvous raises from.

Callers catch :class:`RendezvousError` for "anything went wrong in the rendezvous layer", or one of
its children when they can act on the difference: a store that cannot be reached may be retried
(:class:`RendezvousConnectionError`), stored bytes that cannot be decoded may not
(:class:`RendezvousStateError`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = (
    "BackendClosedError",
    "DuplicateNodeError",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "map_exceptions",
)


class RendezvousError(Exception):
    """Root of every error arendezvous raises on purpose."""


class RendezvousStateError(RendezvousError):
    """The stored state cannot be decoded (corrupt, truncated, foreign or of an unknown version).

    Nothing is overwritten when this is raised: the bytes stay in the store for inspection.
    """


class RendezvousConnectionError(RendezvousError):
    """The store could not be reached or failed mid-call; the cause is chained as ``__cause__``.

    Whether a write that failed this way took effect is unknown; re-read before retrying.
    """


class BackendClosedError(RendezvousConnectionError):
    """The backend handle was closed with ``aclose()``/``close()`` and cannot be used again."""


class RendezvousTimeoutError(RendezvousError):
    """A rendezvous did not complete within its deadline."""


class RendezvousClosedError(RendezvousError):
    """The rendezvous run was closed; no new round will start."""


class DuplicateNodeError(RendezvousError):
    """A live node of the run already uses this node id; every node needs an id of its own.

    Raised by ``next_rendezvous()`` within about one heartbeat interval of finding the id in use
    (the other node's heartbeat proves it alive). A record left by a node that died is taken over
    once it has been silent for the heartbeat timeout instead.
    """

    def __init__(self, node: str, detail: str = "") -> None:
        self.node = node
        message = f"node id {node!r} is already in use by a live node of this run"
        super().__init__(f"{message}: {detail}" if detail else message)


@contextmanager
def map_exceptions(
    *,
    connection: tuple[type[BaseException], ...] = (),
    state: tuple[type[BaseException], ...] = (),
    what: str,
) -> Iterator[None]:
    """Re-raise a store client's exceptions as ours, the original chained as ``__cause__``.

    *connection* exceptions become :class:`RendezvousConnectionError`, *state* exceptions
    :class:`RendezvousStateError`; *what* says what was being done (no credentials in it).
    Our own errors and cancellation pass through untouched.
    """
    try:
        yield
    except RendezvousError:
        raise
    except state as exc:
        raise RendezvousStateError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except connection as exc:
        raise RendezvousConnectionError(f"{what}: {type(exc).__name__}: {exc}") from exc
