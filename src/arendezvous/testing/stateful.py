"""A Hypothesis state machine in which several writers hold tokens and race on one run.

:func:`backend_state_machine` builds a :class:`~hypothesis.stateful.RuleBasedStateMachine` for any
backend. Each test case opens a fresh run and several handles on it (the writers) and checks every
result against a model of the register: reads; writes with the current, a stale, a ``None`` or a
garbage token; and concurrent bursts in which many writers ``set_state`` with the same token inside
one task group, where exactly one may win and every loser must see the winner's state and token.
Every token the store hands out is remembered, so a token that comes back (ABA) is caught::

    from arendezvous.testing import backend_state_machine

    TestMyBackendRaces = backend_state_machine(MyBackend).TestCase
    TestMyBackendRacesOnTrio = backend_state_machine(MyBackend, anyio_backend="trio").TestCase

A failed check raises a :class:`~arendezvous.testing.ContractViolation` naming the promise,
the writer, the call and the values; Hypothesis then prints the shortest sequence of steps it
found that breaks it.

Each test case runs its coroutines on one event loop of its own (asyncio or trio), in a thread
of its own, held open by an anyio blocking portal: handles bound to a loop (network
connections) stay valid between steps, and no async pytest plugin of the project is involved.
Set ``TestCase.settings`` to choose how many cases and steps Hypothesis tries.
"""

from __future__ import annotations

import inspect
import unittest
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
from ._loops import loop_and_options, missing_loop
from ._promises import (
    READ,
    STALE,
    WAIT,
    TokenLedger,
    broken,
    check_race,
    check_read,
    check_set_result,
    check_unchanged,
    check_written,
    must_not_raise,
    show,
    tokens_equal,
)

__all__ = ("BackendFactory", "backend_state_machine")

BackendFactory = Callable[[str], "AsyncRendezvousBackend | Awaitable[AsyncRendezvousBackend]"]
"""``make_backend(run_id)``: a new handle on run *run_id*, returned or awaited."""

_PROMPTLY = 10.0  # seconds within which a wait with a stale token must return (at once, really)

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


