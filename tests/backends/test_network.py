"""The network-backend base, on a fake store in this process: the rules it owns, exactly.

The real stores run the same code against real servers (``test_redis.py``, ``test_etcd.py``,
``test_postgres.py``); here a fake store lets a test count subscriptions and reads, refuse
connections, lose or silence the feed at a chosen moment, and so pin the base's rules: one feed
per handle, coalesced reads, the outage policy, lingering, the option rules, closing, trio.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Hashable
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import pytest

from arendezvous import BackendClosedError, RendezvousConnectionError, RendezvousStateError, Token
from arendezvous._errors import ErrorTable
from arendezvous.backends._feed import PONG, ChangeFeed
from arendezvous.backends._network import NetworkBackend

from ._waiting import waiting

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The fake store's state is touched directly by the tests: they share its loop."""
    return "asyncio"


class FakeStore:
    """One register, its change notices, and switches for the failures a test wants."""

    def __init__(self) -> None:
        self.current: tuple[bytes, int] | None = None
        self.version = 0
        self.reachable = True
        self.silent = False  # subscriptions stay open but nothing, pings included, arrives
        self.corrupt = False
        self.opens = 0
        self.reads = 0
        self.feeds: set[FakeFeed] = set()
        self.closed_feeds = 0
        self.feed_closed = anyio.Event()
        self.subscriptions: list[frozenset[Hashable]] = []
        self.subscribed = anyio.Event()

    def write(self, state: bytes, *, notify: bool = True) -> int:
        self.version += 1
        self.current = (state, self.version)
        if notify:
            for feed in self.feeds:
                feed.push("run")
        return self.version

    def lose_feeds(self) -> None:
        for feed in list(self.feeds):
            feed.lost = True
            feed.push(None)


class FakeFeed(ChangeFeed):
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.hints: list[object] = []
        self.arrived = anyio.Event()
        self.lost = False

    def push(self, hint: object) -> None:
        if hint is not None:
            self.hints.append(hint)
        self.arrived.set()

    async def open(self, topics: frozenset[Hashable]) -> None:
        await anyio.lowlevel.checkpoint()
        if not self.store.reachable:
            raise RendezvousConnectionError("fake: refused")
        self.store.opens += 1
        self.store.feeds.add(self)
        self.store.subscriptions.append(topics)
        self.store.subscribed.set()
        self.store.subscribed = anyio.Event()

    async def next_hint(self, timeout: float) -> object:
        if not self.hints and not self.lost:
            with anyio.move_on_after(timeout):
                await self.arrived.wait()
            self.arrived = anyio.Event()
        if self.lost:
            raise RendezvousConnectionError("fake: subscription lost")
        return self.hints.pop(0) if self.hints else None

    async def ping(self) -> bool:
        if not self.store.silent:
            self.push(PONG)
        return False

    async def aclose(self) -> None:
        self.store.feeds.discard(self)
        self.store.closed_feeds += 1
        self.store.feed_closed.set()


class FakeBackend(NetworkBackend):
    NAME = "fake"
    MAX_STATE_SIZE_LIMIT = 1000
    MAX_STATE_SIZE_REASON = "the fake's limit"
    FEED_LINGER: ClassVar[float] = 10.0

    def __init__(self, store: FakeStore, *, timeout: float = 2.0, max_state_size: int = 100):
        super().__init__("run", timeout=timeout, max_state_size=max_state_size)
        self._store = store
        self._where = "fake://"

    def _error_table(self) -> ErrorTable:
        return ()

    def _open_client(self) -> FakeStore:
        return self._store

    async def _close_client(self, client: FakeStore) -> None:
        pass

    def _make_feed(self, client: FakeStore) -> ChangeFeed:
        return FakeFeed(client)

    def _topic(self) -> Hashable:
        return "run"

    async def _read(self, client: FakeStore) -> tuple[bytes, Token] | None:
        await anyio.lowlevel.checkpoint()
        if not client.reachable:
            raise RendezvousConnectionError("fake: refused")
        if client.corrupt:
            raise RendezvousStateError("fake: corrupt")
        client.reads += 1
        return client.current

    async def _swap(
        self, client: FakeStore, state: bytes, token: Token | None
    ) -> tuple[bytes, Token, bool]:
        await anyio.lowlevel.checkpoint()
        if not client.reachable:
            raise RendezvousConnectionError("fake: refused")
        current = client.current
        if (current[1] if current else None) != token:
            return (b"", None, False) if current is None else (*current, False)
        return state, client.write(state), True


