"""What the command-line tests share: runs with a formed round to list, inspect, close and delete,
and a backend without the run lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from arendezvous import AsyncRendezvousBackend, FileBackend, MemoryBackend, MemoryStore, Token
from arendezvous.rendezvous import AsyncRendezvous

FormRound = Callable[[Path, str, int], None]


def _form_round(directory: Path, run_id: str, nodes: int) -> None:
    """*nodes* nodes form a round of the run *run_id* in the file store *directory*, and leave
    their records behind (as if still running, with a heartbeat a minute apart)."""

    async def form() -> None:
        handles = [FileBackend(directory, run_id, durable=False) for _ in range(nodes)]
        members = [AsyncRendezvous(handle, f"n{index}", nodes, nodes, heartbeat=60)
                   for index, handle in enumerate(handles)]
        async with anyio.create_task_group() as group:
            for member in members:
                group.start_soon(member.next_rendezvous)
        for handle in handles:
            await handle.aclose()

    anyio.run(form)


@pytest.fixture
def form_round() -> FormRound:
    """``form_round(directory, run_id, nodes)``: see :func:`_form_round`."""
    return _form_round


class ContractOnly(AsyncRendezvousBackend):
    """A backend with the one-blob contract and nothing more (no lifecycle)."""

    def __init__(self) -> None:
        self.inner = MemoryBackend("contract-only", MemoryStore())

    @property
    def name(self) -> str:
        return "contract-only"

    async def get_state(self) -> tuple[bytes, Token] | None:
        return await self.inner.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        return await self.inner.set_state(state, token)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        return await self.inner.wait_for_change(token, timeout=timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def contract_only() -> AsyncRendezvousBackend:
    """A handle of :class:`ContractOnly`."""
    return ContractOnly()
