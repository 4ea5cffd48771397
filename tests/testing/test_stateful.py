"""The state machine passes correct backends and catches planted broken ones."""

from __future__ import annotations

import hashlib
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.errors import Flaky
from hypothesis.stateful import run_state_machine_as_test

from arendezvous import AsyncRendezvousBackend, MemoryBackend, MemoryStore, Token
from arendezvous._backend import check_state
from arendezvous.testing.stateful import backend_state_machine

FAST = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
HUNT = settings(
    FAST, max_examples=200, stateful_step_count=30, database=None, report_multiple_bugs=False
)

store = MemoryStore()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_memory_backend_passes(anyio_backend: str) -> None:
    machine = backend_state_machine(
        lambda run_id: MemoryBackend(run_id, store), anyio_backend=anyio_backend
    )
    run_state_machine_as_test(machine, settings=FAST)


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


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_catches_non_atomic_compare_and_swap(anyio_backend: str) -> None:
    states: dict[str, tuple[bytes, Any]] = {}
    machine = backend_state_machine(
        lambda run_id: NonAtomicBackend(states, run_id), anyio_backend=anyio_backend
    )
    with pytest.raises((AssertionError, Flaky), match="won one race with the same token"):
        run_state_machine_as_test(machine, settings=HUNT)


def test_catches_repeating_tokens() -> None:
    states: dict[str, tuple[bytes, Any]] = {}
    machine = backend_state_machine(lambda run_id: ContentTokenBackend(states, run_id))
    # Repeated tokens show up as a token issued twice, or as a stale writer winning a race.
    with pytest.raises(AssertionError, match="ABA|won one race"):
        run_state_machine_as_test(machine, settings=HUNT)


def test_needs_two_writers() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        backend_state_machine(lambda run_id: MemoryBackend(run_id), writers=1)
