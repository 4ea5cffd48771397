"""A pytest conformance suite for any :class:`~arendezvous.AsyncRendezvousBackend`.

Subclass :class:`BackendConformance` in a test module and implement :meth:`make_backend`; every
``test_*`` method then runs against your backend, on each event loop your ``anyio_backend``
fixture names (anyio's pytest plugin)::

    from arendezvous.testing.conformance import BackendConformance

    class TestMyBackend(BackendConformance):
        async def make_backend(self, run_id):
            return MyBackend(run_id, ...)

Backends that decode what they read (all but the in-memory one) also subclass
:class:`CorruptStateConformance` and implement :meth:`~CorruptStateConformance.corrupt_state`,
which writes raw bytes into the store behind the backend's back.

The suite covers PyTorch's ``RendezvousBackendTestMixin`` behaviours and the stricter ones of
arendezvous: no token ever repeats, foreign and garbage tokens are merely stale, bad input raises
and changes nothing, exactly one of many racing writers wins, cancellation never half-writes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import anyio
import pytest

from .._backend import DEFAULT_MAX_STATE_SIZE, AsyncRendezvousBackend, Token
from .._errors import BackendClosedError, RendezvousStateError

__all__ = ("BackendConformance", "CorruptStateConformance", "OpenBackend")

OpenBackend = Callable[..., Awaitable[AsyncRendezvousBackend]]
"""``await open_backend(run_id=None)``: a new handle; ``None`` means the test's own run."""

_GARBAGE_TOKENS: tuple[Any, ...] = ("invalid", 0, 1, -1, 2**70, b"x", 1.5, (1, 2), object())


