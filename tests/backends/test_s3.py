"""The S3 backend against a real SeaweedFS S3 store on 127.0.0.1 (started by the fixtures below).

The contract (:class:`CorruptStateConformance`), the network scenarios every network store shares
(:class:`NetworkBackendConformance`: races of handles and processes, a store killed and restarted,
frozen, cut off or refusing connections, many waiters on one handle, a second event loop) and the
state machine run on asyncio and on trio; the rest covers what is S3's own: the object's header
(no ABA although ETags hash the content), refusals re-read, the run lifecycle (long run ids
listed from the object's metadata, foreign objects skipped and never deleted, expiry by the
store's clock), the probe that refuses a store
ignoring conditional writes (shown through a proxy on 127.0.0.1 that drops the condition headers
and re-signs the requests), polling, credentials from botocore's chain only, and URL parsing.
Those tests look at the store with aiobotocore's own client, so they run on asyncio.

Every SeaweedFS server of this module has the same S3 identity, so the one credentials file that
the environment names serves them all (handles and worker processes alike).
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import os
import secrets
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import hypothesis
import pytest

from _missing import missing

try:
    from aiobotocore.session import AioSession
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.exceptions import ClientError
except ImportError:  # pragma: no cover - CI installs every extra
    missing("aiobotocore is not installed: pip install 'arendezvous[s3]'", module=True)

from _network import ReadCounter, on_asyncio
from arendezvous import (
    AsyncRendezvousBackend,
    RendezvousConnectionError,
    RendezvousStateError,
    open_backend,
)
from arendezvous.backends._names import is_hashed_name, run_name
from arendezvous.backends.s3 import (
    MAX_STATE_SIZE_LIMIT,
    S3Backend,
    S3Token,
    UnsafeStoreError,
    _format,
    _store,
    from_url,
)
from arendezvous.backends.s3._feed import LOCAL_CHANGES, PollingFeed, PollSchedule
from arendezvous.testing.lifecycle import RunLifecycleConformance
from arendezvous.testing.network import NetworkBackendConformance
from arendezvous.testing.stateful import backend_state_machine
from bad_input.objects import HostileStr
from servers.seaweedfs import SeaweedFSServer

from ._loops import BothLoops
from ._waiting import waiting

pytestmark = pytest.mark.anyio

ACCESS_KEY = "arendezvous-test-" + secrets.token_hex(8)
SECRET_KEY = secrets.token_urlsafe(24)

# SeaweedFS makes racing conditional writes of one object wait for each other in steps of about
# a second (measured: of 8 racers, a few take 4-5 s). The tests of the register give their handles
# this timeout, so that such a wait is not reported as an unreachable store; the failure scenarios
# use their own short one.
RACE_TIMEOUT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    """The S3-specific tests use aiobotocore's client directly; the shared suites below run on
    both loops."""
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
def aws_environment() -> Iterator[pytest.MonkeyPatch]:
    """No credentials or config of the machine running the tests, and no instance-metadata
    lookups (they would cost seconds per client where there is no instance)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                patch.delenv(name)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/arendezvous-test/credentials")
        patch.setenv("AWS_CONFIG_FILE", "/nonexistent/arendezvous-test/config")
        yield patch


def new_server() -> SeaweedFSServer:
    """A store (not started) with the module's S3 identity."""
    return SeaweedFSServer(access_key=ACCESS_KEY, secret_key=SECRET_KEY)


@pytest.fixture(scope="module")
def server(aws_environment: pytest.MonkeyPatch) -> Iterator[SeaweedFSServer]:
    """One store shared by the module's tests that do not stop it (each uses its own run ids);
    its credentials files are in the environment, for handles and worker processes alike."""
    with new_server() as running:
        for name, value in running.environ.items():
            aws_environment.setenv(name, value)
        yield running


@pytest.fixture
async def raw(server: SeaweedFSServer) -> AsyncIterator[Any]:
    """aiobotocore's own client on the test store, to look at and tamper with objects."""
    async with raw_client(server) as client:
        yield client


def raw_client(server: SeaweedFSServer) -> Any:
    return AioSession().create_client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )


async def with_raw_client(server: SeaweedFSServer, call: str, **arguments: Any) -> None:
    """One request of aiobotocore's client, on an asyncio loop of its own (so from trio too)."""

    async def send() -> None:
        async with raw_client(server) as client:
            await getattr(client, call)(Bucket=server.bucket, **arguments)

    await on_asyncio(send)


def backend_on(server: SeaweedFSServer, run_id: str, **options: Any) -> S3Backend:
    options.setdefault("endpoint_url", server.endpoint_url)
    return S3Backend(
        server.bucket, run_id, region=server.region, profile=server.profile, **options
    )


def new_run_id() -> str:
    return f"s3-test-{uuid.uuid4().hex}"


def new_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def raw_get(client: Any, bucket: str, key: str) -> tuple[bytes, str]:
    reply = await client.get_object(Bucket=bucket, Key=key)
    async with reply["Body"] as body:
        return await body.read(), _store.normalize_etag(reply["ETag"])


# -- the contract and the shared network scenarios -------------------------------------------------


def _object(counter: int = 1, state: bytes = b"state") -> bytes:
    return _format.encode(b"i" * 16, counter, b"w" * 16, state)


