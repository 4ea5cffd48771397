"""AsyncRendezvous behaviour: rounds, ranks, last call, late nodes, heartbeats, closing, timeouts,
identity, clocks, ghosts.

Every test runs on asyncio and trio, over the memory and the file backend and a one-blob backend
(``conftest.py``). Time values are small so the tests are quick; tests wait on writes (through
:class:`~._observe.Observer`) and assert outcomes and orderings, never timings.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from arendezvous import (
    AsyncRendezvousBackend,
    DuplicateNodeError,
    FileBackend,
    MemoryBackend,
    MemoryStore,
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousStateError,
    RendezvousTimeoutError,
    Token,
)
from arendezvous._members import Member, MemberPut, MemberTable
from arendezvous.rendezvous import (
    AsyncRendezvous,
    RendezvousInfo,
    RoundEnd,
    RunStatus,
    SyncRendezvous,
    close_run,
    default_node_id,
    follow_status,
    read_status,
)
from arendezvous.rendezvous._record import MAX_ROUND, RoundRecord, encode_record
from arendezvous.testing import BackendWrapper

from ._observe import LIMIT, Changes, Observer, WatchedBackend, WatchedTable
from .conftest import MakeBackend

pytestmark = pytest.mark.anyio

# Any: the rendezvous also takes keywords that are not seconds (delete_when_closed).
FAST: dict[str, Any] = {"heartbeat": 0.05, "heartbeat_timeout": 0.25, "join_timeout": 20.0}


def check_round(infos: list[RendezvousInfo]) -> None:
    """Every node of one round agrees on it, and the ranks are exactly 0..n-1."""
    assert len({info.round_id for info in infos}) == 1
    assert len({info.participants for info in infos}) == 1
    participants = infos[0].participants
    assert sorted(info.rank for info in infos) == list(range(len(participants)))
    for info in infos:
        assert participants[info.rank] == info.node
        assert info.world_size == len(participants)


async def join_all(rendezvous: list[AsyncRendezvous]) -> list[RendezvousInfo]:
    infos: list[RendezvousInfo] = []

    async def join(node: AsyncRendezvous) -> None:
        infos.append(await node.next_rendezvous())

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            for node in rendezvous:
                group.start_soon(join, node)
    return infos


def table_of(backend: AsyncRendezvousBackend) -> MemberTable:
    table = AsyncRendezvous(backend, "reader", 1, 1).member_table
    return table


# -- forming rounds ------------------------------------------------------------------------------


async def test_min_equals_max_completes_with_distinct_ranks(make_backend: MakeBackend) -> None:
    nodes = [AsyncRendezvous(make_backend(), f"node-{i}", 5, 5, **FAST) for i in (3, 1, 4, 0, 2)]
    infos = await join_all(nodes)
    check_round(infos)
    assert infos[0].participants == tuple(f"node-{i}" for i in range(5))  # sorted node ids
    assert infos[0].round == 0
    assert len(infos[0].incarnation) == 32
    assert infos[0].round_id == f"{infos[0].incarnation}/0"
    assert nodes[0].info is not None
    assert nodes[0].info.node == "node-3"


async def test_last_call_admits_nodes_until_it_expires(
    make_backend: MakeBackend, observer: Observer
) -> None:
    nodes = [AsyncRendezvous(make_backend(), f"n{i}", 2, 4, last_call=0.5, **FAST)
             for i in range(3)]
    infos: list[RendezvousInfo] = []

    async def join(node: AsyncRendezvous) -> None:
        infos.append(await node.next_rendezvous())

    async with anyio.create_task_group() as group:
        group.start_soon(join, nodes[0])
        group.start_soon(join, nodes[1])
        seen = await observer.until(lambda s: s.record is not None and s.record.last_call)
        assert not seen.record.complete  # type: ignore[union-attr]
        assert len(seen.joined) == 2
        group.start_soon(join, nodes[2])  # arrives during the last call: admitted
    check_round(infos)
    assert infos[0].world_size == 3  # below max_nodes: completed by the last call


async def test_the_node_that_started_the_last_call_completes_the_round(
    make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """It learnt of the last call first, from its own write; the others wait a grace period
    longer (and are woken by its write), so nobody races its compare-and-swap."""
    caplog.set_level(logging.DEBUG, logger="arendezvous")
    nodes = [AsyncRendezvous(make_backend(), f"n{i}", 3, 6, last_call=0.1, **FAST)
             for i in range(4)]
    check_round(await join_all(nodes))
    [started] = events(caplog, "last_call_started")
    [completed] = events(caplog, "round_completed")
    assert completed.node == started.node  # type: ignore[attr-defined]
    # Writes lost in the races to create the round and to start its last call, none later.
    assert all(record.created < started.created + 0.05 for record in events(caplog, "cas_lost"))


async def test_last_call_zero_completes_at_min(make_backend: MakeBackend) -> None:
    nodes = [AsyncRendezvous(make_backend(), f"n{i}", 2, 8, last_call=0, **FAST) for i in range(2)]
    infos = await join_all(nodes)
    check_round(infos)
    assert infos[0].world_size == 2


async def test_late_node_waits_and_triggers_the_next_round(make_backend: MakeBackend) -> None:
    a, b, c = (AsyncRendezvous(make_backend(), name, 2, 3, last_call=0.05, **FAST)
               for name in "abc")
    async with a, b, c:
        first = await join_all([a, b])
        check_round(first)
        assert await a.num_nodes_waiting() == 0
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as group:
                late: list[RendezvousInfo] = []

                async def join_late() -> None:
                    late.append(await c.next_rendezvous())

                group.start_soon(join_late)
                assert await a.wait_for_round_end() is RoundEnd.NODES_WAITING
                assert await b.num_nodes_waiting() == 1
                second = await join_all([a, b])
        second += late
        check_round(second)
        assert second[0].round == first[0].round + 1
        assert second[0].incarnation == first[0].incarnation
        assert second[0].participants == ("a", "b", "c")


async def test_redundant_node_waits_for_room_without_triggering(
    make_backend: MakeBackend, observer: Observer
) -> None:
    a, b, c = (AsyncRendezvous(make_backend(), name, 2, 2, **FAST) for name in "abc")
    async with a, b, c:
        check_round(await join_all([a, b]))
        late: list[RendezvousInfo] = []
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as group:

                async def join_late() -> None:
                    late.append(await c.next_rendezvous())

                group.start_soon(join_late)
                seen = await observer.until(lambda s: s.waiting == ("c",))
                assert seen.record is not None
                assert not seen.record.waiting
                assert await a.num_nodes_waiting() == 0  # the full round has no room for c
                assert await a.wait_for_round_end(timeout=0.05) is None
                await a.leave()
                assert await b.wait_for_round_end() is RoundEnd.RESTARTED
                await b.next_rendezvous()
        assert late[0].participants == ("b", "c")
        assert b.info is not None
        assert b.info.round == 1


async def test_next_rendezvous_from_a_complete_round_starts_a_new_one(
    make_backend: MakeBackend,
) -> None:
    a, b = (AsyncRendezvous(make_backend(), name, 2, 2, **FAST) for name in "ab")
    async with a, b:
        check_round(await join_all([a, b]))
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as group:
                again: list[RendezvousInfo] = []

                async def restart() -> None:
                    again.append(await a.next_rendezvous())

                group.start_soon(restart)
                assert await b.wait_for_round_end() is RoundEnd.RESTARTED
                assert await b.num_nodes_waiting() in (0, 1)  # a gathers in the next round
                again.append(await b.next_rendezvous())
        check_round(again)
        assert again[0].round == 1


# -- liveness ------------------------------------------------------------------------------------


async def test_a_dead_participant_is_evicted_and_the_round_restarts(
    make_backend: MakeBackend, observer: Observer
) -> None:
    a, b, dead = (AsyncRendezvous(make_backend(), name, 2, 3, last_call=0.05, **FAST)
                  for name in ("a", "b", "dead"))
    async with a, b:
        # "dead" is not entered: once its next_rendezvous returns, nothing refreshes its record.
        first = await join_all([a, b, dead])
        check_round(first)
        assert first[0].world_size == 3
        with anyio.fail_after(LIMIT):
            assert await a.wait_for_round_end() is RoundEnd.RESTARTED
        assert not (await observer.snapshot()).listed("dead")  # its record was deleted
        second = await join_all([a, b])
        check_round(second)
        assert second[0].participants == ("a", "b")
        assert second[0].round > first[0].round


async def test_heartbeats_keep_a_round_alive_and_wake_nobody(
    make_backend: MakeBackend, observer: Observer
) -> None:
    handles = [make_backend() for _ in range(3)]
    nodes = [AsyncRendezvous(handle, name, 3, 3, **FAST)
             for handle, name in zip(handles, "abc", strict=True)]
    tables = [handle.member_table() for handle in handles if isinstance(handle, WatchedBackend)]
    ended: list[RoundEnd | None] = []

    async def wait_for_end(node: AsyncRendezvous) -> None:
        ended.append(await node.wait_for_round_end())

    async with nodes[0], nodes[1], nodes[2]:
        check_round(await join_all(nodes))
        async with anyio.create_task_group() as group:
            for node in nodes:
                group.start_soon(wait_for_end, node)
            await observer.until(lambda _: all(
                isinstance(handle, WatchedBackend) and handle.waiting for handle in handles
            ))
            before = [_register_calls(handle) for handle in handles]
            beats = [_beats(handle) for handle in handles]
            reads = [0 if table is None else table.reads for table in tables]
            # Several heartbeat timeouts go by, counted in heartbeats rather than seconds.
            await observer.until(lambda _: all(
                _beats(handle) - first >= 12 for handle, first in zip(handles, beats, strict=True)
            ))
            after = [_register_calls(handle) for handle in handles]
            # Counted now: closing the nodes reads again (each withdrawal reads its own record).
            read = sum(0 if table is None else table.reads for table in tables) - sum(reads)
            beaten = sum(_beats(handle) for handle in handles) - sum(beats)
            snapshot = await observer.snapshot()
            group.cancel_scope.cancel()
    assert ended == []  # nobody's round ended
    assert snapshot.record is not None
    assert snapshot.record.complete
    assert snapshot.record.participants == ("a", "b", "c")
    if all(table is not None for table in tables):
        # A table of the store's own: the waiters were not woken once by all those heartbeats,
        # and each node made at most two store calls per heartbeat (its touch, the watch's read).
        assert after == before, f"heartbeats woke the round's waiters: {before} -> {after}"
        # Each watch reads at most once per beat of the node it watches (once per two on a store
        # with a clock), give or take the read of a beat made just before the count began.
        assert read <= beaten + len(nodes), f"the watches read {read} times for {beaten} beats"
        if tables[0] is not None and tables[0].has_clock:
            # With the store's clock a watch reads once per heartbeat timeout less one beat.
            assert read <= beaten / 2 + len(nodes), f"{read} reads for {beaten} beats"


def _beats(handle: AsyncRendezvousBackend) -> int:
    """Heartbeats sent through *handle*: touches of its table, or writes of its one blob."""
    assert isinstance(handle, WatchedBackend)
    table = handle.member_table()
    return handle.writes if table is None else table.touches


def _register_calls(backend: AsyncRendezvousBackend) -> int:
    return backend.register_calls if isinstance(backend, WatchedBackend) else 0


async def test_a_vanished_joiner_never_holds_a_round_for_long(
    make_backend: MakeBackend, observer: Observer
) -> None:
    # A node that joined and then vanished: its record is listed, and never refreshed again.
    ghost_table = table_of(make_backend())
    current = await observer.snapshot()
    if current.record is None:
        await observer.register.set_state(encode_record(RoundRecord.new()))
        current = await observer.snapshot()
    assert current.record is not None
    await ghost_table.put("ghost", current.record.group, b"a crashed process", None)
    nodes = [AsyncRendezvous(make_backend(), f"n{i}", 4, 4, **FAST) for i in range(4)]
    async with nodes[0], nodes[1], nodes[2], nodes[3]:
        infos: list[RendezvousInfo] = []

        async def drive(node: AsyncRendezvous) -> None:
            while True:
                info = await node.next_rendezvous()
                if "ghost" not in info.participants:
                    infos.append(info)
                    return
                # Counted into a round with the dead joiner: its watcher ends that round.
                assert await node.wait_for_round_end() is RoundEnd.RESTARTED

        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as group:
                for node in nodes:
                    group.start_soon(drive, node)
    check_round(infos)
    assert infos[0].participants == ("n0", "n1", "n2", "n3")


async def test_a_frozen_node_learns_it_lost_its_rank(
    make_backend: MakeBackend, observer: Observer
) -> None:
    frozen_handle = Freezable(make_backend())
    a, b = (AsyncRendezvous(make_backend(), name, 2, 3, last_call=0.05, **FAST) for name in "ab")
    sleeper = AsyncRendezvous(frozen_handle, "sleeper", 2, 3, last_call=0.05, **FAST)
    async with a, b, sleeper:
        first = await join_all([a, b, sleeper])
        check_round(first)
        frozen_handle.freeze()  # as SIGSTOP: no call of the node gets through
        with anyio.fail_after(LIMIT):
            assert await a.wait_for_round_end() is RoundEnd.RESTARTED
            second = await join_all([a, b])
        assert second[0].participants == ("a", "b")
        async with anyio.create_task_group() as group:
            outcome: list[RoundEnd | None] = []

            async def wait() -> None:
                outcome.append(await sleeper.wait_for_round_end())

            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            frozen_handle.thaw()  # as SIGCONT
        assert outcome == [RoundEnd.RESTARTED]
        assert sleeper.info is None or sleeper.info.round_id != second[0].round_id
        # It rejoins: the round ends for the other two and all three meet in a new one.
        third: list[RendezvousInfo] = []

        async def rejoin(node: AsyncRendezvous) -> None:
            if node is not sleeper:
                assert await node.wait_for_round_end() is not RoundEnd.CLOSED
            third.append(await node.next_rendezvous())

        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as group:
                for node in (sleeper, a, b):
                    group.start_soon(rejoin, node)
        check_round(third)
        assert third[0].participants == ("a", "b", "sleeper")
        ranks = {(info.round_id, info.rank) for info in first + second + third}
        assert len(ranks) == len(first) + len(second) + len(third)  # no rank held twice


class Freezable(WatchedBackend):
    """A handle whose calls all stop while frozen, as a stopped process's would."""

    def __init__(self, backend: AsyncRendezvousBackend) -> None:
        assert isinstance(backend, WatchedBackend)
        super().__init__(backend.inner, backend.changes,
                         one_blob=backend.member_table() is None)
        self._thawed = anyio.Event()
        self._thawed.set()
        if self._table is not None:
            self._table = FreezableTable(self._table, self)

    def freeze(self) -> None:
        self._thawed = anyio.Event()

    def thaw(self) -> None:
        self._thawed.set()

    async def gate(self) -> None:
        await self._thawed.wait()

    async def get_state(self) -> tuple[bytes, Token] | None:
        await self.gate()
        return await super().get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        await self.gate()
        return await super().set_state(state, token)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        await self.gate()
        result = await super().wait_for_change(token, timeout=timeout)
        await self.gate()
        return result


