"""A delegating base for wrappers around a backend: record, inject faults, add latency, log.

:class:`BackendWrapper` passes every call of the contract to the backend it wraps, unchanged. A
wrapper subclasses it and overrides only the calls it changes; everything else -- ``name``,
``run_id``, closing, ``async with``, optional capabilities -- keeps working without a line of
its own. :class:`~arendezvous.testing.RecordingBackend` and
:class:`~arendezvous.testing.FaultyBackend` are built this way::

    import anyio
    from arendezvous.testing import BackendWrapper

    class SlowWrites(BackendWrapper):
        # every write takes *delay* seconds longer

        def __init__(self, backend, delay):
            super().__init__(backend)
            self.delay = delay

        async def set_state(self, state, token=None):
            await anyio.sleep(self.delay)
            return await self.backend.set_state(state, token)

Wrappers nest (``RecordingBackend(FaultyBackend(backend), recorder)``); each sees the calls of
the one outside it.
"""

from __future__ import annotations

from .._backend import AsyncRendezvousBackend, RunInfo, Token
from .._members import MemberTable

__all__ = ("BackendWrapper",)


class BackendWrapper(AsyncRendezvousBackend):
    """Passes every call to *backend*; subclass and override what your wrapper changes.

    * ``name`` is the wrapped backend's name.
    * ``run_id`` follows one rule for every wrapper: the wrapped backend's ``run_id`` when it
      has one that is a ``str``, else ``None`` (the contract does not require one).
    * :meth:`member_table` hands out the wrapped backend's optional capability unchanged (or
      ``None`` when it has none), so wrapping never hides one. Calls made through a capability
      do not pass through the wrapper.
    * :meth:`aclose` closes the wrapped backend; ``async with wrapper:`` closes it too.
    """

    def __init__(self, backend: AsyncRendezvousBackend) -> None:
        self._backend = backend

    @property
    def backend(self) -> AsyncRendezvousBackend:
        """The wrapped backend."""
        return self._backend

    @property
    def name(self) -> str:
        """The wrapped backend's name."""
        return self._backend.name

    @property
    def run_id(self) -> str | None:
        """The wrapped backend's run id, or ``None`` when it has none."""
        run_id = getattr(self._backend, "run_id", None)
        return run_id if isinstance(run_id, str) else None

    def member_table(self) -> MemberTable | None:
        """The wrapped backend's optional member-table capability, or ``None`` without one."""
        return self._backend.member_table()

    async def delete_run(self) -> bool:
        """The wrapped backend's ``delete_run()`` (an optional capability, passed on unchanged)."""
        return await self._backend.delete_run()

    async def list_runs(self) -> list[RunInfo]:
        """The wrapped backend's ``list_runs()`` (an optional capability, passed on unchanged)."""
        return await self._backend.list_runs()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._backend!r})"

    async def get_state(self) -> tuple[bytes, Token] | None:
        """The wrapped backend's ``get_state()``."""
        return await self._backend.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        """The wrapped backend's ``set_state(state, token)``."""
        return await self._backend.set_state(state, token)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        """The wrapped backend's ``wait_for_change(token, timeout=timeout)``."""
        return await self._backend.wait_for_change(token, timeout=timeout)

    async def aclose(self) -> None:
        """Close the wrapped backend."""
        await self._backend.aclose()