class TestS3Conformance(BothLoops, NetworkBackendConformance):
    corrupt_values = (
        *NetworkBackendConformance.corrupt_values,
        b"plain text someone stored here",
        b"ARDZ" + b"\x01" + bytes(60),  # the file backend's magic: not an S3 object
        _object()[:-1],  # truncated
        _object() + b"!",  # trailing byte
        _object(counter=0),  # counter 0: no writer makes it
        _object().replace(b"ARS3\x01", b"ARS3\x02", 1),  # a format version to come
        bytes([_object()[0] ^ 1]) + _object()[1:],  # bad magic
        _object()[:-1] + b"f",  # one flipped bit in the state: only the checksum sees it
    )
    timeout = RACE_TIMEOUT
    # Calls that must fail within the timeout get this one: long enough for a store answering
    # on a busy machine (SeaweedFS's answers take milliseconds), short for the suite.
    failure_timeout = 2.0


    @pytest.fixture(autouse=True)
    def _server(self, server: SeaweedFSServer) -> None:
        self.server = server

    def server_address(self) -> tuple[str, int]:
        return self.server.host, self.server.port

    def backend_at(
        self, run_id: str, host: str, port: int, *, timeout: float
    ) -> AsyncRendezvousBackend:
        return backend_on(self.server, run_id, endpoint_url=f"http://{host}:{port}",
                          timeout=timeout)  # fmt: skip

    def server_url(self, run_id: str) -> str:
        return f"{self.server.url}&timeout={RACE_TIMEOUT:g}"

    @classmethod
    def start_server(cls) -> SeaweedFSServer:
        return new_server().start()

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        key = backend_on(self.server, run_id).key
        await with_raw_client(self.server, "put_object", Key=key, Body=raw)

    async def delete_state(self, run_id: str) -> None:
        key = backend_on(self.server, run_id).key
        await with_raw_client(self.server, "delete_object", Key=key)


class TestS3Lifecycle(BothLoops, RunLifecycleConformance):
    """Deleting, listing and expiring runs (by the store's clock, enforced by reads and
    listings), on asyncio and on trio; each test lists its own prefix."""

    timeout = RACE_TIMEOUT


    @pytest.fixture(autouse=True)
    def _server(self, server: SeaweedFSServer) -> None:
        self.server = server
        self.prefix = new_prefix()

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return backend_on(self.server, run_id, prefix=self.prefix)

    async def make_expiring_backend(
        self, run_id: str, expire_after: float
    ) -> AsyncRendezvousBackend:
        return backend_on(self.server, run_id, prefix=self.prefix, expire_after=expire_after)


# The state machine's TestCase is a unittest class: it cannot take fixtures as arguments, so its
# factory finds the module's server here, put there by a fixture the class uses.
_state_machine_servers: list[SeaweedFSServer] = []


@pytest.fixture
def state_machine_server(server: SeaweedFSServer) -> Iterator[None]:
    _state_machine_servers.append(server)
    yield
    _state_machine_servers.remove(server)


def _state_machine_backend(run_id: str) -> S3Backend:
    return backend_on(_state_machine_servers[-1], run_id, timeout=RACE_TIMEOUT)


_MACHINE_SETTINGS = hypothesis.settings(max_examples=10, stateful_step_count=20, deadline=None)
TestStateMachine = pytest.mark.usefixtures("state_machine_server")(
    backend_state_machine(_state_machine_backend).TestCase
)
TestStateMachine.settings = _MACHINE_SETTINGS
TestStateMachineOnTrio = pytest.mark.usefixtures("state_machine_server")(
    backend_state_machine(_state_machine_backend, anyio_backend="trio").TestCase
)
TestStateMachineOnTrio.settings = _MACHINE_SETTINGS


# -- the run lifecycle -----------------------------------------------------------------------------


async def raw_exists(client: Any, bucket: str, key: str) -> bool:
    try:
        await client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


async def test_a_long_run_id_is_listed_from_the_object_metadata(
    server: SeaweedFSServer, raw: Any
) -> None:
    prefix, run_id = new_prefix(), "long/é-" + "x" * 300
    backend = backend_on(server, run_id, prefix=prefix)
    name = backend.key.removeprefix(prefix + "/")
    assert is_hashed_name(name)
    _, token, _ = await backend.set_state(b"1234")
    await backend.set_state(b"123456", token)  # every write keeps the metadata
    head = await raw.head_object(Bucket=server.bucket, Key=backend.key)
    assert urllib.parse.unquote(head["Metadata"][_store.RUN_ID_METADATA]) == run_id
    runs = await backend.list_runs()
    assert [(info.run_id, info.size, info.members) for info in runs] == [(run_id, 6, None)]
    assert runs[0].age is not None
    assert 0 <= runs[0].age < RACE_TIMEOUT
    assert await backend.delete_run() is True
    assert await backend.list_runs() == []
    await backend.aclose()


async def test_short_run_ids_carry_no_metadata(server: SeaweedFSServer, raw: Any) -> None:
    backend = backend_on(server, new_run_id(), prefix=new_prefix())
    await backend.set_state(b"x")
    head = await raw.head_object(Bucket=server.bucket, Key=backend.key)
    assert head["Metadata"] == {}
    await backend.aclose()