class FreezableTable(WatchedTable):
    def __init__(self, table: WatchedTable, gate: Freezable) -> None:
        super().__init__(table.inner, table.changes)
        self._gate = gate

    async def get(self, node: str) -> Member | None:
        await self._gate.gate()
        return await super().get(node)

    async def put(self, node: str, group: str, value: bytes, version: Token | None) -> MemberPut:
        await self._gate.gate()
        return await super().put(node, group, value, version)

    async def touch(self, node: str, version: Token) -> Member | None:
        await self._gate.gate()
        return await super().touch(node, version)

    async def delete(self, node: str, version: Token) -> bool:
        await self._gate.gate()
        return await super().delete(node, version)


# -- identity ------------------------------------------------------------------------------------


async def test_a_second_live_node_with_the_same_id_fails_fast(make_backend: MakeBackend) -> None:
    first = AsyncRendezvous(make_backend(), "same", 1, 2, last_call=0.05, **FAST)
    twin = AsyncRendezvous(make_backend(), "same", 1, 2, last_call=0.05, **FAST)
    async with first, twin:
        info = await first.next_rendezvous()
        with anyio.fail_after(LIMIT), pytest.raises(DuplicateNodeError, match="'same'") as caught:
            await twin.next_rendezvous()
        assert caught.value.node == "same"
        # The live node keeps its round.
        assert await first.wait_for_round_end(timeout=0.1) is None
        assert first.info == info


