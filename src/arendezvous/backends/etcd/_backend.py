"""``EtcdBackend``: the handle, on the network base (see the package docstring)."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Hashable, Sequence
from typing import Any

from ..._backend import DEFAULT_MAX_STATE_SIZE, RunInfo, Token, same_token
from ..._errors import ErrorTable, RendezvousConnectionError
from .._feed import ChangeFeed
from .._network import DEFAULT_TIMEOUT, NetworkBackend
from .._urlparse import TlsOptions, merge_alias, read_tls_file
from ._cluster import Cluster, parse_endpoints, shown_endpoint
from ._feed import Seen, WatchFeed
from ._members import EtcdMemberTable
from ._protocol import (
    MAX_KEY_SIZE,
    MAX_STATE_SIZE_LIMIT,
    EtcdToken,
    client_modules,
    decode,
    encode,
    error_table,
    is_member_record,
    prefix_range,
    sendable,
    state_size,
)

__all__ = ("DEFAULT_ENDPOINT", "DEFAULT_KEY_PREFIX", "EtcdBackend")

DEFAULT_ENDPOINT = "localhost:2379"
"""Where etcd listens for clients unless told otherwise (etcd's own default)."""

DEFAULT_KEY_PREFIX = "/arendezvous/"
"""Prefix of every run's key; the run id follows it."""

_MAX_LEASE_TTL = 9_000_000_000
"""etcd's largest lease TTL in seconds (``MaxLeaseTTL``): it refuses to grant a longer one."""

_LIST_PAGE = 1024
"""Keys ``list_runs`` asks for per ``Range`` (halved while an answer is over the size limit)."""


def _lease_ttl(expire_after: float) -> int:
    """The TTL, in whole seconds, to grant a run's lease: *expire_after* and a quarter of it
    more (at least a second more). Writes refresh the lease only once that margin has passed
    since this handle last did, so a heartbeat mostly costs its own transaction alone, and a run
    never lapses before *expire_after* has passed since its last write."""
    return math.ceil(expire_after + max(1.0, expire_after / 4))


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
    :param expire_after: seconds after which a run nobody writes to disappears (``None``, the
        default: never). Every key the run's writes put is attached to one lease per run,
        whose TTL is *expire_after* plus a quarter (at least a second more), rounded up to whole
        seconds; writes of the state and of member records keep it alive (a keep-alive before
        the write, at most once per that margin per handle, so a run lapses between
        *expire_after* and the TTL after its last write, plus etcd's own check, every half
        second). Open handles do not keep it alive: only writes do. When the lease lapses,
        etcd deletes every key attached to it in one step. Give every handle of a run the same
        value: a write without one detaches the key it writes from the lease.

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
        expire_after: float | None = None,
    ) -> None:
        super().__init__(
            run_id, timeout=timeout, max_state_size=max_state_size, expire_after=expire_after
        )
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be str, not {type(key_prefix).__name__}")
        self._prefix = key_prefix.encode("utf-8", "surrogatepass")
        self._key = self._prefix + run_id.encode("utf-8", "surrogatepass")
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
        # The run's lease: its id is a hash of the run's key, so every handle of the run, on
        # any machine, attaches its writes to the same lease with no key to agree on it.
        self._lease = 0
        self._lease_wanted = 0
        if self._expire_after is not None:
            self._lease_wanted = _lease_ttl(self._expire_after)
            if self._lease_wanted > _MAX_LEASE_TTL:
                raise ValueError(f"expire_after must be at most {_MAX_LEASE_TTL * 4 // 5} s "
                                 "(etcd's longest lease)")  # fmt: skip
            digest = hashlib.sha256(b"arendezvous run lease\0" + self._key).digest()
            self._lease = int.from_bytes(digest[:8], "big") >> 1 or 1  # positive, never 0
        # When this handle last kept the lease alive (its monotonic clock, taken before the
        # request went out) and the TTL etcd then reported.
        self._lease_kept: float | None = None
        self._lease_ttl = 0

    @property
    def key(self) -> bytes:
        """The etcd key holding the run's state."""
        return self._key

    @property
    def lease(self) -> int:
        """The id of the etcd lease the run's keys are attached to (0: runs never expire)."""
        return self._lease

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
        header = response.header
        kv = response.kvs[0] if response.kvs else None
        feed = self._live_feed(client)
        if feed is not None:
            # What the stream says from now on is never older than this read.
            feed.learn(self._key, Seen(header.revision, 0) if kv is None else
                       Seen(header.revision, kv.mod_revision, kv.value, header.cluster_id))
        return None if kv is None else self._decode_kv(kv, header.cluster_id)

    async def _read_noticed(self, client: Cluster) -> tuple[bytes, Token] | None:
        """After a watch event: the state the live stream last delivered (the event carries the
        value), or the newest a read saw if that is newer; a read if the stream knows nothing."""
        feed = self._live_feed(client)
        seen = None if feed is None else feed.seen(self._key)
        if seen is None or (seen.mod_revision and seen.value is None):
            return await self._read(client)
        if not seen.mod_revision:
            return None
        assert seen.value is not None
        return decode(seen.value, self._key), EtcdToken(seen.cluster_id, self._key,
                                                        seen.mod_revision)

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
        put = rpc.PutRequest(key=self._key, value=encode(state), lease=self._lease)
        request = rpc.TxnRequest(
            compare=[compare],
            success=[rpc.RequestOp(request_put=put)],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=self._key))],
        )
        response, ambiguous = await self._write(client, "set_state", request)
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

    # -- the run's lease: expiry ----------------------------------------------------------------

    async def _write(self, cluster: Cluster, operation: str, request: Any) -> tuple[Any, bool]:
        """A transaction that writes the run (its state or member records), keeping the run's
        lease alive first when the handle has an ``expire_after``.

        The keys it puts carry the lease. Should the lease have lapsed between the keep-alive
        and the transaction (etcd then refuses the whole transaction: nothing was written), it
        is granted again and the transaction sent once more.
        """
        if not self._lease:
            return await self._call(cluster, operation, "Txn", request, idempotent=False)
        await self._keep_lease(cluster, operation)
        try:
            return await self._call(cluster, operation, "Txn", request, idempotent=False)
        except RendezvousConnectionError as exc:
            if not self._lease_missing(exc.__cause__):
                raise
        self._lease_kept = None
        await self._keep_lease(cluster, operation)
        return await self._call(cluster, operation, "Txn", request, idempotent=False)

    def _lease_missing(self, exc: BaseException | None) -> bool:
        grpc = self._grpc
        return (
            isinstance(exc, grpc.aio.AioRpcError)
            and exc.code() == grpc.StatusCode.NOT_FOUND
            and "lease not found" in (exc.details() or "")
        )

    async def _keep_lease(self, cluster: Cluster, operation: str) -> None:
        """Keep the run's lease alive, or grant it if etcd does not know it (never granted, or
        lapsed), unless this handle did so less than the TTL's margin over ``expire_after``
        ago: the lease then outlives ``expire_after`` from now anyway."""
        assert self._expire_after is not None
        started = time.monotonic()
        kept = self._lease_kept
        if kept is not None and started - kept < self._lease_ttl - self._expire_after:
            return
        rpc = self._rpc
        for _ in range(3):
            response, _ = await cluster.call(
                "LeaseKeepAlive", rpc.LeaseKeepAliveRequest(ID=self._lease), idempotent=True,
                operation=operation, service="lease",
            )  # fmt: skip
            if response.TTL > 0:
                self._lease_kept, self._lease_ttl = started, response.TTL
                return
            # etcd does not know the lease (a TTL of 0): grant it. Another handle may do the
            # same at once; then this grant finds it exists, and the keep-alive runs again.
            request = rpc.LeaseGrantRequest(ID=self._lease, TTL=self._lease_wanted)
            try:
                granted, _ = await cluster.call(
                    "LeaseGrant", request, idempotent=True, operation=operation,
                    service="lease",
                )  # fmt: skip
            except RendezvousConnectionError as exc:
                if not self._lease_exists(exc.__cause__):
                    raise
                continue
            self._lease_kept, self._lease_ttl = started, granted.TTL
            return
        raise RendezvousConnectionError(
            f"{self._what(operation)}: the run's lease {self._lease} kept lapsing while it was "
            "granted again"
        )

    def _lease_exists(self, exc: BaseException | None) -> bool:
        grpc = self._grpc
        return (
            isinstance(exc, grpc.aio.AioRpcError)
            and exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            and "lease already exists" in (exc.details() or "")
        )

    # -- the run lifecycle ---------------------------------------------------------------------

    async def delete_run(self) -> bool:
        """Delete the run's key and every key named after it (its member records and their group
        index: ``<key>\\0...``) with one ``DeleteRange`` from the run's key up to ``<key>\\x01``,
        which etcd applies at one revision: a reader sees all of them or none.

        Revisions never repeat, so no token or member version of the deleted run matches the run
        created again. Waiters see the deletion as the state gone (the watch reports it) and
        wait on for a new state. The run's lease, if it has one, is left to lapse by itself:
        revoking it could delete a run created again meanwhile. Returns whether anything was
        deleted.

        :raises BackendClosedError: the handle was closed.
        :raises RendezvousConnectionError: etcd cannot be reached; the deletion may or may not
            have happened.
        """
        deleted: bool = await self._on_client(self._delete_run)
        return deleted

    async def _delete_run(self, cluster: Cluster) -> bool:
        # Every key of the run starts with its key and then, if anything, NUL; another run's key
        # goes on with a character of its id, never NUL (run ids contain none), so it is past
        # <key>\x01 or before <key>.
        request = self._rpc.DeleteRangeRequest(key=self._key, range_end=self._key + b"\x01")
        response, ambiguous = await self._call(
            cluster, "delete_run", "DeleteRange", request, idempotent=False
        )
        if response.deleted == 0 and ambiguous:
            raise self._ambiguous("delete_run", "nothing to delete")
        return bool(response.deleted)

    async def list_runs(self) -> list[RunInfo]:
        """The runs under this handle's key prefix: ``Range`` requests over the prefix, at one
        revision, :data:`_LIST_PAGE` keys each, reading every key of the namespace (the states'
        values included: etcd cannot tell a value's size without sending it) -- O(runs + member
        records) keys and their bytes, in pages of bounded count.

        ``age`` is ``None``: etcd keeps no time a client could read (a lease counts down, but
        says nothing of a key's last write). ``size`` is ``None`` for a run with member records
        but no state. Keys under the prefix that are not this backend's (a value without its
        header, a name it never makes) are skipped.

        :raises BackendClosedError: the handle was closed.
        :raises RendezvousConnectionError: etcd cannot be reached.
        """
        runs: list[RunInfo] = await self._on_client(self._list_runs)
        return runs

    async def _list_runs(self, cluster: Cluster) -> list[RunInfo]:
        start, end = prefix_range(self._prefix)
        limit, revision = _LIST_PAGE, 0
        found: dict[bytes, list[Any]] = {}  # run id (encoded) -> [state size, member records]
        while True:
            request = self._rpc.RangeRequest(
                key=start, range_end=end, limit=limit, revision=revision
            )
            try:
                response, _ = await self._call(
                    cluster, "list_runs", "Range", request, idempotent=True
                )
            except RendezvousConnectionError as exc:
                if limit > 1 and self._too_large(exc.__cause__):
                    limit //= 2  # a page of large states: fewer keys per page
                    continue
                raise
            # Every page at the first one's revision: one consistent picture of the namespace.
            revision = revision or response.header.revision
            for kv in response.kvs:
                self._note(found, kv.key, kv.value)
            if not response.more or not response.kvs:
                break
            start = response.kvs[-1].key + b"\0"
        runs = []
        for run, (size, members) in found.items():
            try:
                run_id = run.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                continue  # no run id encodes to these bytes: not ours
            if size is not None or members:
                runs.append(RunInfo(run_id, size, None, members))
        return runs

    def _note(self, found: dict[bytes, list[Any]], key: bytes, value: bytes) -> None:
        """Count *key* into the run it belongs to, if it is one of this backend's keys."""
        run, nul, rest = key[len(self._prefix):].partition(b"\0")
        if not run:
            return
        if not nul:
            size = state_size(value)
            if size is not None:
                found.setdefault(run, [None, 0])[0] = size
        elif rest.startswith(b"m/") and is_member_record(value):
            found.setdefault(run, [None, 0])[1] += 1

    def _too_large(self, exc: BaseException | None) -> bool:
        grpc = self._grpc
        return (
            isinstance(exc, grpc.aio.AioRpcError)
            and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        )
