"""Conformance scenarios for network backends: a store that can be killed, frozen or cut off.

:class:`NetworkBackendConformance` adds to :class:`~arendezvous.testing.conformance.
CorruptStateConformance` what only a backend talking to a server over the network has to get
right: racing handles and processes that lose no update, a hostile ``__eq__`` on a token, tokens
that never repeat after the state was deleted, a server killed and restarted under a waiting
handle, a server that accepts connections but never answers, an address that refuses them, a
network partition (a :class:`~arendezvous.testing.servers.proxy.FaultProxy` that black-holes
traffic), many waiters on one handle sharing one change feed, cancellation at every point of a
round trip, closing under waiters, and a handle used from a second event loop.

Subclass it in a test module of your backend and implement the hooks::

    from arendezvous.testing.network import NetworkBackendConformance

    class TestMyBackend(NetworkBackendConformance):
        def server_address(self):                    # the server most scenarios use
            return ("127.0.0.1", MY_SERVER_PORT)

        def backend_at(self, run_id, host, port, *, timeout):
            return MyBackend(run_id, host=host, port=port, timeout=timeout)

        def server_url(self, run_id):                # for the cross-process race
            return f"mystore://127.0.0.1:{MY_SERVER_PORT}"

        @classmethod
        def start_server(cls):                       # a server the scenarios may kill
            return MyServer().start()                # host, port, kill, restart, pause, ...

        async def corrupt_state(self, run_id, raw):  # write raw bytes behind the backend
            ...

        async def delete_state(self, run_id):        # delete the run's state behind it
            ...

Every async scenario runs on each event loop your ``anyio_backend`` fixture names. The failure
scenarios give their handles a short timeout (:attr:`failure_timeout`) and check that each call
fails within it (plus slack for a loaded machine); none sleeps to wait for something to happen.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Protocol

import anyio
import anyio.to_thread
import pytest

from .._backend import AsyncRendezvousBackend, Token
from .._errors import BackendClosedError, RendezvousConnectionError
from ._counter import run_counter_race
from .conformance import CorruptStateConformance
from .servers import free_port
from .servers.proxy import FaultProxy

__all__ = ("NetworkBackendConformance", "ServerControl", "run_counter_race")


class ServerControl(Protocol):
    """What the scenarios need of a server of their own; the launchers of
    :mod:`arendezvous.testing.servers` have it all."""

    @property
    def host(self) -> str:
        """The address clients connect to."""

    @property
    def port(self) -> int:
        """The port clients connect to."""

    def kill(self) -> None:
        """SIGKILL the server (a crash); :meth:`restart` brings it back on the same port."""

    def restart(self) -> Any:
        """Start it again on the same port (and data, if it keeps any)."""

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open, nothing answers."""

    def resume(self) -> None:
        """Thaw it after :meth:`pause`."""

    def stop(self) -> None:
        """Stop it for good and remove what it left behind."""


class _HostileEq:
    """A token whose ``__eq__`` records every call: a backend must never run it."""

    calls: ClassVar[list[object]] = []

    def __eq__(self, other: object) -> bool:
        _HostileEq.calls.append(other)
        return True

    __hash__ = object.__hash__


def _hostile_twin(token: Token) -> object:
    """A copy of *token* whose class is a subclass of the token's with a lying ``__eq__``."""
    cls = type(token)

    def lying_eq(self: object, other: object) -> bool:
        _HostileEq.calls.append(other)
        return True

    hostile_cls = type(f"Hostile{cls.__name__}", (cls,), {
        "__slots__": (), "__eq__": lying_eq, "__hash__": cls.__hash__,
    })  # fmt: skip
    twin = copy.copy(token)
    object.__setattr__(twin, "__class__", hostile_cls)
    return twin


