"""Deliberately broken backends, planted to prove that the test kit catches them.

Also copied into the example third-party project by ``tests/testing/test_example_project.py``,
so it imports nothing but arendezvous and anyio.
"""

from __future__ import annotations

import hashlib
from typing import Any

import anyio.lowlevel

from arendezvous.contract import AsyncRendezvousBackend, Token, check_state

__all__ = ("ContentTokenBackend", "NonAtomicBackend")


class _DictBackend(AsyncRendezvousBackend):
    """Base of the planted broken backends: a plain dict shared by handles."""

    def __init__(self, states: dict[str, tuple[bytes, Any]], run_id: str) -> None:
        self.states = states
        self.run_id = run_id

    @property
    def name(self) -> str:
        return "broken"

    async def get_state(self) -> tuple[bytes, Token] | None:
        return self.states.get(self.run_id)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        current = self.states.get(self.run_id)
        if current is not None and current[1] != token:
            return current
        return None

    async def aclose(self) -> None:
        pass


class NonAtomicBackend(_DictBackend):
    """Checks the token, awaits, then writes: two racing writers can both win."""

    counter = 0

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        check_state(state, 1 << 20)
        current = self.states.get(self.run_id)
        current_token = None if current is None else current[1]
        if type(token) is not type(current_token) or token != current_token:
            return (b"", None, False) if current is None else (current[0], current[1], False)
        await anyio.lowlevel.checkpoint()  # the bug: another writer runs between check and write
        NonAtomicBackend.counter += 1
        self.states[self.run_id] = (state, NonAtomicBackend.counter)
        return state, NonAtomicBackend.counter, True


class ContentTokenBackend(_DictBackend):
    """Atomic, but its token is a hash of the bytes: writing old bytes again repeats a token."""

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        check_state(state, 1 << 20)
        current = self.states.get(self.run_id)
        current_token = None if current is None else current[1]
        if type(token) is not type(current_token) or token != current_token:
            return (b"", None, False) if current is None else (current[0], current[1], False)
        new_token = hashlib.sha256(state).hexdigest()
        self.states[self.run_id] = (state, new_token)
        return state, new_token, True