class QuickToLetGo(FakeBackend):
    FEED_LINGER = 0.05


# -- one feed per handle ---------------------------------------------------------------------------


async def test_waiters_share_one_feed_and_one_read_per_notice() -> None:
    store = FakeStore()
    backend = FakeBackend(store)
    _, token, _ = await backend.set_state(b"a")
    async with waiting(backend, token, count=300, within=10) as results:
        await anyio.wait_all_tasks_blocked()
        reads_before = store.reads
        assert store.opens == 1
        assert 1 <= reads_before <= 2  # coalesced: every waiter's first look in one or two
        store.write(b"b")
    assert results == [(b"b", store.version)] * 300
    assert store.reads == reads_before + 1  # one read for the notice, for all 300
    await backend.aclose()


async def test_a_waiter_sees_only_reads_that_began_after_it_came() -> None:
    """A wait started right after this handle's own write never reports the state before it,
    although the lingering feed's last read still shows it."""
    store = FakeStore()
    backend = FakeBackend(store)
    _, first, _ = await backend.set_state(b"a")
    assert await backend.wait_for_change(first, timeout=0.01) is None  # the feed lingers now
    _, second, _ = await backend.set_state(b"b", first)
    assert await backend.wait_for_change(second, timeout=0.05) is None
    await backend.aclose()


async def test_the_feed_lingers_then_closes() -> None:
    store = FakeStore()
    backend = QuickToLetGo(store)
    _, token, _ = await backend.set_state(b"a")
    assert await backend.wait_for_change(token, timeout=0.01) is None
    assert await backend.wait_for_change(token, timeout=0.01) is None
    assert store.opens == 1  # the second wait found the first's feed
    with anyio.fail_after(5):
        await store.feed_closed.wait()
    assert store.feeds == set()
    assert await backend.wait_for_change(token, timeout=0.01) is None
    assert store.opens == 2
    await backend.aclose()


async def _wait_on(backend: FakeBackend, topic: str, timeout: float) -> object:
    """Wait on another topic of the handle's feed (as a member table does), for nothing."""
    result: object = await backend._on_client(
        backend._wait_for, topic, backend._read, lambda _: False, timeout, "wait"
    )
    return result


async def test_a_topic_waited_on_again_within_the_linger_keeps_its_subscription() -> None:
    store = FakeStore()
    backend = FakeBackend(store)
    for _ in range(3):
        assert await _wait_on(backend, "other", 0.01) is None
    assert store.subscriptions == [frozenset({"other"})]
    await backend.aclose()


async def test_a_topic_nobody_waits_on_is_forgotten() -> None:
    """A linger after its last waiter left, the feed subscribes again without the topic while
    another topic still has waiters; once the feed stops, the hub keeps no topic at all."""
    store = FakeStore()
    backend = QuickToLetGo(store)
    _, token, _ = await backend.set_state(b"a")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(backend.wait_for_change, token)
            assert await _wait_on(backend, "other", 0.01) is None
            assert "other" in store.subscriptions[-1]
            while "other" in store.subscriptions[-1]:
                await store.subscribed.wait()
            assert store.subscriptions[-1] == {"run"}
            store.write(b"b")  # the waiter on "run" is still served by the new subscription
        bound = backend._bound
        assert bound is not None
        hub = bound.hub
        assert hub is not None
        assert hub._task is not None
        await asyncio.wait({hub._task})
    assert hub._topics == {}
    assert await backend.wait_for_change(token, timeout=0.01) is not None
    assert store.subscriptions[-1] == {"run"}
    await backend.aclose()


