"""A pytest conformance suite for any :class:`~arendezvous.AsyncRendezvousBackend`.

Subclass :class:`BackendConformance` in a test module and implement :meth:`make_backend`; every
``test_*`` method then runs against your backend, once per event loop your ``anyio_backend``
fixture names (``"asyncio"``, ``"trio"``; without a fixture of your own, anyio's pytest plugin
offers every loop installed)::

    import pytest
    from arendezvous.testing import BackendConformance

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(request):
        return request.param

    class TestMyBackend(BackendConformance):
        async def make_backend(self, run_id):
            return MyBackend(run_id, ...)

Backends that decode what they read (all but an in-memory one) subclass
:class:`CorruptStateConformance` instead and implement
:meth:`~CorruptStateConformance.corrupt_state`, which writes raw bytes into the store behind the
backend's back.

The suite covers PyTorch's ``RendezvousBackendTestMixin`` behaviours and the stricter ones of
arendezvous: no token ever repeats, foreign and garbage tokens are merely stale, bad input raises
and changes nothing, exactly one of many racing writers wins, cancellation never half-writes.
A failed test raises a :class:`~arendezvous.testing.ContractViolation` naming the promise that
broke, the call and the values.

**Any pytest set-up.** The tests are plain (synchronous) pytest tests: each starts the event
loop it was asked for in a thread of its own and awaits its body there, so they run the same
with anyio's plugin alone and with pytest-asyncio installed, in strict or auto mode, with or
without ``@pytest.mark.asyncio`` on the subclass. :meth:`make_backend` and
:meth:`~CorruptStateConformance.corrupt_state` are awaited on that loop: make anything bound to
an event loop (clients, connection pools) inside them, not in a fixture. A test whose loop is
not installed (trio) is skipped with one message saying what to install.

**Your own tests.** An ``async def test_*`` method you add to a subclass runs the same way, and
may take ``backend`` (an open handle on the test's run) and ``open_backend`` (a factory of more
handles: ``await open_backend()`` or ``await open_backend(other_run_id)``) besides any fixture;
every handle is closed when the test ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import anyio
import pytest

from .._backend import DEFAULT_MAX_STATE_SIZE, AsyncRendezvousBackend, Token
from .._errors import BackendClosedError, RendezvousStateError
from ._promises import (
    CANCEL,
    CLOSED,
    CORRUPT,
    INPUT,
    NAME,
    RUNS,
    STALE,
    WAIT,
    TokenLedger,
    broken,
    check_race,
    check_read,
    check_set_result,
    check_unchanged,
    check_written,
    expect_error,
    must_not_raise,
    show,
    tokens_equal,
)
from ._runner import KitTests

__all__ = ("BackendConformance", "CorruptStateConformance", "OpenBackend")

OpenBackend = Callable[..., Awaitable[AsyncRendezvousBackend]]
"""``await open_backend(run_id=None)``: a new handle; ``None`` means the test's own run."""

_GARBAGE_TOKENS: tuple[Any, ...] = ("invalid", 0, 1, -1, 2**70, b"x", 1.5, (1, 2), object())
_NOT_BYTES: tuple[Any, ...] = ("text", bytearray(b"ba"), memoryview(b"mv"), None, 7, [b"x"])


def _outcome(outcome: object) -> str:
    """What a call did, for a message: ``raised <type>: <message>`` or ``returned <value>``."""
    if isinstance(outcome, BaseException):
        return f"raised {type(outcome).__name__}: {outcome}"
    return f"returned {show(outcome)}"


