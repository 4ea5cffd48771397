"""BackendWrapper delegates everything, with one run_id rule, and keeps optional capabilities."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from _broken_backends import ContentTokenBackend
from arendezvous import (
    AsyncRendezvousBackend,
    BackendClosedError,
    MemoryBackend,
    MemoryStore,
    Token,
)
from arendezvous.testing import BackendWrapper, FaultyBackend, Recorder, RecordingBackend

pytestmark = pytest.mark.anyio


class Tagging(BackendWrapper):
    """Overrides one call, as a user's wrapper would."""

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        return await super().set_state(b"tagged:" + state, token)


async def test_a_wrapper_overrides_one_call_and_delegates_the_rest() -> None:
    inner = MemoryBackend("run", MemoryStore())
    async with Tagging(inner) as wrapper:
        assert (wrapper.name, wrapper.run_id, wrapper.backend) == ("memory", "run", inner)
        assert repr(wrapper) == f"Tagging({inner!r})"
        state, token, written = await wrapper.set_state(b"x")
        assert (state, written) == (b"tagged:x", True)
        assert await wrapper.get_state() == (b"tagged:x", token)
        assert await wrapper.wait_for_change(None, timeout=0) == (b"tagged:x", token)
    with pytest.raises(BackendClosedError):
        await inner.get_state()  # leaving `async with` closed the wrapped backend


@pytest.mark.parametrize("wrap", [BackendWrapper, FaultyBackend, RecordingBackend])
def test_one_run_id_rule_for_every_wrapper(wrap: Any) -> None:
    def wrapped(backend: AsyncRendezvousBackend) -> BackendWrapper:
        if wrap is FaultyBackend:
            return FaultyBackend(backend, seed=1)
        if wrap is RecordingBackend:
            return RecordingBackend(backend, Recorder(), key="register")
        return BackendWrapper(backend)

    assert wrapped(MemoryBackend("run")).run_id == "run"
    nameless = ContentTokenBackend({}, "run")
    nameless.run_id = 42  # type: ignore[assignment]  # not a str: as good as none
    assert wrapped(nameless).run_id is None
    del nameless.run_id
    assert wrapped(nameless).run_id is None


@pytest.mark.parametrize("layers", [1, 2])
def test_wrappers_keep_the_member_table_capability(layers: int) -> None:
    inner = MemoryBackend("run")
    backend: AsyncRendezvousBackend = inner
    plain: AsyncRendezvousBackend = ContentTokenBackend({}, "run")  # the contract alone
    for _ in range(layers):
        backend = FaultyBackend(RecordingBackend(backend, Recorder()), seed=1)
        plain = BackendWrapper(plain)
    assert isinstance(backend, BackendWrapper)
    assert isinstance(plain, BackendWrapper)
    table = backend.member_table()
    assert table is not None
    assert repr(table) == repr(inner.member_table())
    assert plain.member_table() is None


async def test_recording_and_faults_build_on_the_base() -> None:
    assert issubclass(RecordingBackend, BackendWrapper)
    assert issubclass(FaultyBackend, BackendWrapper)
    recorder = Recorder()
    backend = RecordingBackend(FaultyBackend(MemoryBackend("r", MemoryStore()), seed=3), recorder)
    await backend.set_state(b"a")
    await backend.aclose()
    with pytest.raises(BackendClosedError):
        await backend.backend.get_state()
    (op,) = recorder.history()
    assert (op.kind, op.key, op.written) == ("write", "r", True)


def test_the_base_adds_no_await_of_its_own() -> None:
    # A wrapper must not change how calls interleave: a read through it runs to completion
    # without yielding, exactly like the memory backend's own.
    async def main() -> None:
        wrapper = BackendWrapper(MemoryBackend("run", MemoryStore()))
        with anyio.CancelScope() as scope:
            scope.cancel()
            assert await wrapper.get_state() is None

    anyio.run(main)


def test_the_wrapper_module_is_public_and_documented() -> None:
    import arendezvous.testing.wrapper as module

    assert module.__all__ == ("BackendWrapper",)
    assert module.__doc__
    for name in ("backend", "name", "run_id", "member_table", "get_state", "set_state"):
        assert getattr(BackendWrapper, name).__doc__, name
