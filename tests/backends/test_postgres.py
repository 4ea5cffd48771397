"""The PostgreSQL backend against a real server: contract, races, crashes, URLs, bad input.

The contract, the network scenarios every network store shares (races, crashes, a frozen server,
a partition, many waiters on one handle, a second event loop) and the state machine run on asyncio
and on trio; the rest covers what is PostgreSQL's own: the table, its creation and its
privileges, NOTIFY, the listening connection, the pool, TLS and URLs. Those tests use asyncpg to
look behind the backend, so they run on asyncio.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import anyio
import anyio.lowlevel
import pytest
from hypothesis import settings

from _network import ReadCounter, on_asyncio
from arendezvous import (
    AsyncRendezvousBackend,
    BackendClosedError,
    RendezvousConnectionError,
    RendezvousStateError,
    SyncBackend,
    Token,
    open_backend,
)
from arendezvous._members import MAX_GROUP_LENGTH, MAX_MEMBER_VALUE
from arendezvous.backends.postgres import (
    CREATE_TABLE_SQL,
    DEFAULT_TABLE,
    PostgresBackend,
    PostgresMemberTable,
    PostgresMemberVersion,
    PostgresToken,
    create_members_sql,
    from_url,
)
from arendezvous.backends.postgres._member_sql import member_names
from arendezvous.backends.postgres._sql import channel, encode
from arendezvous.testing.lifecycle import RunLifecycleConformance
from arendezvous.testing.members import MemberTableConformance
from arendezvous.testing.network import NetworkBackendConformance
from arendezvous.testing.stateful import backend_state_machine
from servers.postgres import PostgresServer

from ._loops import BothLoops
from ._waiting import waiting

asyncpg = pytest.importorskip("asyncpg")

pytestmark = pytest.mark.anyio

_T = TypeVar("_T")

PASSWORD = "pg-s3cret-Pa55"
_servers: dict[str, PostgresServer] = {}


@pytest.fixture
def anyio_backend() -> str:
    """The PostgreSQL-specific tests use asyncpg directly; the shared suites run on both loops."""
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
def server() -> Iterator[PostgresServer]:
    """One password-protected server for the module (crash tests get their own)."""
    with PostgresServer(password=PASSWORD) as started:
        _servers["main"] = started
        yield started
        del _servers["main"]


def dsn() -> str:
    return _servers["main"].dsn


def dsn_at(host: str, port: int) -> str:
    return f"postgresql://postgres:{PASSWORD}@{host}:{port}/postgres"


def fresh_table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def raw_connection(url: str | None = None) -> AsyncIterator[Any]:
    """The store's own client, behind the backend's back."""
    connection = await asyncpg.connect(url or dsn())
    try:
        yield connection
    finally:
        await connection.close()


async def write_raw(table: str, run_id: str, stored: bytes, *, connection: Any) -> None:
    await connection.execute(CREATE_TABLE_SQL.format(table=f'"{table}"'))
    await connection.execute(
        f'INSERT INTO "{table}" (run_id, incarnation, state) VALUES ($1, $2, $3) '
        "ON CONFLICT (run_id) DO UPDATE SET state = EXCLUDED.state, version = DEFAULT",
        run_id,
        b"\x00" * 16,
        stored,
    )


# -- the contract and the shared network scenarios -----------------------------------------------


class TestPostgresConformance(BothLoops, NetworkBackendConformance):
    corrupt_values = (
        *NetworkBackendConformance.corrupt_values,
        b"ARDP",  # header cut short
        b"ARDP\x02" + b"\x00" * 4 + b"x",  # unknown format version
        b"ARDP\x01" + b"\x00" * 4 + b"x",  # checksum does not match
        b"ARDZ\x01" + b"\x00" * 40,  # the file backend's magic
    )


    def server_address(self) -> tuple[str, int]:
        return _servers["main"].host, _servers["main"].port

    def backend_at(
        self, run_id: str, host: str, port: int, *, timeout: float
    ) -> AsyncRendezvousBackend:
        # A long heartbeat: every wake-up in the suite must come from NOTIFY (the liveness
        # check still runs every timeout seconds).
        return PostgresBackend(dsn_at(host, port), run_id, timeout=timeout, heartbeat=300)

    def server_url(self, run_id: str) -> str:
        return dsn()

    @classmethod
    def start_server(cls) -> PostgresServer:
        return PostgresServer(password=PASSWORD).start()

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        async def write() -> None:
            async with raw_connection() as connection:
                await write_raw(DEFAULT_TABLE, run_id, raw, connection=connection)

        await on_asyncio(write)

    async def delete_state(self, run_id: str) -> None:
        async def delete() -> None:
            async with raw_connection() as connection:
                await connection.execute(f'DELETE FROM "{DEFAULT_TABLE}" WHERE run_id = $1', run_id)

        await on_asyncio(delete)

    async def server_connections(self) -> int:
        async def count() -> int:
            async with raw_connection() as connection:
                number: int = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()"
                )
                return number

        return await on_asyncio(count)


class TestPostgresMembers(BothLoops, MemberTableConformance):
    """The member table's contract, on asyncio and trio, in the default tables (every test has
    a run of its own)."""


    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return PostgresBackend(dsn(), run_id, heartbeat=300)


class TestPostgresLifecycle(BothLoops, RunLifecycleConformance):
    """Deleting, listing and expiring runs (an expiry column per row), on asyncio and trio, in
    the default tables."""


    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return PostgresBackend(dsn(), run_id, heartbeat=300)

    async def make_expiring_backend(
        self, run_id: str, expire_after: float
    ) -> AsyncRendezvousBackend:
        return PostgresBackend(dsn(), run_id, heartbeat=300, expire_after=expire_after)


def _state_machine_factory(run_id: str) -> AsyncRendezvousBackend:
    return PostgresBackend(dsn(), run_id, heartbeat=300)


_MACHINE_SETTINGS = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestStateMachine = backend_state_machine(_state_machine_factory).TestCase
TestStateMachine.settings = _MACHINE_SETTINGS
TestStateMachineOnTrio = backend_state_machine(
    _state_machine_factory, anyio_backend="trio"
).TestCase
TestStateMachineOnTrio.settings = _MACHINE_SETTINGS


# -- tokens, rows and the table ----------------------------------------------------------------


async def test_tokens_are_ours_and_carry_the_incarnation() -> None:
    async with PostgresBackend(dsn(), "tok", table=fresh_table()) as backend:
        _, token, _ = await backend.set_state(b"a")
        assert type(token) is PostgresToken
        assert "PostgresToken" in repr(token)
        assert hash(token) == hash(PostgresToken(token.incarnation, token.version))
        bare_int: object = token.version
        assert token != bare_int  # a bare int never matches
        assert await backend.set_state(b"b", token.version) == (b"a", token, False)
        assert await backend.set_state(b"b", (token.incarnation, token.version)) == (
            b"a",
            token,
            False,
        )


async def test_same_versions_in_another_table_or_database_never_match() -> None:
    async with raw_connection() as connection:
        other_db = f"db_{uuid.uuid4().hex[:8]}"
        await connection.execute(f'CREATE DATABASE "{other_db}"')
    other_dsn = dsn().rsplit("/", 1)[0] + "/" + other_db
    first = PostgresBackend(dsn(), "same", table=fresh_table())
    second = PostgresBackend(dsn(), "same", table=fresh_table())
    third = PostgresBackend(other_dsn, "same")
    async with first, second, third:
        tokens = [(await backend.set_state(b"x"))[1] for backend in (first, second, third)]
        assert all(type(token) is PostgresToken for token in tokens)
        # Fresh sequences all start at 1: only the incarnation tells the tokens apart.
        assert {token.version for token in tokens} == {1}  # type: ignore[attr-defined]
        for backend, own in zip((first, second, third), tokens, strict=True):
            for foreign in tokens:
                if foreign is not own:
                    assert await backend.set_state(b"y", foreign) == (b"x", own, False)


async def test_a_dropped_table_is_created_again_and_old_tokens_stay_stale() -> None:
    table = fresh_table()
    async with PostgresBackend(dsn(), "dropped", table=table) as backend:
        _, old, _ = await backend.set_state(b"before")
        async with raw_connection() as connection:
            await connection.execute(f'DROP TABLE "{table}"')
        assert await backend.get_state() is None
        _, new, written = await backend.set_state(b"after")
        assert written
        # The new table's sequence starts over; the incarnation still tells the tokens apart.
        assert new.version == old.version  # type: ignore[attr-defined]
        assert new != old
        assert await backend.set_state(b"stolen", old) == (b"after", new, False)


async def test_many_nodes_create_the_table_at_once() -> None:
    table = fresh_table()
    backends = [PostgresBackend(dsn(), "create", table=table) for _ in range(8)]
    results: list[tuple[bytes, Token, bool]] = []

    async def create(backend: PostgresBackend) -> None:
        results.append(await backend.set_state(b"%d" % id(backend)))

    try:
        async with anyio.create_task_group() as group:
            for backend in backends:
                group.start_soon(create, backend)
    finally:
        for backend in backends:
            await backend.aclose()
    assert sum(written for _, _, written in results) == 1
    assert len({(state, token) for state, token, _ in results}) == 1


async def test_schema_qualified_table() -> None:
    schema = f"s_{uuid.uuid4().hex[:8]}"
    async with raw_connection() as connection:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    async with PostgresBackend(dsn(), "qualified", table=f"{schema}.Rdzv") as backend:
        assert backend.table == f"{schema}.Rdzv"
        _, token, _ = await backend.set_state(b"q")
        assert await backend.get_state() == (b"q", token)
    async with raw_connection() as connection:
        rows = await connection.fetch(f'SELECT run_id FROM "{schema}"."Rdzv"')
    assert [row["run_id"] for row in rows] == ["qualified"]


async def made_by_a_dba(table: str, grants: dict[str, str]) -> str:
    """The DSN of a new role that may create nothing, on tables a DBA made with
    ``CREATE_TABLE_SQL`` and ``create_members_sql(table)``, granted *grants* (privileges by
    object)."""
    role = f"r_{uuid.uuid4().hex[:8]}"
    async with raw_connection() as connection:
        await connection.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'limited-pw'")
        await connection.execute(CREATE_TABLE_SQL.format(table=f'"{table}"'))
        await connection.execute(create_members_sql(table))
        for granted, privileges in grants.items():
            await connection.execute(f'GRANT {privileges} ON {granted} TO "{role}"')
    return dsn().replace(f"postgres:{PASSWORD}@", f"{role}:limited-pw@")


async def test_a_role_without_create_privilege_uses_a_table_made_for_it() -> None:
    """A DBA makes the tables (the state's statements read the member table too: a run lives
    while any of its rows does); reading and writing states needs no more than this."""
    table = fresh_table()
    limited = await made_by_a_dba(table, {
        f'"{table}"': "SELECT, INSERT, UPDATE", member_names(table).members: "SELECT",
    })  # fmt: skip
    async with PostgresBackend(limited, "limited", table=table) as backend:
        _, token, _ = await backend.set_state(b"a")
        _, token, written = await backend.set_state(b"b", token)
        assert written
        assert await backend.wait_for_change(None, timeout=5) == (b"b", token)
    async with PostgresBackend(limited, "limited", table=fresh_table()) as backend:
        with pytest.raises(RendezvousConnectionError, match="permission denied"):
            await backend.get_state()


async def test_a_table_that_is_not_ours_raises_state_error() -> None:
    table = fresh_table()
    async with raw_connection() as connection:
        await connection.execute(f'CREATE TABLE "{table}" (run_id text PRIMARY KEY, data text)')
        await connection.execute(f"INSERT INTO \"{table}\" VALUES ('r', 'theirs')")
    async with PostgresBackend(dsn(), "r", table=table) as backend:
        with pytest.raises(RendezvousStateError):
            await backend.get_state()
        with pytest.raises(RendezvousStateError):
            await backend.set_state(b"mine?")
    async with raw_connection() as connection:
        assert await connection.fetchval(f'SELECT data FROM "{table}"') == "theirs"


@pytest.mark.parametrize(
    "table",
    ["", "a.b.c", "1abc", "t; DROP TABLE x", 'q"uote', "a-b", "sch.", "x" * 64, "é"],
)
def test_bad_table_names_are_refused(table: str) -> None:
    with pytest.raises(ValueError, match="table must be"):
        PostgresBackend("postgresql://h/db", "r", table=table)


async def test_a_state_corrupted_in_place_is_refused_by_the_token_holder() -> None:
    """A state changed behind the backend with its version kept (an UPDATE of the state column):
    bytes that decode are a state like any other, which the token's holder may write over; bytes
    that do not are refused and kept, whether the holder read the token itself or was handed it
    by another handle."""
    table = fresh_table()
    async with (
        PostgresBackend(dsn(), "rot", table=table) as holder,
        PostgresBackend(dsn(), "rot", table=table) as stranger,
        raw_connection() as raw,
    ):
        _, token, _ = await holder.set_state(b"good")
        update = f'UPDATE "{table}" SET state = $2 WHERE run_id = $1'
        await raw.execute(update, "rot", encode(b"changed"))
        assert await stranger.get_state() == (b"changed", token)
        state, token, written = await holder.set_state(b"mine", token)
        assert (state, written) == (b"mine", True)
        await raw.execute(update, "rot", b"xx")
        for backend in (holder, stranger):
            with pytest.raises(RendezvousStateError):
                await backend.set_state(b"overwrite?", token)
            with pytest.raises(RendezvousStateError):
                await backend.get_state()
        assert await raw.fetchval(f'SELECT state FROM "{table}"') == b"xx"


# -- the member table ---------------------------------------------------------------------------


async def raw_member_row(table: str, run_id: str, node: str, *, connection: Any) -> Any:
    """The member row as stored, every column."""
    return await connection.fetchrow(
        f"SELECT * FROM {member_names(table).members} WHERE run_id = $1 AND node = $2",
        run_id,
        node,
    )


async def test_member_rows_sit_beside_the_state_table() -> None:
    """One row per node in ``<table>_members`` of the table's schema: the record's fields, a
    16-byte incarnation kept by puts and touches, versions and seqs from the table's sequence, and
    the server's time of the last write; no password in the table's repr."""
    schema = f"s_{uuid.uuid4().hex[:8]}"
    async with raw_connection() as raw:
        await raw.execute(f'CREATE SCHEMA "{schema}"')
        table = f"{schema}.Rdzv"
        async with PostgresBackend(dsn(), "layout", table=table) as backend:
            members = backend.member_table()
            assert backend.member_table() is members  # one per handle
            assert isinstance(members, PostgresMemberTable)
            assert PASSWORD not in repr(members)
            first, written, size = await members.put("a", "g", b"owner", None)
            assert (written, size) == (True, 1)
            assert first is not None
            row = await raw_member_row(table, "layout", "a", connection=raw)
            assert row["group_name"] == "g"
            assert row["value"] == b"owner"
            assert len(row["incarnation"]) == 16
            assert first.version == PostgresMemberVersion(row["incarnation"], row["version"])
            assert first.seq == row["seq"]
            on_server = await raw.fetchval("SELECT clock_timestamp() - $1", row["written_at"])
            assert 0 <= on_server.total_seconds() < 5
            touched = await members.touch("a", first.version)
            assert touched is not None
            moved, _, _ = await members.put("a", "h", b"owner", touched.version)
            assert moved is not None
            after = await raw_member_row(table, "layout", "a", connection=raw)
            assert after["incarnation"] == row["incarnation"]
            versions = [first.version.version, touched.version.version, moved.version.version]  # type: ignore[attr-defined]
            assert versions == sorted(versions)
            assert (touched.seq, moved.seq) == (first.seq, after["seq"])
            assert moved.seq > first.seq
            names = member_names(table)
            assert names.plain == f"{schema}.Rdzv_members"
            assert await raw.fetchval(
                "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL "
                "AND to_regclass($3) IS NOT NULL",
                names.members, names.sequence, f'"{schema}".{names.group_index}',
            )  # fmt: skip
            # Member records are not the state: the state table has no row for the run.
            assert await backend.get_state() is None


async def test_ages_are_told_by_the_server_clock() -> None:
    """A record's age is the server's time since its last write, whatever the client's clock
    says; a write "from the future" (the server's clock stepped back) reads as age zero."""
    table = fresh_table()
    async with PostgresBackend(dsn(), "ages", table=table) as backend, raw_connection() as raw:
        members = backend.member_table()
        await members.put("a", "g", b"v", None)
        update = (
            f"UPDATE {member_names(table).members} SET written_at = clock_timestamp() + $2 "
            "WHERE run_id = 'ages' AND node = $1"
        )
        await raw.execute(update, "a", timedelta(seconds=-100))
        aged = await members.get("a")
        assert aged is not None
        assert aged.age is not None
        assert 100 <= aged.age < 100 + backend.timeout
        [listed] = await members.members("g")
        assert listed.age is not None
        assert listed.age >= 100
        await raw.execute(update, "a", timedelta(hours=1))
        future = await members.get("a")
        assert future is not None
        assert future.age == 0.0


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("value", b"x" * (MAX_MEMBER_VALUE + 1)),
        ("incarnation", b"\x01\x02\x03"),
        ("group_name", "g" * (MAX_GROUP_LENGTH + 1)),
        ("written_at", "infinity"),
    ],
    ids=["value too long", "short incarnation", "group too long", "infinite time"],
)
async def test_a_corrupt_member_row_raises_and_is_never_overwritten(
    column: str, value: object
) -> None:
    """A row changed behind the backend's back into one it never writes, its version kept: every
    operation meeting it raises RendezvousStateError -- the version's holder's too -- and the row
    stays as it is."""
    table = fresh_table()
    async with PostgresBackend(dsn(), "rot", table=table) as backend, raw_connection() as raw:
        members = backend.member_table()
        held = await members.put("a", "g", b"v", None)
        assert held.member is not None
        version = held.member.version
        cast = "::text::timestamptz" if column == "written_at" else ""
        await raw.execute(
            f"UPDATE {member_names(table).members} SET {column} = $1{cast} WHERE node = 'a'",
            value,
        )
        before = await raw_member_row(table, "rot", "a", connection=raw)
        calls: list[Any] = [
            members.get("a"),
            members.put("a", "h", b"w", version),
            members.put("a", "h", b"w", None),
            members.touch("a", version),
            members.delete("a", version),
        ]
        if column != "group_name":
            calls.append(members.members("g"))
        for call in calls:
            with pytest.raises(RendezvousStateError, match=r"'a'.*not one arendezvous writes"):
                await call
        assert await raw_member_row(table, "rot", "a", connection=raw) == before
        assert await members.count("h") == 0


