"""AsyncRendezvous behaviour: rounds, ranks, last call, late nodes, heartbeats, closing, timeouts.

Every test runs on asyncio and trio, over the memory and the file backend (``conftest.py``). Time
values are small so the tests are quick; tests wait on the store's own notifications (through
:func:`until`) and assert outcomes and orderings, never timings.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable

import anyio
import pytest

from arendezvous import (
    AsyncRendezvousBackend,
    MemoryBackend,
    RendezvousClosedError,
    RendezvousStateError,
    RendezvousTimeoutError,
)
from arendezvous.rendezvous import AsyncRendezvous, RendezvousInfo, RoundEnd, default_node_id
from arendezvous.rendezvous._state import RendezvousState, decode_state, encode_state

from .conftest import MakeBackend

pytestmark = pytest.mark.anyio

FAST = {"heartbeat": 0.05, "heartbeat_timeout": 0.25, "join_timeout": 20.0}
LIMIT = 20.0  # generous bound on anything that should happen promptly


async def until(
    backend: AsyncRendezvousBackend, predicate: Callable[[RendezvousState], bool]
) -> RendezvousState:
    """Wait, on the store's change notifications, until the stored state satisfies *predicate*."""
    with anyio.fail_after(LIMIT):
        current = await backend.get_state()
        while True:
            if current is not None:
                state = decode_state(current[0])
                if predicate(state):
                    return state
            current = await backend.wait_for_change(None if current is None else current[1])


def check_round(infos: list[RendezvousInfo]) -> None:
    """Every node of one round agrees on it, and the ranks are exactly 0..n-1."""
    assert len({info.round for info in infos}) == 1
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


async def test_min_equals_max_completes_with_distinct_ranks(make_backend: MakeBackend) -> None:
    nodes = [AsyncRendezvous(make_backend(), f"node-{i}", 5, 5, **FAST) for i in (3, 1, 4, 0, 2)]
    infos = await join_all(nodes)
    check_round(infos)
    assert infos[0].participants == tuple(f"node-{i}" for i in range(5))  # sorted node ids
    assert infos[0].round == 0
    assert nodes[0].info is not None
    assert nodes[0].info.node == "node-3"


async def test_last_call_admits_nodes_until_it_expires(make_backend: MakeBackend) -> None:
    observer = make_backend()
    nodes = [AsyncRendezvous(make_backend(), f"n{i}", 2, 4, last_call=0.5, **FAST)
             for i in range(3)]
    infos: list[RendezvousInfo] = []

    async def join(node: AsyncRendezvous) -> None:
        infos.append(await node.next_rendezvous())

    async with anyio.create_task_group() as group:
        group.start_soon(join, nodes[0])
        group.start_soon(join, nodes[1])
        state = await until(observer, lambda s: len(s.participants) == 2)
        assert state.last_call is not None
        assert not state.complete
        group.start_soon(join, nodes[2])  # arrives during the last call: admitted
    check_round(infos)
    assert infos[0].world_size == 3  # below max_nodes: completed by the last call


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
        assert second[0].participants == ("a", "b", "c")


async def test_redundant_node_waits_for_room_without_triggering(make_backend: MakeBackend) -> None:
    a, b, c = (AsyncRendezvous(make_backend(), name, 2, 2, **FAST) for name in "abc")
    async with a, b, c:
        check_round(await join_all([a, b]))
        late: list[RendezvousInfo] = []
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as group:

                async def join_late() -> None:
                    late.append(await c.next_rendezvous())

                group.start_soon(join_late)
                await until(a.backend, lambda s: s.redundant == ("c",))
                assert await a.num_nodes_waiting() == 0  # the full round has no room for c
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
                assert await b.num_nodes_waiting() == 1  # a is gathering in the next round
                again.append(await b.next_rendezvous())
        check_round(again)
        assert again[0].round == 1


async def test_a_dead_participant_is_evicted_and_the_round_restarts(
    make_backend: MakeBackend,
) -> None:
    a, b, dead = (AsyncRendezvous(make_backend(), name, 2, 3, last_call=0.05, **FAST)
                  for name in ("a", "b", "dead"))
    async with a, b:
        # "dead" is not entered: once its next_rendezvous returns, nothing beats for it.
        first = await join_all([a, b, dead])
        check_round(first)
        assert first[0].world_size == 3
        with anyio.fail_after(LIMIT):
            assert await a.wait_for_round_end() is RoundEnd.RESTARTED
        second = await join_all([a, b])
        check_round(second)
        assert second[0].participants == ("a", "b")
        assert second[0].round > first[0].round


async def test_heartbeats_keep_an_idle_participant_alive(make_backend: MakeBackend) -> None:
    a, b = (AsyncRendezvous(make_backend(), name, 2, 2, **FAST) for name in "ab")
    observer = make_backend()
    async with a, b:
        check_round(await join_all([a, b]))
        started = time.monotonic()
        beats = 0
        # Watch several heartbeat timeouts go by: the round must survive all of them.
        with anyio.fail_after(LIMIT):
            current = await observer.get_state()
            assert current is not None
            while time.monotonic() - started < 3 * FAST["heartbeat_timeout"]:
                changed = await observer.wait_for_change(current[1])
                assert changed is not None
                current = changed
                state = decode_state(current[0])
                assert (state.round, state.complete, state.participants) == (0, True, ("a", "b"))
                beats += 1
        assert beats >= 3


