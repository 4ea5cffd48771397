"""The state machine passes correct backends, on either loop, and names what broken ones break."""

from __future__ import annotations

import sys
import unittest
from typing import Any

import pytest
import sniffio
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from hypothesis.stateful import run_state_machine_as_test

from _broken_backends import ContentTokenBackend, NonAtomicBackend
from arendezvous import AsyncRendezvousBackend, MemoryBackend, MemoryStore
from arendezvous.testing import ContractViolation, backend_state_machine

FAST = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Hunting a planted bug: no example database (each run starts afresh), one bug reported, and
# only the generate phase: what is tested is the message, not how short Hypothesis makes the
# failing case (docs/testing.md's test shows a shrunk one).
HUNT = settings(
    FAST,
    max_examples=200,
    stateful_step_count=30,
    database=None,
    report_multiple_bugs=False,
    phases=[Phase.generate],
)

store = MemoryStore()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_memory_backend_passes_on_the_loop_it_names(anyio_backend: str) -> None:
    loops: set[str] = set()

    def make_backend(run_id: str) -> AsyncRendezvousBackend:
        loops.add(sniffio.current_async_library())
        return MemoryBackend(run_id, store)

    machine = backend_state_machine(make_backend, anyio_backend=anyio_backend)
    run_state_machine_as_test(machine, settings=FAST)
    assert loops == {anyio_backend}


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_catches_non_atomic_compare_and_swap(anyio_backend: str) -> None:
    states: dict[str, tuple[bytes, Any]] = {}
    machine = backend_state_machine(
        lambda run_id: NonAtomicBackend(states, run_id), anyio_backend=anyio_backend
    )
    with pytest.raises((ContractViolation, Flaky)) as caught:
        run_state_machine_as_test(machine, settings=HUNT)
    assert "racing writers won with the same current token" in str(caught.value)


def test_catches_repeating_tokens() -> None:
    states: dict[str, tuple[bytes, Any]] = {}
    machine = backend_state_machine(lambda run_id: ContentTokenBackend(states, run_id))
    with pytest.raises(ContractViolation) as caught:
        run_state_machine_as_test(machine, settings=HUNT)
    # A repeated token shows as a token issued twice, or as a stale writer that won.
    message = str(caught.value)
    assert "was issued twice: ABA" in message or "so it must change nothing" in message, message


def test_the_loop_is_checked_when_the_machine_is_built() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        backend_state_machine(lambda run_id: MemoryBackend(run_id), writers=1)
    with pytest.raises(ValueError, match="anyio_backend must be one of"):
        backend_state_machine(lambda run_id: MemoryBackend(run_id), anyio_backend="curio")


def test_a_missing_trio_skips_with_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = backend_state_machine(lambda run_id: MemoryBackend(run_id), anyio_backend="trio")
    monkeypatch.setitem(sys.modules, "trio", None)  # what `import trio` meets when not installed
    with pytest.raises(unittest.SkipTest, match=r"pip install 'arendezvous\[testing\]'"):
        machine()