async def test_a_dead_nodes_id_is_taken_over_once_silent(
    make_backend: MakeBackend, observer: Observer
) -> None:
    crashed = table_of(make_backend())
    await crashed.put("reborn", "somewhere/0", b"a process that crashed", None)
    node = AsyncRendezvous(make_backend(), "reborn", 1, 1, **FAST)
    async with node:
        with anyio.fail_after(LIMIT):
            info = await node.next_rendezvous()
    assert info.participants == ("reborn",)


async def test_a_process_taking_over_a_participants_id_is_not_that_participant(
    make_backend: MakeBackend, observer: Observer
) -> None:
    """A round completes with "n" while a second process with id "n" waits for the first to
    fall silent; when it then takes the record over, the round it finds complete is the first
    process's, not its own: it gets no rank in it (two processes would hold rank 0)."""
    first = AsyncRendezvous(make_backend(), "n", 2, 2, **FAST)  # never entered: no heartbeat
    other = AsyncRendezvous(make_backend(), "o", 2, 2, **FAST)
    second = AsyncRendezvous(make_backend(), "n", 2, 2, **FAST)
    got: list[RendezvousInfo] = []

    async def join_second() -> None:
        got.append(await second.next_rendezvous())

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            group.start_soon(first.next_rendezvous)
            await observer.until(lambda s: s.joined == ("n",))
            group.start_soon(join_second)  # finds the first's record fresh: waits it out
            info = await other.next_rendezvous()  # completes the round with the first
            assert info.participants == ("n", "o")
            # The first falls silent; the second takes its record over and, finding the round
            # complete without it, waits for the next one (rather than claim rank 0 of this).
            await observer.until(lambda s: "n" in s.waiting or bool(got))
            group.cancel_scope.cancel()
    assert got == []