class NetworkBackendConformance(CorruptStateConformance):
    """The scenarios of a network backend; subclass and implement the hooks (module docstring)."""

    #: Whether the server keeps its data across a crash and restart (a Redis without persistence
    #: does not: after a restart the run is empty).
    keeps_state_across_restart: ClassVar[bool] = True
    #: The handle timeout of the failure scenarios, in seconds.
    failure_timeout: ClassVar[float] = 1.0
    #: Extra seconds any bound on elapsed time allows, for a loaded machine.
    slack: ClassVar[float] = 2.0
    #: How many waiters share one handle in :meth:`test_many_waiters_share_one_change_feed`.
    waiters: ClassVar[int] = 200

    # -- hooks ---------------------------------------------------------------------------------

    def server_address(self) -> tuple[str, int]:
        """``(host, port)`` of the server most scenarios use (it is never stopped)."""
        raise NotImplementedError("NetworkBackendConformance subclasses implement server_address()")

    def backend_at(
        self, run_id: str, host: str, port: int, *, timeout: float
    ) -> AsyncRendezvousBackend:
        """A new handle on run *run_id* of the server at *host*:*port*, with the handle timeout
        *timeout*. It must not connect before its first call."""
        raise NotImplementedError("NetworkBackendConformance subclasses implement backend_at()")

    def server_url(self, run_id: str) -> str:
        """The URL ``open_backend`` opens the same run's store with, in another process."""
        raise NotImplementedError("NetworkBackendConformance subclasses implement server_url()")

    @classmethod
    def start_server(cls) -> ServerControl:
        """Start a server of the scenarios' own, which they kill, restart and freeze (and leave
        running); it is stopped after the last scenario of the class. A classmethod: the server
        outlives each test's instance."""
        raise NotImplementedError("NetworkBackendConformance subclasses implement start_server()")

    async def delete_state(self, run_id: str) -> None:
        """Delete run *run_id*'s stored state with the store's own client, behind the backend."""
        raise NotImplementedError("NetworkBackendConformance subclasses implement delete_state()")

    async def server_connections(self) -> int | None:
        """How many client connections the server of :meth:`server_address` has now, for the
        check that waiters share one; ``None`` (the default): the store cannot tell."""
        return None

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        """A handle on the server of :meth:`server_address` with a generous timeout."""
        host, port = self.server_address()
        return self.backend_at(run_id, host, port, timeout=self.timeout)

    # -- fixtures ------------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def crash_server(cls) -> Iterator[ServerControl]:
        """The scenarios' own server (see :meth:`start_server`)."""
        server = cls.start_server()
        try:
            yield server
        finally:
            server.stop()

    @asynccontextmanager
    async def _handle(
        self, run_id: str, address: tuple[str, int], *, timeout: float
    ) -> AsyncIterator[AsyncRendezvousBackend]:
        backend = self.backend_at(run_id, *address, timeout=timeout)
        try:
            yield backend
        finally:
            await backend.aclose()

    def _within(self, seconds: float) -> float:
        return seconds + self.slack

    # -- races ---------------------------------------------------------------------------------

    async def test_racing_handles_lose_no_update(self, open_backend: Any) -> None:
        handles = [await open_backend() for _ in range(4)]
        await handles[0].set_state(b"0")
        increments = 25

        async def increment(backend: AsyncRendezvousBackend) -> None:
            current = await backend.get_state()
            assert current is not None
            state, token = current
            for _ in range(increments):
                for _attempt in range(10_000):
                    state, token, written = await backend.set_state(
                        b"%d" % (int(state) + 1), token
                    )
                    if written:
                        break
                else:
                    raise AssertionError("an increment never won: racing writers starve")

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for handle in handles:
                    group.start_soon(increment, handle)
        current = await handles[0].get_state()
        assert current is not None
        assert int(current[0]) == 4 * increments, "racing handles lost updates"

    def test_processes_lose_no_update(self) -> None:
        run_id = f"network-race-{uuid.uuid4().hex}"
        final, _ = run_counter_race(self.server_url(run_id), run_id, processes=4, increments=50)
        assert final == 4 * 50, "racing processes lost updates"

    # -- tokens --------------------------------------------------------------------------------

    async def test_hostile_token_eq_is_never_called(self, backend: AsyncRendezvousBackend) -> None:
        _, token, _ = await backend.set_state(b"a")
        _HostileEq.calls.clear()
        for hostile in (_HostileEq(), _hostile_twin(token)):
            assert await backend.set_state(b"b", hostile) == (b"a", token, False)
            with anyio.fail_after(self.timeout):
                assert await backend.wait_for_change(hostile, timeout=0) == (b"a", token)
                assert await backend.wait_for_change(hostile, timeout=5) == (b"a", token)
        assert _HostileEq.calls == [], "the backend called a caller's token's __eq__"

    async def test_tokens_never_repeat_after_the_state_is_deleted(
        self, backend: AsyncRendezvousBackend, run_id: str
    ) -> None:
        seen: list[Token] = []
        for _ in range(3):
            _, token, written = await backend.set_state(b"same")
            assert written
            assert all(token != earlier for earlier in seen), f"token {token!r} repeated: ABA"
            seen.append(token)
            await self.delete_state(run_id)
            assert await backend.get_state() is None
            assert await backend.set_state(b"x", token) == (b"", None, False)
        _, token, _ = await backend.set_state(b"same")
        for old in seen:
            assert await backend.set_state(b"y", old) == (b"same", token, False)

    # -- waiting -------------------------------------------------------------------------------

    async def test_many_waiters_share_one_change_feed(self, open_backend: Any) -> None:
        """Hundreds of tasks wait on one handle (a quarter give up early): all that stayed see
        the one write, they cost the server no more connections than one waiter does, and
        those that gave up leave nothing behind."""
        waiter, writer = await open_backend(), await open_backend()
        _, token, _ = await writer.set_state(b"a")
        assert await waiter.wait_for_change(token, timeout=0.01) is None  # the feed is up
        before = await self.server_connections()
        results: list[Any] = []
        early = self.waiters // 4
        gave_up: list[None] = []
        all_gave_up = anyio.Event()

        async def wait(index: int) -> None:
            if index >= early:
                results.append(await waiter.wait_for_change(token, timeout=self.timeout * 3))
                return
            with anyio.move_on_after(0.05):
                results.append(await waiter.wait_for_change(token))
            gave_up.append(None)
            if len(gave_up) == early:
                all_gave_up.set()

        with anyio.fail_after(self.timeout * 3):
            async with anyio.create_task_group() as group:
                for index in range(self.waiters):
                    group.start_soon(wait, index)
                await all_gave_up.wait()
                await anyio.wait_all_tasks_blocked()
                during = await self.server_connections()
                _, new_token, _ = await writer.set_state(b"b", token)
        assert results == [(b"b", new_token)] * (self.waiters - early)
        if before is not None and during is not None:
            assert during - before <= 2, (
                f"{self.waiters} waiters on one handle took {during - before} more server "
                "connections: they must share one change feed"
            )
        # The waiters that gave up left nothing behind: the handle waits and wakes as before.
        seen, last = await self._written_while_waiting(waiter, writer, new_token, b"c")
        assert seen == (b"c", last)

    async def _written_while_waiting(
        self,
        waiter: AsyncRendezvousBackend,
        writer: AsyncRendezvousBackend,
        token: Token,
        state: bytes,
    ) -> tuple[Any, Token]:
        """``(what the waiter's wait on *token* returned, the new token)`` when *writer* writes
        *state* over *token* once the wait is blocked."""
        seen: list[Any] = []

        async def wait() -> None:
            with anyio.fail_after(self.timeout):
                seen.append(await waiter.wait_for_change(token))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            written = await writer.set_state(state, token)
        return seen[0], written[1]

    async def test_cancelled_waits_leave_a_working_handle(
        self, open_backend: Any
    ) -> None:
        backend, writer = await open_backend(), await open_backend()
        _, token, _ = await backend.set_state(b"a")
        for step in range(20):
            with anyio.move_on_after(step * 0.002):
                await backend.wait_for_change(token)
            assert await backend.get_state() == (b"a", token)
        seen, new_token = await self._written_while_waiting(backend, writer, token, b"b")
        assert seen == (b"b", new_token)

    # -- cancellation --------------------------------------------------------------------------

    async def test_cancelled_calls_leave_replies_in_order(self, open_backend: Any) -> None:
        """Writes and reads cancelled at many points of their round trip: a connection with an
        unread reply must never serve the next call, and every write is all or nothing."""
        writer, reader = await open_backend(), await open_backend()
        _, token, _ = await writer.set_state(b"v0")
        last = b"v0"
        for attempt in range(60):
            payload = b"v%d" % (attempt + 1)
            with anyio.move_on_after((attempt % 15) * 0.0001):
                await writer.set_state(payload, token)
            with anyio.move_on_after((attempt % 7) * 0.0001):
                await writer.get_state()
            current = await writer.get_state()
            assert current is not None
            assert current == await reader.get_state(), "two handles disagree"
            if current[1] != token:  # the cancelled write was applied: all of it, and by now
                token, last = current[1], payload
            assert current[0] == last, "a cancelled write was half applied, or applied late"
        assert (await writer.set_state(b"after", token))[2]

    # -- failures ------------------------------------------------------------------------------

    async def test_refused_connections_fail_fast(self) -> None:
        """Nothing listens at the address: every call fails at once, however long the timeout,
        and a wait that could not ask the store never answers "no change"."""
        address = ("127.0.0.1", free_port())
        run_id = f"refused-{uuid.uuid4().hex}"
        async with self._handle(run_id, address, timeout=30) as backend:
            for call in (backend.get_state, lambda: backend.set_state(b"x")):
                started = anyio.current_time()
                with pytest.raises(RendezvousConnectionError) as caught:
                    await call()
                assert anyio.current_time() - started < self.slack, "a refused call waited"
                assert caught.value.__cause__ is not None
            for timeout in (0, 0.2):
                with anyio.fail_after(self._within(30)):
                    with pytest.raises(RendezvousConnectionError):
                        await backend.wait_for_change(None, timeout=timeout)
        async with self._handle(run_id, address, timeout=self.failure_timeout) as backend:
            started = anyio.current_time()
            with anyio.fail_after(self._within(3 * self.failure_timeout)):
                with pytest.raises(RendezvousConnectionError, match="unreachable"):
                    await backend.wait_for_change(None)  # no timeout of its own: must not hang
            assert anyio.current_time() - started < self._within(2 * self.failure_timeout)

    async def test_kill_and_restart(self, crash_server: ServerControl) -> None:
        """SIGKILL the server under a waiting and a working handle, then restart it: calls fail
        within the timeout meanwhile, the waiter rides the outage out, and the same handles work
        again afterwards."""
        run_id = f"crash-{uuid.uuid4().hex}"
        address = (crash_server.host, crash_server.port)
        timeout = self.failure_timeout
        async with (
            self._handle(run_id, address, timeout=timeout) as probe,
            self._handle(run_id, address, timeout=30) as waiter,
        ):
            _, token, _ = await probe.set_state(b"before")
            # The waiter's feed is subscribed: it has seen a change through it.
            results: list[Any] = []
            waiting = anyio.Event()

            async def wait() -> None:
                first = await waiter.wait_for_change(token, timeout=30)
                assert first is not None
                waiting.set()
                results.append(await waiter.wait_for_change(first[1], timeout=60))

            with anyio.fail_after(90):
                async with anyio.create_task_group() as group:
                    group.start_soon(wait)
                    await anyio.wait_all_tasks_blocked()
                    _, token, _ = await probe.set_state(b"seen", token)
                    await waiting.wait()
                    await anyio.wait_all_tasks_blocked()
                    await anyio.to_thread.run_sync(crash_server.kill)
                    for call in (probe.get_state, lambda: probe.set_state(b"during", token)):
                        started = anyio.current_time()
                        with pytest.raises(RendezvousConnectionError) as caught:
                            await call()
                        assert anyio.current_time() - started < self._within(timeout)
                        assert caught.value.__cause__ is not None
                    with pytest.raises(RendezvousConnectionError):
                        await probe.wait_for_change(token, timeout=0.1)
                    assert results == []  # still waiting, not failed
                    await anyio.to_thread.run_sync(crash_server.restart)
                    if self.keeps_state_across_restart:
                        assert await probe.get_state() == (b"seen", token)
                        state, new_token, written = await probe.set_state(b"after", token)
                    else:
                        assert await probe.get_state() is None
                        state, new_token, written = await probe.set_state(b"after")
                    assert (state, written) == (b"after", True)
                    assert new_token != token
            assert results == [(b"after", new_token)]

    async def test_unanswered_calls_fail_within_the_timeout(
        self, crash_server: ServerControl
    ) -> None:
        """The server accepts connections but never answers (frozen with SIGSTOP)."""
        run_id = f"frozen-{uuid.uuid4().hex}"
        timeout = self.failure_timeout
        async with self._handle(
            run_id, (crash_server.host, crash_server.port), timeout=timeout
        ) as backend:
            _, token, _ = await backend.set_state(b"a")
            crash_server.pause()
            try:
                for call in (backend.get_state, lambda: backend.set_state(b"b", token)):
                    started = anyio.current_time()
                    with pytest.raises(RendezvousConnectionError):
                        await call()
                    assert anyio.current_time() - started < self._within(timeout)
                started = anyio.current_time()
                with anyio.fail_after(self._within(10 * timeout)):
                    with pytest.raises(RendezvousConnectionError, match="unreachable"):
                        await backend.wait_for_change(token)
                assert anyio.current_time() - started < self._within(3 * timeout)
            finally:
                crash_server.resume()
            # Running again: the same handle answers, and the cut-off write (which may still
            # run once the server reads it) was applied entirely or not at all.
            with anyio.fail_after(self._within(10 * timeout)):
                while True:
                    try:
                        current = await backend.get_state()
                        break
                    except RendezvousConnectionError:
                        continue  # the thawed server catching up; bounded by fail_after
            assert current is not None
            assert current[0] in (b"a", b"b")

    async def test_a_partitioned_wait_raises_within_its_timeout(self) -> None:
        """All traffic to the store is black-holed mid-wait (connections stay open, nothing
        arrives): a wait without a timeout of its own raises once the store has been unreachable
        for the handle's timeout, and a finite wait never answers "no change" it could not
        check."""
        run_id = f"partition-{uuid.uuid4().hex}"
        timeout = self.failure_timeout
        with FaultProxy(*self.server_address()) as proxy:
            async with self._handle(run_id, (proxy.host, proxy.port), timeout=timeout) as backend:
                _, token, _ = await backend.set_state(b"a")
                assert await backend.wait_for_change(token, timeout=0.01) is None  # subscribed
                proxy.blackhole()
                started = anyio.current_time()
                with anyio.fail_after(self._within(10 * timeout)):
                    with pytest.raises(RendezvousConnectionError, match="unreachable"):
                        await backend.wait_for_change(token)
                assert anyio.current_time() - started < self._within(3 * timeout)
                with anyio.fail_after(self._within(10 * timeout)):
                    with pytest.raises(RendezvousConnectionError):
                        await backend.wait_for_change(token, timeout=0.2)
                proxy.restore()
                proxy.cut()  # connections that went silent may be beyond use: start afresh
                with anyio.fail_after(self._within(10 * timeout)):
                    while True:
                        try:
                            assert await backend.get_state() == (b"a", token)
                            break
                        except RendezvousConnectionError:
                            continue  # reconnecting; bounded by fail_after

    # -- event loops ---------------------------------------------------------------------------

    def test_a_handle_follows_its_event_loop(self) -> None:
        """A handle used from one ``anyio.run`` after another (asyncio, trio, asyncio) works
        each time; closed from a new loop once its own has closed, it closes without "Event loop
        is closed" (its connections are dropped); used from a second loop while its own still
        runs, it refuses clearly."""
        host, port = self.server_address()
        orphan = self.backend_at(f"loops-{uuid.uuid4().hex}", host, port, timeout=self.timeout)
        anyio.run(orphan.set_state, b"a")
        anyio.run(orphan.aclose)
        with pytest.raises(BackendClosedError):
            anyio.run(orphan.get_state)
        backend = self.backend_at(f"loops-{uuid.uuid4().hex}", host, port, timeout=self.timeout)
        _, token, _ = anyio.run(backend.set_state, b"a")
        assert anyio.run(backend.get_state) == (b"a", token)
        assert anyio.run(backend.get_state, backend="trio") == (b"a", token)
        assert anyio.run(backend.get_state) == (b"a", token)
        anyio.run(backend.aclose)

        bound = self.backend_at(f"loops-{uuid.uuid4().hex}", host, port, timeout=self.timeout)
        refused: list[BaseException] = []

        def from_another_loop() -> None:
            try:
                anyio.run(bound.get_state)
            except RuntimeError as exc:
                refused.append(exc)

        async def main() -> None:
            await bound.get_state()  # bound to this loop now
            thread = threading.Thread(target=from_another_loop)
            thread.start()
            await anyio.to_thread.run_sync(thread.join)
            await bound.aclose()

        anyio.run(main)
        assert len(refused) == 1, "a handle was used from two running event loops"
        assert "bound to the event loop" in str(refused[0])
