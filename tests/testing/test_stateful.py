"""The state machine passes correct backends and catches planted broken ones."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.errors import Flaky
from hypothesis.stateful import run_state_machine_as_test

from _broken_backends import ContentTokenBackend, NonAtomicBackend
from arendezvous import MemoryBackend, MemoryStore
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
    with pytest.raises(AssertionError, match=r"ABA|won one race"):
        run_state_machine_as_test(machine, settings=HUNT)


def test_needs_two_writers() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        backend_state_machine(lambda run_id: MemoryBackend(run_id), writers=1)
