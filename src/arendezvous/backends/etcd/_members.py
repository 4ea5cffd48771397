"""``EtcdMemberTable``: the etcd backend's member table (see :mod:`arendezvous._members`).

Layout, next to the run's state key ``S`` (run ids, node ids and group names contain no NUL, so
no key of one run, node or group is a prefix of another's):

* ``S \\0 m/ <node>`` -- the node's **record**: group, value and seq, checksummed
  (:func:`~._protocol.encode_member`). Its ``mod_revision`` is the record's version.
* ``S \\0 g/ <group> \\0 <node>`` -- the node's **group-index key**, empty: the group's records are
  the keys under ``S \\0 g/ <group> \\0``, which etcd counts (``count_only``) without sending them.

Every operation is one round trip -- one ``Range`` or one ``Txn`` -- failing over between members
like the handle's other calls (a handle's first write with a version reads once more, to learn
which cluster answers, as ``set_state`` does):

* ``put``: *if* the record's ``mod_revision`` and value are the version's (``create_revision ==
  0`` for ``None``) *then* count the group's index keys and the node's new index key, put the
  record, delete the old group's index key (the version carries the old record, so no read is
  needed), put the new one; *else* range the record. The counts come before the writes, so the
  size is exact whether or not a range in a transaction sees the transaction's own writes (etcd
  3.4 and 3.5 do; etcd's development branch updates its index only when the transaction ends),
  and the transaction is atomic, so racing joiners each see a different size.
* ``touch``: the same compare, then put the record again, its seq now explicit: a put stores
  "my seq is my ``mod_revision``" (the put's own revision, known only once etcd commits it), and
  a touch moves the ``mod_revision``.
* ``delete``: the same compare, then delete the record and its index key.
* ``get`` and ``count``: one ``Range`` (``count`` with ``count_only``); ``members``: one read-only
  transaction ranging the group's index keys and the run's records, joined here.

There is no store clock a client could read (etcd's leases count down but do not tell a key's
age), so ``has_clock`` is false and :meth:`EtcdMemberTable.wait_for_change` pushes every write of a
record to whoever watches it, through the handle's one watch stream: the event itself says the
record moved, so a heartbeat reaches its watcher without a read.

With an ``expire_after``, the keys a write puts carry the run's lease, and every write keeps it
alive as the handle's own writes do (see :class:`~arendezvous.backends.etcd.EtcdBackend`): a
heartbeat keeps the whole run alive.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from ..._backend import Token, check_timeout, same_token
from ..._errors import RendezvousConnectionError, RendezvousStateError
from ..._members import (
    Member,
    MemberPut,
    MemberTable,
    check_group,
    check_member_value,
    check_node,
)
from ._feed import Seen
from ._protocol import (
    MAX_KEY_SIZE,
    SEQ_IS_MOD_REVISION,
    EtcdMemberVersion,
    MemberRecord,
    decode_member,
    encode_member,
    prefix_range,
    sendable_version,
)

if TYPE_CHECKING:
    from ._backend import EtcdBackend
    from ._cluster import Cluster

__all__ = ("EtcdMemberTable",)


class EtcdMemberTable(MemberTable):
    """The member table of an :class:`~arendezvous.backends.etcd.EtcdBackend` handle (its
    ``member_table()``); see the module docstring for the layout and what each call costs.

    It shares the handle's connections and watch stream and closes with it. Versions are
    :class:`~arendezvous.backends.etcd.EtcdMemberVersion`: etcd revisions, which never repeat
    unless the cluster's data is wiped or restored from an older backup. No clock:
    :meth:`wait_for_change` pushes every write of a record instead.
    """

    has_clock = False

    def __init__(self, backend: EtcdBackend) -> None:
        self._backend = backend
        self._rpc = backend._rpc
        self._records = backend.key + b"\x00m/"
        self._groups = backend.key + b"\x00g/"

    def __repr__(self) -> str:
        return f"EtcdMemberTable(run_id={self._backend.run_id!r}, key={self._backend.key!r})"

    # -- keys ------------------------------------------------------------------------------------

    @staticmethod
    def _sized(key: bytes, what: str) -> bytes:
        if len(key) > MAX_KEY_SIZE:
            raise ValueError(
                f"{what} would be a key of {len(key)} bytes; etcd's request limit leaves room "
                f"for keys of at most {MAX_KEY_SIZE} (shorten key_prefix, run id, node or group)"
            )
        return key

    def _record_key(self, node: str) -> bytes:
        return self._sized(self._records + check_node(node).encode(), "the node's record")

    def _group_prefix(self, group: str) -> bytes:
        return self._sized(self._groups + check_group(group).encode() + b"\x00", "the group")

    def _index_key(self, group: str, node: str) -> bytes:
        return self._sized(self._group_prefix(group) + node.encode(), "the node's group index")

    # -- what a call costs: one Range or one Txn -------------------------------------------------

    async def _call(
        self, cluster: Cluster, operation: str, method: str, request: Any, *, idempotent: bool
    ) -> tuple[Any, bool]:
        return await self._backend._call(
            cluster, f"member {operation}", method, request, idempotent=idempotent
        )

    async def _write(self, cluster: Cluster, operation: str, request: Any) -> tuple[Any, bool]:
        """A writing transaction, keeping the run's lease alive like the handle's own writes:
        a heartbeat keeps the whole run alive."""
        return await self._backend._write(cluster, f"member {operation}", request)

    def _member(self, node: str, kv: Any, cluster_id: int) -> Member:
        raw = bytes(kv.value)
        record = decode_member(raw, kv.key)
        version = EtcdMemberVersion(cluster_id, kv.key, kv.mod_revision, raw)
        return Member(node, record.group, record.value, version,
                      record.seq or kv.mod_revision, None)

    async def _get(self, cluster: Cluster, node: str, key: bytes, operation: str) -> Member | None:
        request = self._rpc.RangeRequest(key=key)
        response, _ = await self._call(cluster, operation, "Range", request, idempotent=True)
        if not response.kvs:
            return None
        return self._member(node, response.kvs[0], response.header.cluster_id)

    async def _vet(
        self, cluster: Cluster, key: bytes, version: object, operation: str
    ) -> tuple[EtcdMemberVersion, MemberRecord] | None:
        """*version* and the record it names if it can be the record's current version in this
        cluster; ``None`` if it cannot (it is then merely stale: nothing is compared or sent)."""
        if not sendable_version(version, key):
            return None
        try:
            record = decode_member(version.record, key)
        except RendezvousStateError:
            return None  # no record we wrote looks like that: made up, never current
        if self._backend._cluster_id is None:
            # The handle's first call: learn which cluster answers before trusting a revision
            # number from the caller (another cluster may have used it for this very key).
            request = self._rpc.RangeRequest(key=key)
            response, _ = await self._call(cluster, operation, "Range", request, idempotent=True)
            kv = response.kvs[0] if response.kvs else None
            if kv is None or not same_token(
                EtcdMemberVersion(response.header.cluster_id, key, kv.mod_revision,
                                  bytes(kv.value)),
                version,
            ):
                return None
        elif version.cluster_id != self._backend._cluster_id:
            return None
        return version, record

    def _is_current(self, version: EtcdMemberVersion) -> list[Any]:
        """The compares that hold while the record is at *version*: its ``mod_revision``, and its
        value, so that a version made up with a right revision cannot rewrite a record."""
        rpc = self._rpc
        return [
            rpc.Compare(key=version.key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                        mod_revision=version.mod_revision),
            rpc.Compare(key=version.key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL,
                        value=version.record),
        ]

    def _ambiguous(self, operation: str) -> RendezvousConnectionError:
        return self._backend._ambiguous(f"member {operation}", "the record")

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, node: str) -> Member | None:
        key = self._record_key(node)
        return await self._backend._on_client(self._get, node, key, "get")

    async def count(self, group: str) -> int:
        prefix = self._group_prefix(group)
        return await self._backend._on_client(self._count, prefix)

    async def _count(self, cluster: Cluster, prefix: bytes) -> int:
        request = self._rpc.RangeRequest(key=prefix, range_end=prefix_range(prefix)[1],
                                         count_only=True)
        response, _ = await self._call(cluster, "count", "Range", request, idempotent=True)
        return int(response.count)

    async def members(self, group: str) -> list[Member]:
        prefix = self._group_prefix(group)
        return await self._backend._on_client(self._members, group, prefix)

    async def _members(self, cluster: Cluster, group: str, prefix: bytes) -> list[Member]:
        rpc = self._rpc
        request = rpc.TxnRequest(success=[
            rpc.RequestOp(request_range=rpc.RangeRequest(
                key=prefix, range_end=prefix_range(prefix)[1], keys_only=True)),
            rpc.RequestOp(request_range=rpc.RangeRequest(
                key=self._records, range_end=prefix_range(self._records)[1])),
        ])  # fmt: skip
        # Read-only: etcd answers it like a Range, both ranges at one revision.
        response, _ = await self._call(cluster, "members", "Txn", request, idempotent=True)
        indexed, records = (op.response_range.kvs for op in response.responses)
        by_key = {kv.key: kv for kv in records}
        cluster_id = response.header.cluster_id
        found: list[Member] = []
        for index in indexed:
            name = index.key[len(prefix):]
            kv = by_key.get(self._records + name)
            try:
                node = name.decode()
            except UnicodeDecodeError:
                kv = None
            # Every write keeps a record and its index key together: a lone index key, or one
            # whose record is in another group, was written by someone else.
            member = None if kv is None else self._member(node, kv, cluster_id)
            if member is None or member.group != group:
                raise RendezvousStateError(
                    f"etcd key {index.key!r} indexes a node into group {group!r} whose record "
                    "is missing or in another group (written by something other than arendezvous)"
                )
            found.append(member)
        found.sort(key=lambda member: member.seq)
        return found

    # -- writes ----------------------------------------------------------------------------------

    async def put(
        self, node: str, group: str, value: bytes, version: Token | None
    ) -> MemberPut:
        key = self._record_key(node)
        prefix, index = self._group_prefix(group), self._index_key(group, node)
        value = check_member_value(value)
        return await self._backend._on_client(
            self._put, node, group, value, version, key, prefix, index
        )

    async def _put(
        self, cluster: Cluster, node: str, group: str, value: bytes, version: Token | None,
        key: bytes, prefix: bytes, index: bytes,
    ) -> MemberPut:  # fmt: skip
        rpc = self._rpc
        old: MemberRecord | None = None
        if version is None:
            compare = [rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL,
                                   create_revision=0)]
        else:
            vetted = await self._vet(cluster, key, version, "put")
            if vetted is None:
                return MemberPut(await self._get(cluster, node, key, "put"), False, 0)
            compare = self._is_current(vetted[0])
            old = vetted[1]
        stored = encode_member(group, value, SEQ_IS_MOD_REVISION)
        lease = self._backend.lease
        success = [
            # Counted before the writes: what the group held, and whether this node was in it.
            rpc.RequestOp(request_range=rpc.RangeRequest(
                key=prefix, range_end=prefix_range(prefix)[1], count_only=True)),
            rpc.RequestOp(request_range=rpc.RangeRequest(key=index, count_only=True)),
            rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=stored, lease=lease)),
        ]  # fmt: skip
        if old is not None and old.group != group:
            old_index = self._index_key(old.group, node)
            success.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=old_index)))
        # Put in the same group too: etcd refuses a transaction that deletes and puts one key.
        success.append(rpc.RequestOp(request_put=rpc.PutRequest(key=index, lease=lease)))
        request = rpc.TxnRequest(
            compare=compare,
            success=success,
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        response, ambiguous = await self._write(cluster, "put", request)
        cluster_id = response.header.cluster_id
        if response.succeeded:
            revision = response.header.revision  # the transaction's, so the record's new one
            counted, was_in = (op.response_range.count for op in response.responses[:2])
            member = Member(node, group, value,
                            EtcdMemberVersion(cluster_id, key, revision, stored), revision, None)
            return MemberPut(member, True, counted + (0 if was_in else 1))
        if ambiguous:
            raise self._ambiguous("put")
        kvs = response.responses[0].response_range.kvs
        return MemberPut(self._member(node, kvs[0], cluster_id) if kvs else None, False, 0)

    async def touch(self, node: str, version: Token) -> Member | None:
        key = self._record_key(node)
        return await self._backend._on_client(self._touch, node, version, key)

    async def _touch(
        self, cluster: Cluster, node: str, version: Token, key: bytes
    ) -> Member | None:
        vetted = await self._vet(cluster, key, version, "touch")
        if vetted is None:
            return None
        current, record = vetted
        rpc = self._rpc
        seq = record.seq or current.mod_revision
        stored = encode_member(record.group, record.value, seq)
        put = rpc.PutRequest(key=key, value=stored, lease=self._backend.lease)
        request = rpc.TxnRequest(
            compare=self._is_current(current), success=[rpc.RequestOp(request_put=put)]
        )
        response, ambiguous = await self._write(cluster, "touch", request)
        if response.succeeded:
            touched = EtcdMemberVersion(
                response.header.cluster_id, key, response.header.revision, stored
            )
            return Member(node, record.group, record.value, touched, seq, None)
        if ambiguous:
            raise self._ambiguous("touch")
        return None

    async def delete(self, node: str, version: Token) -> bool:
        key = self._record_key(node)
        result: bool = await self._backend._on_client(self._delete, node, version, key)
        return result

    async def _delete(self, cluster: Cluster, node: str, version: Token, key: bytes) -> bool:
        vetted = await self._vet(cluster, key, version, "delete")
        if vetted is None:
            return False
        current, record = vetted
        rpc = self._rpc
        request = rpc.TxnRequest(
            compare=self._is_current(current),
            success=[
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key)),
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                    key=self._index_key(record.group, node))),
            ],
        )  # fmt: skip
        response, ambiguous = await self._write(cluster, "delete", request)
        if not response.succeeded and ambiguous:
            raise self._ambiguous("delete")
        return bool(response.succeeded)

    # -- waiting ---------------------------------------------------------------------------------

    async def wait_for_change(
        self, node: str, version: Token | None, *, timeout: float | None = None
    ) -> bool:
        """Wait until *node*'s record is no longer at *version* (``None``: until it has one);
        ``True`` then, ``False`` after *timeout* seconds.

        The record key joins the handle's one watch stream (the topic is dropped some seconds
        after its last waiter left). Each watch event says at which revision the record moved,
        so the wait returns on the event alone, with no read; the key is read only when the
        stream is new (made, or made again after it broke), and ``None`` first reads once to know
        the revision from which a new record counts. A version that is not one of this record's
        in this cluster is never current: ``True`` at once.

        :raises RendezvousConnectionError: the outage policy of the handle's other waits.
        """
        key = self._record_key(node)
        check_timeout(timeout)
        changed: bool = await self._backend._on_client(self._wait, key, version, timeout)
        return changed

    async def _wait(
        self, cluster: Cluster, key: bytes, version: Token | None, timeout: float | None
    ) -> bool:
        if version is None:
            request = self._rpc.RangeRequest(key=key, keys_only=True)
            response, _ = await self._call(cluster, "wait_for_change", "Range", request,
                                           idempotent=True)
            if response.kvs:
                return True
            # Watch events can trail a read: a record seen at a revision before this read was
            # deleted by it, and only a record written after it counts.
            floor, target = response.header.revision, 0
        else:
            vetted = await self._vet(cluster, key, version, "wait_for_change")
            if vetted is None:
                return True
            floor = target = vetted[0].mod_revision

        def moved(seen: Seen) -> bool:
            return seen.revision >= floor and seen.mod_revision != target

        seen = await self._backend._wait_for(
            cluster, key, partial(self._observe, key), moved, timeout, "member wait_for_change"
        )
        return seen is not None

    async def _observe(self, key: bytes, cluster: Cluster) -> Seen:
        """The record key's newest state: what the live watch stream last said of it if it said
        anything, else read (and the stream knows it from then on)."""
        feed = self._backend._live_feed(cluster)
        if feed is not None:
            seen = feed.seen(key)
            if seen is not None:
                return seen
        request = self._rpc.RangeRequest(key=key, keys_only=True)
        response, _ = await self._call(cluster, "wait_for_change", "Range", request,
                                       idempotent=True)
        found = Seen(response.header.revision, response.kvs[0].mod_revision if response.kvs else 0)
        return found if feed is None else feed.learn(key, found)
