"""The PostgreSQL backend against a real server: contract, races, crashes, URLs, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from arendezvous import (
    AsyncRendezvousBackend,
    BackendClosedError,
    RendezvousConnectionError,
    RendezvousStateError,
    SyncBackend,
    Token,
    open_backend,
)
from arendezvous.backends import postgres
from arendezvous.backends.postgres import (
    CREATE_TABLE_SQL,
    PostgresBackend,
    PostgresToken,
    from_url,
)
from arendezvous.testing.conformance import CorruptStateConformance
from servers.postgres import PostgresServer

asyncpg = pytest.importorskip("asyncpg")

pytestmark = pytest.mark.anyio

PASSWORD = "pg-s3cret-Pa55"
_servers: dict[str, PostgresServer] = {}


@pytest.fixture
def anyio_backend() -> str:
    """asyncpg runs only on asyncio; ``test_trio_gets_a_clear_error`` covers trio."""
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
def server() -> Iterator[PostgresServer]:
    """One password-protected server for the module (crash tests get their own)."""
    with PostgresServer(password=PASSWORD) as started:
        _servers["main"] = started
        yield started
        del _servers["main"]


@pytest.fixture(scope="module")
def crash_server() -> Iterator[PostgresServer]:
    """A server that tests kill, restart, freeze and thaw."""
    with PostgresServer(password=PASSWORD) as started:
        yield started


def dsn() -> str:
    return _servers["main"].dsn


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


# -- the contract ------------------------------------------------------------------------------


class TestPostgresConformance(CorruptStateConformance):
    corrupt_values = (
        *CorruptStateConformance.corrupt_values,
        b"ARDP",  # header cut short
        b"ARDP\x02" + b"\x00" * 4 + b"x",  # unknown format version
        b"ARDP\x01" + b"\x00" * 4 + b"x",  # checksum does not match
        b"ARDZ\x01" + b"\x00" * 40,  # the file backend's magic
    )

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        # A long heartbeat: every wake-up in the suite must come from NOTIFY.
        return PostgresBackend(dsn(), run_id, heartbeat=300)

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        async with raw_connection() as connection:
            await write_raw(postgres.DEFAULT_TABLE, run_id, raw, connection=connection)


def _state_machine_factory(run_id: str) -> AsyncRendezvousBackend:
    return PostgresBackend(dsn(), run_id, heartbeat=300)


try:
    from hypothesis import settings

    from arendezvous.testing.stateful import backend_state_machine
except ImportError:  # pragma: no cover - the dev extra installs Hypothesis
    pass
else:
    TestStateMachine = backend_state_machine(_state_machine_factory).TestCase
    TestStateMachine.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)


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


async def test_hostile_eq_is_never_called() -> None:
    called: list[object] = []

    class Hostile:
        def __eq__(self, other: object) -> bool:
            called.append(other)
            return True

        __hash__ = object.__hash__

    async with PostgresBackend(dsn(), "hostile", table=fresh_table()) as backend:
        _, token, _ = await backend.set_state(b"a")
        assert await backend.set_state(b"b", Hostile()) == (b"a", token, False)
        assert await backend.wait_for_change(Hostile(), timeout=5) == (b"a", token)
    assert called == []


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


async def test_tokens_never_repeat_when_the_row_is_deleted_and_created_again() -> None:
    table = fresh_table()
    async with PostgresBackend(dsn(), "again", table=table) as backend:
        seen: list[Token] = []
        for _ in range(3):
            _, token, written = await backend.set_state(b"same")
            assert written
            assert all(token != earlier for earlier in seen)
            seen.append(token)
            async with raw_connection() as connection:
                await connection.execute(f'DELETE FROM "{table}" WHERE run_id = $1', "again")
            assert await backend.set_state(b"same", token) == (b"", None, False)


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


async def test_a_role_without_create_privilege_uses_a_table_made_for_it() -> None:
    table, role = fresh_table(), f"r_{uuid.uuid4().hex[:8]}"
    async with raw_connection() as connection:
        await connection.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'limited-pw'")
        await connection.execute(CREATE_TABLE_SQL.format(table=f'"{table}"'))
        await connection.execute(f'GRANT SELECT, INSERT, UPDATE ON "{table}" TO "{role}"')
    limited = dsn().replace(f"postgres:{PASSWORD}@", f"{role}:limited-pw@")
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
        await raw.add_listener(postgres._channel(table, "notify"), on_notice)
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
        read = backend._read

        async def counting_read(connection: Any, deadline: float) -> Any:
            result = await read(connection, deadline)
            reads.append(result)
            first_read_done.set()
            return result

        monkeypatch.setattr(backend, "_read", counting_read)
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
                postgres._encode(b"silent"),
            )
            terminated = await raw.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
                f'LISTEN "{postgres._channel(table, "relisten")}"',
            )
            assert terminated == 1
    assert len(reads) == 2
    assert len(result) == 1
    assert isinstance(result[0], tuple)
    assert result[0][0] == b"silent"


async def test_many_waiters_share_one_listener() -> None:
    async with PostgresBackend(dsn(), "fanout", table=fresh_table()) as backend:
        _, token, _ = await backend.set_state(b"a")
        results: list[object] = []

        async def wait() -> None:
            results.append(await backend.wait_for_change(token, timeout=20))

        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            _, new, _ = await backend.set_state(b"b", token)
        assert results == [(b"b", new)] * 5


async def test_aclose_wakes_waiters_with_backend_closed_error() -> None:
    backend = PostgresBackend(dsn(), "closing", table=fresh_table())
    _, token, _ = await backend.set_state(b"a")
    errors: list[BaseException] = []

    async def wait() -> None:
        try:
            await backend.wait_for_change(token, timeout=20)
        except BackendClosedError as exc:
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await backend.aclose()
    assert len(errors) == 1


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
        assert backend._pool is not None
        for connection in backend._pool._idle:
            assert not connection.is_closed()
            assert not connection.is_in_transaction()
        _, _, written = await backend.set_state(b"after", token)
        assert written


# -- failures ----------------------------------------------------------------------------------


async def test_server_killed_and_restarted(crash_server: PostgresServer) -> None:
    timeout = 5.0
    async with PostgresBackend(crash_server.dsn, "crash", timeout=timeout) as backend:
        _, token, _ = await backend.set_state(b"before")
        result: list[object] = []
        waiting = anyio.Event()

        async def wait() -> None:
            waiting.set()
            result.append(await backend.wait_for_change(token, timeout=60))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await waiting.wait()
            await anyio.wait_all_tasks_blocked()
            crash_server.kill()
            for call in (backend.get_state, lambda: backend.set_state(b"down", token)):
                started = anyio.current_time()
                with pytest.raises(RendezvousConnectionError) as caught:
                    await call()
                assert anyio.current_time() - started < timeout + 1
                assert caught.value.__cause__ is not None
                assert PASSWORD not in str(caught.value)
            assert result == []  # the waiter rides through the outage
            await anyio.to_thread.run_sync(crash_server.restart)
            # The same backend object works again, with the token it held before the crash.
            _, new, written = await backend.set_state(b"after", token)
            assert written
        assert result == [(b"after", new)]


async def test_hung_server_times_out(crash_server: PostgresServer) -> None:
    async with PostgresBackend(crash_server.dsn, "hung", timeout=1) as backend:
        _, token, _ = await backend.set_state(b"a")
        crash_server.pause()
        try:
            started = anyio.current_time()
            with pytest.raises(RendezvousConnectionError, match=r"no answer within 1\.0 s"):
                await backend.set_state(b"b", token)
            assert anyio.current_time() - started < 3
        finally:
            crash_server.resume()
        with anyio.fail_after(20):
            while True:  # the timed-out write may or may not have committed
                current = await backend.get_state()
                assert current is not None
                _, _, written = await backend.set_state(b"c", current[1])
                if written:
                    break


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


def test_trio_gets_a_clear_error() -> None:
    async def main() -> None:
        backend = PostgresBackend(dsn(), "trio")
        with pytest.raises(RuntimeError, match="runs only on asyncio"):
            await backend.get_state()
        with pytest.raises(RuntimeError, match="runs only on asyncio"):
            await backend.set_state(b"x")
        with pytest.raises(RuntimeError, match="runs only on asyncio"):
            await backend.wait_for_change(None, timeout=1)
        await backend.aclose()

    anyio.run(main, backend="trio")


def test_one_backend_one_event_loop() -> None:
    backend = PostgresBackend(dsn(), "loops", table=fresh_table())

    def use_from_another_loop() -> None:
        with pytest.raises(RuntimeError, match="bound to the event loop"):
            anyio.run(backend.get_state)

    async def main() -> None:
        await backend.get_state()
        await anyio.to_thread.run_sync(use_from_another_loop)
        await backend.aclose()

    anyio.run(main)


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
    # A CA that did not sign the server's certificate: refused too.
    other_ca = tls_server.ca_file.with_name("other-ca.pem")
    url = f"{tls_server.dsn}?sslmode=verify-full&sslrootcert={other_ca}"
    async with open_backend(url, run_id="tls") as unverified:
        with pytest.raises(RendezvousConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await unverified.get_state()


# -- processes ---------------------------------------------------------------------------------


def test_cross_process_counter_race() -> None:
    from _counter_race import run_counter_race

    increments = 100
    url = f"{dsn()}?table={fresh_table()}"
    final, _ = run_counter_race(url, "counter", processes=4, increments=increments)
    assert final == 4 * increments


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
        ({"max_state_size": 1 << 40}, ValueError, "max_state_size"),
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
        "&application_name=trainer",
        run_id="r",
    )
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
        "PostgresBackend('postgresql://user@db.example:6543/rdzv', run_id='r', table='ops.state')"
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
        ("postgresql://h/db?timeout=soon", "bad value for option 'timeout'"),
        ("postgresql://h/db?pool_size=many", "bad value for option 'pool_size'"),
        ("postgresql://h/db?table=a;b", "table must be"),
        ("postgresql://h/db?timeout=1&timeout=2", "given twice"),
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
        assert stored == postgres._encode(b"by url")
        assert "arendezvous-test" in {row["application_name"] for row in names}
        assert await backend.get_state() == (b"by url", token)
