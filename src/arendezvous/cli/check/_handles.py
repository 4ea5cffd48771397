"""A check client's store handles: one per run, each recorded, opened by URL or by an opener.

Every call goes through a :class:`~arendezvous.testing.history.RecordingBackend`, so the history
holds exactly what the client saw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence

from ..._backend import AsyncRendezvousBackend, Token
from ...backends._url import open_backend
from ...testing.history import Recorder, RecordingBackend
from ._workload import Kind

__all__ = ("Opener", "close_handles", "open_handles")

Opener = Callable[[str, str], AsyncRendezvousBackend]
"""Opens a backend as ``opener(url, run_id)``, for backends that have no URL scheme."""


def open_handles(
    url: str,
    run_ids: Sequence[str],
    recorder: Recorder,
    client: str,
    opener: Opener | None = None,
    announce: Callable[[Kind], None] | None = None,
) -> dict[str, AsyncRendezvousBackend]:
    """One recorded handle per run for *client*, opened by URL (or by *opener(url, run_id)*).

    *announce*, if given, is told the kind of each call after its invocation is recorded and
    just before the store is called: a kill timed from it lands inside a recorded call.
    """
    handles: dict[str, AsyncRendezvousBackend] = {}
    for run_id in run_ids:
        backend = open_backend(url, run_id=run_id) if opener is None else opener(url, run_id)
        if announce is not None:
            backend = _Announced(backend, announce)
        handles[run_id] = RecordingBackend(backend, recorder, client=client, key=run_id)
    return handles


class _Announced(AsyncRendezvousBackend):
    """Tells *announce* what kind of call starts, then makes it; adds no await of its own."""

    def __init__(self, backend: AsyncRendezvousBackend, announce: Callable[[Kind], None]) -> None:
        self._backend = backend
        self._announce = announce

    @property
    def name(self) -> str:
        return self._backend.name

    async def get_state(self) -> tuple[bytes, Token] | None:
        self._announce("read")
        return await self._backend.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self._announce("write")
        return await self._backend.set_state(state, token)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self._announce("wait")
        return await self._backend.wait_for_change(token, timeout=timeout)

    async def aclose(self) -> None:
        await self._backend.aclose()


async def close_handles(handles: Mapping[str, AsyncRendezvousBackend]) -> None:
    """Close every handle, ignoring errors: a store that is down may refuse a clean goodbye."""
    for handle in handles.values():
        with contextlib.suppress(Exception):
            await handle.aclose()
