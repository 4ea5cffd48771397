"""The etcd v3 backend: one key per run, compare-and-swap by etcd transaction, waits by watch.

Each run's state lives under ``<key_prefix><run_id>`` (``/arendezvous/<run_id>`` by default).

* ``set_state(state, None)`` is one transaction: *if* the key's ``create_revision == 0`` (it does
  not exist) *then* put *else* range-read it. ``set_state(state, token)`` is the same with
  ``mod_revision == token``. A losing writer gets the current value from the failure branch of
  the same transaction, so a lost race costs no second round trip.
* The token is the key's ``mod_revision`` -- cluster-wide, strictly increasing, never reused by a
  key even after it is deleted and created again -- wrapped in :class:`EtcdToken` with the cluster
  id and the key, so a token of another run, another cluster or a bare ``int`` never matches.
* ``wait_for_change`` shares one watch stream per handle (all its waiters' hints come from it):
  the watch is created and confirmed before the key is read, so every change after the read
  produces an event. Every event, cancellation or broken stream is only a hint to re-read and
  compare tokens.
* The stored value is ``b"ARDE" | format u8 | CRC-32 u32 | state``; a value without that header
  or with a bad checksum (written by someone else) raises :class:`RendezvousStateError` and is
  never overwritten.
* Each member of the cluster has a connection of its own, and a call that a member does not
  answer in time is tried on the others within the handle's timeout (``_cluster`` says why).
* ``member_table()`` is an :class:`EtcdMemberTable`: a record key and a group-index key per node
  beside the run's key, one transaction or range per call, heartbeats pushed to their watchers
  by the same watch stream (``_members`` has the layout and the costs).

The client is aetcd's generated etcd v3 gRPC API (``aetcd.rpc``) over ``grpc.aio`` channels that
this backend opens itself: ``aetcd.Client`` has no TLS, no per-call deadline covering the wait for
a connection, and one shared watch stream; the stubs underneath have all three. The extra
``arendezvous[etcd]`` installs both (aetcd needs ``protobuf>=5.27.2``). grpc.aio runs only on
asyncio; from trio, the backend runs it on arendezvous's asyncio loop thread.

The package: ``_protocol`` (what is stored and sent), ``_cluster`` (connections and failover),
``_backend`` (the handle), ``_members`` (its member table), ``_feed`` (the watch), ``_url``
(``etcd://`` URLs).
"""

from __future__ import annotations

from .._network import DEFAULT_TIMEOUT
from ._backend import DEFAULT_ENDPOINT, DEFAULT_KEY_PREFIX, EtcdBackend
from ._members import EtcdMemberTable
from ._protocol import MAX_STATE_SIZE_LIMIT, EtcdMemberVersion, EtcdToken
from ._url import from_url

__all__ = (
    "DEFAULT_ENDPOINT",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_TIMEOUT",
    "MAX_STATE_SIZE_LIMIT",
    "EtcdBackend",
    "EtcdMemberTable",
    "EtcdMemberVersion",
    "EtcdToken",
    "from_url",
)
