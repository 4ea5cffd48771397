"""``TorchRendezvousBackend``: any arendezvous backend as PyTorch's ``RendezvousBackend``.

PyTorch's ``DynamicRendezvousHandler`` calls ``get_state``/``set_state`` from ordinary threads (its
own and its keep-alive timer's) and expects torch's exception types; this adapter drives the async
backend through :class:`~arendezvous.SyncBackend` and translates the errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch.distributed.elastic.rendezvous import api as torch_api
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import RendezvousBackend

from .._backend import AsyncRendezvousBackend, Token
from .._closing import ClosesOnExit
from .._errors import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousStateError,
    RendezvousTimeoutError,
)
from ..sync import SyncBackend

__all__ = ("TorchRendezvousBackend", "as_sync_backend", "torch_errors")


@contextmanager
def torch_errors() -> Iterator[None]:
    """Re-raise arendezvous's errors as torch's classes of the same names, ours as ``__cause__``.

    torch's handler and agent act on their own classes (its handler retries on a connection error
    and gives up on a state error); ours share only the names.
    """
    try:
        yield
    except RendezvousClosedError as exc:
        raise torch_api.RendezvousClosedError(str(exc)) from exc
    except RendezvousTimeoutError as exc:
        raise torch_api.RendezvousTimeoutError(str(exc)) from exc
    except RendezvousStateError as exc:
        raise torch_api.RendezvousStateError(str(exc)) from exc
    except RendezvousConnectionError as exc:
        raise torch_api.RendezvousConnectionError(str(exc)) from exc


def as_sync_backend(backend: AsyncRendezvousBackend | SyncBackend) -> SyncBackend:
    """*backend* itself if it is a :class:`SyncBackend`, else a new one that owns it."""
    if isinstance(backend, SyncBackend):
        return backend
    if isinstance(backend, AsyncRendezvousBackend):
        return SyncBackend(backend)
    raise TypeError(
        "expected an AsyncRendezvousBackend or a SyncBackend, not " + type(backend).__name__
    )


class TorchRendezvousBackend(ClosesOnExit, RendezvousBackend):
    """torch's ``RendezvousBackend`` over an arendezvous backend, for ``DynamicRendezvousHandler``.

    :param backend: an :class:`~arendezvous.AsyncRendezvousBackend` (wrapped in a new
        :class:`~arendezvous.SyncBackend`, which this adapter then owns) or a ``SyncBackend``.
    :param name: what :attr:`name` reports; defaults to the wrapped backend's name (``"file"``,
        ``"redis"``, ...). torch's handler reports it as its ``get_backend()``.

    Errors are torch's: a store that cannot be reached raises torch's
    ``RendezvousConnectionError`` and undecodable stored bytes its ``RendezvousStateError``, each
    with arendezvous's error chained. Tokens are the wrapped backend's, opaque to torch.

    Close it with :meth:`close` once the handler is shut down, or use it as a context manager
    (``with TorchRendezvousBackend(...) as backend:``).

    torch's handler pickles its state into the blob and unpickles what it reads: whoever can write
    the run's key in the store can run code on every node. That is torch's design (its own
    backends share it); arendezvous's own rendezvous never unpickles.
    """

    def __init__(
        self, backend: AsyncRendezvousBackend | SyncBackend, *, name: str | None = None
    ) -> None:
        self._sync = as_sync_backend(backend)
        self._name = name if name is not None else self._sync.name

    @property
    def name(self) -> str:
        """The backend's name, as torch's handler reports it."""
        return self._name

    @property
    def sync_backend(self) -> SyncBackend:
        """The blocking adapter this backend calls."""
        return self._sync

    def __repr__(self) -> str:
        return f"TorchRendezvousBackend({self._sync.backend!r})"

    def get_state(self) -> tuple[bytes, Token] | None:
        """Return ``(state, token)``, or ``None`` if the run has no state yet.

        :raises torch...RendezvousStateError: the stored bytes cannot be decoded.
        :raises torch...RendezvousConnectionError: the store cannot be reached.
        """
        with torch_errors():
            return self._sync.get_state()

    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        """Compare-and-swap: write *state* if *token* is current; return ``(state, token, set)``.

        Returns ``None`` only when a token was passed for a run that has no state at all (it was
        deleted behind the handler's back): torch's handler then starts from a fresh state, as it
        does with its own backends, instead of unpickling an empty blob.

        :raises torch...RendezvousStateError: the stored bytes cannot be decoded.
        :raises torch...RendezvousConnectionError: the store cannot be reached; the write may or
            may not have been applied.
        """
        with torch_errors():
            result = self._sync.set_state(state, token)
        if result[1] is None:
            return None
        return result

    def close(self) -> None:
        """Close the wrapped backend and its loop thread. Idempotent."""
        self._sync.close()