async def test_foreign_objects_are_not_listed(server: SeaweedFSServer, raw: Any) -> None:
    prefix, run_id = new_prefix(), new_run_id()
    backend = backend_on(server, run_id, prefix=prefix)
    await backend.set_state(b"ours")
    other_hash = run_name("y" * 300)  # a hashed name whose object names another run
    foreign = {
        ".hidden": _object(),  # names run_name never makes
        "bad%zz": _object(),
        "upper%2f": _object(),
        "nested/" + run_name("deeper"): _object(),  # a deeper "folder"
        "tiny": b"x",  # shorter than the header
        run_name("z" * 300): _object(),  # hashed, no metadata
        other_hash: _object(),
    }
    for name, body in foreign.items():
        metadata = {_store.RUN_ID_METADATA: "x" * 300} if name == other_hash else {}
        await raw.put_object(Bucket=server.bucket, Key=f"{prefix}/{name}", Body=body,
                             Metadata=metadata)  # fmt: skip
    assert [info.run_id for info in await backend.list_runs()] == [run_id]
    for name in foreign:  # and listing deleted none of them
        assert await raw_exists(raw, server.bucket, f"{prefix}/{name}")
    await backend.aclose()


async def test_deleting_never_deletes_a_foreign_object(server: SeaweedFSServer, raw: Any) -> None:
    backend = backend_on(server, new_run_id(), prefix=new_prefix())
    await raw.put_object(Bucket=server.bucket, Key=backend.key, Body=b"not ours" * 20)
    with pytest.raises(RendezvousStateError, match="not an arendezvous S3 object"):
        await backend.delete_run()
    assert await raw_exists(raw, server.bucket, backend.key)
    await backend.aclose()


async def test_deleting_wakes_the_handles_of_this_process(server: SeaweedFSServer) -> None:
    backend = backend_on(server, new_run_id(), prefix=new_prefix())
    await backend.set_state(b"x")
    with LOCAL_CHANGES.watching(backend._change_key) as changed:
        assert await backend.delete_run() is True
        with anyio.fail_after(5):  # the wake-up is delivered through the loop: await it
            await changed.wait()
    assert await backend.delete_run() is False
    await backend.aclose()


async def test_a_conditional_deletion_spares_a_newer_version(
    server: SeaweedFSServer, raw: Any
) -> None:
    backend = backend_on(server, new_run_id(), prefix=new_prefix())
    _, old, _ = await backend.set_state(b"old")
    await backend.set_state(b"new", old)
    assert isinstance(old, S3Token)
    assert await _store.delete_object_if(raw, server.bucket, backend.key, if_match=old.etag) is (
        False
    )
    assert (await backend.get_state() or (b"",))[0] == b"new"
    await backend.aclose()


def test_ages_come_from_the_store_clock_only() -> None:
    """The age is the reply's Date less Last-Modified: a store whose clock is an hour behind
    this machine's gives the same age as one in step."""
    written = datetime.now(timezone.utc) - timedelta(hours=1)
    date = (written + timedelta(seconds=42)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    reply = {"ResponseMetadata": {"HTTPHeaders": {"date": date}}}
    age = _store.server_age(reply, written.replace(microsecond=0))
    assert age == 42.0
    assert _store.server_age({}, written) is None  # no Date: no age (and never expired)
    assert _store.server_age(reply, written.replace(tzinfo=None)) is None
    assert _store.server_age(reply, written + timedelta(hours=2)) == 0.0  # never negative


async def test_expired_runs_are_deleted_by_the_store_clock(
    server: SeaweedFSServer, raw: Any
) -> None:
    """A read deletes the expired object it found; a listing leaves out and deletes expired runs
    nobody reads, but never a foreign object, however old."""
    prefix, expire_after = new_prefix(), 1.0
    read = backend_on(server, new_run_id(), prefix=prefix, expire_after=expire_after)
    listed = backend_on(server, new_run_id(), prefix=prefix)  # writes, never expires itself
    lister = backend_on(server, new_run_id(), prefix=prefix, expire_after=expire_after)
    # Written before the run that is read, so that they are at least as idle when it expires.
    foreign_key = f"{prefix}/{run_name('foreign')}"
    await raw.put_object(Bucket=server.bucket, Key=foreign_key, Body=b"F" * 100)
    await listed.set_state(b"listed")
    await read.set_state(b"read")
    assert await read.get_state() is not None  # not yet expired
    # Time must pass on the store's clock: look a bounded number of times.
    for _ in range(40):
        await anyio.sleep(expire_after / 4)
        if await read.get_state() is None:
            break
    else:
        pytest.fail("a run idle for 10 s with expire_after=1 s is still read")
    assert not await raw_exists(raw, server.bucket, read.key)  # deleted, not merely hidden
    assert await listed.get_state() is not None  # a handle without expire_after keeps it
    assert [info.run_id for info in await lister.list_runs()] == []
    assert not await raw_exists(raw, server.bucket, listed.key)
    assert await raw_exists(raw, server.bucket, foreign_key)
    # A run written afresh after expiring is a new incarnation.
    _, token, written = await read.set_state(b"again")
    assert written
    assert isinstance(token, S3Token)
    assert token.counter == 1
    for backend in (read, listed, lister):
        await backend.aclose()


# -- what the store holds --------------------------------------------------------------------------


async def test_one_object_per_run_with_header_and_token(server: SeaweedFSServer, raw: Any) -> None:
    prefix, run_id = new_prefix(), new_run_id()
    backend = backend_on(server, run_id, prefix=prefix)
    assert backend.key == f"{prefix}/{run_id}"
    _, token, _ = await backend.set_state(b"hello")
    assert isinstance(token, S3Token)
    body, etag = await raw_get(raw, server.bucket, backend.key)
    stored = _format.decode(body)
    assert (stored.state, stored.counter) == (b"hello", 1)
    assert (stored.incarnation.hex(), etag) == (token.incarnation, token.etag)
    assert token.counter == 1
    head = await raw.head_object(Bucket=server.bucket, Key=backend.key)
    assert head["ContentType"] == "application/octet-stream"
    await backend.aclose()


async def test_run_ids_become_one_safe_object_name(server: SeaweedFSServer, raw: Any) -> None:
    """Run ids with '/', '.' or '..' never reach outside the prefix nor collide (a file-system
    backed store would merge 'a/../b' with 'b', or fail to hold both 'a' and 'a/b')."""
    prefix = new_prefix()
    run_ids = ["a", "a/b", "a/../b", "b", ".hidden", "..", "spaces and ünïcode"]
    handles = [backend_on(server, run_id, prefix=prefix) for run_id in run_ids]
    for index, handle in enumerate(handles):
        assert "/" not in handle.key.removeprefix(f"{prefix}/")
        assert not handle.key.removeprefix(f"{prefix}/").startswith(".")
        _, _, written = await handle.set_state(b"run %d" % index)
        assert written
    for index, handle in enumerate(handles):
        current = await handle.get_state()
        assert current is not None
        assert current[0] == b"run %d" % index
        await handle.aclose()
    listed = await raw.list_objects_v2(Bucket=server.bucket, Prefix=f"{prefix}/")
    names = {item["Key"] for item in listed["Contents"]}
    assert names == {handle.key for handle in handles} | {f"{prefix}/{_store.PROBE_NAME}"}


async def test_the_same_bytes_never_give_the_same_object(server: SeaweedFSServer) -> None:
    """ETags hash the content: the header makes every write's content, so its ETag, new."""
    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"same")
    etags = set()
    for _ in range(5):
        _, token, written = await backend.set_state(b"same", token)
        assert written
        assert isinstance(token, S3Token)
        etags.add(token.etag)
    assert len(etags) == 5
    await backend.aclose()


