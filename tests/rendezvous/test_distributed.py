"""The rendezvous on the distributed stores: Redis, etcd and PostgreSQL servers on 127.0.0.1.

Their clients run only on asyncio, so this module narrows ``anyio_backend``. The core behaviour
tests of ``test_rendezvous.py`` are imported and run here again on each store (pytest collects
them with this module's fixtures), then random schedules and the cross-process test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from hypothesis import HealthCheck, given, settings

from arendezvous import AsyncRendezvousBackend, open_backend
from servers.etcd import EtcdServer
from servers.postgres import PostgresServer
from servers.redis import RedisServer

from ._observe import Changes, WatchedBackend
from ._schedules import Schedule, run_schedule, schedules
from .conftest import MakeBackend
from .test_processes import check_processes_rendezvous
from .test_rendezvous import (  # noqa: F401  (collected again here, on each store)
    test_a_dead_participant_is_evicted_and_the_round_restarts,
    test_a_frozen_node_learns_it_lost_its_rank,
    test_a_join_whose_reply_was_lost_leaves_no_ghost,
    test_a_second_live_node_with_the_same_id_fails_fast,
    test_cancelled_join_withdraws_the_node,
    test_closed_run_refuses_joins_and_stays_closed,
    test_heartbeats_keep_a_round_alive_and_wake_nobody,
    test_join_timeout_withdraws_the_node,
    test_last_call_admits_nodes_until_it_expires,
    test_late_node_waits_and_triggers_the_next_round,
    test_min_equals_max_completes_with_distinct_ranks,
    test_next_rendezvous_from_a_complete_round_starts_a_new_one,
    test_redundant_node_waits_for_room_without_triggering,
)

pytestmark = pytest.mark.anyio

Server = RedisServer | EtcdServer | PostgresServer
_SERVERS: dict[str, type[Server]] = {
    "redis": RedisServer,
    "etcd": EtcdServer,
    "postgres": PostgresServer,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=sorted(_SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with _SERVERS[request.param]() as running:
        yield running


@pytest.fixture
async def make_backend(server: Server, changes: Changes) -> AsyncIterator[MakeBackend]:
    """Handles on one fresh run of the store, each node its own; all closed after the test."""
    run_id = f"rdzv-{uuid.uuid4().hex[:8]}"
    handles: list[AsyncRendezvousBackend] = []

    def make() -> AsyncRendezvousBackend:
        handle = WatchedBackend(open_backend(server.url, run_id=run_id), changes)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        await handle.aclose()


@given(schedule=schedules(max_steps=10))
@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_schedules(server: Server, schedule: Schedule) -> None:
    run_id = f"schedule-{uuid.uuid4().hex[:8]}"

    async def make() -> AsyncRendezvousBackend:
        return open_backend(server.url, run_id=run_id)

    anyio.run(run_schedule, schedule, make, backend="asyncio")


def test_processes(server: Server) -> None:
    check_processes_rendezvous(server.url)

