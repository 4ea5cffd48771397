"""The etcd backend against a real etcd on 127.0.0.1 (started by the fixtures below).

The conformance suite and the state machine prove the contract; the rest covers what is etcd's
own: the transaction's failure branch, revisions as tokens (also across deletion), the watch
riding out a server crash, authentication, TLS, and URL parsing. The backend's client runs only
on asyncio, so every async test here runs on asyncio; one test shows the error under trio.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aetcd
import anyio
import anyio.to_thread
import pytest
from hypothesis import settings

from _counter_race import run_counter_race
from arendezvous import (
    AsyncRendezvousBackend,
    BackendClosedError,
    RendezvousConnectionError,
    SyncBackend,
    open_backend,
)
from arendezvous.backends.etcd import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_TIMEOUT,
    EtcdBackend,
    EtcdToken,
    from_url,
)
from arendezvous.testing.conformance import CorruptStateConformance
from arendezvous.testing.stateful import backend_state_machine
from servers import free_port
from servers.etcd import EtcdServer

pytestmark = pytest.mark.anyio

_PREFIX = f"/arendezvous-test-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def anyio_backend() -> str:
    """grpc.aio runs only on asyncio; see :func:`test_trio_gets_a_clear_error`."""
    return "asyncio"


_servers: list[EtcdServer] = []


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    """One etcd shared by the module's tests that do not stop it (each uses its own run ids)."""
    with EtcdServer() as server:
        _servers.append(server)
        try:
            yield server
        finally:
            _servers.remove(server)


@pytest.fixture
def server() -> Iterator[EtcdServer]:
    """An etcd of the test's own, for tests that kill, restart or reconfigure it."""
    with EtcdServer() as server:
        yield server


def _run_id() -> str:
    return f"run-{uuid.uuid4().hex}"


async def _raw_put(server: EtcdServer, key: bytes, value: bytes) -> None:
    """Write *value* under *key* with aetcd's own client, behind the backend's back."""
    host, _, port = server.endpoint.partition(":")
    async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
        await client.put(key, value)


async def _raw_delete(server: EtcdServer, key: bytes) -> None:
    host, _, port = server.endpoint.partition(":")
    async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
        await client.delete(key)


# -- the contract --------------------------------------------------------------------------------


class TestEtcdConformance(CorruptStateConformance):
    corrupt_values = (
        *CorruptStateConformance.corrupt_values,
        b"ARDE",  # the magic alone
        b"ARDE\x02\x00\x00\x00\x00state",  # a format version from the future
        b"ARDE\x01\x00\x00\x00\x00state",  # the right header with a wrong checksum
        b"\x80\x04\x95pickle",  # the start of a pickle
    )

    @pytest.fixture(autouse=True)
    def _server(self, etcd_server: EtcdServer) -> None:
        self.etcd = etcd_server

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return EtcdBackend(run_id, self.etcd.endpoint, key_prefix=_PREFIX)

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        await _raw_put(self.etcd, (_PREFIX + run_id).encode(), raw)


def _state_machine_backend(run_id: str) -> EtcdBackend:
    return EtcdBackend(run_id, _servers[-1].endpoint, key_prefix=_PREFIX)


TestStateMachine = pytest.mark.usefixtures("etcd_server")(
    backend_state_machine(_state_machine_backend).TestCase
)
TestStateMachine.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)


def test_no_lost_update_across_processes(etcd_server: EtcdServer) -> None:
    final, _conflicts = run_counter_race(
        f"{etcd_server.url}?key_prefix={_PREFIX}", _run_id(), processes=4, increments=50
    )
    assert final == 4 * 50


# -- etcd specifics ------------------------------------------------------------------------------


@pytest.fixture
async def backend(etcd_server: EtcdServer) -> AsyncIterator[EtcdBackend]:
    async with EtcdBackend(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX) as backend:
        yield backend