async def test_cancelled_waiters_leave_nothing_behind() -> None:
    store = FakeStore()
    backend = QuickToLetGo(store)
    _, token, _ = await backend.set_state(b"a")
    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(backend.wait_for_change, token)
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    bound = backend._bound
    assert bound is not None
    assert bound.hub is not None
    assert bound.hub.watchers == 0
    with anyio.fail_after(5):
        await store.feed_closed.wait()
    await backend.aclose()


# -- reads the feed answers, topics it adds --------------------------------------------------------


class AddingFeed(FakeFeed):
    """A feed that adds topics to its live subscription (as etcd's watch stream does)."""

    async def add(self, topics: frozenset[Hashable]) -> bool:
        await anyio.lowlevel.checkpoint()
        self.store.subscriptions.append(self.store.subscriptions[-1] | topics)
        return True


class NoticedBackend(FakeBackend):
    """Answers a read that a notice prompted from what the notice said (``noticed`` counts
    them), and adds topics to its live subscription."""

    def __init__(self, store: FakeStore) -> None:
        super().__init__(store)
        self.noticed = 0

    def _make_feed(self, client: FakeStore) -> ChangeFeed:
        return AddingFeed(client)

    async def _read_noticed(self, client: FakeStore) -> tuple[bytes, Token] | None:
        await anyio.lowlevel.checkpoint()
        self.noticed += 1
        return client.current


async def test_a_first_look_is_a_real_read_and_a_notice_is_answered_by_the_feed() -> None:
    store = FakeStore()
    backend = NoticedBackend(store)
    _, token, _ = await backend.set_state(b"a")
    async with waiting(backend, token, within=10) as results:
        await anyio.wait_all_tasks_blocked()
        assert (store.reads, backend.noticed) == (1, 0)  # the first look: a real read
        version = store.write(b"b")
    assert results == [(b"b", version)]
    assert (store.reads, backend.noticed) == (1, 1)  # the notice: answered by the feed
    # A new waiter's first look is a real read again, though the feed is the same...
    assert await backend.wait_for_change(token, timeout=0.05) == (b"b", version)
    assert (store.reads, backend.noticed) == (2, 1)
    # ...and so is the first read after the subscription was lost and made again.
    with anyio.CancelScope() as scope:
        async with waiting(backend, token, within=10):
            await anyio.wait_all_tasks_blocked()
            opens = store.opens
            store.lose_feeds()
            while store.opens == opens:
                await store.subscribed.wait()
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert (store.reads, backend.noticed) == (4, 1)
    await backend.aclose()


async def test_a_new_topic_joins_the_live_subscription_when_the_feed_can() -> None:
    store = FakeStore()
    backend = NoticedBackend(store)
    _, token, _ = await backend.set_state(b"a")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(backend.wait_for_change, token)
            await anyio.wait_all_tasks_blocked()
            assert await _wait_on(backend, "other", 0.01) is None
            assert store.subscriptions == [frozenset({"run"}), frozenset({"run", "other"})]
            assert store.opens == 1
            store.write(b"b")
    await backend.aclose()


# -- the outage policy -----------------------------------------------------------------------------


async def test_a_lost_feed_is_replaced_and_a_silent_change_is_still_seen() -> None:
    store = FakeStore()
    backend = FakeBackend(store, timeout=0.5)
    _, token, _ = await backend.set_state(b"a")
    async with waiting(backend, token, within=5) as results:
        await anyio.wait_all_tasks_blocked()
        version = store.write(b"b", notify=False)  # no notice...
        store.lose_feeds()  # ...and the subscription drops: only a re-read can tell
    assert results == [(b"b", version)]
    assert store.opens == 2
    await backend.aclose()


async def test_an_unreachable_store_raises_after_the_handles_timeout() -> None:
    store = FakeStore()
    backend = FakeBackend(store, timeout=0.3)
    _, token, _ = await backend.set_state(b"a")
    store.reachable = False
    with anyio.fail_after(5):
        started = anyio.current_time()
        with pytest.raises(RendezvousConnectionError, match=r"unreachable for 0\.[3-9]"):
            await backend.wait_for_change(token)
        assert anyio.current_time() - started < 0.3 + 1.5
        # A wait whose own timeout ends first raises too: it could not check.
        for timeout in (0, 0.05):
            with pytest.raises(RendezvousConnectionError):
                await backend.wait_for_change(token, timeout=timeout)
    await backend.aclose()