async def test_member_writes_notify_nobody() -> None:
    """Puts, touches and deletes send nothing on the run's channel (a heartbeat wakes nobody):
    the first notice the listener gets is the state write made after them."""
    table, run_id = fresh_table(), "quiet"
    received: list[str] = []
    arrived = anyio.Event()

    def on_notice(*args: Any) -> None:
        received.append(args[3])
        arrived.set()

    async with PostgresBackend(dsn(), run_id, table=table) as backend, raw_connection() as raw:
        await backend.get_state()  # creates the state table
        await raw.add_listener(channel(table, run_id), on_notice)
        members = backend.member_table()
        member, _, _ = await members.put("a", "g", b"v", None)
        assert member is not None
        for _ in range(3):
            touched = await members.touch("a", member.version)
            assert touched is not None
            member = touched
        moved, _, _ = await members.put("a", "h", b"v", member.version)
        assert moved is not None
        assert await members.delete("a", moved.version)
        _, token, _ = await backend.set_state(b"state")
        with anyio.fail_after(10):
            await arrived.wait()
        # Notices arrive in commit order: one from a member write would have come first.
        assert received == [str(token.version)]  # type: ignore[attr-defined]


async def test_many_handles_create_the_member_table_at_once() -> None:
    table = fresh_table()
    backends = [PostgresBackend(dsn(), "create", table=table) for _ in range(8)]
    sizes: list[int] = []

    async def join(index: int, backend: PostgresBackend) -> None:
        _, written, size = await backend.member_table().put(f"n{index}", "g", b"v", None)
        assert written
        sizes.append(size)

    try:
        async with anyio.create_task_group() as group:
            for index, backend in enumerate(backends):
                group.start_soon(join, index, backend)
    finally:
        for backend in backends:
            await backend.aclose()
    assert sorted(sizes) == list(range(1, 9))
    names = member_names(table)
    async with raw_connection() as raw:
        assert await raw.fetchval(
            "SELECT to_regclass($1) IS NOT NULL AND to_regprocedure($2) IS NOT NULL",
            names.members, names.put_signature,
        )  # fmt: skip