async def test_round_ids_never_repeat_when_the_store_loses_everything(
    make_backend: MakeBackend,
) -> None:
    handle = make_backend()
    node = AsyncRendezvous(handle, "n", 1, 1, **FAST)
    first = await node.next_rendezvous()
    second = await node.next_rendezvous()
    assert (second.incarnation, second.round) == (first.incarnation, first.round + 1)
    await wipe(handle)
    third = await node.next_rendezvous()
    assert third.incarnation != first.incarnation  # a new record: a new incarnation...
    assert third.round > second.round  # ...and numbering goes on from what this node saw
    assert len({first.round_id, second.round_id, third.round_id}) == 3


async def wipe(handle: AsyncRendezvousBackend) -> None:
    """Lose everything the store holds for the run, as a restart without persistence would."""
    inner = handle.inner if isinstance(handle, WatchedBackend) else handle
    if isinstance(inner, MemoryBackend):
        inner.store._states.pop(inner.run_id, None)
        inner.store._rosters.pop(inner.run_id, None)
    else:
        path = getattr(inner, "path", None)
        assert path is not None
        for leftover in path.parent.iterdir():
            leftover.unlink()


async def test_clock_offsets_between_nodes_change_nothing(make_backend: MakeBackend) -> None:
    offsets = (0.0, 3600.0, -3600.0, 86_400.0)
    nodes = [AsyncRendezvous(make_backend(), f"n{i}", 2, 4, last_call=0.2, **FAST)
             for i in range(4)]
    for node, offset in zip(nodes, offsets, strict=True):
        node._node.clock = skewed(offset)  # type: ignore[method-assign]
    async with nodes[0], nodes[1], nodes[2], nodes[3]:
        first = await join_all(nodes)
        check_round(first)
        assert first[0].world_size == 4
        # Stable: several heartbeat timeouts pass without the round ending.
        assert await nodes[1].wait_for_round_end(timeout=4 * FAST["heartbeat_timeout"]) is None


def skewed(offset: float) -> Callable[[], float]:
    """A monotonic clock *offset* seconds off this process's."""
    return lambda: anyio.current_time() + offset


async def test_the_last_round_number_is_refused_before_writing(make_backend: MakeBackend) -> None:
    handle = make_backend()
    node = AsyncRendezvous(handle, "n", 1, 1, **FAST)
    register = node._node.register
    _, _, written = await register.set_state(encode_record(RoundRecord.new(MAX_ROUND)))
    assert written
    info = await node.next_rendezvous()
    assert info.round == MAX_ROUND
    held = await register.get_state()
    # Ending the round would need round 2**63, which no reader accepts: refused, nothing written.
    with pytest.raises(RendezvousStateError, match="every round number"):
        await node.next_rendezvous()
    assert await register.get_state() == held


# -- failures ------------------------------------------------------------------------------------


async def test_a_join_whose_reply_was_lost_leaves_no_ghost(
    make_backend: MakeBackend, observer: Observer
) -> None:
    lossy = LossyBackend(make_backend())
    victim = AsyncRendezvous(lossy, "victim", 2, 3, last_call=0.05, **FAST)
    with pytest.raises(RendezvousConnectionError, match="lost"):
        await victim.next_rendezvous()
    assert lossy.lost, "the wrapper must have applied and then lost a write"
    snapshot = await observer.snapshot()
    assert not snapshot.listed("victim")
    others = [AsyncRendezvous(make_backend(), name, 2, 3, last_call=0.05, **FAST)
              for name in "xy"]
    infos = await join_all(others)
    check_round(infos)
    assert infos[0].participants == ("x", "y")


class LossyBackend(WatchedBackend):
    """Applies the first write of a node's record, then reports a lost connection."""

    def __init__(self, backend: AsyncRendezvousBackend) -> None:
        assert isinstance(backend, WatchedBackend)
        super().__init__(backend.inner, backend.changes, one_blob=backend.member_table() is None)
        self.lost = False
        if self._table is not None:
            self._table = LossyTable(self._table, self)

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        result = await super().set_state(state, token)
        if self._table is None and not self.lost and b"victim" in state:
            self.lost = True  # the emulated table's put is a write of the blob
            raise RendezvousConnectionError("connection lost after the write applied")
        return result


class LossyTable(WatchedTable):
    def __init__(self, table: WatchedTable, owner: LossyBackend) -> None:
        super().__init__(table.inner, table.changes)
        self._owner = owner

    async def put(self, node: str, group: str, value: bytes, version: Token | None) -> MemberPut:
        result = await super().put(node, group, value, version)
        if not self._owner.lost:
            self._owner.lost = True
            raise RendezvousConnectionError("connection lost after the write applied")
        return result