async def test_lookalike_tokens_are_stale(server: SeaweedFSServer) -> None:
    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"a")
    assert isinstance(token, S3Token)
    lookalikes: list[Any] = [
        (token.incarnation, token.counter, token.etag),
        token.etag,
        S3Token(token.incarnation.upper(), token.counter, token.etag),  # malformed fields
        S3Token(token.incarnation, True, token.etag),  # bool is not int
        S3Token(token.incarnation, 0, token.etag),
        S3Token(token.incarnation, 2**64, token.etag),
        S3Token(token.incarnation, token.counter, f'"{token.etag}"'),
        S3Token(token.incarnation, token.counter, token.etag + "\r\nX-Injected: 1"),
        S3Token(token.incarnation, token.counter, "0" * 32),  # another ETag
    ]
    for lookalike in lookalikes:
        assert await backend.set_state(b"b", lookalike) == (b"a", token, False), lookalike
        assert await backend.wait_for_change(lookalike, timeout=0) == (b"a", token)
    assert await backend.get_state() == (b"a", token)
    await backend.aclose()


async def test_tokens_are_equal_exactly_when_the_store_would_accept_them(
    server: SeaweedFSServer,
) -> None:
    """The ETag is what the store compares, so it is what makes tokens equal; equality and the
    outcome of a write agree even for a token built by hand."""
    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"a")
    assert isinstance(token, S3Token)
    assert token == S3Token(token.incarnation, token.counter, token.etag)
    built = S3Token(token.incarnation, token.counter + 5, token.etag)
    assert built == token
    assert hash(built) == hash(token)
    assert token != S3Token(token.incarnation, token.counter, "0" * 32)
    assert token != (token.incarnation, token.counter, token.etag)
    _, new_token, written = await backend.set_state(b"b", built)
    assert written
    assert new_token != token
    await backend.aclose()


async def test_a_token_field_of_a_str_subclass_is_never_compared(server: SeaweedFSServer) -> None:
    """The shared scenario gives a token a hostile class; here one of its fields has one."""

    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"a")
    assert isinstance(token, S3Token)
    sneaky = S3Token(token.incarnation, token.counter, HostileStr(token.etag))
    assert await backend.set_state(b"b", sneaky) == (b"a", token, False)
    assert await backend.wait_for_change(sneaky, timeout=0) == (b"a", token)
    assert token != sneaky
    await backend.aclose()


async def test_an_object_larger_than_the_limit_allows_is_refused(
    server: SeaweedFSServer, raw: Any
) -> None:
    writer = backend_on(server, new_run_id())
    _, token, _ = await writer.set_state(b"x" * 100)
    small = backend_on(server, writer.run_id, max_state_size=16)
    with pytest.raises(RendezvousStateError, match="max_state_size"):
        await small.get_state()
    for stale in (None, "invalid"):  # a refused or stale write re-reads, and refuses too
        with pytest.raises(RendezvousStateError, match="max_state_size"):
            await small.set_state(b"y", stale)
    assert await writer.get_state() == (b"x" * 100, token)
    await writer.aclose()
    await small.aclose()


# -- refusals and the condition probe --------------------------------------------------------------


async def test_a_refused_write_that_was_ours_counts_as_written(
    server: SeaweedFSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a request is resent after its reply was lost, the resend is refused because the first
    one applied; the re-read finds this call's writer id in the object and reports success."""
    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"a")
    real_put = _store.put_object_if

    async def applied_but_refused(*args: Any, **kwargs: Any) -> Any:
        await real_put(*args, **kwargs)
        return _store.Outcome.CONDITION_FAILED

    monkeypatch.setattr(_store, "put_object_if", applied_but_refused)
    state, new_token, written = await backend.set_state(b"b", token)
    assert (state, written) == (b"b", True)
    assert await backend.get_state() == (b"b", new_token)
    await backend.aclose()