async def test_a_role_without_create_privilege_uses_a_member_table_made_by_a_dba() -> None:
    """A DBA runs ``CREATE_TABLE_SQL`` and ``create_members_sql(table)`` and grants the
    documented privileges; a role that may create nothing then uses the tables, the run
    lifecycle included. Without them, that role gets "permission denied"."""
    table = fresh_table()
    names = member_names(table)
    limited = await made_by_a_dba(table, {
        f'"{table}"': "SELECT, INSERT, UPDATE, DELETE",
        names.members: "SELECT, INSERT, UPDATE, DELETE",
        f"SEQUENCE {names.sequence}": "USAGE",
    })  # fmt: skip
    async with PostgresBackend(limited, "limited", table=table) as backend:
        members = backend.member_table()
        member, written, size = await members.put("a", "g", b"v", None)
        assert (written, size) == (True, 1)
        assert member is not None
        touched = await members.touch("a", member.version)
        assert touched is not None
        assert [m.node for m in await members.members("g")] == ["a"]
        assert await members.count("g") == 1
        assert await members.delete("a", touched.version)
        await backend.set_state(b"state")
        assert [run.run_id for run in await backend.list_runs()] == ["limited"]
        assert await backend.delete_run()
    async with PostgresBackend(limited, "limited", table=fresh_table()) as backend:
        with pytest.raises(RendezvousConnectionError, match="permission denied"):
            await backend.member_table().get("a")