def backend_state_machine(
    make_backend: BackendFactory,
    *,
    anyio_backend: str = "asyncio",
    writers: int = 3,
) -> type[RuleBasedStateMachine]:
    """Return a state machine class that races *writers* handles from *make_backend*.

    :param make_backend: called with a fresh run id per test case, once per writer; may return
        the handle or an awaitable of it (called inside the event loop).
    :param anyio_backend: the event loop to run on: ``"asyncio"`` or ``"trio"``. Build one class
        per loop to test both. Where the loop is not installed, each case is skipped with a
        message saying what to install.
    :param writers: how many handles race (at least 2).

    Use ``.TestCase`` of the result as a unittest/pytest test, and set its ``settings``.

    :raises ValueError: *writers* is below 2 or *anyio_backend* names no loop the kit runs on.
    """
    if writers < 2:
        raise ValueError("a race needs at least 2 writers")
    loop, options = loop_and_options(anyio_backend)
    writer_indices = st.integers(0, writers - 1)

    class BackendStateMachine(RuleBasedStateMachine):
        """Racing writers against a model of one compare-and-swap register."""

        def __init__(self) -> None:
            reason = missing_loop(loop)
            if reason is not None:
                raise unittest.SkipTest(reason)
            super().__init__()
            self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(
                backend=loop, backend_options=options
            )
            self.portal = self._portal_cm.__enter__()
            self.run_id = f"stateful-{uuid.uuid4().hex}"
            self.handles: list[AsyncRendezvousBackend] = []
            self.model: tuple[bytes, Token] | None = None
            self.issued = TokenLedger()
            self.writes = 0
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

        def current_token(self) -> Token | None:
            return None if self.model is None else self.model[1]

        def describe_token(self, token: Token | None) -> str:
            """What *token* is to the model, for messages: current, stale or none."""
            if tokens_equal(token, self.current_token()):
                return f"the current token {show(token)}"
            if token is None:
                return "None although the run has state"
            return f"the stale token {show(token)}"

        def set_state(self, writer: int, state: bytes, token: Token | None) -> Any:
            """Writer *writer*'s ``set_state(state, token)``; checked against the model."""
            call = f"writer {writer}'s set_state({show(state)}, {show(token)})"
            result = self.call(self.handles[writer].set_state, state, token)
            if tokens_equal(token, self.current_token()):
                self.record_win(state, check_written(result, state, token, call), call)
            else:
                check_unchanged(result, self.model, call, self.describe_token(token))
            return result

        def record_win(self, state: bytes, new_token: Token, call: str) -> None:
            self.writes += 1
            self.issued.issue(new_token, f"{call} (write #{self.writes})")
            self.model = (state, new_token)

        def check_read(self, result: object, call: str) -> None:
            why = "on a run with no state" if self.model is None else "after the last write"
            check_read(result, self.model, call, why, READ)

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
            self.check_read(result, f"writer {writer}'s get_state()")
            if self.model is not None:
                self.known[writer] = self.model[1]

        @rule(writer=writer_indices, state=_payloads)
        def write_with_current_token(self, writer: int, state: bytes) -> None:
            self.set_state(writer, state, self.current_token())
            self.known[writer] = self.current_token()

        @rule(writer=writer_indices, state=_payloads)
        def write_with_writers_own_token(self, writer: int, state: bytes) -> None:
            result = self.set_state(writer, state, self.known[writer])
            self.known[writer] = result[1]

        @precondition(lambda self: len(self.issued) >= 2)
        @rule(writer=writer_indices, state=_payloads, age=st.integers(min_value=1))
        def write_with_stale_token(self, writer: int, state: bytes, age: int) -> None:
            stale = self.issued[-1 - (age % (len(self.issued) - 1)) - 1]
            self.set_state(writer, state, stale)

        @rule(writer=writer_indices, state=_payloads)
        def write_with_none(self, writer: int, state: bytes) -> None:
            self.set_state(writer, state, None)

        @rule(writer=writer_indices, state=_payloads, garbage=_garbage_tokens)
        def write_with_garbage_token(self, writer: int, state: bytes, garbage: Any) -> None:
            call = f"writer {writer}'s set_state({show(state)}, {show(garbage)})"

            async def write() -> Any:
                handle = self.handles[writer]
                return await must_not_raise(handle.set_state(state, garbage), STALE, call)

            why = f"the garbage token {show(garbage)}"
            check_unchanged(self.call(write), self.model, call, why)

        @rule(
            racers=st.lists(writer_indices, min_size=2, max_size=8),
            state=_payloads,
            stale=st.booleans(),
        )
        def concurrent_burst(self, racers: list[int], state: bytes, stale: bool) -> None:
            if stale and len(self.issued) >= 2:
                token: Token | None = self.issued[-2]
            else:
                token = self.current_token()
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
            if tokens_equal(token, self.current_token()):
                labels = [f"writer {writer}" for writer in racers]
                winner = check_race(results, payloads, token, labels)
                _, new_token, _ = check_set_result(results[winner], "the winning write")
                self.record_win(
                    payloads[winner],
                    new_token,
                    f"racing writer {racers[winner]}'s set_state({show(payloads[winner])}, "
                    f"{show(token)})",
                )
                return
            for position, result in enumerate(results):
                call = (
                    f"racing writer {racers[position]}'s "
                    f"set_state({show(payloads[position])}, {show(token)})"
                )
                check_unchanged(result, self.model, call, self.describe_token(token))

        @rule(writer=writer_indices)
        def wait_for_change_returns_without_change_on_timeout(self, writer: int) -> None:
            token = self.current_token()

            async def wait() -> Any:
                return await self.handles[writer].wait_for_change(token, timeout=0)

            call = f"writer {writer}'s wait_for_change({show(token)}, timeout=0)"
            check_read(self.call(wait), None, call, "with the current token", WAIT)

        @precondition(lambda self: len(self.issued) >= 2)
        @rule(writer=writer_indices)
        def wait_for_change_with_stale_token_returns_at_once(self, writer: int) -> None:
            stale = self.issued[-2]

            call = f"writer {writer}'s wait_for_change({show(stale)})"

            async def wait() -> Any:
                with anyio.move_on_after(_PROMPTLY):
                    return await self.handles[writer].wait_for_change(stale)
                raise broken(WAIT, f"{call} did not return within {_PROMPTLY} s")

            check_read(self.call(wait), self.model, call, "with a stale token", WAIT)

        @invariant()
        def store_matches_model(self) -> None:
            if self.handles:
                self.check_read(self.call(self.handles[0].get_state), "writer 0's get_state()")

    BackendStateMachine.__name__ = BackendStateMachine.__qualname__ = "BackendStateMachine"
    return BackendStateMachine