class BackendConformance:
    """The contract's behaviours as pytest tests; subclass and implement :meth:`make_backend`."""

    pytestmark: ClassVar[Any] = pytest.mark.anyio

    #: The backend's documented size limit; override when it is not the default.
    max_state_size: ClassVar[int] = DEFAULT_MAX_STATE_SIZE
    #: How long a test waits for something that should happen promptly (seconds).
    timeout: ClassVar[float] = 10.0

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        """Return a new, open handle on the run *run_id* (each call a separate handle)."""
        raise NotImplementedError("subclasses of BackendConformance implement make_backend()")

    @pytest.fixture
    def run_id(self) -> str:
        """A fresh run id per test, so tests never see each other's state."""
        return f"conformance-{uuid.uuid4().hex}"

    @pytest.fixture
    async def open_backend(self, run_id: str) -> AsyncIterator[OpenBackend]:
        """A factory of handles, every one closed when the test ends."""
        handles: list[AsyncRendezvousBackend] = []

        async def open_handle(other_run_id: str | None = None) -> AsyncRendezvousBackend:
            handle = await self.make_backend(other_run_id or run_id)
            handles.append(handle)
            return handle

        yield open_handle
        for handle in handles:
            await handle.aclose()

    @pytest.fixture
    async def backend(self, open_backend: OpenBackend) -> AsyncRendezvousBackend:
        """One open handle on the test's run."""
        return await open_backend()

    # -- PyTorch's behaviours --------------------------------------------------------------------

    async def test_name_is_a_nonempty_str(self, backend: AsyncRendezvousBackend) -> None:
        assert isinstance(backend.name, str)
        assert backend.name

    async def test_get_state_returns_none_if_no_state(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        assert await backend.get_state() is None

    async def test_set_state_creates_state_if_none_exists(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        state, token, written = await backend.set_state(b"first")
        assert (state, written) == (b"first", True)
        assert token is not None
        assert await backend.get_state() == (b"first", token)

    async def test_get_state_returns_state_and_token(self, backend: AsyncRendezvousBackend) -> None:
        _, token, _ = await backend.set_state(b"x" * 100)
        result = await backend.get_state()
        assert result is not None
        assert result == (b"x" * 100, token)
        assert isinstance(result[0], bytes)

    async def test_set_state_writes_if_token_is_current(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        _, token, _ = await backend.set_state(b"a")
        state, new_token, written = await backend.set_state(b"b", token)
        assert (state, written) == (b"b", True)
        assert new_token != token
        assert await backend.get_state() == (b"b", new_token)

    async def test_set_state_returns_current_if_token_is_old(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        _, old, _ = await backend.set_state(b"a")
        _, current, _ = await backend.set_state(b"b", old)
        assert await backend.set_state(b"c", old) == (b"b", current, False)
        assert await backend.get_state() == (b"b", current)

    async def test_set_state_returns_current_if_token_is_none(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        _, token, _ = await backend.set_state(b"a")
        assert await backend.set_state(b"b") == (b"a", token, False)
        assert await backend.set_state(b"b", None) == (b"a", token, False)
        assert await backend.get_state() == (b"a", token)

    @pytest.mark.parametrize("garbage", _GARBAGE_TOKENS, ids=repr)
    async def test_set_state_returns_current_if_token_is_garbage(
        self, backend: AsyncRendezvousBackend, garbage: Any
    ) -> None:
        _, token, _ = await backend.set_state(b"a")
        assert await backend.set_state(b"b", garbage) == (b"a", token, False)
        assert await backend.get_state() == (b"a", token)

    async def test_set_state_with_unhashable_token_is_stale(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        _, token, _ = await backend.set_state(b"a")
        unhashable: Any = ["not", "a", "token"]
        assert await backend.set_state(b"b", unhashable) == (b"a", token, False)

    # -- arendezvous's stricter promises ---------------------------------------------------------

    async def test_set_state_with_token_on_empty_run_changes_nothing(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        assert await backend.set_state(b"a", "invalid") == (b"", None, False)
        assert await backend.get_state() is None
        state, _, written = await backend.set_state(b"a", None)
        assert (state, written) == (b"a", True)

    async def test_tokens_never_repeat_even_for_the_same_bytes(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        _, token, _ = await backend.set_state(b"same")
        seen = [token]
        for _ in range(20):
            _, token, written = await backend.set_state(b"same", token)
            assert written
            assert all(token != earlier for earlier in seen)
            seen.append(token)
        assert await backend.set_state(b"same", seen[0]) == (b"same", token, False)

    async def test_token_from_another_run_is_stale(
        self, open_backend: OpenBackend, run_id: str
    ) -> None:
        mine = await open_backend()
        other = await open_backend(run_id + "-other")
        _, my_token, _ = await mine.set_state(b"mine")
        _, other_token, _ = await other.set_state(b"other")
        assert await mine.set_state(b"stolen", other_token) == (b"mine", my_token, False)
        assert await other.set_state(b"stolen", my_token) == (b"other", other_token, False)

    async def test_runs_are_isolated(self, open_backend: OpenBackend, run_id: str) -> None:
        mine = await open_backend()
        other = await open_backend(run_id + "-isolated")
        await mine.set_state(b"mine")
        assert await other.get_state() is None

    async def test_handles_on_one_run_share_state(self, open_backend: OpenBackend) -> None:
        first, second = await open_backend(), await open_backend()
        _, token, _ = await first.set_state(b"from first")
        assert await second.get_state() == (b"from first", token)
        _, token2, written = await second.set_state(b"from second", token)
        assert written
        assert await first.get_state() == (b"from second", token2)

    async def test_empty_state_is_a_state(self, backend: AsyncRendezvousBackend) -> None:
        _, token, written = await backend.set_state(b"")
        assert written
        assert await backend.get_state() == (b"", token)
        assert await backend.set_state(b"x") == (b"", token, False)

    async def test_arbitrary_bytes_round_trip(self, backend: AsyncRendezvousBackend) -> None:
        blob = bytes(range(256)) * 4 + b"\x00\xff\n\r'\"\\"
        _, token, _ = await backend.set_state(blob)
        assert await backend.get_state() == (blob, token)

    async def test_state_at_the_size_limit_is_accepted(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        blob = b"\xab" * self.max_state_size
        _, token, written = await backend.set_state(blob)
        assert written
        assert await backend.get_state() == (blob, token)

    async def test_oversize_state_raises_value_error_and_changes_nothing(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        _, token, _ = await backend.set_state(b"kept")
        with pytest.raises(ValueError, match="at most"):
            await backend.set_state(b"x" * (self.max_state_size + 1), token)
        assert await backend.get_state() == (b"kept", token)

    @pytest.mark.parametrize(
        "bad_state", ["text", bytearray(b"ba"), memoryview(b"mv"), None, 7, [b"x"]], ids=repr
    )
    async def test_non_bytes_state_raises_type_error_and_changes_nothing(
        self, backend: AsyncRendezvousBackend, bad_state: Any
    ) -> None:
        with pytest.raises(TypeError, match="bytes"):
            await backend.set_state(bad_state)
        assert await backend.get_state() is None
        _, token, _ = await backend.set_state(b"kept")
        with pytest.raises(TypeError, match="bytes"):
            await backend.set_state(bad_state, token)
        assert await backend.get_state() == (b"kept", token)

    async def test_exactly_one_of_racing_writers_wins(self, open_backend: OpenBackend) -> None:
        writers = [await open_backend() for _ in range(8)]
        _, token, _ = await writers[0].set_state(b"start")
        results: dict[int, tuple[bytes, Token, bool]] = {}

        async def write(index: int) -> None:
            results[index] = await writers[index].set_state(b"writer %d" % index, token)

        async with anyio.create_task_group() as group:
            for index in range(len(writers)):
                group.start_soon(write, index)
        winners = [index for index, result in results.items() if result[2]]
        assert len(winners) == 1, f"expected exactly one winner, got {winners}"
        winner_state, winner_token, _ = results[winners[0]]
        assert winner_state == b"writer %d" % winners[0]
        for index, result in results.items():
            if index != winners[0]:
                assert result == (winner_state, winner_token, False)
        assert await writers[0].get_state() == (winner_state, winner_token)

    async def test_exactly_one_of_racing_creators_wins(self, open_backend: OpenBackend) -> None:
        writers = [await open_backend() for _ in range(8)]
        results: list[tuple[bytes, Token, bool]] = []

        async def create(index: int) -> None:
            results.append(await writers[index].set_state(b"creator %d" % index))

        async with anyio.create_task_group() as group:
            for index in range(len(writers)):
                group.start_soon(create, index)
        winners = [result for result in results if result[2]]
        assert len(winners) == 1
        assert all(result[:2] == winners[0][:2] for result in results)

    async def test_cancelled_writes_apply_entirely_or_not_at_all(
        self, open_backend: OpenBackend
    ) -> None:
        writer, reader = await open_backend(), await open_backend()
        _, token, _ = await writer.set_state(b"v0")
        last = b"v0"
        for attempt in range(20):
            payload = b"v%d" % (attempt + 1)
            with anyio.CancelScope() as scope:
                scope.cancel()  # cancelled at its first checkpoint, wherever that falls
                await writer.set_state(payload, token)
            current = await reader.get_state()
            assert current is not None
            if current[1] == token:
                assert current[0] == last
            else:
                assert current[0] == payload
                token, last = current[1], payload
        # the handle still works after all those cancellations
        _, _, written = await writer.set_state(b"after", token)
        assert written

    async def test_wait_for_change_returns_at_once_if_token_differs(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        _, old, _ = await backend.set_state(b"a")
        _, current, _ = await backend.set_state(b"b", old)
        with anyio.fail_after(self.timeout):
            assert await backend.wait_for_change(old) == (b"b", current)
            assert await backend.wait_for_change(None) == (b"b", current)
            # timeout=0 means "do not wait", not "do not look"
            assert await backend.wait_for_change(old, timeout=0) == (b"b", current)

    async def test_wait_for_change_times_out_with_none(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        _, token, _ = await backend.set_state(b"a")
        with anyio.fail_after(self.timeout):
            assert await backend.wait_for_change(token, timeout=0.05) is None
            assert await backend.wait_for_change(token, timeout=0) is None

    async def test_wait_for_change_sees_another_handles_write(
        self, open_backend: OpenBackend
    ) -> None:
        waiter, writer = await open_backend(), await open_backend()
        _, token, _ = await writer.set_state(b"a")
        result: list[tuple[bytes, Token] | None] = []

        async def wait() -> None:
            result.append(await waiter.wait_for_change(token, timeout=self.timeout))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            _, new_token, _ = await writer.set_state(b"b", token)
        assert result == [(b"b", new_token)]

    async def test_wait_for_change_with_none_waits_for_creation(
        self, open_backend: OpenBackend
    ) -> None:
        waiter, writer = await open_backend(), await open_backend()
        result: list[tuple[bytes, Token] | None] = []

        async def wait() -> None:
            result.append(await waiter.wait_for_change(None, timeout=self.timeout))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            _, token, _ = await writer.set_state(b"created")
        assert result == [(b"created", token)]

    async def test_wait_for_change_can_be_cancelled(self, backend: AsyncRendezvousBackend) -> None:
        _, token, _ = await backend.set_state(b"a")
        with anyio.move_on_after(0.05) as scope:
            await backend.wait_for_change(token)
        assert scope.cancelled_caught
        _, _, written = await backend.set_state(b"b", token)
        assert written

    async def test_closed_handle_refuses_calls(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        await backend.set_state(b"a")
        await backend.aclose()
        await backend.aclose()  # idempotent
        with pytest.raises(BackendClosedError):
            await backend.get_state()
        with pytest.raises(BackendClosedError):
            await backend.set_state(b"b")
        other = await open_backend()
        current = await other.get_state()
        assert current is not None
        assert current[0] == b"a"

    async def test_async_with_closes(self, run_id: str) -> None:
        async with await self.make_backend(run_id) as backend:
            await backend.set_state(b"a")
        with pytest.raises(BackendClosedError):
            await backend.get_state()


class CorruptStateConformance(BackendConformance):
    """Adds the corrupt-state behaviours; implement :meth:`corrupt_state` as well."""

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        """Store *raw* as run *run_id*'s stored representation, bypassing the backend's encoding.

        For a file backend that is the file's bytes; for a store, the raw value under the run's
        key, written with the store's own client.
        """
        raise NotImplementedError("subclasses of CorruptStateConformance implement corrupt_state()")

    #: Raw values that must be refused; override to add store-specific ones.
    corrupt_values: ClassVar[tuple[bytes, ...]] = (b"", b"garbage", b"\x00" * 64, b"\xff" * 7)

    async def test_corrupt_state_raises_state_error_and_is_not_overwritten(
        self, open_backend: OpenBackend, run_id: str
    ) -> None:
        backend = await open_backend()
        for raw in self.corrupt_values:
            await self.corrupt_state(run_id, raw)
            with pytest.raises(RendezvousStateError):
                await backend.get_state()
            for token in (None, "invalid"):
                with pytest.raises(RendezvousStateError):
                    await backend.set_state(b"overwrite?", token)
            # still corrupt: nothing was written over it
            with pytest.raises(RendezvousStateError):
                await backend.get_state()