async def test_a_dropped_member_table_is_made_again_and_old_versions_stay_stale() -> None:
    table = fresh_table()
    names = member_names(table)
    async with PostgresBackend(dsn(), "dropped", table=table) as backend:
        members = backend.member_table()
        old, _, _ = await members.put("a", "g", b"v", None)
        assert old is not None
        async with raw_connection() as raw:
            await raw.execute(f"DROP TABLE {names.members}; DROP SEQUENCE {names.sequence}")
        assert await members.get("a") is None
        new, written, size = await members.put("a", "g", b"v", None)
        assert (written, size) == (True, 1)
        assert new is not None
        # The new sequence starts over; the row's incarnation still tells the versions apart.
        assert new.version.version == old.version.version  # type: ignore[attr-defined]
        assert new.version != old.version
        assert await members.touch("a", old.version) is None
        assert not (await members.put("a", "h", b"w", old.version)).written
        async with raw_connection() as raw:
            await raw.execute(f"DROP FUNCTION {names.put_signature}")
        assert (await members.put("b", "g", b"v", None)).group_size == 2  # made again


async def test_puts_refuse_a_stricter_isolation_level() -> None:
    """The put's count relies on READ COMMITTED (a fresh snapshot after the group's lock): on
    connections defaulting to REPEATABLE READ it raises instead of miscounting, writing nothing."""
    table = fresh_table()
    strict = {"server_settings": {"default_transaction_isolation": "repeatable read"}}
    async with PostgresBackend(dsn(), "strict", table=table, connect_kwargs=strict) as backend:
        with pytest.raises(RendezvousConnectionError, match=r"READ COMMITTED.*REPEATABLE READ"):
            await backend.member_table().put("a", "g", b"v", None)
        assert await backend.member_table().count("g") == 0


async def test_a_member_table_that_is_not_ours_raises_state_error() -> None:
    table = fresh_table()
    names = member_names(table)
    async with raw_connection() as raw:
        await raw.execute(f"CREATE TABLE {names.members} (run_id text, node text, data text)")
        await raw.execute(f"INSERT INTO {names.members} VALUES ('r', 'a', 'theirs')")
        async with PostgresBackend(dsn(), "r", table=table) as backend:
            with pytest.raises(RendezvousStateError, match="layout"):
                await backend.member_table().put("a", "g", b"mine?", None)
        assert await raw.fetchval(f"SELECT data FROM {names.members}") == "theirs"


async def test_long_table_names_get_distinct_member_tables() -> None:
    """PostgreSQL truncates names over 63 bytes, silently: the member table's objects of a long
    table name end in a hash of it instead, so two long names never share them."""
    stem = f"t_{uuid.uuid4().hex[:12]}"
    first, second = (stem + "x" * (61 - len(stem)) + end for end in ("_1", "_2"))
    assert len(first) == 63
    for table in (first, second):
        for name in member_names(table)[:5]:
            assert max(len(part.strip('"')) for part in name.split("(")[0].split(".")) <= 63
    assert member_names(first).members != member_names(second).members
    for table in (first, second):
        async with PostgresBackend(dsn(), "long", table=table) as backend:
            _, written, size = await backend.member_table().put("a", "g", table.encode(), None)
            assert (written, size) == (True, 1)
    for table in (first, second):
        async with PostgresBackend(dsn(), "long", table=table) as backend:
            got = await backend.member_table().get("a")
            assert got is not None
            assert got.value == table.encode()


class _Step(Protocol):
    """Awaits a call, checking something about it."""

    def __call__(self, call: Awaitable[_T]) -> Awaitable[_T]: ...


async def test_every_member_operation_is_one_statement() -> None:
    """Once the table exists and the connection has prepared its statements, each operation,
    winning or losing, sends exactly one query (a put's lock, write and count run inside one
    function call)."""
    table = fresh_table()
    async with PostgresBackend(dsn(), "trips", table=table, pool_size=1) as backend:
        members = backend.member_table()
        logged: list[str] = []

        async def scenario(node: str, step: _Step) -> None:
            member = (await step(members.put(node, "g", b"v", None))).member
            assert member is not None
            touched = await step(members.touch(node, member.version))
            assert touched is not None
            assert await step(members.touch(node, member.version)) is None
            moved = (await step(members.put(node, "h", b"v", touched.version))).member
            assert moved is not None
            assert not (await step(members.put(node, "h", b"v", touched.version))).written
            assert not (await step(members.put(node, "h", b"v", None))).written
            assert await step(members.get(node)) is not None
            assert [m.node for m in await step(members.members("h"))] == [node]
            assert await step(members.count("h")) == 1
            assert not await step(members.delete(node, touched.version))
            assert await step(members.delete(node, moved.version))

        async def as_is(call: Awaitable[_T]) -> _T:
            return await call

        async def one_query(call: Awaitable[_T]) -> _T:
            logged.clear()
            result = await call
            await anyio.lowlevel.checkpoint()  # asyncpg logs with call_soon: let those run
            assert len(logged) == 1, logged
            return result

        await scenario("a", as_is)  # creates the table and prepares every statement
        assert backend._bound is not None
        [connection] = backend._bound.client.idle
        connection.add_query_logger(lambda query: logged.append(query.query))
        await scenario("b", one_query)


