"""The conformance suite rejects broken backends, in words, and runs anywhere (tests of the tests).

Each kit test is a plain function taking its fixtures as keywords, so these tests call them
directly, as pytest would, on planted backends.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
import sniffio

from _broken_backends import ContentTokenBackend, NonAtomicBackend
from arendezvous import AsyncRendezvousBackend, MemoryBackend, MemoryStore, Token
from arendezvous.testing import BackendConformance, BackendWrapper, ContractViolation
from arendezvous.testing.conformance import CorruptStateConformance

STORE = MemoryStore()


def fresh() -> str:
    """A run id no other test uses (the memory store is shared)."""
    return f"kit-{uuid.uuid4().hex}"


def run(suite: BackendConformance, test: str, loop: object, **params: Any) -> None:
    """Call the kit test *test* of *suite* as pytest would: a plain function of its fixtures."""
    getattr(suite, test)(anyio_backend=loop, run_id=fresh(), **params)


class MemoryConformance(BackendConformance):
    """The suite on the memory backend, whose handles a test may wrap (see :meth:`wrap`)."""

    def wrap(self, backend: AsyncRendezvousBackend) -> AsyncRendezvousBackend:
        return backend

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return self.wrap(MemoryBackend(run_id, STORE))


def _suite(backend_class: type[Any]) -> BackendConformance:
    states: dict[str, Any] = {}

    class Suite(BackendConformance):
        async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
            handle: AsyncRendezvousBackend = backend_class(states, run_id)
            return handle

    return Suite()


def test_racing_writers_test_catches_a_non_atomic_backend() -> None:
    suite = _suite(NonAtomicBackend)
    with pytest.raises(ContractViolation) as caught:
        run(suite, "test_exactly_one_of_racing_writers_wins", "asyncio")
    assert caught.value.promise.startswith("promise 2 (set_state is one atomic compare-and-swap")
    assert "8 of 8 racing writers won with the same current token" in str(caught.value)
    winners = ", ".join(f"writer {index}" for index in range(8))
    assert f"({winners} won)" in str(caught.value)
    assert "is the compare and the write one atomic step?" in str(caught.value)


def test_token_test_catches_repeating_tokens_as_aba() -> None:
    suite = _suite(ContentTokenBackend)
    with pytest.raises(ContractViolation) as caught:
        run(suite, "test_tokens_never_repeat_even_for_the_same_bytes", "trio")
    message = str(caught.value)
    assert message.startswith("promise 3 (tokens never repeat within a run: no ABA) broken: ")
    # The content hash of b'same', shortened, is the token issued twice.
    assert f"token {hashlib.sha256(b'same').hexdigest()[:30]!r}... was issued twice: ABA" in (
        message
    )


class _RewordedErrors(BackendWrapper):
    """Raises the contract's exception types with words of its own."""

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        if not isinstance(state, bytes):
            raise TypeError("nope")
        if len(state) > BackendConformance.max_state_size:
            raise ValueError(f"state of {len(state)} bytes exceeds {len(state) - 1}")
        return await super().set_state(state, token)


class _WrongErrors(BackendWrapper):
    """Raises the wrong exception type for oversize state."""

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        if isinstance(state, bytes) and len(state) > BackendConformance.max_state_size:
            raise TypeError("too big")
        return await super().set_state(state, token)


def test_bad_input_checks_accept_any_wording() -> None:
    suite = MemoryConformance()
    suite.wrap = _RewordedErrors  # type: ignore[method-assign]
    run(suite, "test_oversize_state_raises_value_error_and_changes_nothing", "asyncio")
    run(suite, "test_non_bytes_state_raises_type_error_and_changes_nothing", "trio", bad_state=7)


def test_a_wrong_exception_type_is_reported_with_both() -> None:
    suite = MemoryConformance()
    suite.wrap = _WrongErrors  # type: ignore[method-assign]
    with pytest.raises(ContractViolation) as caught:
        run(suite, "test_oversize_state_raises_value_error_and_changes_nothing", "asyncio")
    assert caught.value.promise.startswith("promise 4")
    assert "must raise ValueError; it raised TypeError: too big" in caught.value.detail
    assert isinstance(caught.value.__cause__, TypeError)


class _RaisesOnForeignTokens(BackendWrapper):
    """Compares tokens in a way that blows up on foreign types."""

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        if isinstance(token, str):
            raise KeyError(token)
        return await super().set_state(state, token)


def test_a_garbage_token_that_raises_is_reported_as_a_broken_promise() -> None:
    suite = MemoryConformance()
    suite.wrap = _RaisesOnForeignTokens  # type: ignore[method-assign]
    test = "test_set_state_returns_current_if_token_is_garbage"
    with pytest.raises(ContractViolation) as caught:
        run(suite, test, "asyncio", garbage="invalid")
    assert "changes nothing, returns the current (state, token, False) and never raises" in (
        caught.value.promise
    )
    assert caught.value.detail == "set_state(b'b', 'invalid') raised KeyError: 'invalid'"


class _LostWrite(BackendWrapper):
    """Reports a write as done but never makes it."""

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        current = await self.get_state()
        if current is None:
            return await super().set_state(state, token)
        return state, object(), True


def test_a_lost_write_is_reported_with_what_get_state_returned() -> None:
    suite = MemoryConformance()
    suite.wrap = _LostWrite  # type: ignore[method-assign]
    with pytest.raises(ContractViolation) as caught:
        run(suite, "test_set_state_writes_if_token_is_current", "asyncio")
    assert caught.value.promise.startswith("promise 1")
    assert caught.value.detail.startswith("get_state() after it must return (b'b', <object")
    assert "; it returned (b'a', " in caught.value.detail