async def test_a_refusal_whose_condition_still_holds_is_retried(
    server: SeaweedFSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS answers a conditional write that raced another with 409 even when that other write
    then fails: the re-read shows the caller's token still current, so the write is retried."""
    backend = backend_on(server, new_run_id())
    _, token, _ = await backend.set_state(b"a")
    real_put = _store.put_object_if
    conflicts = 2

    async def conflicting(*args: Any, **kwargs: Any) -> Any:
        nonlocal conflicts
        if conflicts:
            conflicts -= 1
            return _store.Outcome.CONFLICT
        return await real_put(*args, **kwargs)

    monkeypatch.setattr(_store, "put_object_if", conflicting)
    state, new_token, written = await backend.set_state(b"b", token)
    assert (state, written, conflicts) == (b"b", True, 0)

    async def always_conflicting(*args: Any, **kwargs: Any) -> Any:
        return _store.Outcome.CONFLICT

    monkeypatch.setattr(_store, "put_object_if", always_conflicting)
    with pytest.raises(RendezvousConnectionError, match="condition still held"):
        await backend.set_state(b"c", new_token)
    assert await backend.get_state() == (b"b", new_token)
    await backend.aclose()


async def test_conditional_writes_are_probed_once_per_store(
    server: SeaweedFSServer, raw: Any
) -> None:
    prefix = new_prefix()
    probe_key = f"{prefix}/{_store.PROBE_NAME}"
    first = backend_on(server, new_run_id(), prefix=prefix)
    assert await first.get_state() is None  # reads need no probe
    with pytest.raises(ClientError) as missing:
        await raw.head_object(Bucket=server.bucket, Key=probe_key)
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    await first.set_state(b"a")
    probe, etag = await raw_get(raw, server.bucket, probe_key)
    assert probe.startswith(b"arendezvous conditional-write probe ")
    second = backend_on(server, new_run_id(), prefix=prefix)
    await second.set_state(b"b")
    assert (await raw_get(raw, server.bucket, probe_key))[1] == etag  # not probed again
    await first.aclose()
    await second.aclose()


class ConditionDroppingProxy:
    """An HTTP proxy on 127.0.0.1 in front of the test store that makes it a store ignoring
    conditional writes: it removes the *drop* headers from every request and signs the request
    again (the headers are signed, and the store checks signatures), or, with *answer_501*,
    answers every conditional request ``501 Not Implemented`` as a store lacking them would.
    With *drop_for_absent* it drops ``If-Match`` only from writes of objects that do not exist
    (found by asking the store), as one S3-compatible server did.

    :ivar requests: how many requests it forwarded or answered.
    """

    def __init__(
        self,
        server: SeaweedFSServer,
        *,
        drop: tuple[str, ...] = (),
        answer_501: bool = False,
        drop_for_absent: bool = False,
    ) -> None:
        self.requests = 0
        dropped = {name.lower() for name in drop}
        # Removed before signing again: the old signature, and what botocore's signer adds.
        unsigned = {"authorization", "x-amz-date", "x-amz-content-sha256", "host", "expect"}
        credentials = Credentials(server.access_key, server.secret_key)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

            def forward(self) -> None:
                proxy.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conditional = any(name.lower().startswith("if-") for name in self.headers)
                if answer_501 and self.command == "PUT" and conditional:
                    self.answer(501, b"<Error><Code>NotImplemented</Code></Error>", [])
                    return
                drop_now = set(dropped)
                if drop_for_absent and self.command == "PUT" and self.exists() is False:
                    drop_now.add("if-match")
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in drop_now | unsigned
                }
                request = AWSRequest(
                    method=self.command,
                    url=f"{server.endpoint_url}{self.path}",
                    data=body,
                    headers=headers,
                )
                S3SigV4Auth(credentials, "s3", server.region).add_auth(request)
                upstream = http.client.HTTPConnection("127.0.0.1", server.s3_port, timeout=30)
                try:
                    upstream.request(
                        self.command, self.path, body=body, headers=dict(request.headers.items())
                    )
                    reply = upstream.getresponse()
                    data = reply.read()
                    self.answer(reply.status, data, reply.getheaders())
                finally:
                    upstream.close()

            def exists(self) -> bool:
                request = AWSRequest(method="HEAD", url=f"{server.endpoint_url}{self.path}")
                S3SigV4Auth(credentials, "s3", server.region).add_auth(request)
                upstream = http.client.HTTPConnection("127.0.0.1", server.s3_port, timeout=30)
                try:
                    upstream.request("HEAD", self.path, headers=dict(request.headers.items()))
                    reply = upstream.getresponse()
                    reply.read()
                    return reply.status == 200
                finally:
                    upstream.close()

            def answer(self, status: int, data: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = forward

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.endpoint_url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def make_proxy() -> Iterator[Any]:
    proxies: list[ConditionDroppingProxy] = []

    def make(server: SeaweedFSServer, **options: Any) -> ConditionDroppingProxy:
        proxies.append(ConditionDroppingProxy(server, **options))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


async def test_the_proxy_alone_keeps_writes_conditional(
    server: SeaweedFSServer, make_proxy: Any
) -> None:
    """The control for the refusals below: a proxy that drops nothing changes nothing."""
    proxy = make_proxy(server)
    backend = backend_on(server, new_run_id(), endpoint_url=proxy.endpoint_url)
    _, token, _ = await backend.set_state(b"a")
    _, new_token, written = await backend.set_state(b"b", token)
    assert written
    assert await backend.set_state(b"c", token) == (b"b", new_token, False)
    assert await backend.set_state(b"c") == (b"b", new_token, False)
    await backend.aclose()


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"drop": ("If-Match", "If-None-Match")}, "accepted a PutObject with If-None-Match"),
        ({"drop": ("If-None-Match",)}, "accepted a PutObject with If-None-Match"),
        ({"drop": ("If-Match",)}, "accepted a PutObject with If-Match"),
        ({"answer_501": True}, "does not implement If-None-Match"),
        ({"drop_for_absent": True}, "accepted a PutObject with If-Match on an object that does"),
    ],
    ids=["both dropped", "If-None-Match dropped", "If-Match dropped", "501", "absent objects"],
)
async def test_a_store_ignoring_conditional_writes_is_refused(
    server: SeaweedFSServer, raw: Any, make_proxy: Any, options: dict[str, Any], complaint: str
) -> None:
    proxy = make_proxy(server, **options)
    run_id = new_run_id()
    backend = backend_on(server, run_id, endpoint_url=proxy.endpoint_url)
    with pytest.raises(UnsafeStoreError) as caught:
        await backend.set_state(b"never written")
    message = str(caught.value)
    assert complaint in message
    assert proxy.endpoint_url in message
    assert "refuses to write" in message
    requests = proxy.requests
    with pytest.raises(UnsafeStoreError):  # refused again, without asking the store again
        await backend.set_state(b"never written")
    assert proxy.requests == requests
    direct = backend_on(server, run_id)
    assert await direct.get_state() is None  # only the probe object was ever written
    await direct.aclose()
    await backend.aclose()
    listed = await raw.list_objects_v2(Bucket=server.bucket, Prefix=f"{_store.PROBE_NAME}-absent")
    assert not listed.get("Contents")  # a wrongly created absent-probe object was deleted