async def test_closed_run_refuses_joins_and_stays_closed(
    make_backend: MakeBackend, observer: Observer
) -> None:
    a, b, c = (AsyncRendezvous(make_backend(), name, 3, 3, **FAST) for name in "abc")
    async with a:
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as group:

                async def pending() -> None:
                    with pytest.raises(RendezvousClosedError):
                        await a.next_rendezvous()

                group.start_soon(pending)
                await observer.until(lambda s: s.joined == ("a",))
                assert not await b.is_closed()
                await b.close()
        assert await a.is_closed()
        with pytest.raises(RendezvousClosedError):
            await c.next_rendezvous()
        snapshot = await observer.snapshot()
        assert snapshot.record is not None
        assert snapshot.record.closed
        assert not snapshot.listed("a")
        assert not snapshot.listed("c")
        await b.close()  # idempotent
        assert await c.is_closed()


async def test_closing_an_empty_run(make_backend: MakeBackend) -> None:
    closer = AsyncRendezvous(make_backend(), "closer", 1, 1, **FAST)
    await closer.close()
    assert await closer.is_closed()
    with pytest.raises(RendezvousClosedError):
        await AsyncRendezvous(make_backend(), "late", 1, 1, **FAST).next_rendezvous()


async def test_wait_for_round_end_reports_closing(make_backend: MakeBackend) -> None:
    a, b = (AsyncRendezvous(make_backend(), name, 2, 2, **FAST) for name in "ab")
    async with a, b:
        await join_all([a, b])
        assert await a.wait_for_round_end(timeout=0.01) is None
        await b.close()
        assert await a.wait_for_round_end() is RoundEnd.CLOSED


async def test_join_timeout_withdraws_the_node(
    make_backend: MakeBackend, observer: Observer
) -> None:
    lonely = AsyncRendezvous(make_backend(), "lonely", 2, 2, heartbeat=0.05, join_timeout=0.2)
    with pytest.raises(RendezvousTimeoutError, match="lonely"):
        await lonely.next_rendezvous()
    assert not (await observer.snapshot()).listed("lonely")
    assert lonely.info is None


async def test_cancelled_join_withdraws_the_node(
    make_backend: MakeBackend, observer: Observer
) -> None:
    node = AsyncRendezvous(make_backend(), "cancelled", 2, 2, **FAST)
    async with anyio.create_task_group() as group:
        group.start_soon(node.next_rendezvous)
        await observer.until(lambda s: s.joined == ("cancelled",))
        group.cancel_scope.cancel()
    assert not (await observer.snapshot()).listed("cancelled")
    # Two other nodes then complete a round, without the cancelled one.
    infos = await join_all([AsyncRendezvous(make_backend(), n, 2, 2, **FAST) for n in "xy"])
    assert infos[0].participants == ("x", "y")


async def test_leaving_on_exit(make_backend: MakeBackend, observer: Observer) -> None:
    a, b = (AsyncRendezvous(make_backend(), name, 2, 2, **FAST) for name in "ab")
    async with b:
        async with a:
            await join_all([a, b])
        assert a.info is None
        assert await b.wait_for_round_end() is RoundEnd.RESTARTED
    snapshot = await observer.snapshot()
    assert not snapshot.members


class HeldWaits(BackendWrapper):
    """Holds every wait_for_change until :attr:`release` is set: the node reads nothing new."""

    def __init__(self, backend: AsyncRendezvousBackend) -> None:
        super().__init__(backend)
        self.waiting = anyio.Event()
        self.release = anyio.Event()

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self.waiting.set()
        await self.release.wait()
        return await self.backend.wait_for_change(token, timeout=0)


async def test_a_participant_that_reads_late_still_gets_its_round(
    make_backend: MakeBackend,
) -> None:
    """b completes the round with a, and leaves (ending it) before a reads the round complete:
    a still gets its place in that round, then learns at once that it has ended."""
    held = HeldWaits(make_backend())
    a = AsyncRendezvous(held, "a", 2, 2, **FAST)
    b = AsyncRendezvous(make_backend(), "b", 2, 2, **FAST)
    infos: list[RendezvousInfo] = []

    async def join_a() -> None:
        infos.append(await a.next_rendezvous())

    with anyio.fail_after(LIMIT):
        async with a:
            async with anyio.create_task_group() as group:
                group.start_soon(join_a)
                await held.waiting.wait()  # a has joined the open round and waits
                async with b:
                    info_b = await b.next_rendezvous()
                held.release.set()  # b has left, ending round 0: only now does a read anything
            (info_a,) = infos
            assert (info_a.round, info_a.rank, info_a.participants) == (0, 0, ("a", "b"))
            assert info_a.round_id == info_b.round_id
            assert await a.wait_for_round_end() is RoundEnd.RESTARTED


async def test_one_join_at_a_time(make_backend: MakeBackend, observer: Observer) -> None:
    node = AsyncRendezvous(make_backend(), "n", 2, 2, **FAST)
    async with anyio.create_task_group() as group:
        group.start_soon(node.next_rendezvous)
        await observer.until(lambda s: s.listed("n"))
        with pytest.raises(RuntimeError, match="already running"):
            await node.next_rendezvous()
        group.cancel_scope.cancel()
    with pytest.raises(RuntimeError, match="next_rendezvous"):
        await node.wait_for_round_end()


@pytest.mark.parametrize(
    "stored",
    [b"junk", pickle.dumps({"round": 0}), json.dumps({"v": 99}).encode(),
     json.dumps({"v": 1, "round": 0}).encode()],
)
async def test_undecodable_state_is_an_error_and_is_kept(
    make_backend: MakeBackend, stored: bytes
) -> None:
    backend = make_backend()
    await backend.set_state(stored)
    node = AsyncRendezvous(make_backend(), "n", 1, 1, **FAST)
    with pytest.raises(RendezvousStateError):
        await node.next_rendezvous()
    with pytest.raises(RendezvousStateError):
        await node.num_nodes_waiting()
    current = await backend.get_state()
    assert current is not None
    assert current[0] == stored


