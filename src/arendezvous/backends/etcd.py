"""The etcd v3 backend: one key per run, compare-and-swap by etcd transaction, waits by watch.

Each run's state lives under ``<key_prefix><run_id>`` (``/arendezvous/<run_id>`` by default).

* ``set_state(state, None)`` is one transaction: *if* the key's ``create_revision == 0`` (it does
  not exist) *then* put *else* range-read it. ``set_state(state, token)`` is the same with
  ``mod_revision == token``. A losing writer gets the current value from the failure branch of
  the same transaction, so a lost race costs no second round trip.
* The token is the key's ``mod_revision`` -- cluster-wide, strictly increasing, never reused by a
  key even after it is deleted and created again -- wrapped in :class:`EtcdToken` with the cluster
  id and the key, so a token of another run, another cluster or a bare ``int`` never matches.
* ``wait_for_change`` reads the key, then watches it from the read's revision + 1: every change
  after the read is replayed by the watch, so none slips between the two. Every watch event,
  cancellation or broken stream is only a hint to re-read and compare tokens.
* The stored value is ``b"ARDE" | format u8 | CRC-32 u32 | state``; a value without that header
  or with a bad checksum (written by someone else) raises :class:`RendezvousStateError` and is
  never overwritten.

The client is aetcd's generated etcd v3 gRPC API (``aetcd.rpc``) over a ``grpc.aio`` channel that
this module opens itself: ``aetcd.Client`` has no TLS, no per-call deadline covering the wait for
a connection, and one shared watch stream; the stubs underneath have all three. The extra
``arendezvous[etcd]`` installs both (aetcd needs ``protobuf>=5.27.2``). grpc.aio runs only on
asyncio: under trio every call raises a ``RuntimeError`` saying so.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import math
import urllib.parse
import zlib
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeGuard

import anyio
import anyio.lowlevel

from .._backend import (
    DEFAULT_MAX_STATE_SIZE,
    AsyncRendezvousBackend,
    RunHandle,
    Token,
    check_run_id,
    check_state,
    check_timeout,
)
from .._compat import import_optional, require_asyncio
from .._errors import (
    BackendClosedError,
    RendezvousConnectionError,
    RendezvousStateError,
    map_exceptions,
)

__all__ = (
    "DEFAULT_ENDPOINT",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_TIMEOUT",
    "EtcdBackend",
    "EtcdToken",
    "from_url",
)

DEFAULT_ENDPOINT = "localhost:2379"
"""Where etcd listens for clients unless told otherwise (etcd's own default)."""

DEFAULT_KEY_PREFIX = "/arendezvous/"
"""Prefix of every run's key; the run id follows it."""

DEFAULT_TIMEOUT = 5.0
"""Seconds one call may take, waiting for a connection included, before it raises."""

_MAGIC = b"ARDE"
_FORMAT_VERSION = 1
_HEADER = _MAGIC + bytes([_FORMAT_VERSION])
_HEADER_SIZE = len(_HEADER) + 4
_HEADER_CRC = zlib.crc32(_HEADER)

# gRPC reconnects after 1 s, then backs off up to 2 min by default: far too slow to notice that a
# restarted etcd is back. Keepalive pings find a silently dead connection under a quiet watch;
# etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
_RECONNECT_BACKOFF_MS = 100
_MAX_RECONNECT_BACKOFF_MS = 1000
_KEEPALIVE_MS = 10_000


def _encode(state: bytes) -> bytes:
    checksum = zlib.crc32(state, _HEADER_CRC)
    return b"".join((_HEADER, checksum.to_bytes(4, "big"), state))


def _decode(value: bytes, key: bytes) -> bytes:
    if len(value) < _HEADER_SIZE or value[: len(_MAGIC)] != _MAGIC:
        raise RendezvousStateError(
            f"etcd key {key!r} holds {len(value)} bytes that are not arendezvous state"
        )
    if value[len(_MAGIC)] != _FORMAT_VERSION:
        raise RendezvousStateError(
            f"etcd key {key!r} holds state of unknown format version {value[len(_MAGIC)]}"
        )
    state = value[_HEADER_SIZE:]
    if zlib.crc32(state, _HEADER_CRC) != int.from_bytes(value[len(_HEADER) : _HEADER_SIZE], "big"):
        raise RendezvousStateError(f"etcd key {key!r}: state checksum mismatch (corrupt value)")
    return state


@dataclass(frozen=True, slots=True)
class EtcdToken:
    """An etcd backend's token: the run key's ``mod_revision`` in one cluster.

    Equal only to an :class:`EtcdToken` with the same cluster, key and revision. A revision is
    never reused by a key, so tokens never repeat within a run even across deletion and
    re-creation (as long as the cluster's data is not wiped or restored from an older backup).
    """

    cluster_id: int
    key: bytes
    mod_revision: int

    def __repr__(self) -> str:
        return f"<EtcdToken revision {self.mod_revision} of {self.key!r}>"


def _well_formed(token: object) -> TypeGuard[EtcdToken]:
    """An EtcdToken whose fields have the types and ranges etcd's have: only such a token is
    compared or sent; any other is merely stale."""
    return (
        type(token) is EtcdToken
        and type(token.cluster_id) is int
        and type(token.key) is bytes
        and type(token.mod_revision) is int
        and 0 < token.mod_revision < 2**63
    )


def _parse_endpoint(text: str) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` -> ``(host, port)``; the port defaults to 2379."""
    item = text.strip()
    if not item:
        raise ValueError("empty etcd endpoint")
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed etcd endpoint {item!r}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"malformed IPv6 address in etcd endpoint {item!r}") from None
    else:
        if item.count(":") > 1:
            raise ValueError(f"etcd endpoint {item!r}: put IPv6 addresses in brackets, [::1]:2379")
        host, _, port_text = item.partition(":")
        if not host or any(c.isspace() or c in "/@?#[]" for c in host):
            raise ValueError(f"malformed host in etcd endpoint {item!r}")
    if not port_text:
        return host, 2379
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in etcd endpoint {item!r}")
    return host, int(port_text)


def _ip_version(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def _grpc_target(endpoints: Sequence[tuple[str, int]]) -> str:
    """The gRPC target naming every endpoint; gRPC's pick_first fails over between them."""
    if len(endpoints) == 1:
        host, port = endpoints[0]
        return f"ipv6:[{host}]:{port}" if _ip_version(host) == 6 else f"{host}:{port}"
    versions = {_ip_version(host) for host, _ in endpoints}
    if versions == {4}:
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in endpoints)
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in endpoints)
    raise ValueError(
        "several etcd endpoints must all be IPv4 or all IPv6 addresses; for host names give one "
        "name that resolves to every member (gRPC tries each address it resolves to)"
    )


def _client_modules() -> tuple[Any, Any]:
    """``(grpc, aetcd.rpc)``, imported on first use so that ``import arendezvous`` never does."""
    import_optional("aetcd", "etcd")
    grpc = import_optional("grpc", "etcd")
    try:
        rpc = importlib.import_module("aetcd.rpc")
    except ImportError:
        raise
    except Exception as exc:  # protobuf's VersionError: gencode newer than the runtime
        raise ImportError(
            f"aetcd cannot load its protocol buffers ({exc}); it needs protobuf>=5.27.2: "
            "pip install 'arendezvous[etcd]'"
        ) from exc
    return grpc, rpc


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


async def _cancellable(operation: Awaitable[Any], *, settle_on_cancel: bool = False) -> Any:
    """Await a grpc.aio operation so that cancelling the caller cancels it exactly once.

    grpc.aio turns a task's cancellation into its own (it cancels the RPC, then raises a fresh
    ``CancelledError``). anyio's cancel scopes re-deliver a cancellation until the task leaves the
    scope, and the two together leave a stray cancellation pending that escapes ``move_on_after``
    (measured: about one in ten calls cancelled mid-flight). So the operation runs as a task of
    its own: the caller is cancelled at a plain future inside ``asyncio.wait`` and then cancels
    the operation explicitly.

    With *settle_on_cancel* (writes) a cancelled caller first waits, shielded, for the operation's
    outcome (bounded by its gRPC deadline): a request already on the wire would otherwise be
    applied by etcd *after* the cancelled call returned, and a reader could see the write of a
    call its writer believes abandoned.
    """
    task = asyncio.ensure_future(operation)
    try:
        await asyncio.wait((task,))
    except BaseException:
        if settle_on_cancel:
            with anyio.CancelScope(shield=True):
                try:
                    await asyncio.wait((task,))
                except BaseException:  # cancelled by asyncio itself, past anyio's shield
                    task.cancel()
        else:
            task.cancel()
        task.add_done_callback(_retrieve)
        raise
    if task.cancelled():
        # grpc.aio cancelled the call itself (the channel was closed): an error, not our
        # caller's cancellation, which must not leak out as a stray CancelledError.
        raise RendezvousConnectionError("the etcd call was cancelled: its channel was closed")
    return task.result()


def _read_file(option: str, path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"cannot read {option} file {path!r}: {exc.strerror}") from None


class _Connection:
    """One gRPC channel and its stubs, bound to the event loop it was opened in."""

    __slots__ = ("auth", "auth_lock", "channel", "kv", "loop", "metadata", "watch")

    def __init__(self, loop: asyncio.AbstractEventLoop, channel: Any, rpc: Any) -> None:
        self.loop = loop
        self.channel = channel
        self.kv = rpc.KVStub(channel)
        self.watch = rpc.WatchStub(channel)
        self.auth = rpc.AuthStub(channel)
        self.auth_lock = asyncio.Lock()
        self.metadata: tuple[tuple[str, str], ...] | None = None


class EtcdBackend(RunHandle, AsyncRendezvousBackend):
    """A handle on one run's state in etcd (v3 API, etcd >= 3.4).

    :param run_id: the run; its key is ``key_prefix + run_id`` (UTF-8).
    :param endpoints: ``"host:port"``, several joined by commas or as a sequence (all IPv4 or all
        IPv6 addresses; gRPC connects to the first that answers and fails over to the others).
    :param key_prefix: prefix of every run's key.
    :param timeout: seconds each call may take, including waiting for a connection; past it the
        call raises :class:`RendezvousConnectionError`. ``wait_for_change`` rides out an outage
        of up to this long (its own *timeout* bounds the whole wait).
    :param username: etcd user (with *password*): the handle authenticates on first use and
        again when etcd reports its auth token expired.
    :param password: never shown in reprs or error messages.
    :param ca_cert: PEM file of the CA that signed the server's certificate (enables TLS).
    :param cert_key: PEM private key for client-certificate authentication (with *cert_cert*).
    :param cert_cert: PEM client certificate chain (with *cert_key*).
    :param tls: use TLS; implied by any of the certificate files; ``True`` alone uses the
        system's CA roots.
    :param max_state_size: largest accepted state in bytes. etcd refuses requests over
        ``--max-request-bytes`` (1.5 MiB by default), hence the 1 MiB default.

    Safe to share between tasks of one event loop (asyncio only). Cancelling ``set_state``
    leaves the transaction applied entirely or not at all and the channel usable; the handle
    reconnects by itself after the server comes back.
    """

    def __init__(
        self,
        run_id: str,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINT,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        username: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        cert_key: str | None = None,
        cert_cert: str | None = None,
        tls: bool | None = None,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
    ) -> None:
        self._run_id = check_run_id(run_id)
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be str, not {type(key_prefix).__name__}")
        self._key = (key_prefix + run_id).encode("utf-8", "surrogatepass")
        items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
        if not items:
            raise ValueError("no etcd endpoint given")
        self._endpoints = tuple(_parse_endpoint(item) for item in items)
        self._target = _grpc_target(self._endpoints)
        if not timeout > 0 or math.isinf(timeout):
            raise ValueError("timeout must be a positive number of seconds")
        self._timeout = float(timeout)
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self._username = username
        self._password = password
        if (cert_key is None) != (cert_cert is None):
            raise ValueError("give both cert_key and cert_cert (client certificate), or neither")
        has_files = ca_cert is not None or cert_key is not None
        if tls is False and has_files:
            raise ValueError("certificate files given with tls=false")
        self._tls = bool(tls) or has_files
        self._ca_cert = _read_file("ca_cert", ca_cert)
        self._cert_key = _read_file("cert_key", cert_key)
        self._cert_cert = _read_file("cert_cert", cert_cert)
        if not isinstance(max_state_size, int) or max_state_size < 0:
            raise ValueError("max_state_size must be a non-negative int")
        self._max_state_size = max_state_size
        self._grpc, self._rpc = _client_modules()
        self._connection: _Connection | None = None
        self._cluster_id: int | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return "etcd"

    @property
    def key(self) -> bytes:
        """The etcd key holding the run's state."""
        return self._key

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints this handle connects to, as ``host:port``."""
        return tuple(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self._endpoints)

    def __repr__(self) -> str:
        return (
            f"EtcdBackend(run_id={self._run_id!r}, endpoints={','.join(self.endpoints)!r}, "
            f"key={self._key!r})"
        )

    # -- connection ------------------------------------------------------------------------------

    def _connect(self) -> _Connection:
        """The channel for the running event loop, opened on first use (no I/O happens here).

        A channel belongs to the loop that opened it; a handle used from a new loop (a second
        ``asyncio.run``) opens a new one rather than fail deep inside gRPC.
        """
        loop = asyncio.get_running_loop()
        connection = self._connection
        if connection is not None and connection.loop is loop:
            return connection
        grpc = self._grpc
        options = [
            # gRPC shares connections between channels with the same target and options, and
            # with them their reconnect backoff: a channel opened to replace a broken one would
            # wait out the old one's backoff. Each channel gets connections of its own.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS),
            ("grpc.min_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS),
            ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
            ("grpc.keepalive_time_ms", _KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", max(1000, int(self._timeout * 1000))),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", max(4 << 20, 2 * self._max_state_size + 65536)),
        ]
        if self._tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self._ca_cert,
                private_key=self._cert_key,
                certificate_chain=self._cert_cert,
            )
            channel = grpc.aio.secure_channel(self._target, credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(self._target, options=options)
        connection = _Connection(loop, channel, self._rpc)
        self._connection = connection
        return connection

    def _what(self, action: str) -> str:
        return f"etcd {action} of {self._key!r} at {','.join(self.endpoints)}"

    def _remaining(self, deadline: float) -> float:
        return max(deadline - asyncio.get_running_loop().time(), 0.001)

    async def _metadata(self, connection: _Connection, deadline: float) -> Any:
        """The auth token metadata for calls, authenticating first if needed."""
        if self._username is None:
            return None
        if connection.metadata is None:
            async with connection.auth_lock:
                if connection.metadata is None:
                    request = self._rpc.AuthenticateRequest(
                        name=self._username, password=self._password
                    )
                    with self._map_errors("authentication"):
                        response = await _cancellable(
                            connection.auth.Authenticate(
                                request, timeout=self._remaining(deadline), wait_for_ready=True
                            )
                        )
                    connection.metadata = (("token", response.token),)
        return connection.metadata

    def _is_expired_token(self, exc: BaseException | None) -> bool:
        grpc = self._grpc
        return (
            self._username is not None
            and isinstance(exc, grpc.aio.AioRpcError)
            and exc.code() == grpc.StatusCode.UNAUTHENTICATED
            and "auth token" in (exc.details() or "")
        )

    @contextmanager
    def _map_errors(self, action: str) -> Iterator[None]:
        """gRPC failures become :class:`RendezvousConnectionError` with a one-line message."""
        grpc = self._grpc
        what = self._what(action)
        with map_exceptions(connection=(grpc.RpcError, OSError), what=what):
            try:
                yield
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    detail = f"no answer within {self._timeout:g} s (DEADLINE_EXCEEDED)"
                else:
                    detail = f"{code.name}: {exc.details()}"
                raise RendezvousConnectionError(f"{what}: {detail}") from exc

    async def _unary(self, action: str, method: str, request: Any, *, idempotent: bool) -> Any:
        """Call ``KV.<method>`` with one deadline for the whole call, auth included.

        ``wait_for_ready`` makes the call wait for a connection (bounded by the deadline) rather
        than fail while gRPC reconnects. An *idempotent* call that loses its connection midway
        is sent again within the same deadline; a write is not, as it may have been applied.
        """
        self._check_open()
        require_asyncio("etcd", "aetcd (grpc.aio)")
        connection = self._connect()
        loop = connection.loop
        deadline = loop.time() + self._timeout
        token_refreshed = False
        try:
            while True:
                metadata = await self._metadata(connection, deadline)
                try:
                    with self._map_errors(action):
                        if not idempotent:
                            # A call cancelled before it starts sends nothing at all.
                            await anyio.lowlevel.checkpoint_if_cancelled()
                        response = await _cancellable(
                            getattr(connection.kv, method)(
                                request,
                                timeout=self._remaining(deadline),
                                metadata=metadata,
                                wait_for_ready=True,
                            ),
                            settle_on_cancel=not idempotent,
                        )
                except RendezvousConnectionError as exc:
                    if not token_refreshed and self._is_expired_token(exc.__cause__):
                        # etcd refused the request without applying it: safe to send again.
                        token_refreshed = True
                        if connection.metadata is metadata:
                            connection.metadata = None
                        continue
                    if (
                        idempotent
                        and self._is_unavailable(exc.__cause__)
                        and loop.time() < deadline
                        and not self._closed
                    ):
                        continue  # the connection broke midway: wait for it again, bounded
                    raise
                self._cluster_id = response.header.cluster_id
                return response
        except RendezvousConnectionError as exc:
            if self._closed:
                raise BackendClosedError("this EtcdBackend was closed during the call") from exc
            self._forget_if_disconnected(connection)
            raise

    def _forget_if_disconnected(self, connection: _Connection) -> None:
        """After a connection failure, let the next call open a fresh channel.

        gRPC waits up to a second between attempts to reconnect a channel; a new channel connects
        at once, so a call made right after etcd comes back succeeds. Calls still running on the
        old channel keep it alive; gRPC closes it when the last of them lets go.
        """
        if (
            self._connection is connection
            and connection.channel.get_state() != self._grpc.ChannelConnectivity.READY
        ):
            self._connection = None

    def _is_unavailable(self, exc: BaseException | None) -> bool:
        grpc = self._grpc
        return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE

    def _decode_kv(self, kv: Any, cluster_id: int) -> tuple[bytes, EtcdToken]:
        return _decode(kv.value, self._key), EtcdToken(cluster_id, self._key, kv.mod_revision)

    async def _read(self) -> tuple[tuple[bytes, EtcdToken] | None, int]:
        """``(current state and token or None, the store revision the read saw)``."""
        response = await self._unary(
            "read", "Range", self._rpc.RangeRequest(key=self._key), idempotent=True
        )
        revision: int = response.header.revision
        if not response.kvs:
            return None, revision
        return self._decode_kv(response.kvs[0], response.header.cluster_id), revision

    def _is_current(self, token: Token | None, current: EtcdToken) -> bool:
        # A caller's token is untrusted: compare only once it is ours, so no foreign __eq__ runs.
        return _well_formed(token) and token == current

    # -- the contract ----------------------------------------------------------------------------

    async def get_state(self) -> tuple[bytes, Token] | None:
        self._check_open()
        current, _ = await self._read()
        return current

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self._check_open()
        state = check_state(state, self._max_state_size)
        rpc = self._rpc
        if token is None:
            compare = rpc.Compare(
                key=self._key,
                target=rpc.Compare.CREATE,
                result=rpc.Compare.EQUAL,
                create_revision=0,
            )
        else:
            if _well_formed(token) and token.key == self._key and self._cluster_id is None:
                # First call of this handle: learn which cluster answers before trusting a
                # revision number from the caller.
                current, _ = await self._read()
                if current is None:
                    return b"", None, False
                if token != current[1]:
                    return current[0], current[1], False
            if (
                not _well_formed(token)
                or token.key != self._key
                or token.cluster_id != self._cluster_id
            ):
                # Not a token of this run in this cluster: merely stale; report what is there.
                current, _ = await self._read()
                if current is None:
                    return b"", None, False
                return current[0], current[1], False
            compare = rpc.Compare(
                key=self._key,
                target=rpc.Compare.MOD,
                result=rpc.Compare.EQUAL,
                mod_revision=token.mod_revision,
            )
        request = rpc.TxnRequest(
            compare=[compare],
            success=[
                rpc.RequestOp(request_put=rpc.PutRequest(key=self._key, value=_encode(state)))
            ],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=self._key))],
        )
        response = await self._unary("compare-and-swap", "Txn", request, idempotent=False)
        cluster_id = response.header.cluster_id
        if response.succeeded:
            # The put is the transaction's only write, so the key's new mod_revision is the
            # revision the transaction created.
            return state, EtcdToken(cluster_id, self._key, response.header.revision), True
        kvs = response.responses[0].response_range.kvs
        if not kvs:
            return b"", None, False
        current_state, current_token = self._decode_kv(kvs[0], cluster_id)
        return current_state, current_token, False

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self._check_open()
        check_timeout(timeout)
        # The first read is bounded by the backend's timeout, not the wait's: timeout=0 still
        # reports a change that already happened.
        current, revision = await self._read()
        if current is not None and not self._is_current(token, current[1]):
            return current
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                await self._watch_from(revision + 1)
                # Only a hint: a broken stream or a replayed event is checked by reading. After
                # an outage this read waits up to the backend's timeout for etcd to come back.
                current, revision = await self._read()
                if current is not None and not self._is_current(token, current[1]):
                    return current
        return None

    async def _watch_from(self, start_revision: int) -> None:
        """Return once etcd reports any event on the key at or after *start_revision*.

        Also returns when the stream breaks or etcd cancels the watch (compaction): the caller
        re-reads either way. ``wait_for_ready=False`` makes a watch on an unreachable server fail
        at once instead of hanging; the caller's read then waits for the connection, bounded.
        """
        grpc, rpc = self._grpc, self._rpc
        connection = self._connect()
        metadata = await self._metadata(connection, connection.loop.time() + self._timeout)
        call = connection.watch.Watch(metadata=metadata, wait_for_ready=False)
        try:
            create = rpc.WatchCreateRequest(key=self._key, start_revision=start_revision)
            await _cancellable(call.write(rpc.WatchRequest(create_request=create)))
            while True:
                response = await _cancellable(call.read())
                if response is grpc.aio.EOF or response.events:
                    return
                if response.canceled:
                    reason = response.cancel_reason or ""
                    if response.compact_revision or "auth token" in reason:
                        if "auth token" in reason:
                            connection.metadata = None
                        return
                    raise RendezvousConnectionError(
                        f"{self._what('watch')}: etcd cancelled the watch: "
                        f"{reason or 'no reason given'}"
                    )
        except (grpc.RpcError, OSError, RendezvousConnectionError) as exc:
            if self._closed:
                raise BackendClosedError("this EtcdBackend was closed during the call") from exc
            if isinstance(exc, RendezvousConnectionError):
                raise
            if self._is_expired_token(exc):
                connection.metadata = None
                return
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                # Connection lost: the caller's read reconnects or reports the outage.
                self._forget_if_disconnected(connection)
                return
            with self._map_errors("watch"):
                raise
        finally:
            call.cancel()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # under trio: the channel's loop is not running here
            return
        if connection.loop is running:
            with anyio.CancelScope(shield=True):
                await connection.channel.close()


def from_url(url: str, *, run_id: str) -> EtcdBackend:
    """Open ``etcd://[user:password@]host:port[,host:port...][?option=value&...]``.

    The host list may be empty (``etcd://`` means ``localhost:2379``); the port defaults to 2379;
    IPv6 addresses go in brackets. User name and password are percent-decoded. Options:

    * ``timeout`` -- seconds per call, waiting for a connection included (default 5);
    * ``key_prefix`` -- prefix of the run's key (default ``/arendezvous/``);
    * ``ca_cert``, ``cert_key``, ``cert_cert`` -- PEM files: CA, client key, client certificate;
    * ``tls`` -- ``true`` to use TLS with the system's CA roots (implied by the files above);
    * ``max_state_size`` -- bytes (default 1 MiB; etcd's request limit is 1.5 MiB).

    :raises ValueError: malformed URL, unknown or bad option (the message never repeats the
        password).
    :raises ImportError: the ``etcd`` extra is not installed.
    """
    from ._url import parse_bool, parse_options, parse_seconds

    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() != "etcd":
        raise ValueError(f"not an etcd:// URL (scheme {parsed.scheme!r})")
    if parsed.path not in ("", "/"):
        raise ValueError("etcd:// URLs take no path; choose the keys' prefix with ?key_prefix=")
    if parsed.fragment:
        raise ValueError("etcd:// URLs take no #fragment")
    userinfo, at, hosts = parsed.netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text or not colon:
            raise ValueError("etcd:// URL credentials must be user:password@")
        username = urllib.parse.unquote(user_text)
        password = urllib.parse.unquote(password_text)
    options = parse_options(
        parsed,
        {
            "timeout": parse_seconds,
            "key_prefix": str,
            "ca_cert": str,
            "cert_key": str,
            "cert_cert": str,
            "tls": parse_bool,
            "max_state_size": int,
        },
    )
    return EtcdBackend(
        run_id, hosts or DEFAULT_ENDPOINT, username=username, password=password, **options
    )