async def test_a_vanished_joiner_is_evicted_before_the_round_completes(
    make_backend: MakeBackend,
) -> None:
    ghost_backend = make_backend()
    # A node that joined and then vanished: listed, its heartbeat never refreshed.
    ghost = RendezvousState(participants=("ghost",), heartbeats={"ghost": time.time_ns() // 10**6})
    await ghost_backend.set_state(encode_state(ghost))
    nodes = [AsyncRendezvous(make_backend(), f"n{i}", 4, 4, **FAST) for i in range(4)]
    infos: list[RendezvousInfo] = []

    async def join(node: AsyncRendezvous) -> None:
        infos.append(await node.next_rendezvous())

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            group.start_soon(join, nodes[0])
            group.start_soon(join, nodes[1])
            await until(ghost_backend, lambda s: len(s.participants) == 3)
            # The joiners waiting with the ghost evict it once its heartbeat runs out...
            await until(ghost_backend, lambda s: not s.listed("ghost"))
            group.start_soon(join, nodes[2])
            group.start_soon(join, nodes[3])
    # ...so the round completes with the four live nodes only.
    check_round(infos)
    assert infos[0].participants == ("n0", "n1", "n2", "n3")


async def test_closed_run_refuses_joins_and_stays_closed(make_backend: MakeBackend) -> None:
    a, b, c = (AsyncRendezvous(make_backend(), name, 3, 3, **FAST) for name in "abc")
    async with a:
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as group:

                async def pending() -> None:
                    with pytest.raises(RendezvousClosedError):
                        await a.next_rendezvous()

                group.start_soon(pending)
                await until(b.backend, lambda s: s.participants == ("a",))
                assert not await b.is_closed()
                await b.close()
        assert await a.is_closed()
        with pytest.raises(RendezvousClosedError):
            await c.next_rendezvous()
        state = await until(c.backend, lambda s: True)
        assert state.closed
        assert not state.listed("a")
        assert not state.listed("c")
        await b.close()  # idempotent
        assert await c.is_closed()


async def test_wait_for_round_end_reports_closing(make_backend: MakeBackend) -> None:
    a, b = (AsyncRendezvous(make_backend(), name, 2, 2, **FAST) for name in "ab")
    async with a, b:
        await join_all([a, b])
        assert await a.wait_for_round_end(timeout=0.01) is None
        await b.close()
        assert await a.wait_for_round_end() is RoundEnd.CLOSED


async def test_join_timeout_withdraws_the_node(make_backend: MakeBackend) -> None:
    lonely = AsyncRendezvous(make_backend(), "lonely", 2, 2, heartbeat=0.05, join_timeout=0.2)
    with pytest.raises(RendezvousTimeoutError, match="lonely"):
        await lonely.next_rendezvous()
    state = await until(lonely.backend, lambda s: True)
    assert not state.listed("lonely")
    assert lonely.info is None


async def test_cancelled_join_withdraws_the_node(make_backend: MakeBackend) -> None:
    node = AsyncRendezvous(make_backend(), "cancelled", 2, 2, **FAST)
    observer = make_backend()
    async with anyio.create_task_group() as group:
        group.start_soon(node.next_rendezvous)
        await until(observer, lambda s: s.participants == ("cancelled",))
        group.cancel_scope.cancel()
    state = await until(observer, lambda s: True)
    assert not state.listed("cancelled")
    # A second node can then complete a round with a third, without the cancelled one.
    infos = await join_all([AsyncRendezvous(make_backend(), n, 2, 2, **FAST) for n in "xy"])
    assert infos[0].participants == ("x", "y")


async def test_leaving_on_exit(make_backend: MakeBackend) -> None:
    a, b = (AsyncRendezvous(make_backend(), name, 2, 2, **FAST) for name in "ab")
    async with b:
        async with a:
            await join_all([a, b])
        assert a.info is None
        assert await b.wait_for_round_end() is RoundEnd.RESTARTED
    state = await until(a.backend, lambda s: True)
    assert not state.heartbeats


async def test_one_join_at_a_time(make_backend: MakeBackend) -> None:
    node = AsyncRendezvous(make_backend(), "n", 2, 2, **FAST)
    async with anyio.create_task_group() as group:
        group.start_soon(node.next_rendezvous)
        await until(node.backend, lambda s: s.listed("n"))
        with pytest.raises(RuntimeError, match="already running"):
            await node.next_rendezvous()
        group.cancel_scope.cancel()
    with pytest.raises(RuntimeError, match="next_rendezvous"):
        await node.wait_for_round_end()


@pytest.mark.parametrize(
    "stored",
    [b"junk", pickle.dumps({"round": 0}), json.dumps({"v": 99}).encode()],
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
    rendezvous = AsyncRendezvous(backend, "n", 1, 2)
    assert (rendezvous.node, rendezvous.min_nodes, rendezvous.max_nodes) == ("n", 1, 2)
    assert "node='n'" in repr(rendezvous)
    assert default_node_id() != default_node_id()


async def test_errors_in_the_block_propagate_unwrapped(make_backend: MakeBackend) -> None:
    node = AsyncRendezvous(make_backend(), "n", 1, 1, **FAST)

    async def join_after_closing() -> None:
        async with node:
            await node.next_rendezvous()
            await node.close()
            await node.next_rendezvous()

    with pytest.raises(RendezvousClosedError):  # itself, not in an ExceptionGroup
        await join_after_closing()
    state = await until(node.backend, lambda s: True)
    assert not state.listed("n")  # it left on the way out
    with anyio.move_on_after(0.01) as scope:
        async with node:
            await anyio.sleep_forever()
    assert scope.cancelled_caught