async def test_argument_checks() -> None:
    backend = MemoryBackend("args")
    with pytest.raises(TypeError, match="AsyncRendezvousBackend"):
        AsyncRendezvous("memory://", "n", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_nodes"):
        AsyncRendezvous(backend, "n", 2, 1)
    with pytest.raises(ValueError, match="min_nodes"):
        AsyncRendezvous(backend, "n", 0, 1)
    with pytest.raises(TypeError, match="min_nodes"):
        AsyncRendezvous(backend, "n", 1.0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        AsyncRendezvous(backend, "n", 1, 1, heartbeat=1, heartbeat_timeout=1)
    with pytest.raises(ValueError, match="join_timeout"):
        AsyncRendezvous(backend, "n", 1, 1, join_timeout=0)
    with pytest.raises(ValueError, match="last_call"):
        AsyncRendezvous(backend, "n", 1, 1, last_call=-1)
    with pytest.raises(ValueError, match="node"):
        AsyncRendezvous(backend, "", 1, 1)
    with pytest.raises(ValueError, match="node"):
        AsyncRendezvous(backend, "a\x00b", 1, 1)
    rendezvous = AsyncRendezvous(backend, "n", 1, 2)
    assert (rendezvous.node, rendezvous.min_nodes, rendezvous.max_nodes) == ("n", 1, 2)
    assert "node='n'" in repr(rendezvous)
    assert default_node_id() != default_node_id()


async def test_errors_in_the_block_propagate_unwrapped(
    make_backend: MakeBackend, observer: Observer
) -> None:
    node = AsyncRendezvous(make_backend(), "n", 1, 1, **FAST)

    async def join_after_closing() -> None:
        async with node:
            await node.next_rendezvous()
            await node.close()
            await node.next_rendezvous()

    with pytest.raises(RendezvousClosedError):  # itself, not in an ExceptionGroup
        await join_after_closing()
    assert not (await observer.snapshot()).listed("n")  # it left on the way out
    with anyio.move_on_after(0.01) as scope:
        async with node:
            await anyio.sleep_forever()
    assert scope.cancelled_caught


@pytest.mark.parametrize("make_backend", ["memory", "file"], indirect=True)
async def test_joining_costs_the_same_store_calls_per_node_at_any_size(
    make_backend: MakeBackend,
) -> None:
    calls_per_node: dict[int, float] = {}
    for size in (4, 32):
        handles = [make_backend() for _ in range(size)]
        # Heartbeats far apart: this counts what joining costs, not what the time it takes does.
        nodes = [AsyncRendezvous(handle, f"s{size}-{index:02d}", size, size, heartbeat=60,
                                 join_timeout=LIMIT)
                 for index, handle in enumerate(handles)]
        check_round(await join_all(nodes))
        calls = [_calls(handle) for handle in handles]
        calls_per_node[size] = sum(calls) / size
        for node in nodes:
            await node.leave()
    # Each node: read the record, put its own record, wait for the record to change (about
    # once): a handful of calls, whatever the size. The one-blob protocol grows with size.
    assert calls_per_node[32] <= calls_per_node[4] + 1, calls_per_node
    assert calls_per_node[32] < 8, calls_per_node


def _calls(handle: AsyncRendezvousBackend) -> int:
    assert isinstance(handle, WatchedBackend)
    table = handle.member_table()
    assert table is not None
    return handle.register_calls + table.calls


# -- watching and closing from outside -------------------------------------------------------------


async def test_progress_while_joining_and_status_from_outside(
    make_backend: MakeBackend, observer: Observer
) -> None:
    outsider = make_backend()
    assert (await read_status(outsider)) == RunStatus(exists=False)
    a, b, c = (AsyncRendezvous(make_backend(), name, 2, 3, last_call=30, **FAST)
               for name in "abc")
    async with a, b, c, anyio.create_task_group() as group:
        group.start_soon(a.next_rendezvous)
        group.start_soon(b.next_rendezvous)
        await observer.until(lambda s: s.record is not None and s.record.last_call)
        progress = await a.progress()
        assert set(progress.joined) == {"a", "b"}
        assert progress.missing == 0
        assert progress.last_call_left is not None
        assert 0 < progress.last_call_left <= 30 + 0.06  # its stagger: at most 50 ms
        status = await read_status(outsider)
        assert status.exists
        assert not status.complete
        assert status.last_call
        assert {node.node for node in status.participants} == {"a", "b"}
        assert all(node.rank is None for node in status.participants)
        first = await c.next_rendezvous()  # the third fills the round: complete at once
        status = await read_status(outsider)
        assert status.complete
        assert status.round_id == first.round_id
        assert [(node.node, node.rank) for node in status.participants] == [
            ("a", 0), ("b", 1), ("c", 2)]
        if outsider.member_table() is not None and outsider.member_table().has_clock:  # type: ignore[union-attr]
            assert all(node.heartbeat_age is not None and node.heartbeat_age >= 0
                       for node in status.participants)
        assert status.to_json()["participants"][2] == status.participants[2].to_json()
        assert (await c.progress()).missing == 0
        group.cancel_scope.cancel()


async def test_follow_status_sees_each_change_of_the_round(make_backend: MakeBackend) -> None:
    seen: list[RunStatus] = []
    nodes = [AsyncRendezvous(make_backend(), name, 2, 2, **FAST) for name in "ab"]
    async with anyio.create_task_group() as group:

        async def follow() -> None:
            async for status in follow_status(make_backend()):
                seen.append(status)
                if status.complete:
                    return

        group.start_soon(follow)
        await join_all(nodes)
    assert not seen[0].complete
    assert seen[-1].complete
    assert [node.node for node in seen[-1].participants] == ["a", "b"]
    with pytest.raises(ValueError, match="every"):
        async for _ in follow_status(make_backend(), every=0):
            pass


async def test_close_run_from_outside(make_backend: MakeBackend) -> None:
    node = AsyncRendezvous(make_backend(), "n", 2, 2, **FAST)
    async with anyio.create_task_group() as group:

        async def join() -> None:
            with pytest.raises(RendezvousClosedError):
                await node.next_rendezvous()

        group.start_soon(join)
        await anyio.wait_all_tasks_blocked()
        assert await close_run(make_backend())
    assert not await close_run(make_backend())  # already closed
    assert (await read_status(make_backend())).closed
    # A run nobody joined gets a closed record.
    assert await close_run(MemoryBackend("never-used", MemoryStore()))


# -- cleaning up after a closed run ----------------------------------------------------------------


@pytest.fixture(params=["memory", "file"])
def make_store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> MakeBackend:
    """Handles on one fresh run of a bundled store, unwrapped: they can delete and list runs."""
    store = MemoryStore()
    if request.param == "memory":
        return lambda: MemoryBackend("cleanup", store)
    return lambda: FileBackend(tmp_path, "cleanup", durable=False, poll_interval=0.01)


async def test_the_last_node_to_leave_a_closed_run_deletes_it(
    make_store_backend: MakeBackend,
) -> None:
    lister = make_store_backend()
    nodes = [AsyncRendezvous(make_store_backend(), name, 3, 3, delete_when_closed=True, **FAST)
             for name in "abc"]
    async with nodes[0]:
        async with nodes[1]:
            async with nodes[2]:
                check_round(await join_all(nodes))
                await nodes[0].close()
                assert await nodes[2].wait_for_round_end() is RoundEnd.CLOSED
            # c left; a and b are still in the closed round: the run stays.
            assert [run.run_id for run in await lister.list_runs()] == ["cleanup"]
            assert (await read_status(lister)).closed
        assert [run.run_id for run in await lister.list_runs()] == ["cleanup"]
    # a was the last to leave: nothing of the run is left.
    assert await lister.list_runs() == []
    assert await lister.get_state() is None
    if isinstance(lister, FileBackend):
        assert not any(lister.path.parent.iterdir())


async def test_a_node_coming_back_to_a_deleted_run_starts_a_new_one(
    make_store_backend: MakeBackend,
) -> None:
    first = AsyncRendezvous(make_store_backend(), "a", 1, 1, delete_when_closed=True, **FAST)
    async with first:
        old = await first.next_rendezvous()
        await first.close()
    late = AsyncRendezvous(make_store_backend(), "late", 1, 1, **FAST)
    async with late:
        with anyio.fail_after(LIMIT):
            new = await late.next_rendezvous()  # not RendezvousClosedError: the run is new
    assert new.incarnation != old.incarnation


async def test_without_delete_when_closed_the_run_stays_closed(
    make_store_backend: MakeBackend,
) -> None:
    node = AsyncRendezvous(make_store_backend(), "a", 1, 1, **FAST)
    async with node:
        await node.next_rendezvous()
        await node.close()
    assert (await read_status(make_store_backend())).closed


async def test_a_backend_that_cannot_delete_is_left_as_it_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The one-blob backend of these tests offers only the contract: no delete_run().
    backend = WatchedBackend(MemoryBackend("undeletable", MemoryStore()), Changes(),
                             one_blob=True)
    caplog.set_level(logging.DEBUG, logger="arendezvous")
    node = AsyncRendezvous(backend, "a", 1, 1, delete_when_closed=True, **FAST)
    async with node:
        await node.next_rendezvous()
        await node.close()
    assert (await read_status(backend)).closed
    [record] = events(caplog, "delete_unsupported")
    assert record.levelno == logging.DEBUG
    assert "WatchedBackend cannot delete runs" in record.getMessage()
    with pytest.raises(TypeError, match="delete_when_closed"):
        AsyncRendezvous(backend, "a", 1, 1, delete_when_closed="yes")  # type: ignore[arg-type]


class DeleteFails(BackendWrapper):
    async def delete_run(self) -> bool:
        raise RendezvousConnectionError("the store went away (simulated)")


async def test_a_failed_deletion_is_a_warning_and_the_node_still_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="arendezvous")
    backend = DeleteFails(MemoryBackend("kept", MemoryStore()))
    node = AsyncRendezvous(backend, "a", 1, 1, delete_when_closed=True, **FAST)
    await node.next_rendezvous()
    await node.close()
    await node.leave()  # does not raise: deleting is the leaving node's best effort
    [record] = events(caplog, "delete_failed")
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "node 'a' could not delete the closed run (RendezvousConnectionError: the store went "
        "away (simulated)); arendezvous delete removes it")
    status = await read_status(backend)
    assert status.closed
    assert status.participants[0].heartbeat_age is None  # its record is gone: it left