async def test_cancelled_member_writes_leave_consistent_rows_and_clean_connections() -> None:
    table = fresh_table()
    async with PostgresBackend(dsn(), "cancel", table=table) as backend:
        members = backend.member_table()
        member, _, _ = await members.put("a", "g0", b"v", None)
        assert member is not None
        for attempt in range(60):
            group = f"g{attempt + 1}"
            with anyio.move_on_after(0.0002 * (attempt % 15)):
                if attempt % 3 == 2:
                    await members.touch("a", member.version)
                else:
                    await members.put("a", group, b"v", member.version)
            current = await members.get("a")
            assert current is not None
            if current.version != member.version:  # the write applied, whole
                if current.group == member.group:  # a touch: the seq stays
                    assert (current.seq, current.value) == (member.seq, member.value)
                else:  # a put: into the new group, with a new seq
                    assert (current.group, current.value) == (group, b"v")
                    assert current.seq > member.seq
                member = current
            assert await members.count(member.group) == 1
        async with raw_connection() as raw:
            states = await raw.fetch(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        assert not [row for row in states if "transaction" in (row["state"] or "")], states
        assert backend._bound is not None
        for connection in backend._bound.client.idle:
            assert not connection.is_closed()
            assert not connection.is_in_transaction()
        assert (await members.put("a", "after", b"v", member.version)).written


async def test_bad_member_input_and_foreign_versions_never_reach_the_server() -> None:
    """Against a port nobody listens on: bad arguments raise TypeError/ValueError, and a version
    that is not a sendable PostgresMemberVersion (a float or a huge number inside, a subclass) is
    simply not current -- neither is sent, so neither meets the connection error."""
    from servers import free_port

    backend = PostgresBackend(f"postgresql://u@127.0.0.1:{free_port()}/db", "r")
    members = backend.member_table()
    with pytest.raises(TypeError):
        await members.touch(7, PostgresMemberVersion(b"x" * 16, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await members.put("a", "g", "text", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await members.count("")

    class Subclass(PostgresMemberVersion):
        __slots__ = ()

    for garbage in (
        PostgresMemberVersion(b"x" * 16, 2**63),
        PostgresMemberVersion(b"x" * 16, 1.0),  # type: ignore[arg-type]
        PostgresMemberVersion(bytearray(16), 1),  # type: ignore[arg-type]
        Subclass(b"x" * 16, 1),
        PostgresToken(b"x" * 16, 1),
    ):
        assert await members.touch("a", garbage) is None
        assert await members.delete("a", garbage) is False
    with pytest.raises(RendezvousConnectionError):
        await members.get("a")  # this one is sent
    await backend.aclose()
    with pytest.raises(BackendClosedError):
        await members.touch("a", PostgresToken(b"x" * 16, 1))


# -- the run lifecycle -------------------------------------------------------------------------


async def _expire(table: str, run_id: str, *, state: bool = True, members: bool = True) -> None:
    """Move a run's rows' expiry into the past, as if nobody had written them for long."""
    async with raw_connection() as raw:
        if state:
            await raw.execute(
                f'UPDATE "{table}" SET expires_at = clock_timestamp() - interval \'1 s\' '
                "WHERE run_id = $1", run_id,
            )  # fmt: skip
        if members:
            await raw.execute(
                f"UPDATE {member_names(table).members} "
                "SET expires_at = clock_timestamp() - interval '1 s' WHERE run_id = $1", run_id,
            )  # fmt: skip


async def _rows(table: str, run_id: str) -> tuple[int, int]:
    """How many state rows and member rows the run has, expired or not."""
    async with raw_connection() as raw:
        states = await raw.fetchval(f'SELECT count(*) FROM "{table}" WHERE run_id = $1', run_id)
        records = await raw.fetchval(
            f"SELECT count(*) FROM {member_names(table).members} WHERE run_id = $1", run_id
        )
    return states, records


async def test_deleting_a_run_is_one_transaction() -> None:
    """While the deletion waits for a member row another transaction has locked, its state row
    is still there for everyone else: the two deletions commit together."""
    table = fresh_table()
    async with PostgresBackend(dsn(), "doomed", table=table) as backend:
        await backend.set_state(b"state")
        await backend.member_table().put("a", "g", b"v", None)
        async with raw_connection() as locker, raw_connection() as observer:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute(
                f"SELECT FROM {member_names(table).members} WHERE run_id = 'doomed' FOR UPDATE"
            )
            blocked = await locker.fetchval("SELECT pg_backend_pid()")
            async with anyio.create_task_group() as group:
                group.start_soon(backend.delete_run)
                # Until the deletion waits on the locker: the server tells no one when a
                # session starts waiting, so it is asked, a bounded number of times.
                waiting = (
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE $1 = ANY(pg_blocking_pids(pid))"
                )
                with anyio.fail_after(10):
                    while not await observer.fetchval(waiting, blocked):  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                assert await _rows(table, "doomed") == (1, 1)  # the state row's deletion waits
                await transaction.commit()
        assert await _rows(table, "doomed") == (0, 0)
        assert await backend.get_state() is None


async def test_every_write_stamps_its_rows_expiry() -> None:
    """A state write stamps the state row, a put or touch its member row: each by the server's
    clock, expire_after ahead; a handle without expire_after stamps 'infinity'."""
    table = fresh_table()
    members = member_names(table).members

    async def ahead(query: str) -> float:
        async with raw_connection() as raw:
            seconds: float = await raw.fetchval(
                f"SELECT date_part('epoch', expires_at - clock_timestamp()) FROM {query}"
            )
        return seconds

    async with PostgresBackend(dsn(), "stamped", table=table, expire_after=60) as backend:
        _, token, _ = await backend.set_state(b"state")
        assert 55 < await ahead(f"\"{table}\"") <= 60
        put = await backend.member_table().put("a", "g", b"v", None)
        assert put.member is not None
        assert 55 < await ahead(members) <= 60
        await _expire(table, "stamped", members=False)
        touched = await backend.member_table().touch("a", put.member.version)
        assert touched is not None
        assert 55 < await ahead(members) <= 60
        assert await ahead(f"\"{table}\"") < 0  # a heartbeat stamps its own row only
        assert await backend.get_state() is not None  # and keeps the whole run alive
        await backend.set_state(b"again", token)
        assert 55 < await ahead(f"\"{table}\"") <= 60
    async with PostgresBackend(dsn(), "forever", table=table) as backend:
        await backend.set_state(b"state")
        async with raw_connection() as raw:
            assert await raw.fetchval(
                f"SELECT expires_at = 'infinity' FROM \"{table}\" WHERE run_id = 'forever'"
            )


async def test_an_expired_run_reads_as_gone_and_starts_afresh() -> None:
    """Once every row of a run has expired, every read finds nothing, every write with an old
    token or version fails, and creating the run again deletes the old rows first (they never
    come back to life) and draws a new incarnation."""
    table = fresh_table()
    async with PostgresBackend(dsn(), "lapsed", table=table, expire_after=60) as backend:
        members = backend.member_table()
        _, token, _ = await backend.set_state(b"state")
        put = await members.put("a", "g", b"v", None)
        assert put.member is not None
        await _expire(table, "lapsed", state=True, members=False)
        assert await backend.get_state() == (b"state", token)  # the member row still lives
        await _expire(table, "lapsed")
        assert await backend.get_state() is None
        assert await members.get("a") is None
        assert await members.members("g") == []
        assert await members.count("g") == 0
        assert await members.touch("a", put.member.version) is None
        assert not await members.delete("a", put.member.version)
        assert await members.put("a", "h", b"v", put.member.version) == (None, False, 0)
        assert await backend.set_state(b"x", token) == (b"", None, False)
        assert await _rows(table, "lapsed") == (1, 1)  # nobody deleted them yet
        _, new_token, written = await backend.set_state(b"afresh")
        assert written
        assert new_token != token
        assert await _rows(table, "lapsed") == (1, 0)  # the old member row went first
        assert await members.get("a") is None
        # A run of member rows only, expired, is created again by a put the same way.
        await backend.delete_run()
        put = await members.put("a", "g", b"v", None)
        await _expire(table, "lapsed")
        again = await members.put("b", "g", b"v", None)
        assert (again.written, again.group_size) == (True, 1)
        assert await members.get("a") is None


async def test_clean_up_is_bounded_and_spares_live_runs(caplog: pytest.LogCaptureFixture) -> None:
    """A write of an expiring handle deletes at most 16 expired runs, and only when its turn
    has come (once per expire_after); list_runs deletes the rest. A run whose state row expired
    but whose member rows live is never deleted."""
    table = fresh_table()
    for number in range(20):
        async with PostgresBackend(dsn(), f"old-{number}", table=table) as old:
            await old.set_state(b"s")
            await old.member_table().put("a", "g", b"v", None)
        await _expire(table, f"old-{number}")
    async with PostgresBackend(dsn(), "member-only", table=table) as old:
        await old.member_table().put("a", "g", b"v", None)
    await _expire(table, "member-only")
    async with PostgresBackend(dsn(), "heartbeating", table=table) as live:
        await live.set_state(b"s")
        await live.member_table().put("a", "g", b"v", None)
    await _expire(table, "heartbeating", members=False)

    async def left() -> int:
        async with raw_connection() as raw:
            number: int = await raw.fetchval(f'SELECT count(*) FROM "{table}"')
            return number

    async with PostgresBackend(dsn(), "writer", table=table, expire_after=600) as writer:
        _, token, _ = await writer.set_state(b"one")  # its turn: 16 of the 20 expired go
        assert await left() == 22 - 16
        await writer.set_state(b"two", token)  # not its turn again for 600 s
        assert await left() == 22 - 16
        runs = await writer.list_runs()  # deletes the rest, and the runs of member rows only
        assert sorted(run.run_id for run in runs) == ["heartbeating", "writer"]
        assert await left() == 2
        assert await _rows(table, "member-only") == (0, 0)
        assert await _rows(table, "heartbeating") == (1, 1)


async def test_a_clean_up_the_server_refuses_does_not_fail_the_write() -> None:
    """Reads leave expired runs out whether or not they were deleted: a role without DELETE
    writes on, its clean-up refused."""
    table = fresh_table()
    limited = await made_by_a_dba(table, {
        f'"{table}"': "SELECT, INSERT, UPDATE",
        member_names(table).members: "SELECT, INSERT, UPDATE",
    })  # fmt: skip
    async with PostgresBackend(dsn(), "expired", table=table) as old:
        await old.set_state(b"s")
    await _expire(table, "expired")
    async with PostgresBackend(limited, "limited", table=table, expire_after=60) as backend:
        _, _, written = await backend.set_state(b"mine")
        assert written
        assert [run.run_id for run in await backend.list_runs()] == ["limited"]
    assert await _rows(table, "expired") == (1, 0)  # still there, and read by nobody


async def test_listing_skips_rows_that_are_not_ours() -> None:
    table = fresh_table()
    async with PostgresBackend(dsn(), "ours", table=table) as backend:
        await backend.set_state(b"12345")
        async with PostgresBackend(dsn(), "members-only", table=table) as other:
            await other.member_table().put("a", "g", b"v", None)
            await other.member_table().put("b", "h", b"v", None)
        async with raw_connection() as raw:
            await write_raw(table, "foreign", b"not an arendezvous state", connection=raw)
            await write_raw(table, "foreign-with-members", b"theirs", connection=raw)
            await write_raw(table, "corrupt", encode(b"abc")[:-1] + b"x", connection=raw)
            members = member_names(table).members
            await raw.execute(
                f"INSERT INTO {members} (run_id, node, group_name, value, incarnation) "
                "VALUES ('foreign-with-members', 'a', 'g', '', $1), "
                "('bad-record-only', 'a', 'g', '', '\\x00'::bytea)", b"\x00" * 16,
            )  # fmt: skip
        runs = {run.run_id: run for run in await backend.list_runs()}
        assert set(runs) == {"ours", "members-only", "foreign-with-members", "corrupt"}
        assert (runs["ours"].size, runs["ours"].members) == (5, 0)
        assert (runs["members-only"].size, runs["members-only"].members) == (None, 2)
        assert (runs["foreign-with-members"].size, runs["foreign-with-members"].members) == (
            None, 1,
        )  # fmt: skip
        assert (runs["corrupt"].size, runs["corrupt"].members) == (3, 0)
        assert all(run.age is not None and 0 <= run.age < 10 for run in runs.values())


# -- notification and waiting ------------------------------------------------------------------


async def test_every_write_notifies_in_its_transaction() -> None:
    table = fresh_table()
    received: list[str] = []
    arrived = anyio.Event()

    def on_notice(*args: Any) -> None:
        received.append(args[3])
        arrived.set()

    async with PostgresBackend(dsn(), "notify", table=table) as backend, raw_connection() as raw:
        await backend.get_state()  # creates the table
        await raw.add_listener(channel(table, "notify"), on_notice)
        _, token, _ = await backend.set_state(b"a")
        with anyio.fail_after(10):
            await arrived.wait()
        assert received == [str(token.version)]  # type: ignore[attr-defined]
        await backend.set_state(b"b", "stale")  # a losing write sends nothing
        arrived = anyio.Event()
        _, token, _ = await backend.set_state(b"c", token)
        with anyio.fail_after(10):
            await arrived.wait()
        assert received[-1] == str(token.version)  # type: ignore[attr-defined]
        assert len(received) == 2


async def test_wait_rereads_after_the_listener_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change made while the listening connection is dropped, with no notice, is still seen."""
    table = fresh_table()
    async with PostgresBackend(dsn(), "relisten", table=table, heartbeat=300) as backend:
        _, token, _ = await backend.set_state(b"a")
        reads: list[object] = []
        first_read_done = anyio.Event()
        fetch = backend._fetch

        async def counting_fetch(connection: Any, deadline: float) -> Any:
            result = await fetch(connection, deadline)
            reads.append(result)
            first_read_done.set()
            return result

        monkeypatch.setattr(backend, "_fetch", counting_fetch)
        result: list[object] = []

        async def wait() -> None:
            result.append(await backend.wait_for_change(token, timeout=20))

        async with anyio.create_task_group() as group, raw_connection() as raw:
            group.start_soon(wait)
            with anyio.fail_after(10):
                await first_read_done.wait()  # the waiter listens, then has read the old row
            # A silent write (no NOTIFY), then the listener's connection dies: only the re-read
            # after reconnecting can see the change.
            await raw.execute(
                f'UPDATE "{table}" SET state = $2, version = DEFAULT WHERE run_id = $1',
                "relisten",
                encode(b"silent"),
            )
            terminated = await raw.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
                f'LISTEN "{channel(table, "relisten")}"',
            )
            assert terminated == 1
    assert len(reads) == 2
    assert len(result) == 1
    assert isinstance(result[0], tuple)
    assert result[0][0] == b"silent"


class CountedBackend(ReadCounter, PostgresBackend):
    """Counts reads, the listener's too."""


async def test_waiters_share_one_listening_connection() -> None:
    """150 waiters on one handle: one LISTEN connection (and the pool's), not 150."""
    table = fresh_table()
    run_id = "fanout"
    waiter = CountedBackend(dsn(), run_id, table=table)
    async with waiter, PostgresBackend(dsn(), run_id, table=table) as writer:
        _, token, _ = await writer.set_state(b"a")
        async with (
            raw_connection() as raw,
            waiting(waiter, token, count=150, timeout=20) as results,
        ):
            await waiter.reads_reached(1).wait()
            await anyio.wait_all_tasks_blocked()
            listening = await raw.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
            )
            assert listening == 1
            _, new, _ = await writer.set_state(b"b", token)
        assert results == [(b"b", new)] * 150


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelled_calls_leave_consistent_state_and_clean_connections() -> None:
    table = fresh_table()
    async with PostgresBackend(dsn(), "cancel", table=table) as backend:
        _, token, _ = await backend.set_state(b"v0")
        last = b"v0"
        for attempt in range(60):
            payload = b"v%d" % (attempt + 1)
            with anyio.move_on_after(0.0002 * (attempt % 15)):
                await backend.set_state(payload, token)
            current = await backend.get_state()
            assert current is not None
            if current[1] == token:
                assert current[0] == last
            else:
                assert current[0] == payload
                token, last = current[1], payload
        async with raw_connection() as raw:
            states = await raw.fetch(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        # Connections closed mid-statement may still be finishing on the server ("active"); none
        # may be left inside a transaction, and every pooled one must be ready for reuse.
        assert not [row for row in states if "transaction" in (row["state"] or "")], states
        assert backend._bound is not None
        for connection in backend._bound.client.idle:
            assert not connection.is_closed()
            assert not connection.is_in_transaction()
        _, _, written = await backend.set_state(b"after", token)
        assert written


# -- failures and loops --------------------------------------------------------------------------


async def test_unreachable_server_fails_fast_without_leaking_the_password() -> None:
    from servers import free_port

    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/db?sslpassword=keyS3cret"
    backend = from_url(url, run_id="down")
    assert PASSWORD not in repr(backend)
    assert "keyS3cret" not in repr(backend)
    with anyio.fail_after(10), pytest.raises(RendezvousConnectionError) as caught:
        await backend.get_state()
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert len(chain) > 1
    for error in chain:
        assert PASSWORD not in str(error)
        assert PASSWORD not in repr(error)
    await backend.aclose()


async def test_wrong_password_is_a_connection_error_without_the_password() -> None:
    wrong = "Wr0ngPa55word"
    url = dsn().replace(PASSWORD, wrong)
    async with from_url(url, run_id="auth") as backend:
        with pytest.raises(RendezvousConnectionError, match="password authentication") as caught:
            await backend.get_state()
        assert wrong not in str(caught.value)
        assert wrong not in repr(backend)


def test_aclose_after_its_loop_closed_never_raises() -> None:
    """Used on a loop that has closed since, the handle closes without "Event loop is closed",
    from another loop and from the sync adapter (whose loop it then follows)."""
    backend = PostgresBackend(dsn(), "closed-loop", table=fresh_table())
    anyio.run(backend.set_state, b"a")
    anyio.run(backend.aclose)  # the first loop is gone: its connections are dropped
    reused = PostgresBackend(dsn(), "closed-loop", table=fresh_table())
    _, token, _ = anyio.run(reused.set_state, b"b")
    with SyncBackend(reused) as sync:
        assert sync.get_state() == (b"b", token)


def test_through_the_sync_adapter() -> None:
    with SyncBackend(PostgresBackend(dsn(), "sync", table=fresh_table())) as backend:
        _, token, written = backend.set_state(b"s")
        assert written
        assert backend.get_state() == (b"s", token)
        assert backend.wait_for_change(token, timeout=0.01) is None


@pytest.fixture(scope="module")
def tls_server() -> Iterator[PostgresServer]:
    """A server that takes TCP connections over TLS only; also makes a CA that did not sign it."""
    with PostgresServer(password=PASSWORD, tls=True) as started:
        other_ca = started.ca_file.with_name("other-ca.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=other CA", "-keyout", str(other_ca.with_suffix(".key")),
             "-out", str(other_ca)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        yield started


async def test_tls_with_a_verified_server_certificate(tls_server: PostgresServer) -> None:
    assert "sslmode=verify-full" in tls_server.url
    async with open_backend(tls_server.url, run_id="tls") as backend:
        _, token, _ = await backend.set_state(b"over TLS")
        assert await backend.get_state() == (b"over TLS", token)
        assert str(tls_server.ca_file) not in repr(backend)
    # The server takes TLS only, so the write above went over TLS; without it: refused.
    async with open_backend(f"{tls_server.dsn}?sslmode=disable", run_id="tls") as plain:
        with pytest.raises(RendezvousConnectionError, match="no encryption"):
            await plain.get_state()
    # The TLS vocabulary every network store shares says the same in its own words.
    url = f"{tls_server.dsn}?tls_ca_file={tls_server.ca_file}&tls_verify=full"
    async with open_backend(url, run_id="tls") as backend:
        assert await backend.get_state() == (b"over TLS", token)
    async with open_backend(f"{tls_server.dsn}?tls=false", run_id="tls") as plain:
        with pytest.raises(RendezvousConnectionError, match="no encryption"):
            await plain.get_state()
    # A CA that did not sign the server's certificate: refused too.
    other_ca = tls_server.ca_file.with_name("other-ca.pem")
    url = f"{tls_server.dsn}?sslmode=verify-full&sslrootcert={other_ca}"
    async with open_backend(url, run_id="tls") as unverified:
        with pytest.raises(RendezvousConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await unverified.get_state()


def test_tls_options_become_libpq_parameters() -> None:
    backend = from_url(
        "postgresql://u@h/db?tls_ca_file=/ca.pem&tls_cert_file=/c.pem&tls_key_file=/k.pem"
        "&tls_verify=ca",
        run_id="r",
    )
    assert backend._dsn == (
        "postgresql://u@h/db?sslmode=verify-ca&sslrootcert=%2Fca.pem&sslcert=%2Fc.pem"
        "&sslkey=%2Fk.pem"
    )
    assert from_url("postgresql://u@h/db?tls=false", run_id="r")._dsn.endswith("sslmode=disable")
    assert PostgresBackend("postgresql://u@h/db", "r", tls=True)._dsn.endswith(
        "sslmode=verify-full"
    )
    for url, match in (
        ("postgresql://u@h/db?sslmode=require&tls=true", "not both"),
        ("postgresql://u@h/db?sslrootcert=/a.pem&tls_ca_file=/b.pem", "not both"),
        ("postgresql://u@h/db?tls=false&tls_ca_file=/ca.pem", "tls=false"),
        ("postgresql://u@h/db?tls_verify=sometimes", "tls_verify"),
    ):
        with pytest.raises(ValueError, match=match):
            open_backend(url, run_id="r")


# -- imports, bad input and URLs --------------------------------------------------------------


def test_import_does_not_import_asyncpg() -> None:
    code = (
        "import sys, arendezvous, arendezvous.backends.postgres; "
        "assert 'asyncpg' not in sys.modules, 'asyncpg imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


def test_missing_asyncpg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(ImportError, match=r"pip install 'arendezvous\[postgres\]'"):
        PostgresBackend("postgresql://h/db", "r")


# -- bad input ---------------------------------------------------------------------------------


async def test_bad_state_raises_before_anything_is_sent() -> None:
    from servers import free_port

    backend = PostgresBackend(f"postgresql://u@127.0.0.1:{free_port()}/db", "r", max_state_size=4)
    with pytest.raises(TypeError, match="bytes"):
        await backend.set_state("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 4"):
        await backend.set_state(b"12345")
    await backend.aclose()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dsn": 5}, TypeError, "dsn must be str"),
        ({"run_id": 5}, TypeError, "run_id must be str"),
        ({"run_id": ""}, ValueError, "empty"),
        ({"table": 5}, TypeError, "table must be str"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"heartbeat": -1}, ValueError, "heartbeat"),
        ({"pool_size": 0}, ValueError, "pool_size"),
        ({"pool_size": 1.5}, ValueError, "pool_size"),
        ({"max_state_size": -1}, ValueError, "max_state_size"),
        ({"max_state_size": 0}, ValueError, "max_state_size"),
        ({"max_state_size": True}, TypeError, "max_state_size"),
        ({"heartbeat": "10"}, TypeError, "heartbeat"),
        ({"max_state_size": 1 << 40}, ValueError, "max_state_size"),
        ({"expire_after": 0}, ValueError, "expire_after"),
        ({"expire_after": float("inf")}, ValueError, "expire_after"),
        ({"expire_after": True}, TypeError, "expire_after"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    arguments: dict[str, Any] = {"dsn": "postgresql://h/db", "run_id": "r", **kwargs}
    with pytest.raises(error, match=match):
        PostgresBackend(**arguments)


# -- URLs --------------------------------------------------------------------------------------


def test_url_options_are_parsed_and_libpq_ones_passed_on() -> None:
    backend = from_url(
        "postgresql://user:pw@db.example:6543/rdzv?table=ops.state&timeout=2.5&pool_size=2"
        "&heartbeat=3&max_state_size=100&sslmode=verify-full&sslrootcert=/ca.pem"
        "&application_name=trainer&expire_after=600",
        run_id="r",
    )
    assert backend.expire_after == 600
    assert backend.table == "ops.state"
    assert backend.timeout == 2.5
    assert backend._pool_size == 2
    assert backend._heartbeat == 3
    assert backend._max_state_size == 100
    assert backend._dsn == (
        "postgresql://user:pw@db.example:6543/rdzv"
        "?sslmode=verify-full&sslrootcert=%2Fca.pem&application_name=trainer"
    )
    assert repr(backend) == (
        "PostgresBackend('postgresql://user:***@db.example:6543/rdzv', run_id='r', "
        "table='ops.state')"
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://localhost/db",
        "postgres://localhost/db",
        "POSTGRESQL://u@localhost:5432/db",
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write",
        "postgresql://[::1]:5432/db",
        "postgresql://localhost",
    ],
)
def test_good_urls(url: str) -> None:
    backend = open_backend(url, run_id="r")
    assert isinstance(backend, PostgresBackend)
    assert backend.name == "postgres"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgresql://h/db?colour=red", "unknown option 'colour'.*accepted: .*table"),
        ("postgresql://h/db?statement_timeout=5", "unknown option 'statement_timeout'"),
        ("postgresql://h/db?timeout=0", "bad value for option 'timeout'"),
        ("postgresql://h/db?pool_size=0", "bad value for option 'pool_size'"),
        ("postgresql://h/db?timeout=soon", "bad value for option 'timeout'"),
        ("postgresql://h/db?pool_size=many", "bad value for option 'pool_size'"),
        ("postgresql://h/db?table=a;b", "table must be"),
        ("postgresql://h/db?timeout=1&timeout=2", "given twice"),
        ("postgresql://h/db?expire_after=-5", "bad value for option 'expire_after'"),
        ("postgresql://h/db?sslmode=require&sslmode=disable", "given twice"),
        ("postgresql://h/db?sslmode=sometimes", "bad value for option 'sslmode'"),
        ("postgresql://h:99999/db", "bad port"),
        ("postgresql://h:abc/db", "bad port"),
        ("postgresql://h/db/extra", "path is /DATABASE"),
        ("postgresql://h/db#frag", "fragment"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        open_backend(url, run_id="r")


def test_bad_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ValueError, match="bad port") as caught:
        from_url("postgresql://u:Hidden99@h:99999/db", run_id="r")
    assert "Hidden99" not in str(caught.value)


async def test_open_backend_url_against_the_server() -> None:
    table = fresh_table()
    url = f"{dsn()}?table={table}&timeout=3&sslmode=disable&application_name=arendezvous-test"
    async with open_backend(url, run_id="url") as backend:
        _, token, _ = await backend.set_state(b"by url")
        async with raw_connection() as raw:
            stored = await raw.fetchval(f'SELECT state FROM "{table}" WHERE run_id = $1', "url")
            names = await raw.fetch("SELECT application_name FROM pg_stat_activity")
        assert stored == encode(b"by url")
        assert "arendezvous-test" in {row["application_name"] for row in names}
        assert await backend.get_state() == (b"by url", token)
