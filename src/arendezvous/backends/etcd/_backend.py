"""``EtcdBackend``: the handle, on the network base (see the package docstring)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from ..._backend import DEFAULT_MAX_STATE_SIZE, Token, same_token
from ..._errors import ErrorTable, RendezvousConnectionError
from .._feed import ChangeFeed
from .._network import DEFAULT_TIMEOUT, NetworkBackend
from .._urlparse import TlsOptions, merge_alias, read_tls_file
from ._cluster import Cluster, parse_endpoints, shown_endpoint
from ._feed import WatchFeed
from ._members import EtcdMemberTable
from ._protocol import (
    MAX_KEY_SIZE,
    MAX_STATE_SIZE_LIMIT,
    EtcdToken,
    client_modules,
    decode,
    encode,
    error_table,
    sendable,
)

__all__ = ("DEFAULT_ENDPOINT", "DEFAULT_KEY_PREFIX", "EtcdBackend")

DEFAULT_ENDPOINT = "localhost:2379"
"""Where etcd listens for clients unless told otherwise (etcd's own default)."""

DEFAULT_KEY_PREFIX = "/arendezvous/"
"""Prefix of every run's key; the run id follows it."""


class EtcdBackend(NetworkBackend):
    """A handle on one run's state in etcd (v3 API, etcd >= 3.4).

    :param run_id: the run; its key is ``key_prefix + run_id`` (UTF-8, at most 16 KiB).
    :param endpoints: ``"host:port"``, several joined by commas or as a sequence: the members of
        one cluster. Each member gets a connection of its own; a call goes to the member that
        last answered, and to the others in turn when it does not answer in its share of the
        timeout (a frozen member never stops the handle while the others serve).
    :param key_prefix: prefix of every run's key.
    :param timeout: seconds each call may take, including waiting for a connection; past it the
        call raises :class:`RendezvousConnectionError`. A refused connection fails at once.
        ``wait_for_change`` rides out an outage of up to this long (its own *timeout* bounds the
        whole wait).
    :param username: etcd user (with *password*): the handle authenticates on first use and
        again when etcd reports its auth token expired.
    :param password: never shown in reprs or error messages.
    :param tls: use TLS; implied by the files; ``True`` alone uses the system's CA roots.
    :param tls_ca_file: PEM file of the CA that signed the members' certificates (older name
        ``ca_cert``).
    :param tls_cert_file: PEM client certificate chain (``cert_cert``), with *tls_key_file*.
    :param tls_key_file: its private key (``cert_key``).
    :param tls_verify: ``full`` only: gRPC always checks the certificate and the name.
    :param max_state_size: largest accepted state in bytes, at most :data:`MAX_STATE_SIZE_LIMIT`
        (what etcd's 1.5 MiB request limit leaves for the state).

    Runs on asyncio and trio (there on arendezvous's asyncio loop thread). Safe to share between
    tasks; all its waiters share one watch stream. Cancelling ``set_state`` leaves the
    transaction applied entirely or not at all and the connection usable; the handle reconnects
    by itself after the server comes back.
    """

    NAME = "etcd"
    MAX_STATE_SIZE_LIMIT = MAX_STATE_SIZE_LIMIT
    MAX_STATE_SIZE_REASON = "etcd refuses requests over 1.5 MiB (--max-request-bytes)"

    def __init__(
        self,
        run_id: str,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINT,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        tls: bool | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_verify: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        cert_key: str | None = None,
        cert_cert: str | None = None,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
    ) -> None:
        super().__init__(run_id, timeout=timeout, max_state_size=max_state_size)
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be str, not {type(key_prefix).__name__}")
        self._key = (key_prefix + run_id).encode("utf-8", "surrogatepass")
        if len(self._key) > MAX_KEY_SIZE:
            raise ValueError(
                f"key_prefix + run_id is {len(self._key)} bytes; etcd's request limit leaves "
                f"room for keys of at most {MAX_KEY_SIZE}"
            )
        self._endpoints = parse_endpoints(endpoints)
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self._username = username
        self._password = password
        tls_options = TlsOptions.build(
            tls=tls,
            tls_ca_file=merge_alias("tls_ca_file", tls_ca_file, "ca_cert", ca_cert),
            tls_cert_file=merge_alias("tls_cert_file", tls_cert_file, "cert_cert", cert_cert),
            tls_key_file=merge_alias("tls_key_file", tls_key_file, "cert_key", cert_key),
            tls_verify=tls_verify,
        )
        if (tls_options.key_file is None) != (tls_options.cert_file is None):
            raise ValueError("give both tls_key_file and tls_cert_file (cert_key and cert_cert), "
                             "or neither")  # fmt: skip
        if tls_options.verify != "full":
            raise ValueError("etcd's client (gRPC) always verifies the server: tls_verify=full")
        self._tls = tls_options.enabled
        self._ca_cert = read_tls_file("tls_ca_file", tls_options.ca_file)
        self._cert_key = read_tls_file("tls_key_file", tls_options.key_file)
        self._cert_cert = read_tls_file("tls_cert_file", tls_options.cert_file)
        self._grpc, self._rpc = client_modules()
        self._errors = error_table(self._grpc)
        self._cluster_id: int | None = None
        self._where = "etcd://" + ",".join(self.endpoints)
        self._feed: WatchFeed | None = None
        self._members: EtcdMemberTable | None = None

    @property
    def key(self) -> bytes:
        """The etcd key holding the run's state."""
        return self._key

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints this handle connects to, as ``host:port``."""
        return tuple(shown_endpoint(host, port) for host, port in self._endpoints)

    def __repr__(self) -> str:
        return (
            f"EtcdBackend(run_id={self._run_id!r}, endpoints={','.join(self.endpoints)!r}, "
            f"key={self._key!r})"
        )

    # -- the client ----------------------------------------------------------------------------

    def _open_client(self) -> Cluster:
        credentials = None
        if self._tls:
            credentials = self._grpc.ssl_channel_credentials(
                root_certificates=self._ca_cert,
                private_key=self._cert_key,
                certificate_chain=self._cert_cert,
            )
        return Cluster(
            self._grpc,
            self._rpc,
            self._endpoints,
            credentials=credentials,
            timeout=self._timeout,
            max_message=max(4 << 20, 2 * self._max_state_size + 65536),
            username=self._username,
            password=self._password,
            errors=self._errors,
            what=self._what,
        )

    def _error_table(self) -> ErrorTable:
        return self._errors

    async def _close_client(self, client: Cluster) -> None:
        await client.aclose()

    def _make_feed(self, client: Cluster) -> ChangeFeed:
        # The hub runs one feed at a time per client; the member table asks the newest one what
        # its stream saw.
        feed = self._feed = WatchFeed(client, operation="wait_for_change")
        return feed

    def _live_feed(self, client: Cluster) -> WatchFeed | None:
        """The watch feed of *client* while its stream is confirmed and unbroken, else ``None``."""
        feed = self._feed
        return feed if feed is not None and feed.cluster is client and feed.live else None

    def member_table(self) -> EtcdMemberTable:
        """The run's member table: one record key and one group-index key per node beside the
        run's key, written by one transaction per call, on this handle's connections and watch
        stream; it closes with the handle (see :class:`EtcdMemberTable`)."""
        if self._members is None:
            self._members = EtcdMemberTable(self)
        return self._members

    def _topic(self) -> Hashable:
        return self._key

    # -- reads and writes ----------------------------------------------------------------------

    async def _call(self, cluster: Cluster, operation: str, method: str, request: Any,
                    *, idempotent: bool) -> tuple[Any, bool]:  # fmt: skip
        response, ambiguous = await cluster.call(
            method, request, idempotent=idempotent, operation=operation
        )
        self._cluster_id = response.header.cluster_id
        return response, ambiguous

    def _ambiguous(self, operation: str, subject: str) -> RendezvousConnectionError:
        """The error of a write that lost its compare after an unanswered attempt: that attempt
        may have been applied since, so the lost race may be to that very write."""
        return RendezvousConnectionError(
            f"{self._what(operation)}: a member did not answer and the write, retried on "
            f"another, found {subject} changed: it may or may not have been applied"
        )

    def _decode_kv(self, kv: Any, cluster_id: int) -> tuple[bytes, EtcdToken]:
        return decode(kv.value, self._key), EtcdToken(cluster_id, self._key, kv.mod_revision)

    async def _read(self, client: Cluster) -> tuple[bytes, Token] | None:
        request = self._rpc.RangeRequest(key=self._key)
        response, _ = await self._call(client, "get_state", "Range", request, idempotent=True)
        if not response.kvs:
            return None
        return self._decode_kv(response.kvs[0], response.header.cluster_id)

    async def _swap(
        self, client: Cluster, state: bytes, token: Token | None
    ) -> tuple[bytes, Token, bool]:
        rpc = self._rpc
        if token is None:
            compare = rpc.Compare(
                key=self._key,
                target=rpc.Compare.CREATE,
                result=rpc.Compare.EQUAL,
                create_revision=0,
            )
        else:
            if sendable(token) and token.key == self._key and self._cluster_id is None:
                # First call of this handle: learn which cluster answers before trusting a
                # revision number from the caller.
                current = await self._read(client)
                if current is None:
                    return b"", None, False
                if not same_token(current[1], token):
                    return current[0], current[1], False
            if not (
                sendable(token)
                and token.key == self._key
                and token.cluster_id == self._cluster_id
            ):
                # Not a token of this run in this cluster: merely stale; report what is there.
                current = await self._read(client)
                return (b"", None, False) if current is None else (*current, False)
            compare = rpc.Compare(
                key=self._key,
                target=rpc.Compare.MOD,
                result=rpc.Compare.EQUAL,
                mod_revision=token.mod_revision,
            )
        request = rpc.TxnRequest(
            compare=[compare],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=self._key, value=encode(state)))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=self._key))],
        )
        response, ambiguous = await self._call(
            client, "set_state", "Txn", request, idempotent=False
        )
        cluster_id = response.header.cluster_id
        if response.succeeded:
            # The put is the transaction's only write, so the key's new mod_revision is the
            # revision the transaction created.
            return state, EtcdToken(cluster_id, self._key, response.header.revision), True
        if ambiguous:
            raise self._ambiguous("set_state", "the state")
        kvs = response.responses[0].response_range.kvs
        if not kvs:
            return b"", None, False
        return (*self._decode_kv(kvs[0], cluster_id), False)
