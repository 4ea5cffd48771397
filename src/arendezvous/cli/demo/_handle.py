"""A demo node's store handle: it counts calls and lost writes, adds latency, and can go silent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from ..._backend import AsyncRendezvousBackend, Token

if TYPE_CHECKING:
    from ._narrator import Demo

__all__ = ("DemoBackend",)


class DemoBackend(AsyncRendezvousBackend):
    """A node's handle: counts calls and lost writes, adds latency, and can go silent."""

    def __init__(self, demo: Demo, node: str, backend: AsyncRendezvousBackend) -> None:
        self._demo = demo
        self._node = node
        self._backend = backend
        self.silent = False

    @property
    def name(self) -> str:
        return self._backend.name

    async def _gone(self) -> None:
        if self.silent:
            await anyio.sleep_forever()  # a host that vanished: no answer, no error

    async def get_state(self) -> tuple[bytes, Token] | None:
        await self._gone()
        self._demo.operations += 1
        return await self._backend.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        await self._gone()
        await anyio.sleep(self._demo.rng.uniform(0, self._demo.latency))
        await self._gone()
        self._demo.operations += 1
        result = await self._backend.set_state(state, token)
        if result[2]:
            self._demo.wrote(self._node, state)
        else:
            self._demo.conflicts[self._node] = self._demo.conflicts.get(self._node, 0) + 1
        return result

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        await self._gone()
        self._demo.operations += 1
        return await self._backend.wait_for_change(token, timeout=timeout)

    async def aclose(self) -> None:
        await self._backend.aclose()