class BackendConformance(KitTests):
    """The contract's behaviours as pytest tests; subclass and implement :meth:`make_backend`.

    Class attributes tune the suite to a backend: :attr:`max_state_size`, :attr:`timeout`,
    :attr:`deadline`.
    """

    #: The backend's documented size limit; override when it is not the default.
    max_state_size: ClassVar[int] = DEFAULT_MAX_STATE_SIZE

    # -- helpers ---------------------------------------------------------------------------------

    async def _create(self, backend: AsyncRendezvousBackend, state: bytes) -> Token:
        """Create the run's state (the run has none yet); return its token."""
        call = f"set_state({show(state)}) on a run with no state"
        return check_written(await backend.set_state(state), state, None, call)

    async def _replace(self, backend: AsyncRendezvousBackend, state: bytes, token: Token) -> Token:
        """Write *state* with the current *token*; return the new token."""
        call = f"set_state({show(state)}, {show(token)})"
        return check_written(await backend.set_state(state, token), state, token, call)

    # -- PyTorch's behaviours --------------------------------------------------------------------

    async def test_name_is_a_nonempty_str(self, backend: AsyncRendezvousBackend) -> None:
        if not isinstance(backend.name, str) or not backend.name:
            raise broken(NAME, f"backend.name is {show(backend.name)}")

    async def test_get_state_returns_none_if_no_state(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        check_read(await backend.get_state(), None, "get_state()", "on a run with no state")

    async def test_set_state_creates_state_if_none_exists(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        token = await self._create(backend, b"first")
        check_read(await backend.get_state(), (b"first", token), "get_state()", "after it")

    async def test_get_state_returns_state_and_token(self, backend: AsyncRendezvousBackend) -> None:
        token = await self._create(backend, b"x" * 100)
        check_read(
            await backend.get_state(), (b"x" * 100, token), "get_state()", "after a write"
        )

    async def test_set_state_writes_if_token_is_current(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        token = await self._create(backend, b"a")
        new_token = await self._replace(backend, b"b", token)
        check_read(await backend.get_state(), (b"b", new_token), "get_state()", "after it")

    async def test_set_state_returns_current_if_token_is_old(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        old = await self._create(backend, b"a")
        current = await self._replace(backend, b"b", old)
        call = f"set_state(b'c', {show(old)})"
        result = await must_not_raise(backend.set_state(b"c", old), STALE, call)
        check_unchanged(result, (b"b", current), call, f"the replaced token {show(old)}")
        check_read(await backend.get_state(), (b"b", current), "get_state()", "after it")

    async def test_set_state_returns_current_if_token_is_none(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        token = await self._create(backend, b"a")
        call = "set_state(b'b')"
        result = await must_not_raise(backend.set_state(b"b"), STALE, call)
        check_unchanged(result, (b"a", token), call, "no token although the run has state")
        call = "set_state(b'b', None)"
        result = await must_not_raise(backend.set_state(b"b", None), STALE, call)
        check_unchanged(result, (b"a", token), call, "None although the run has state")
        check_read(await backend.get_state(), (b"a", token), "get_state()", "after them")

    @pytest.mark.parametrize("garbage", _GARBAGE_TOKENS, ids=repr)
    async def test_set_state_returns_current_if_token_is_garbage(
        self, backend: AsyncRendezvousBackend, garbage: Any
    ) -> None:
        token = await self._create(backend, b"a")
        call = f"set_state(b'b', {show(garbage)})"
        result = await must_not_raise(backend.set_state(b"b", garbage), STALE, call)
        check_unchanged(result, (b"a", token), call, f"the garbage token {show(garbage)}")
        check_read(await backend.get_state(), (b"a", token), "get_state()", "after it")

    async def test_set_state_with_unhashable_token_is_stale(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        token = await self._create(backend, b"a")
        unhashable: Any = ["not", "a", "token"]
        call = f"set_state(b'b', {unhashable!r})"
        result = await must_not_raise(backend.set_state(b"b", unhashable), STALE, call)
        check_unchanged(result, (b"a", token), call, "an unhashable token")

    # -- arendezvous's stricter promises ---------------------------------------------------------

    async def test_set_state_with_token_on_empty_run_changes_nothing(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        call = "set_state(b'a', 'invalid') on a run with no state"
        result = await must_not_raise(backend.set_state(b"a", "invalid"), STALE, call)
        check_unchanged(result, None, call, "a token although the run has no state")
        check_read(await backend.get_state(), None, "get_state()", "after it")
        await self._create(backend, b"a")

    async def test_tokens_never_repeat_even_for_the_same_bytes(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        ledger = TokenLedger()
        token = await self._create(backend, b"same")
        ledger.issue(token, "set_state(b'same') #1")
        for write in range(2, 22):
            token = await self._replace(backend, b"same", token)
            ledger.issue(token, f"set_state(b'same') #{write}")
        first = ledger[0]
        call = f"set_state(b'same', {show(first)}) with the first token"
        result = await must_not_raise(backend.set_state(b"same", first), STALE, call)
        check_unchanged(result, (b"same", token), call, "the token of write #1, long replaced")

    async def test_token_from_another_run_is_stale(
        self, open_backend: OpenBackend, run_id: str
    ) -> None:
        mine = await open_backend()
        other = await open_backend(run_id + "-other")
        my_token = await self._create(mine, b"mine")
        other_token = await self._create(other, b"other")
        for handle, token, current in (
            (mine, other_token, (b"mine", my_token)),
            (other, my_token, (b"other", other_token)),
        ):
            call = f"set_state(b'stolen', {show(token)})"
            result = await must_not_raise(handle.set_state(b"stolen", token), STALE, call)
            check_unchanged(result, current, call, "the current token of another run")

    async def test_runs_are_isolated(self, open_backend: OpenBackend, run_id: str) -> None:
        mine = await open_backend()
        other = await open_backend(run_id + "-isolated")
        await self._create(mine, b"mine")
        result = await other.get_state()
        if result is not None:
            raise broken(
                RUNS,
                f"get_state() on run {run_id + '-isolated'!r} returned {show(result)}, "
                f"written to run {run_id!r}",
            )

    async def test_handles_on_one_run_share_state(self, open_backend: OpenBackend) -> None:
        first, second = await open_backend(), await open_backend()
        token = await self._create(first, b"from first")
        check_read(
            await second.get_state(),
            (b"from first", token),
            "get_state() on a second handle",
            "after the first handle wrote",
            RUNS,
        )
        token2 = await self._replace(second, b"from second", token)
        check_read(
            await first.get_state(), (b"from second", token2), "get_state()", "on the first handle"
        )

    async def test_empty_state_is_a_state(self, backend: AsyncRendezvousBackend) -> None:
        token = await self._create(backend, b"")
        check_read(await backend.get_state(), (b"", token), "get_state()", "after set_state(b'')")
        call = "set_state(b'x') after set_state(b'')"
        result = await must_not_raise(backend.set_state(b"x"), STALE, call)
        check_unchanged(result, (b"", token), call, "None although the empty state exists")

    async def test_arbitrary_bytes_round_trip(self, backend: AsyncRendezvousBackend) -> None:
        blob = bytes(range(256)) * 4 + b"\x00\xff\n\r'\"\\"
        token = await self._create(backend, blob)
        check_read(await backend.get_state(), (blob, token), "get_state()", "after the write")

    async def test_state_at_the_size_limit_is_accepted(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        blob = b"\xab" * self.max_state_size
        token = await self._create(backend, blob)
        check_read(await backend.get_state(), (blob, token), "get_state()", "after the write")

    async def test_oversize_state_raises_value_error_and_changes_nothing(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        token = await self._create(backend, b"kept")
        size = self.max_state_size + 1
        await expect_error(
            ValueError,
            backend.set_state(b"x" * size, token),
            INPUT,
            f"set_state(<{size} bytes>, <current token>) over the limit of "
            f"{self.max_state_size} bytes",
        )
        check_read(
            await backend.get_state(), (b"kept", token), "get_state()", "after the refused write"
        )

    @pytest.mark.parametrize("bad_state", _NOT_BYTES, ids=repr)
    async def test_non_bytes_state_raises_type_error_and_changes_nothing(
        self, backend: AsyncRendezvousBackend, bad_state: Any
    ) -> None:
        call = f"set_state({show(bad_state)})"
        await expect_error(TypeError, backend.set_state(bad_state), INPUT, call)
        check_read(await backend.get_state(), None, "get_state()", f"after the refused {call}")
        token = await self._create(backend, b"kept")
        call = f"set_state({show(bad_state)}, <current token>)"
        await expect_error(TypeError, backend.set_state(bad_state, token), INPUT, call)
        check_read(
            await backend.get_state(), (b"kept", token), "get_state()", f"after the refused {call}"
        )

    async def test_exactly_one_of_racing_writers_wins(self, open_backend: OpenBackend) -> None:
        writers = [await open_backend() for _ in range(8)]
        token = await self._create(writers[0], b"start")
        payloads = [b"writer %d" % index for index in range(len(writers))]
        results: list[object] = [None] * len(writers)

        async def write(index: int) -> None:
            results[index] = await writers[index].set_state(payloads[index], token)

        async with anyio.create_task_group() as group:
            for index in range(len(writers)):
                group.start_soon(write, index)
        winner = check_race(results, payloads, token)
        _, winner_token, _ = check_set_result(results[winner], "the winning write")
        check_read(
            await writers[0].get_state(),
            (payloads[winner], winner_token),
            "get_state()",
            f"after writer {winner} won the race",
        )

    async def test_exactly_one_of_racing_creators_wins(self, open_backend: OpenBackend) -> None:
        writers = [await open_backend() for _ in range(8)]
        payloads = [b"creator %d" % index for index in range(len(writers))]
        results: list[object] = [None] * len(writers)

        async def create(index: int) -> None:
            results[index] = await writers[index].set_state(payloads[index])

        async with anyio.create_task_group() as group:
            for index in range(len(writers)):
                group.start_soon(create, index)
        check_race(results, payloads, None)

    async def test_cancelled_writes_apply_entirely_or_not_at_all(
        self, open_backend: OpenBackend
    ) -> None:
        writer, reader = await open_backend(), await open_backend()
        token = await self._create(writer, b"v0")
        last = b"v0"
        for attempt in range(20):
            payload = b"v%d" % (attempt + 1)
            with anyio.CancelScope() as scope:
                scope.cancel()  # cancelled at its first checkpoint, wherever that falls
                await writer.set_state(payload, token)
            current = await reader.get_state()
            if current is None or (tokens_equal(current[1], token) and current[0] != last):
                raise broken(
                    CANCEL,
                    f"after a cancelled set_state({show(payload)}, {show(token)}) the store "
                    f"holds {show(current)}: neither the old state {show(last)} nor the new one",
                )
            if not tokens_equal(current[1], token):
                if current[0] != payload:
                    raise broken(
                        CANCEL,
                        f"after a cancelled set_state({show(payload)}, {show(token)}) the store "
                        f"holds {show(current)}: a new token with other bytes than were written",
                    )
                token, last = current[1], payload
        # the handle still works after all those cancellations
        await self._replace(writer, b"after", token)

    async def test_wait_for_change_returns_at_once_if_token_differs(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        old = await self._create(backend, b"a")
        current = await self._replace(backend, b"b", old)
        with anyio.fail_after(self.timeout):
            for call, result in (
                (f"wait_for_change({show(old)})", await backend.wait_for_change(old)),
                ("wait_for_change(None)", await backend.wait_for_change(None)),
                # timeout=0 means "do not wait", not "do not look"
                (
                    f"wait_for_change({show(old)}, timeout=0)",
                    await backend.wait_for_change(old, timeout=0),
                ),
            ):
                check_read(result, (b"b", current), call, "with a token not current", WAIT)

    async def test_wait_for_change_times_out_with_none(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        token = await self._create(backend, b"a")
        with anyio.fail_after(self.timeout):
            for timeout in (0.05, 0):
                call = f"wait_for_change(<current token>, timeout={timeout})"
                result = await backend.wait_for_change(token, timeout=timeout)
                check_read(result, None, call, "when nothing changes", WAIT)

    async def test_wait_for_change_sees_another_handles_write(
        self, open_backend: OpenBackend
    ) -> None:
        waiter, writer = await open_backend(), await open_backend()
        token = await self._create(writer, b"a")
        result: list[object] = []

        async def wait() -> None:
            result.append(await waiter.wait_for_change(token, timeout=self.timeout))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            new_token = await self._replace(writer, b"b", token)
        check_read(
            result[0],
            (b"b", new_token),
            f"wait_for_change(<current token>, timeout={self.timeout})",
            "when another handle then writes",
            WAIT,
        )

    async def test_wait_for_change_with_none_waits_for_creation(
        self, open_backend: OpenBackend
    ) -> None:
        waiter, writer = await open_backend(), await open_backend()
        result: list[object] = []

        async def wait() -> None:
            result.append(await waiter.wait_for_change(None, timeout=self.timeout))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            token = await self._create(writer, b"created")
        check_read(
            result[0],
            (b"created", token),
            f"wait_for_change(None, timeout={self.timeout})",
            "when another handle then creates the state",
            WAIT,
        )

    async def test_wait_for_change_can_be_cancelled(self, backend: AsyncRendezvousBackend) -> None:
        token = await self._create(backend, b"a")
        with anyio.move_on_after(0.05) as scope:
            result = await backend.wait_for_change(token)
        if not scope.cancelled_caught:
            raise broken(
                WAIT,
                f"wait_for_change(<current token>) returned {show(result)} although nothing "
                "changed (it must wait until cancelled)",
            )
        await self._replace(backend, b"b", token)

    async def test_closed_handle_refuses_calls(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        await self._create(backend, b"a")
        await backend.aclose()
        await must_not_raise(backend.aclose(), CLOSED, "a second aclose()")
        await expect_error(
            BackendClosedError, backend.get_state(), CLOSED, "get_state() after aclose()"
        )
        await expect_error(
            BackendClosedError, backend.set_state(b"b"), CLOSED, "set_state(b'b') after aclose()"
        )
        other = await open_backend()
        current = await other.get_state()
        if current is None or current[0] != b"a":
            raise broken(
                CLOSED,
                f"after one handle closed, another's get_state() returned {show(current)}, "
                "not the state b'a' it had written",
            )

    async def test_aclose_wakes_waiters_with_backend_closed_error(
        self, open_backend: OpenBackend
    ) -> None:
        """Tasks blocked in ``wait_for_change(timeout=None)`` on a handle that is closed raise
        ``BackendClosedError`` promptly (they would otherwise wait forever); a waiter on another,
        still open handle of the run keeps waiting and sees the next write."""
        closing, other = await open_backend(), await open_backend()
        token = await self._create(closing, b"a")
        woken: list[object] = []
        all_woken = anyio.Event()
        seen_by_other: list[object] = []
        new_token: Token = None

        async def wait_on_closing() -> None:
            try:
                woken.append(await closing.wait_for_change(token))
            except Exception as exc:  # which exception it is, is the point
                woken.append(exc)
            if len(woken) == 3:
                all_woken.set()

        async def wait_on_other() -> None:
            call = f"wait_for_change(<current token>) on another handle, timeout={self.timeout}"
            seen_by_other.append(await must_not_raise(
                other.wait_for_change(token, timeout=self.timeout), CLOSED, call
            ))

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(wait_on_closing)
            group.start_soon(wait_on_other)
            await anyio.wait_all_tasks_blocked()
            await closing.aclose()
            with anyio.move_on_after(self.timeout):
                await all_woken.wait()
            if not all_woken.is_set():
                group.cancel_scope.cancel()
            else:
                new_token = await self._replace(other, b"b", token)
        if not all_woken.is_set():
            raise broken(
                CLOSED,
                f"{3 - len(woken)} of 3 tasks in wait_for_change(<current token>) were still "
                f"waiting {self.timeout} s after aclose() (they must raise BackendClosedError)",
            )
        for outcome in woken:
            if not isinstance(outcome, BackendClosedError):
                raise broken(
                    CLOSED,
                    "wait_for_change(<current token>) interrupted by aclose() must raise "
                    f"BackendClosedError; it {_outcome(outcome)}",
                )
        check_read(
            seen_by_other[0],
            (b"b", new_token),
            "wait_for_change(<current token>) on another handle",
            "when one handle closed and then the other wrote",
            WAIT,
        )
        await expect_error(
            BackendClosedError,
            closing.wait_for_change(token),
            CLOSED,
            "wait_for_change(<current token>) after aclose()",
        )

    async def test_async_with_closes(self, run_id: str) -> None:
        async with await self.make_backend(run_id) as backend:
            await self._create(backend, b"a")
        await expect_error(
            BackendClosedError,
            backend.get_state(),
            CLOSED,
            "get_state() after leaving `async with backend:`",
        )


class CorruptStateConformance(BackendConformance):
    """Adds the corrupt-state behaviours; implement :meth:`corrupt_state` as well."""

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        """Store *raw* as run *run_id*'s stored representation, bypassing the backend's encoding.

        For a file backend that is the file's bytes; for a store, the raw value under the run's
        key, written with the store's own client. Awaited on the test's own event loop.
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
            stored = f"the corrupt stored value {show(raw)}"
            await expect_error(
                RendezvousStateError, backend.get_state(), CORRUPT, f"get_state() on {stored}"
            )
            for token in (None, "invalid"):
                await expect_error(
                    RendezvousStateError,
                    backend.set_state(b"overwrite?", token),
                    CORRUPT,
                    f"set_state(b'overwrite?', {token!r}) on {stored}",
                )
            await expect_error(
                RendezvousStateError,
                backend.get_state(),
                CORRUPT,
                f"get_state() after set_state was refused on {stored} (was it overwritten?)",
            )