# -- wait_for_change: polling ----------------------------------------------------------------------


def test_the_poll_schedule_doubles_up_to_the_cap_with_jitter() -> None:
    longest = PollSchedule(0.1, 1.0, uniform=lambda low, high: high)
    assert [round(longest.next_pause(), 6) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1, 1, 1]
    longest.restart()
    assert round(longest.next_pause(), 6) == 0.1
    shortest = PollSchedule(0.1, 1.0, uniform=lambda low, high: low)
    assert [round(shortest.next_pause(), 6) for _ in range(6)] == [
        0.075, 0.15, 0.3, 0.6, 0.75, 0.75,
    ]  # fmt: skip
    drawn = PollSchedule(0.2, 0.2)
    assert all(0.15 <= drawn.next_pause() <= 0.2 for _ in range(100))


class CountingSchedule(PollSchedule):
    def __init__(self) -> None:
        super().__init__(0.001, 0.002)
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1
        super().restart()


async def test_the_feed_restarts_after_local_writes_and_checks_after_an_outage() -> None:
    """The schedule restarts at its shortest pause when the feed opens and when a handle of this
    process writes (which also ends the pause at once), not on every poll; after a read that
    could not reach the store, a new feed first proves the store answers again, and fails to
    open while it does not."""
    client: Any = type("Client", (), {"unreachable": False})()
    checks: list[None] = []

    async def check() -> None:
        checks.append(None)
        if client.unreachable:
            raise RendezvousConnectionError("still unreachable")

    schedule = CountingSchedule()
    feed = PollingFeed(client, "topic", ("key",), schedule, check)
    await feed.open(frozenset({"topic"}))
    assert (checks, schedule.restarts) == ([], 1)
    with anyio.fail_after(5):
        assert await feed.next_hint(1) == "topic"  # a poll
        assert schedule.restarts == 1
        LOCAL_CHANGES.notify(("key",))  # a write in this process ends the pause at once
        assert await feed.next_hint(3600) == "topic"
        assert schedule.restarts == 2
    await feed.aclose()
    client.unreachable = True
    again = PollingFeed(client, "topic", ("key",), CountingSchedule(), check)
    with pytest.raises(RendezvousConnectionError):
        await again.open(frozenset({"topic"}))
    assert len(checks) == 1
    await again.aclose()


class Counted(ReadCounter, S3Backend):
    """An S3 backend that counts its reads, its change feed's too."""


def counted_on(server: SeaweedFSServer, run_id: str, **options: Any) -> Counted:
    return Counted(server.bucket, run_id, endpoint_url=server.endpoint_url,
                   region=server.region, profile=server.profile, **options)  # fmt: skip


async def test_polling_sees_a_write_from_outside_the_process(
    server: SeaweedFSServer, raw: Any
) -> None:
    """A write no handle of this process made (here: a raw PutObject) is seen by polling."""
    run_id = new_run_id()
    waiter = counted_on(server, run_id, poll_interval=0.05, max_poll_interval=0.2)
    _, token, _ = await waiter.set_state(b"a")
    assert isinstance(token, S3Token)
    body = _format.encode(bytes.fromhex(token.incarnation), token.counter + 1, b"w" * 16, b"b")
    async with waiting(waiter, token, within=5) as results:
        await waiter.reads_reached(3).wait()  # the first look, then polls
        assert not results
        reply = await raw.put_object(
            Bucket=server.bucket, Key=waiter.key, Body=body, IfMatch=f'"{token.etag}"'
        )
    etag = _store.normalize_etag(reply["ETag"])
    assert results == [(b"b", S3Token(token.incarnation, token.counter + 1, etag))]
    await waiter.aclose()