async def test_an_outage_shorter_than_the_timeout_is_ridden_out() -> None:
    store = FakeStore()
    backend = FakeBackend(store, timeout=5)
    _, token, _ = await backend.set_state(b"a")
    async with waiting(backend, token, timeout=20, within=10) as results:
        await anyio.wait_all_tasks_blocked()
        store.reachable = False
        store.lose_feeds()
        await anyio.sleep(0.3)  # the outage itself, which the waiter must outlast
        assert results == []
        store.reachable = True
        version = store.write(b"b", notify=False)
    assert results == [(b"b", version)]
    await backend.aclose()


async def test_a_silent_subscription_counts_as_lost() -> None:
    """No notice and no answer to the liveness check: unreachable since the check was sent."""
    store = FakeStore()
    backend = FakeBackend(store, timeout=0.2)
    _, token, _ = await backend.set_state(b"a")
    store.silent = True
    with anyio.fail_after(5):
        started = anyio.current_time()
        with pytest.raises(RendezvousConnectionError, match="unreachable") as caught:
            await backend.wait_for_change(token)
        assert anyio.current_time() - started < 3 * 0.2 + 1.5
    assert "liveness check" in str(caught.value.__cause__)
    await backend.aclose()


async def test_a_state_that_cannot_be_decoded_raises_from_a_wait() -> None:
    store = FakeStore()
    backend = FakeBackend(store)
    _, token, _ = await backend.set_state(b"a")
    store.corrupt = True
    for timeout in (0, 1, None):
        with anyio.fail_after(5), pytest.raises(RendezvousStateError, match="corrupt"):
            await backend.wait_for_change(token, timeout=timeout)
    await backend.aclose()


# -- options, closing, loops -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_state_size": True}, TypeError),
        ({"max_state_size": 1.0}, TypeError),
        ({"max_state_size": 0}, ValueError),
        ({"max_state_size": 1001}, ValueError),
        ({"timeout": "1"}, TypeError),
        ({"timeout": True}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"timeout": math.inf}, ValueError),
        ({"timeout": math.nan}, ValueError),
    ],
    ids=repr,
)
def test_the_option_rules(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match=r"max_state_size|timeout"):
        FakeBackend(FakeStore(), **options)


def test_the_size_limit_is_the_stores() -> None:
    assert FakeBackend(FakeStore(), max_state_size=1000).max_state_size == 1000
    with pytest.raises(ValueError, match=r"from 1 to 1000 bytes \(the fake's limit\)"):
        FakeBackend(FakeStore(), max_state_size=1001)


async def test_closing_wakes_waiters_and_refuses_calls() -> None:
    store = FakeStore()
    backend = FakeBackend(store)
    _, token, _ = await backend.set_state(b"a")
    errors: list[BaseException] = []

    async def wait() -> None:
        try:
            await backend.wait_for_change(token)
        except BackendClosedError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await backend.aclose()
    assert len(errors) == 5
    assert store.feeds == set()
    for call in (backend.get_state, lambda: backend.set_state(b"b", token)):
        with pytest.raises(BackendClosedError):
            await call()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_the_contract_from_either_loop(loop: str) -> None:
    store = FakeStore()
    backend = FakeBackend(store)

    async def main() -> None:
        _, token, _ = await backend.set_state(b"a")
        assert await backend.get_state() == (b"a", token)
        assert await backend.wait_for_change(None, timeout=0) == (b"a", token)
        assert await backend.wait_for_change(token, timeout=0.01) is None
        with anyio.move_on_after(0.01):
            await backend.wait_for_change(token)  # cancelled across the bridge, cleanly
        assert await backend.set_state(b"b", token) == (b"b", store.version, True)
        await backend.aclose()

    anyio.run(main, backend=loop)
