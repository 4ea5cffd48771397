"""The rendezvous on the distributed stores: Redis, etcd, PostgreSQL and SeaweedFS (S3) servers
on 127.0.0.1.

The tests use the stores' own clients beside the backends (asyncio only), so this module narrows
``anyio_backend``. The core behaviour tests of ``test_rendezvous.py`` are imported and run here
again on each store (pytest collects them with this module's fixtures), then random schedules
and the cross-process test.

S3 has no member table: the rendezvous keeps its member records in the one object, so every
heartbeat is a compare-and-swap of the whole object (10-60 ms each on SeaweedFS while a few nodes
race, and now and then about a second: SeaweedFS holds some racing conditional writes that long),
and other processes see it only by polling. Heartbeats every 0.03-0.1 s with a timeout of
0.15-0.4 s, as the other stores' tests use, would evict live nodes there, and a last call of
0.05 s would miss a node whose join was held: each store's :class:`StorePace` says how much
longer its tests' durations are. S3 also signs every request with the client's clock and
refuses one more than 15 minutes off the store's, so its process test skews clocks by 10
minutes, not an hour.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings

from arendezvous import AsyncRendezvousBackend, open_backend
from arendezvous.rendezvous import AsyncRendezvous
from servers.etcd import EtcdServer
from servers.postgres import PostgresServer
from servers.redis import RedisServer
from servers.seaweedfs import SeaweedFSServer

from . import test_rendezvous as behaviour
from ._observe import Changes, WatchedBackend
from ._schedules import Pace, Schedule, run_schedule, schedules
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

Server = RedisServer | EtcdServer | PostgresServer | SeaweedFSServer
_SERVERS: dict[str, type[Server]] = {
    "redis": RedisServer,
    "etcd": EtcdServer,
    "postgres": PostgresServer,
    "s3": SeaweedFSServer,
}



@dataclass(frozen=True)
class StorePace:
    """How the tests' durations stretch on one store."""

    #: Every duration (heartbeats, timeouts, last calls, pauses) is this many times as long.
    slowness: float = 1.0
    #: The shortest last call of the tests that expect exact rounds (the imported behaviour
    #: tests, the process test): a store that holds a write now and then must not make a node
    #: miss one.
    least_last_call: float = 0.0
    #: Extra options of the store's URL.
    url_options: str = ""


_PACES = {
    # A request may wait out SeaweedFS's held racing writes (seconds with many racers).
    "s3": StorePace(slowness=10.0, least_last_call=2.0, url_options="&timeout=30"),
}


def store_pace_of(server: Server) -> StorePace:
    name = next(name for name, kind in _SERVERS.items() if isinstance(server, kind))
    return _PACES.get(name, StorePace())


def url_of(server: Server) -> str:
    return server.url + store_pace_of(server).url_options


def pace(server: Server) -> Pace:
    """The pace of the schedules on *server*'s store."""
    return Pace(store_pace_of(server).slowness)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=sorted(_SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with _SERVERS[request.param]() as running, pytest.MonkeyPatch.context() as patch:
        for name, value in getattr(running, "environ", {}).items():
            patch.setenv(name, value)
        yield running


@pytest.fixture(autouse=True)
def store_pace(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The imported behaviour tests at the store's pace: every :class:`AsyncRendezvous` they make
    gets its heartbeat, heartbeat timeout and last call times the store's slowness, and a last
    call of at least the store's least (its join timeout stays: the tests that give one short
    want it to expire)."""
    store = store_pace_of(server)
    if store == StorePace():
        return

    def paced(*args: Any, **options: Any) -> AsyncRendezvous:
        for name in ("heartbeat", "heartbeat_timeout", "last_call"):
            if options.get(name) is not None:
                options[name] *= store.slowness
        if options.get("last_call"):
            options["last_call"] = max(options["last_call"], store.least_last_call)
        return AsyncRendezvous(*args, **options)

    monkeypatch.setattr(behaviour, "AsyncRendezvous", paced)


@pytest.fixture
async def make_backend(server: Server, changes: Changes) -> AsyncIterator[MakeBackend]:
    """Handles on one fresh run of the store, each node its own; all closed after the test."""
    run_id = f"rdzv-{uuid.uuid4().hex[:8]}"
    handles: list[AsyncRendezvousBackend] = []

    def make() -> AsyncRendezvousBackend:
        handle = WatchedBackend(open_backend(url_of(server), run_id=run_id), changes)
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
        return open_backend(url_of(server), run_id=run_id)

    anyio.run(run_schedule, schedule, make, pace(server), backend="asyncio")


def test_processes(server: Server) -> None:
    # S3 signs every request with the client's clock and refuses one more than 15 minutes off.
    offset = "10m" if isinstance(server, SeaweedFSServer) else "1h"
    store = store_pace_of(server)
    check_processes_rendezvous(
        url_of(server),
        heartbeat=pace(server)(0.1),
        last_call=max(pace(server)(0.2), store.least_last_call),
        clock_offset=offset,
    )

