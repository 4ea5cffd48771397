"""A Hypothesis state machine in which several writers hold tokens and race on one run.

:func:`backend_state_machine` builds a :class:`~hypothesis.stateful.RuleBasedStateMachine` for any
backend. Each test case opens a fresh run and several handles on it (the writers) and checks every
result against a model of the register: reads; writes with the current, a stale, a ``None`` or a
garbage token; and concurrent bursts in which many writers ``set_state`` with the same token inside
one task group, where exactly one may win and every loser must see the winner's state and token.
Every token the store hands out is remembered, so a token that comes back (ABA) is caught::

    from arendezvous.testing.stateful import backend_state_machine

    TestMyBackend = backend_state_machine(lambda run_id: MyBackend(run_id)).TestCase

Each test case runs its coroutines on one event loop (asyncio or trio) held open by an anyio
blocking portal, so handles bound to a loop (network connections) stay valid between steps.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from .._backend import AsyncRendezvousBackend, Token

__all__ = ("BackendFactory", "backend_state_machine")

BackendFactory = Callable[[str], "AsyncRendezvousBackend | Awaitable[AsyncRendezvousBackend]"]
"""``make_backend(run_id)``: a new handle on run *run_id*, returned or awaited."""

# Few distinct payloads, so that writing the same bytes again is common: a backend whose tokens
# derive from the content (an ABA bug) is then caught quickly.
_payloads = st.sampled_from([b"", b"a", b"b", b"ab"]) | st.binary(max_size=16)
_garbage_tokens = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.binary(max_size=8),
    st.tuples(st.integers(), st.text(max_size=4)),
    st.just(("incarnation", 1)),
)


def _same(a: Token | None, b: Token | None) -> bool:
    return a is b or (a is not None and b is not None and a == b)


def backend_state_machine(
    make_backend: BackendFactory,
    *,
    anyio_backend: str = "asyncio",
    writers: int = 3,
) -> type[RuleBasedStateMachine]:
    """Return a state machine class that races *writers* handles from *make_backend*.

    :param make_backend: called with a fresh run id per test case, once per writer; may return
        the handle or an awaitable of it (called inside the event loop).
    :param anyio_backend: the event loop to run on: ``"asyncio"`` or ``"trio"``.
    :param writers: how many handles race (at least 2).

    Use ``.TestCase`` of the result as a unittest/pytest test, and set its ``settings``.
    """
    if writers < 2:
        raise ValueError("a race needs at least 2 writers")
    writer_indices = st.integers(0, writers - 1)

    class BackendStateMachine(RuleBasedStateMachine):
        """Racing writers against a model of one compare-and-swap register."""

        def __init__(self) -> None:
            super().__init__()
            self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(
                backend=anyio_backend
            )
            self.portal = self._portal_cm.__enter__()
            self.run_id = f"stateful-{uuid.uuid4().hex}"
            self.handles: list[AsyncRendezvousBackend] = []
            self.model: tuple[bytes, Token] | None = None
            self.issued: list[Token] = []
            self.known: list[Token | None] = [None] * writers

        def teardown(self) -> None:
            try:
                for handle in self.handles:
                    self.portal.call(handle.aclose)
            finally:
                self._portal_cm.__exit__(None, None, None)

        # -- helpers -------------------------------------------------------------------------

        def call(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
            return self.portal.call(function, *args)

        def expected_loss(self) -> tuple[bytes, Token | None, bool]:
            if self.model is None:
                return (b"", None, False)
            return (self.model[0], self.model[1], False)

        def check_result(self, result: Any, state: bytes, token: Token | None) -> None:
            """Check one set_state result against the model, then advance the model."""
            assert isinstance(result, tuple), f"set_state returned {result!r}, not a tuple"
            assert len(result) == 3, f"set_state returned {result!r}"
            current_token = None if self.model is None else self.model[1]
            should_win = _same(token, current_token)
            if should_win:
                assert result[2] is True, f"a write with the current token lost: {result!r}"
                self.record_win(state, result[1])
            else:
                assert result[2] is False, f"a write with a stale token won: {result!r}"
                assert result[0] == self.expected_loss()[0], "loser saw the wrong state"
                assert _same(result[1], current_token), "loser saw the wrong token"

        def record_win(self, state: bytes, new_token: Token) -> None:
            assert new_token is not None, "a successful write returned the token None"
            for earlier in self.issued:
                assert not _same(new_token, earlier), (
                    f"token {new_token!r} was issued before: tokens must never repeat (ABA)"
                )
            self.issued.append(new_token)
            self.model = (state, new_token)

        # -- rules ---------------------------------------------------------------------------

        @initialize()
        def open_writers(self) -> None:
            async def open_all() -> None:
                for _ in range(writers):
                    handle = make_backend(self.run_id)
                    if inspect.isawaitable(handle):
                        handle = await handle
                    self.handles.append(handle)

            self.call(open_all)

        @rule(writer=writer_indices)
        def read(self, writer: int) -> None:
            result = self.call(self.handles[writer].get_state)
            if self.model is None:
                assert result is None, f"get_state on an empty run returned {result!r}"
            else:
                assert result is not None, "get_state lost the state"
                assert result[0] == self.model[0], "get_state returned the wrong state"
                assert _same(result[1], self.model[1]), "get_state returned the wrong token"
                self.known[writer] = result[1]

        @rule(writer=writer_indices, state=_payloads)
        def write_with_current_token(self, writer: int, state: bytes) -> None:
            token = None if self.model is None else self.model[1]
            self.check_result(self.call(self.handles[writer].set_state, state, token), state, token)
            self.known[writer] = self.model[1] if self.model else None

        @rule(writer=writer_indices, state=_payloads)
        def write_with_writers_own_token(self, writer: int, state: bytes) -> None:
            token = self.known[writer]
            result = self.call(self.handles[writer].set_state, state, token)
            self.check_result(result, state, token)
            self.known[writer] = result[1]

        @precondition(lambda self: len(self.issued) >= 2)
        @rule(writer=writer_indices, state=_payloads, age=st.integers(min_value=1))
        def write_with_stale_token(self, writer: int, state: bytes, age: int) -> None:
            stale = self.issued[-1 - (age % (len(self.issued) - 1)) - 1]
            result = self.call(self.handles[writer].set_state, state, stale)
            self.check_result(result, state, stale)

        @rule(writer=writer_indices, state=_payloads)
        def write_with_none(self, writer: int, state: bytes) -> None:
            self.check_result(self.call(self.handles[writer].set_state, state, None), state, None)

        @rule(writer=writer_indices, state=_payloads, garbage=_garbage_tokens)
        def write_with_garbage_token(self, writer: int, state: bytes, garbage: Any) -> None:
            result = self.call(self.handles[writer].set_state, state, garbage)
            assert result == self.expected_loss(), f"garbage token {garbage!r} gave {result!r}"

        @rule(
            racers=st.lists(writer_indices, min_size=2, max_size=8),
            state=_payloads,
            stale=st.booleans(),
        )
        def concurrent_burst(self, racers: list[int], state: bytes, stale: bool) -> None:
            if stale and len(self.issued) >= 2:
                token: Token | None = self.issued[-2]
            else:
                token = None if self.model is None else self.model[1]
            payloads = [state + b"#%d" % position for position in range(len(racers))]
            results: list[Any] = [None] * len(racers)

            async def race() -> None:
                async def one(position: int) -> None:
                    handle = self.handles[racers[position]]
                    results[position] = await handle.set_state(payloads[position], token)

                async with anyio.create_task_group() as group:
                    for position in range(len(racers)):
                        group.start_soon(one, position)

            self.call(race)
            winners = [position for position, result in enumerate(results) if result[2]]
            current_token = None if self.model is None else self.model[1]
            if _same(token, current_token):
                assert len(winners) == 1, (
                    f"{len(winners)} writers won one race with the same token; "
                    "expected exactly one winner"
                )
                self.record_win(payloads[winners[0]], results[winners[0]][1])
            else:
                assert not winners, "a racing writer won with a stale token"
            for position, result in enumerate(results):
                if position not in winners:
                    assert result == self.expected_loss(), (
                        f"a losing racer saw {result!r}, not the winner's state and token"
                    )

        @rule(writer=writer_indices)
        def wait_for_change_returns_without_change_on_timeout(self, writer: int) -> None:
            token = None if self.model is None else self.model[1]

            async def wait() -> Any:
                return await self.handles[writer].wait_for_change(token, timeout=0)

            assert self.call(wait) is None, "wait_for_change reported a change that did not happen"

        @precondition(lambda self: len(self.issued) >= 2)
        @rule(writer=writer_indices)
        def wait_for_change_with_stale_token_returns_at_once(self, writer: int) -> None:
            stale = self.issued[-2]

            async def wait() -> Any:
                with anyio.fail_after(10):
                    return await self.handles[writer].wait_for_change(stale)

            result = self.call(wait)
            assert self.model is not None
            assert result is not None
            assert result[0] == self.model[0]
            assert _same(result[1], self.model[1])

        @invariant()
        def store_matches_model(self) -> None:
            if not self.handles:
                return
            result = self.call(self.handles[0].get_state)
            if self.model is None:
                assert result is None
            else:
                assert result is not None
                assert (result[0], _same(result[1], self.model[1])) == (self.model[0], True), (
                    f"store holds {result!r}, model {self.model!r}"
                )

    BackendStateMachine.__name__ = BackendStateMachine.__qualname__ = "BackendStateMachine"
    return BackendStateMachine