async def test_a_write_in_this_process_wakes_a_waiter_at_once(server: SeaweedFSServer) -> None:
    run_id = new_run_id()
    waiter = counted_on(server, run_id, poll_interval=60, max_poll_interval=60)
    writer = backend_on(server, run_id)
    _, token, _ = await writer.set_state(b"a")
    async with waiting(waiter, token, timeout=None, within=10) as results:  # a poll: a minute
        await waiter.reads_reached(1).wait()
        _, new_token, _ = await writer.set_state(b"b", token)
    assert results == [(b"b", new_token)]
    await waiter.aclose()
    await writer.aclose()


async def test_a_missing_bucket_is_named(server: SeaweedFSServer) -> None:
    bucket = "no-such-bucket-" + uuid.uuid4().hex[:8]
    backend = S3Backend(bucket, new_run_id(), endpoint_url=server.endpoint_url,
                        region=server.region, profile=server.profile)  # fmt: skip
    with pytest.raises(RendezvousConnectionError, match="bucket does not exist") as caught:
        await backend.get_state()
    assert bucket in str(caught.value)
    await backend.aclose()


# -- credentials -----------------------------------------------------------------------------------


def error_chain(error: BaseException) -> Iterator[BaseException]:
    current: BaseException | None = error
    while current is not None:
        yield current
        current = current.__cause__ or current.__context__


async def test_credentials_never_show(
    server: SeaweedFSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = backend_on(server, new_run_id())
    await good.set_state(b"authenticated")
    assert server.secret_key not in repr(good)
    assert server.access_key not in repr(good)
    await good.aclose()

    wrong_secret = "wrong-" + uuid.uuid4().hex
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[wrong]\naws_access_key_id = {server.access_key}\n"
        f"aws_secret_access_key = {wrong_secret}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    bad = S3Backend(
        server.bucket, new_run_id(), endpoint_url=server.endpoint_url, profile="wrong"
    )
    for call in (bad.get_state, lambda: bad.set_state(b"x")):
        with pytest.raises(RendezvousConnectionError, match="refused the request") as caught:
            await call()
        for error in error_chain(caught.value):
            for secret in (wrong_secret, server.secret_key, server.access_key):
                assert secret not in str(error)
                assert secret not in repr(error)
    assert wrong_secret not in repr(bad)
    await bad.aclose()


async def test_missing_credentials_are_a_clear_error(server: SeaweedFSServer) -> None:
    backend = S3Backend(server.bucket, new_run_id(), endpoint_url=server.endpoint_url)
    with pytest.raises(RendezvousConnectionError, match=r"(?i)unable to locate credentials"):
        await backend.get_state()
    await backend.aclose()


async def test_an_unknown_profile_is_a_clear_error(server: SeaweedFSServer) -> None:
    backend = S3Backend(server.bucket, new_run_id(), endpoint_url=server.endpoint_url,
                        profile="no-such-profile")  # fmt: skip
    with pytest.raises(RendezvousConnectionError, match="no-such-profile"):
        await backend.get_state()
    await backend.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIDSECRETKEY:hunter2@bucket",
        "s3://bucket?aws_secret_access_key=hunter2",
        "s3://bucket?aws_access_key_id=hunter2",
        "s3://bucket?endpoint_url=http://ak:hunter2@127.0.0.1:1",
        "s3://bucket?endpoint_url=http://ak:hunter2@[::1",
        "s3://bucket?endpoint_url=http://?:hunter2@127.0.0.1",  # urllib sees a query there
    ],
)
def test_credentials_in_urls_are_refused_unshown(url: str) -> None:
    with pytest.raises(ValueError, match="credentials") as caught:
        open_backend(url, run_id="r")
    assert "hunter2" not in str(caught.value)


# -- clients and bad input -----------------------------------------------------------------------