def test_sync_rendezvous_passes_delete_when_closed_on(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "sync", durable=False)
    with SyncRendezvous(backend, "a", 1, 1, delete_when_closed=True, **FAST) as node:
        node.next_rendezvous()
        node.close()
    assert not any(tmp_path.iterdir())


# -- what the logs say -----------------------------------------------------------------------------


def events(caplog: pytest.LogCaptureFixture, *names: str) -> list[logging.LogRecord]:
    """The records of arendezvous's loggers whose event is one of *names* (any: none given)."""
    return [record for record in caplog.records
            if record.name.startswith("arendezvous")
            and (not names or vars(record).get("event") in names)]


async def test_info_logs_rounds_closing_and_deleting(
    make_store_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="arendezvous")
    nodes = [AsyncRendezvous(make_store_backend(), name, 2, 2, delete_when_closed=True, **FAST)
             for name in "ab"]
    async with nodes[0], nodes[1]:
        infos = await join_all(nodes)
        await nodes[1].close()
    formed = events(caplog, "round_formed")
    assert sorted((vars(r)["node"], vars(r)["rank"], vars(r)["world_size"], vars(r)["round"])
                  for r in formed) == [("a", 0, 2, infos[0].round), ("b", 1, 2, infos[0].round)]
    assert all(vars(r)["run_id"] == "cleanup" and vars(r)["round_id"] == infos[0].round_id
               for r in formed)
    assert formed[0].getMessage().endswith(f"of world size 2 in round {infos[0].round}")
    [closed] = events(caplog, "run_closed")
    assert closed.getMessage() == "node 'b' closed the run"
    [deleted] = events(caplog, "run_deleted")
    assert vars(deleted)["node"] in ("a", "b")
    # Nothing else at INFO or above: a quiet run is quiet.
    assert {vars(record)["event"] for record in events(caplog)} == {
        "round_formed", "run_closed", "run_deleted"}


