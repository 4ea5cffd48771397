"""Tasks waiting on a backend while a test acts: the shape most change-notice tests share."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from arendezvous import AsyncRendezvousBackend, Token


@asynccontextmanager
async def waiting(
    backend: AsyncRendezvousBackend,
    token: Token | None,
    *,
    count: int = 1,
    timeout: float | None = 10.0,
    within: float = math.inf,
) -> AsyncIterator[list[Any]]:
    """Start *count* tasks, each calling ``backend.wait_for_change(token, timeout=timeout)``;
    yield the list their results go to, in the order they come. Leaving the block waits for
    every task; the whole block must end within *within* seconds."""
    results: list[Any] = []

    async def wait() -> None:
        results.append(await backend.wait_for_change(token, timeout=timeout))

    with anyio.fail_after(within):
        async with anyio.create_task_group() as group:
            for _ in range(count):
                group.start_soon(wait)
            yield results