class _Hangs(BackendWrapper):
    async def get_state(self) -> tuple[bytes, Token] | None:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


def test_a_hanging_backend_fails_its_test_at_the_deadline() -> None:
    class Suite(MemoryConformance):
        deadline: ClassVar[float] = 0.2

        def wrap(self, backend: AsyncRendezvousBackend) -> AsyncRendezvousBackend:
            return _Hangs(backend)

    with pytest.raises(AssertionError, match=r"did not finish within 0.2 s \(Suite.deadline\)"):
        run(Suite(), "test_get_state_returns_none_if_no_state", "trio")


def test_every_handle_is_closed_after_a_test_even_a_failed_one() -> None:
    opened: list[AsyncRendezvousBackend] = []
    closed: list[AsyncRendezvousBackend] = []

    class Counted(BackendWrapper):
        async def aclose(self) -> None:
            closed.append(self)
            await super().aclose()

    class Suite(BackendConformance):
        async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
            opened.append(Counted(NonAtomicBackend({}, run_id)))
            return opened[-1]

    with pytest.raises(ContractViolation):
        run(Suite(), "test_exactly_one_of_racing_writers_wins", "asyncio")
    assert len(opened) == 8
    assert closed == opened


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_tests_run_on_the_loop_they_name_even_inside_another_loops_context(loop: str) -> None:
    seen: list[str] = []

    class Suite(BackendConformance):
        async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
            seen.append(sniffio.current_async_library())
            return MemoryBackend(run_id, STORE)

    # What an anyio test runner kept alive by an async fixture leaves in the calling thread.
    other = "trio" if loop == "asyncio" else "asyncio"
    token = sniffio.current_async_library_cvar.set(other)
    try:
        run(Suite(), "test_handles_on_one_run_share_state", loop)
    finally:
        sniffio.current_async_library_cvar.reset(token)
    assert seen == [loop, loop]


def test_kit_tests_are_plain_pytest_tests_with_fixtures_in_their_signature() -> None:
    test = BackendConformance.test_token_from_another_run_is_stale
    assert not inspect.iscoroutinefunction(test)
    assert list(inspect.signature(test).parameters) == ["self", "run_id", "anyio_backend"]
    garbage = BackendConformance.test_set_state_returns_current_if_token_is_garbage
    assert list(inspect.signature(garbage).parameters) == [
        "self",
        "garbage",
        "anyio_backend",
        "run_id",
    ]
    marks = {mark.name for mark in getattr(garbage, "pytestmark", [])}
    assert marks == {"parametrize", "filterwarnings"}


def test_a_subclass_own_async_tests_run_the_same_way() -> None:
    ran: list[tuple[str, bytes]] = []

    class Suite(MemoryConformance):
        async def test_my_own(self, backend: AsyncRendezvousBackend, open_backend: Any) -> None:
            await backend.set_state(b"mine")
            other = await open_backend()
            current = await other.get_state()
            ran.append((sniffio.current_async_library(), current[0]))

    assert not inspect.iscoroutinefunction(Suite.test_my_own)
    run(Suite(), "test_my_own", "trio")
    assert ran == [("trio", b"mine")]


_NO_TRIO = (
    "trio is not installed, so the trio half of the arendezvous test kit cannot run here "
    "(the asyncio half does): pip install 'arendezvous[testing]', or leave 'trio' out of "
    "your anyio_backend fixture"
)


def test_a_missing_trio_skips_the_trio_half(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trio", None)  # what `import trio` meets when not installed
    with pytest.raises(pytest.skip.Exception) as caught:
        run(MemoryConformance(), "test_runs_are_isolated", "trio")
    assert str(caught.value) == _NO_TRIO
    run(MemoryConformance(), "test_runs_are_isolated", "asyncio")


@pytest.mark.slow
def test_without_trio_a_project_sees_one_message_and_the_asyncio_half(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "import sys\nsys.modules['trio'] = None  # as if trio were not installed\n",
        encoding="utf-8",
    )
    (tmp_path / "test_kit.py").write_text(
        "import pytest\n"
        "from arendezvous import MemoryBackend\n"
        "from arendezvous.testing import BackendConformance\n"
        "@pytest.fixture(params=['asyncio', 'trio'])\n"
        "def anyio_backend(request):\n"
        "    return request.param\n"
        "class TestMemory(BackendConformance):\n"
        "    async def make_backend(self, run_id):\n"
        "        return MemoryBackend(run_id)\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:asyncio", "-rs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout
    assert result.returncode == 0, output
    skipped = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1, output
    assert skipped[0].endswith(_NO_TRIO), output
    counts = re.search(r"(\d+) passed, (\d+) skipped", output)
    assert counts is not None, output
    assert int(counts[1]) == int(counts[2]) >= 40, output


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="anyio_backend must be one of"):
        run(MemoryConformance(), "test_runs_are_isolated", "curio")


def test_anyio_backend_options_are_accepted() -> None:
    run(MemoryConformance(), "test_runs_are_isolated", ("asyncio", {"debug": True}))


def test_hooks_must_be_provided() -> None:
    with pytest.raises(NotImplementedError, match="make_backend"):
        anyio.run(BackendConformance().make_backend, "r")
    with pytest.raises(NotImplementedError, match="corrupt_state"):
        anyio.run(CorruptStateConformance().corrupt_state, "r", b"")