async def test_an_eviction_is_logged_with_its_reason(
    make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="arendezvous")
    a, b, dead = (AsyncRendezvous(make_backend(), name, 3, 3, **FAST)
                  for name in ("a", "b", "dead"))
    async with a, b:
        await join_all([a, b, dead])  # "dead" never enters: nothing refreshes its record
        with anyio.fail_after(LIMIT):
            assert await a.wait_for_round_end() is RoundEnd.RESTARTED
    [evicted] = events(caplog, "node_evicted")
    assert vars(evicted)["evicted"] == "dead"
    assert vars(evicted)["silence"] >= FAST["heartbeat_timeout"]
    assert "its record was silent for" in evicted.getMessage()
    [ended] = events(caplog, "round_ended")
    assert vars(ended)["reason"] == "participant 'dead' is gone"
    assert ended.getMessage() == (f"node {vars(evicted)['node']!r} ended round "
                                  f"{vars(evicted)['round']} (participant 'dead' is gone); "
                                  f"round {vars(evicted)['round'] + 1} opens")


async def test_debug_logs_joins_lost_writes_and_waits(
    make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="arendezvous")
    nodes = [AsyncRendezvous(make_backend(), name, 2, 2, last_call=0.05, **FAST)
             for name in "ab"]
    await join_all(nodes)
    assert {vars(r)["node"] for r in events(caplog, "join_started")} == {"a", "b"}
    assert {vars(r)["node"] for r in events(caplog, "group_joined")} == {"a", "b"}
    assert events(caplog, "waiting")  # the first to join waited for the second
    # A write that loses its compare-and-swap: the record changed after this node read it.
    node = nodes[0]
    stale = await node._node.read()
    assert await close_run(make_backend())
    assert stale.record is not None
    caplog.clear()
    _, written = await node._node.write(stale, stale.record.with_waiting(True))
    assert not written
    [lost] = events(caplog, "cas_lost")
    assert lost.levelno == logging.DEBUG
    assert vars(lost)["node"] == "a"
    assert lost.getMessage() == "node 'a' lost a write of the round record to another node's"
    assert lost.filename == "_node.py"
    assert lost.funcName == "write"  # the record points at the line that logged it


class Unreachable(WatchedBackend):
    """A handle whose every call fails while the store is 'down', as in a network outage."""

    def __init__(self, backend: AsyncRendezvousBackend) -> None:
        assert isinstance(backend, WatchedBackend)
        super().__init__(backend.inner, backend.changes, one_blob=backend.member_table() is None)
        self.down = False
        #: Calls refused during the outage.
        self.refused = 0
        if self._table is not None:
            self._table = UnreachableTable(self._table, self)

    def check(self) -> None:
        if self.down:
            self.refused += 1
            self.changes.changed()
            raise RendezvousConnectionError("connection refused (a simulated outage)")

    async def get_state(self) -> tuple[bytes, Token] | None:
        self.check()
        return await super().get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self.check()
        return await super().set_state(state, token)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self.check()
        return await super().wait_for_change(token, timeout=timeout)


class UnreachableTable(WatchedTable):
    def __init__(self, table: WatchedTable, handle: Unreachable) -> None:
        super().__init__(table.inner, table.changes)
        self._handle = handle

    async def get(self, node: str) -> Member | None:
        self._handle.check()
        return await super().get(node)

    async def members(self, group: str) -> list[Member]:
        self._handle.check()
        return await super().members(group)

    async def touch(self, node: str, version: Token) -> Member | None:
        self._handle.check()
        return await super().touch(node, version)

    async def delete(self, node: str, version: Token) -> bool:
        self._handle.check()
        return await super().delete(node, version)

    async def wait_for_change(
        self, node: str, version: Token | None, *, timeout: float | None = None
    ) -> bool:
        self._handle.check()
        return await super().wait_for_change(node, version, timeout=timeout)


async def test_a_store_outage_logs_one_warning_and_one_recovery(
    make_backend: MakeBackend, observer: Observer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="arendezvous")
    cut_off = Unreachable(make_backend())
    # Evictions take far longer than the outage: this test is about the log, not about them.
    settings = {**FAST, "heartbeat_timeout": 60.0}
    a = AsyncRendezvous(cut_off, "a", 2, 2, **settings)
    b = AsyncRendezvous(make_backend(), "b", 2, 2, **settings)
    async with a, b:
        await join_all([a, b])
        beats = _beats(cut_off)
        cut_off.down = True
        # Several heartbeats (and the watch's reads) fail...
        await observer.until(lambda _: cut_off.refused >= 8)
        cut_off.down = False
        # ...then the store answers again: a's heartbeat gets through, and the log says so.
        await observer.until(lambda _: _beats(cut_off) > beats and bool(
            events(caplog, "store_reachable")))
    warnings = [record for record in events(caplog) if record.levelno >= logging.WARNING]
    assert [vars(record)["event"] for record in warnings] == [
        "store_unreachable", "store_reachable"]
    assert all(vars(record)["node"] == "a" for record in warnings)
    assert "simulated outage" in warnings[0].getMessage()
    assert vars(warnings[1])["outage"] > 0
    # Every failure after the first is logged, at DEBUG only.
    assert len(events(caplog, "store_still_unreachable")) >= 1