def test_the_client_is_imported_lazily() -> None:
    code = (
        "import sys\n"
        "import arendezvous, arendezvous.backends.s3 as s3\n"
        "assert 'aiobotocore' not in sys.modules, 'import arendezvous imported aiobotocore'\n"
        "assert 'botocore' not in sys.modules, 'import arendezvous imported botocore'\n"
        "sys.modules['aiobotocore'] = None\n"
        "try:\n"
        "    s3.S3Backend('bucket', 'run')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "pip install 'arendezvous[s3]'" in output


@pytest.mark.parametrize(
    ("arguments", "options", "error", "match"),
    [
        (("bucket", 42), {}, TypeError, "run_id must be str"),
        (("bucket", ""), {}, ValueError, "empty"),
        ((b"bucket", "r"), {}, TypeError, "bucket"),
        (("", "r"), {}, ValueError, "bucket"),
        (("a/b", "r"), {}, ValueError, "bucket"),
        (("bucket", "r"), {"prefix": "/a"}, ValueError, "prefix"),
        (("bucket", "r"), {"prefix": "a//b"}, ValueError, "prefix"),
        (("bucket", "r"), {"prefix": "a/../b"}, ValueError, "prefix"),
        (("bucket", "r"), {"prefix": "a\nb"}, ValueError, "control"),
        (("bucket", "r"), {"prefix": "x" * 513}, ValueError, "512"),
        (("bucket", "r"), {"prefix": 7}, TypeError, "prefix"),
        (("bucket", "r"), {"endpoint_url": "ftp://host"}, ValueError, "http"),
        (("bucket", "r"), {"endpoint_url": "http://host?x=1"}, ValueError, "query"),
        (("bucket", "r"), {"endpoint_url": "http://host:99999"}, ValueError, "malformed"),
        (("bucket", "r"), {"endpoint_url": "http://u:p@host"}, ValueError, "credentials"),
        (("bucket", "r"), {"region": "us east"}, ValueError, "region"),
        (("bucket", "r"), {"region": 1}, TypeError, "region"),
        (("bucket", "r"), {"profile": ""}, ValueError, "profile"),
        (("bucket", "r"), {"addressing_style": "sideways"}, ValueError, "addressing_style"),
        (("bucket", "r"), {"timeout": 0}, ValueError, "timeout"),
        (("bucket", "r"), {"timeout": float("nan")}, ValueError, "timeout"),
        (("bucket", "r"), {"timeout": "5"}, TypeError, "timeout"),
        (("bucket", "r"), {"poll_interval": -1}, ValueError, "poll_interval"),
        (("bucket", "r"), {"poll_interval": 2, "max_poll_interval": 1}, ValueError, "less"),
        (("bucket", "r"), {"max_state_size": 0}, ValueError, "max_state_size"),
        (("bucket", "r"), {"max_state_size": MAX_STATE_SIZE_LIMIT + 1}, ValueError, "PutObject"),
        (("bucket", "r"), {"max_state_size": True}, TypeError, "max_state_size"),
        (("bucket", "r"), {"expire_after": 0}, ValueError, "expire_after"),
        (("bucket", "r"), {"expire_after": float("inf")}, ValueError, "expire_after"),
        (("bucket", "r"), {"expire_after": "60"}, TypeError, "expire_after"),
    ],
    ids=repr,
)
def test_bad_arguments(
    arguments: tuple[Any, ...], options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        S3Backend(*arguments, **options)
    assert "u:p" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "s3://bucket",
            "S3Backend('s3://bucket/', run_id='r', endpoint='AWS S3 (default region)')",
        ),
        (
            "S3://bucket/a/b/?region=eu-west-1",
            "S3Backend('s3://bucket/a/b', run_id='r', endpoint='AWS S3 (eu-west-1)')",
        ),
        (
            "s3://bucket/p?endpoint_url=http://127.0.0.1:9000&timeout=1.5",
            "S3Backend('s3://bucket/p', run_id='r', endpoint='http://127.0.0.1:9000')",
        ),
    ],
)
def test_good_urls(url: str, shown: str) -> None:
    backend = open_backend(url, run_id="r")
    assert isinstance(backend, S3Backend)
    assert repr(backend) == shown


def test_url_options_reach_the_backend() -> None:
    backend = from_url(
        "s3://bkt/team%20a/jobs?endpoint_url=https://s3.example.org:8443&region=r1&profile=ci"
        "&addressing_style=virtual&timeout=2.5&poll_interval=0.5&max_poll_interval=4"
        "&max_state_size=10&expire_after=90",
        run_id="job/1",
    )
    assert backend.expire_after == 90.0
    assert from_url("s3://b", run_id="r").expire_after is None
    assert (backend.bucket, backend.key) == ("bkt", "team a/jobs/job%2F1")
    assert backend.endpoint_url == "https://s3.example.org:8443"
    assert backend.timeout == 2.5
    settings = backend._settings
    assert (settings.region, settings.profile, settings.addressing_style) == ("r1", "ci", "virtual")
    assert (backend.poll_interval, backend.max_poll_interval) == (0.5, 4.0)
    assert backend.max_state_size == 10
    assert from_url("s3://b?endpoint_url=http://h:1", run_id="r")._settings.addressing_style == (
        "path"
    )
    assert from_url("s3://b", run_id="r")._settings.addressing_style is None


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("s3://", "names its bucket"),
        ("s3:///prefix", "names its bucket"),
        ("s3://bucket#frag", "fragment"),
        ("s3://bucket?colour=red", "unknown option 'colour'"),
        ("s3://bucket?timeout=-1", "timeout"),
        ("s3://bucket?timeout=1&timeout=2", "twice"),
        ("s3://bucket?max_state_size=big", "max_state_size"),
        ("s3://bucket?expire_after=0", "expire_after"),
        ("s3://bucket?endpoint_url=localhost:9000", "http"),
        ("s3://bucket?addressing_style=up", "addressing_style"),
        ("s3://bucket//a", "prefix"),
        ("s3://bu/cket/../x", "prefix"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        open_backend(url, run_id="r")


def test_object_format_round_trip_and_checks() -> None:
    body = _format.encode(b"i" * 16, 7, b"w" * 16, b"state")
    assert len(body) == _format.HEADER_SIZE + 5
    assert _format.decode(body) == _format.StoredState(b"i" * 16, 7, b"w" * 16, b"state")
    for index in range(len(body)):  # every single flipped byte is caught
        damaged = bytearray(body)
        damaged[index] ^= 0x40
        with pytest.raises(RendezvousStateError):
            _format.decode(bytes(damaged))
    # the writer id makes two racing writes of one state distinct
    assert hashlib.md5(body).digest() != hashlib.md5(
        _format.encode(b"i" * 16, 7, b"v" * 16, b"state")
    ).digest()


