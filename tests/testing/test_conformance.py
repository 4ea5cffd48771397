"""The conformance suite rejects broken backends (it is a test of the tests)."""

from __future__ import annotations

from typing import Any

import pytest

from _broken_backends import ContentTokenBackend, NonAtomicBackend
from arendezvous import AsyncRendezvousBackend
from arendezvous.testing.conformance import BackendConformance, OpenBackend

pytestmark = pytest.mark.anyio


def _opener(backend_class: type[Any]) -> OpenBackend:
    states: dict[str, Any] = {}

    async def open_handle(run_id: str | None = None) -> AsyncRendezvousBackend:
        handle: AsyncRendezvousBackend = backend_class(states, run_id or "run")
        return handle

    return open_handle


async def test_racing_writers_test_catches_a_non_atomic_backend() -> None:
    with pytest.raises(AssertionError, match="exactly one winner"):
        await BackendConformance().test_exactly_one_of_racing_writers_wins(
            _opener(NonAtomicBackend)
        )


async def test_token_test_catches_repeating_tokens() -> None:
    opener = _opener(ContentTokenBackend)
    with pytest.raises(AssertionError):
        await BackendConformance().test_tokens_never_repeat_even_for_the_same_bytes(
            await opener()
        )


async def test_make_backend_must_be_provided() -> None:
    with pytest.raises(NotImplementedError, match="make_backend"):
        await BackendConformance().make_backend("r")