async def test_state_is_stored_under_the_prefixed_key(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    _, token, _ = await backend.set_state(b"payload")
    assert backend.key == (_PREFIX + backend.run_id).encode()
    host, _, port = etcd_server.endpoint.partition(":")
    async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
        stored = await client.get(backend.key)
    assert stored is not None
    assert stored.value.endswith(b"payload")
    assert isinstance(token, EtcdToken)
    assert token.mod_revision == stored.mod_revision


async def test_tokens_never_repeat_across_deletion(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    seen = []
    for _ in range(3):
        _, token, written = await backend.set_state(b"same")
        assert written
        assert token not in seen
        seen.append(token)
        await _raw_delete(etcd_server, backend.key)
        assert await backend.get_state() is None
        assert await backend.set_state(b"x", token) == (b"", None, False)
    _, token, _ = await backend.set_state(b"same")
    for old in seen:
        assert await backend.set_state(b"y", old) == (b"same", token, False)


class _HostileToken:
    """A token whose ``__eq__`` must never run: the backend compares only its own tokens."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("the backend called a foreign token's __eq__")

    __hash__ = object.__hash__


async def test_foreign_tokens_are_stale_and_never_compared(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    _, token, _ = await backend.set_state(b"a")
    assert isinstance(token, EtcdToken)

    class SubToken(EtcdToken):
        __slots__ = ()

    other_prefix = EtcdBackend(backend.run_id, etcd_server.endpoint, key_prefix=_PREFIX + "x/")
    async with other_prefix:
        _, other_token, _ = await other_prefix.set_state(b"other")
    foreign: list[Any] = [
        _HostileToken(),
        SubToken(token.cluster_id, token.key, token.mod_revision),
        EtcdToken(token.cluster_id + 1, token.key, token.mod_revision),
        EtcdToken(token.cluster_id, token.key + b"x", token.mod_revision),
        other_token,
        token.mod_revision,  # the bare revision is not the token
        (token.cluster_id, token.key, token.mod_revision),
    ]
    for garbage in foreign:
        assert await backend.set_state(b"b", garbage) == (b"a", token, False)
        with anyio.fail_after(10):
            assert await backend.wait_for_change(garbage) == (b"a", token)
    # the same values in the real type are the current version, not a forgery
    rebuilt = EtcdToken(token.cluster_id, token.key, token.mod_revision)
    assert rebuilt == token
    assert hash(rebuilt) == hash(token)
    assert (await backend.set_state(b"c", rebuilt))[2]


async def test_a_fresh_handle_checks_the_cluster_before_trusting_a_token(
    etcd_server: EtcdServer,
) -> None:
    run_id = _run_id()
    async with EtcdBackend(run_id, etcd_server.endpoint, key_prefix=_PREFIX) as first:
        _, token, _ = await first.set_state(b"a")
    assert isinstance(token, EtcdToken)
    forged = EtcdToken(token.cluster_id ^ 1, token.key, token.mod_revision)
    async with EtcdBackend(run_id, etcd_server.endpoint, key_prefix=_PREFIX) as fresh:
        assert await fresh.set_state(b"b", forged) == (b"a", token, False)
    async with EtcdBackend(run_id, etcd_server.endpoint, key_prefix=_PREFIX) as fresh:
        state, new_token, written = await fresh.set_state(b"b", token)
        assert (state, written) == (b"b", True)
        assert new_token != token


async def test_losing_writer_gets_the_winner_from_the_same_transaction(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    _, token, _ = await backend.set_state(b"a")
    async with EtcdBackend(backend.run_id, etcd_server.endpoint, key_prefix=_PREFIX) as other:
        _, winner, _ = await other.set_state(b"winner", token)
    calls: list[str] = []
    unary = backend._unary

    async def counting(action: str, method: str, request: Any, *, idempotent: bool) -> Any:
        calls.append(method)
        return await unary(action, method, request, idempotent=idempotent)

    backend._unary = counting  # type: ignore[method-assign]
    assert await backend.set_state(b"loser", token) == (b"winner", winner, False)
    assert calls == ["Txn"]


async def test_cancelled_in_flight_calls_leave_the_handle_usable(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    async with EtcdBackend(backend.run_id, etcd_server.endpoint, key_prefix=_PREFIX) as reader:
        _, token, _ = await backend.set_state(b"v0")
        last = b"v0"
        for attempt in range(30):
            payload = b"v%d" % (attempt + 1)
            # cancelled at different points of the round trip, not only at its first checkpoint
            with anyio.move_on_after(0.0002 * (attempt % 10)):
                await backend.set_state(payload, token)
            with anyio.move_on_after(0.0002 * (attempt % 7)):
                await backend.get_state()
            current = await reader.get_state()
            assert current is not None
            if current[1] == token:
                assert current[0] == last
            else:
                assert current[0] == payload
                token, last = current[1], payload
        assert (await backend.set_state(b"after", token))[2]


async def test_wait_for_change_ignores_writes_to_other_runs(
    backend: EtcdBackend, etcd_server: EtcdServer
) -> None:
    _, token, _ = await backend.set_state(b"a")
    async with EtcdBackend(backend.run_id + "-sibling", etcd_server.endpoint) as sibling:
        result: list[Any] = []

        async def wait() -> None:
            result.append(await backend.wait_for_change(token, timeout=0.3))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await sibling.set_state(b"elsewhere")
        assert result == [None]


async def test_state_over_the_servers_request_limit_is_a_connection_error(
    etcd_server: EtcdServer,
) -> None:
    # Raising max_state_size past etcd's --max-request-bytes (1.5 MiB) is refused by etcd.
    big = EtcdBackend(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX, max_state_size=2 << 20)
    async with big:
        with pytest.raises(RendezvousConnectionError, match="too large"):
            await big.set_state(b"x" * (1600 * 1024))
        assert await big.get_state() is None


async def test_handle_refuses_calls_once_closed_even_mid_wait(etcd_server: EtcdServer) -> None:
    backend = EtcdBackend(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX)
    _, token, _ = await backend.set_state(b"a")
    errors: list[BaseException] = []

    async def wait() -> None:
        try:
            await backend.wait_for_change(token, timeout=10)
        except BackendClosedError as exc:
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await backend.aclose()
    assert len(errors) == 1
    with pytest.raises(BackendClosedError):
        await backend.wait_for_change(token)


def test_handle_works_from_one_event_loop_after_another(etcd_server: EtcdServer) -> None:
    backend = EtcdBackend(_run_id(), etcd_server.endpoint, key_prefix=_PREFIX)
    _, token, _ = anyio.run(backend.set_state, b"first loop")
    assert anyio.run(backend.get_state) == (b"first loop", token)
    anyio.run(backend.aclose)


def test_sync_adapter_from_threads(etcd_server: EtcdServer) -> None:
    """The blocking face (used by torch) over etcd: threads racing, one waiting for the result."""
    run_id = _run_id()
    with SyncBackend(EtcdBackend(run_id, etcd_server.endpoint, key_prefix=_PREFIX)) as backend:
        _, token, _ = backend.set_state(b"0")
        seen: list[Any] = []
        waiter = threading.Thread(
            target=lambda: seen.append(backend.wait_for_change(token, timeout=30))
        )
        waiter.start()

        def increment() -> None:
            for _ in range(10):
                current = backend.get_state()
                assert current is not None
                state, token, written = current[0], current[1], False
                while not written:
                    state, token, written = backend.set_state(b"%d" % (int(state) + 1), token)

        writers = [threading.Thread(target=increment) for _ in range(3)]
        for thread in writers:
            thread.start()
        for thread in [*writers, waiter]:
            thread.join(30)
            assert not thread.is_alive()
        current = backend.get_state()
        assert current is not None
        assert current[0] == b"30"
        assert len(seen) == 1
        assert seen[0] is not None
        assert seen[0][1] != token


def test_trio_gets_a_clear_error(etcd_server: EtcdServer) -> None:
    async def main() -> None:
        backend = EtcdBackend(_run_id(), etcd_server.endpoint)
        with pytest.raises(RuntimeError, match=r"only on asyncio.*SyncBackend"):
            await backend.get_state()
        with pytest.raises(RuntimeError, match="only on asyncio"):
            await backend.set_state(b"x")
        with pytest.raises(RuntimeError, match="only on asyncio"):
            await backend.wait_for_change(None, timeout=1)
        await backend.aclose()  # closing never fails, whatever the loop

    anyio.run(main, backend="trio")


# -- failures ------------------------------------------------------------------------------------


async def test_unreachable_server_raises_within_the_timeout() -> None:
    backend = EtcdBackend(_run_id(), f"127.0.0.1:{free_port()}", timeout=0.5)
    async with backend:
        for call in (backend.get_state, lambda: backend.set_state(b"x")):
            start = anyio.current_time()
            with pytest.raises(RendezvousConnectionError, match=r"no answer within 0\.5 s") as info:
                await call()
            assert anyio.current_time() - start < 0.5 + 1.0
            assert info.value.__cause__ is not None


async def test_server_crash_and_restart(server: EtcdServer) -> None:
    run_id = _run_id()
    probe = EtcdBackend(run_id, server.endpoint, timeout=0.5)
    # The waiter rides out an outage of up to its timeout; the probe's calls fail within 0.5 s.
    waiter = EtcdBackend(run_id, server.endpoint, timeout=20)
    async with probe, waiter:
        _, token, _ = await probe.set_state(b"before")
        results: list[Any] = []

        async def wait() -> None:
            results.append(await waiter.wait_for_change(token, timeout=30))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                await anyio.to_thread.run_sync(server.kill)
                for call in (
                    probe.get_state,
                    lambda: probe.set_state(b"lost?", token),
                    lambda: probe.wait_for_change(token),
                ):
                    start = anyio.current_time()
                    with pytest.raises(RendezvousConnectionError) as info:
                        await call()
                    assert anyio.current_time() - start < 0.5 + 1.0
                    assert info.value.__cause__ is not None
                assert results == []  # still waiting, not failed
                await anyio.to_thread.run_sync(server.start)
                assert await probe.get_state() == (b"before", token)  # same handle, data kept
                state, new_token, written = await probe.set_state(b"after", token)
                assert (state, written) == (b"after", True)
        assert results == [(b"after", new_token)]


async def test_wait_for_change_reports_an_outage_longer_than_the_timeout(
    server: EtcdServer,
) -> None:
    backend = EtcdBackend(_run_id(), server.endpoint, timeout=0.5)
    async with backend:
        _, token, _ = await backend.set_state(b"a")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:

                async def kill_when_waiting() -> None:
                    await anyio.wait_all_tasks_blocked()
                    await anyio.to_thread.run_sync(server.kill)

                group.start_soon(kill_when_waiting)
                with pytest.raises(RendezvousConnectionError, match=r"no answer within 0\.5 s"):
                    await backend.wait_for_change(token, timeout=None)


# -- authentication and TLS ----------------------------------------------------------------------


async def test_user_and_password(server: EtcdServer) -> None:
    password = "p@ss:w/rd%"
    server.enable_auth(password)
    quoted = "p%40ss%3Aw%2Frd%25"
    url = f"etcd://root:{quoted}@{server.endpoint}"
    backend = open_backend(url, run_id=_run_id())
    assert password not in repr(backend)
    assert quoted not in repr(backend)
    async with backend:
        _, token, written = await backend.set_state(b"authenticated")
        assert written
        # the handle keeps working across a restart, logging in again if etcd forgot its token
        await anyio.to_thread.run_sync(server.restart)
        assert await backend.get_state() == (b"authenticated", token)
    for bad in (f"etcd://root:wrong@{server.endpoint}", f"etcd://{server.endpoint}"):
        async with open_backend(bad + "?timeout=2", run_id=_run_id()) as refused:
            with pytest.raises(RendezvousConnectionError) as info:
                await refused.set_state(b"x")
            assert "wrong" not in str(info.value)
            assert password not in str(info.value)
    with pytest.raises(ValueError, match="unknown option") as bad_option:
        open_backend(f"{url}?colour=red", run_id="r")
    assert password not in str(bad_option.value)
    assert quoted not in str(bad_option.value)


async def test_tls_with_client_certificate() -> None:
    with EtcdServer(tls=True, client_cert_auth=True) as server:
        run_id = _run_id()
        async with open_backend(server.url, run_id=run_id) as backend:
            _, token, _ = await backend.set_state(b"over tls")
            assert await backend.wait_for_change(None) == (b"over tls", token)
        for url in (
            f"etcd://{server.endpoint}?ca_cert={server.ca_file}&timeout=0.5",  # no client cert
            f"etcd://{server.endpoint}?tls=true&timeout=0.5",  # the test CA is not trusted
            f"etcd://{server.endpoint}?timeout=0.5",  # plaintext to a TLS port
        ):
            async with open_backend(url, run_id=run_id) as refused:
                with pytest.raises(RendezvousConnectionError):
                    await refused.get_state()


# -- construction and URLs -----------------------------------------------------------------------


def test_url_parsing() -> None:
    backend = from_url("etcd://", run_id="r")
    assert backend.endpoints == ("localhost:2379",)
    assert backend.key == (DEFAULT_KEY_PREFIX + "r").encode()
    assert backend._timeout == DEFAULT_TIMEOUT

    backend = from_url("etcd://10.0.0.1,10.0.0.2:3379/", run_id="r")
    assert backend.endpoints == ("10.0.0.1:2379", "10.0.0.2:3379")
    assert backend._target == "ipv4:10.0.0.1:2379,10.0.0.2:3379"

    backend = from_url("etcd://[::1]:2380,[fe80::1]", run_id="r")
    assert backend.endpoints == ("[::1]:2380", "[fe80::1]:2379")
    assert backend._target == "ipv6:[::1]:2380,[fe80::1]:2379"

    backend = from_url(
        "ETCD://etcd.example:1234?timeout=2.5&key_prefix=/jobs/&max_state_size=10&tls=yes",
        run_id="run/1",
    )
    assert isinstance(backend, EtcdBackend)
    assert backend.endpoints == ("etcd.example:1234",)
    assert backend._target == "etcd.example:1234"
    assert backend.key == b"/jobs/run/1"
    assert backend._timeout == 2.5
    assert backend._max_state_size == 10
    assert backend._tls

    backend = from_url("etcd://u%3Ax:p%40ss@h:1", run_id="r")
    assert (backend._username, backend._password) == ("u:x", "p@ss")
    assert "p@ss" not in repr(backend)

    assert isinstance(open_backend("etcd://127.0.0.1:2379", run_id="r"), EtcdBackend)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("etcd://h:1/path", "no path"),
        ("etcd://h:1#frag", "fragment"),
        ("etcd://h:99999", "bad port"),
        ("etcd://h:port", "bad port"),
        ("etcd://::1:2379", "brackets"),
        ("etcd://[nope]:1", "IPv6"),
        ("etcd://h:1,,h:2", "empty"),
        ("etcd://a.example,b.example", "one name that resolves"),
        ("etcd://10.0.0.1,[::1]", "IPv4 or all IPv6"),
        ("etcd://user@h:1", "user:password@"),
        ("etcd://h?colour=red", "unknown option 'colour'"),
        ("etcd://h?timeout=0", "timeout"),
        ("etcd://h?timeout=soon", "timeout"),
        ("etcd://h?tls=maybe", "tls"),
        ("etcd://h?timeout=1&timeout=2", "twice"),
        ("etcd://h?ca_cert=/nonexistent/ca.pem", "cannot read ca_cert"),
        ("etcd://h?cert_key=/nonexistent/key.pem", "both cert_key and cert_cert"),
        ("etcd://h?ca_cert=/nonexistent/ca.pem&tls=false", "tls=false"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_backend(url, run_id="r")


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="both username and password"):
        EtcdBackend("r", username="root")
    with pytest.raises(ValueError, match="timeout"):
        EtcdBackend("r", timeout=-1)
    with pytest.raises(ValueError, match="no etcd endpoint"):
        EtcdBackend("r", [])
    with pytest.raises(TypeError, match="run_id must be str"):
        EtcdBackend(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        EtcdBackend("")
    assert EtcdBackend("r", ["10.0.0.1:1", "10.0.0.2"]).endpoints == ("10.0.0.1:1", "10.0.0.2:2379")


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aetcd", None)
    with pytest.raises(ImportError, match=r"pip install 'arendezvous\[etcd\]'"):
        open_backend("etcd://127.0.0.1:2379", run_id="r")


def test_importing_arendezvous_does_not_import_the_client() -> None:
    code = (
        "import sys, arendezvous, arendezvous.backends.etcd\n"
        "assert 'aetcd' not in sys.modules and 'grpc' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
