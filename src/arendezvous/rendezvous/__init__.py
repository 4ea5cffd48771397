"""The async rendezvous: rounds, ranks and world sizes agreed through any rendezvous backend.

:class:`AsyncRendezvous` is the async-native counterpart of PyTorch's ``DynamicRendezvousHandler``
(same join, last-call, heartbeat and closing rules; no polling, no pickle, no trust in clocks);
:class:`SyncRendezvous` is its blocking face for threads and torchrun.

How it works
------------
Two kinds of state per run, both in the backend:

* the **round record** (the backend's one blob; :mod:`._record`): the round number, whether the
  round is open or complete (and then its participants in rank order), whether its last call
  runs, whether nodes wait for the next round, whether the run is closed, and the record's random
  *incarnation*. It changes a few times per round; every change wakes every node.
* one **member record** per node (the backend's :class:`~arendezvous.MemberTable`): the *group*
  it is in (the round it joins or waits for), which process owns it, and its age by the store's
  clock. Writing it races with nobody.

Joining round *r*: read the record; put your member record into group *r*, which returns -- counted
atomically with the write -- how many nodes the group now holds. The node that makes it
``min_nodes`` starts the last call (one write of the record); the node that makes it
``max_nodes`` lists the group and completes the round (one list, one write). Every other joiner
just waits for the record to change. When the last call runs out (each node times it on its own
monotonic clock from when it saw it start), the node that started it lists the group and
completes the round with its live members; the others wait 25 ms longer (and a few milliseconds
more by arrival) and do it only if that node is gone. A node arriving while a round is complete
puts its record into the next round's group and, if the round has room, marks the record
``waiting``, so its participants start a new round; when the round is full it waits without
disturbing it (PyTorch's redundant list).

Staying formed: each node *touches* its record every ``heartbeat`` (one write; nobody is woken),
and watches the next participant in rank order, so the participants form a ring (see
:mod:`._liveness`). A watcher declares its node dead when the record has not been refreshed for
``heartbeat_timeout`` -- by the store's clock where the store has one (memory, file, Redis,
PostgreSQL: read the age, sleep until the record would expire, read again), or on the watcher's
own monotonic clock with the store pushing each refresh (etcd, and the one-blob emulation). Then it
deletes the record and ends the round; the others see the record change. No decision ever
compares two machines' clocks: a node whose clock is hours off is an ordinary node.

Identity: a node id is one member record; a second live node with the same id finds the record
refreshed within about a heartbeat and gets :class:`~arendezvous.DuplicateNodeError`; a record
left by a dead node is taken over once silent for ``heartbeat_timeout``. ``(incarnation, round)``
(:attr:`RendezvousInfo.round_id`) never repeats: a store that loses its data loses the record,
the next one gets a new incarnation, and its rounds continue from the highest number the node that
recreates it saw.

Failures: a join that fails or is cancelled withdraws in a shielded step that re-reads the store
(so a write whose reply was lost is undone too), removes the node's record and, if the round it
was joining is still open, rewrites the record so that anyone completing the round concurrently
lists the group again; if the node was already counted into a complete round, it ends that round.
A node that froze past ``heartbeat_timeout`` finds its record gone at its next heartbeat and its
round ended; no two nodes ever hold one rank of one round, because a complete round's membership
never changes.

Cost per node, in store operations (N nodes, heartbeat *h*, timeout *T*):

============================  ================================================================
joining a round               about 3-4: read the record, put the member record, one read per
                              record change (last call started, round completed; none on etcd,
                              whose watch event carries the record); plus one list and one write
                              for the node that completes the round
staying formed, per *h*       1 write (the heartbeat), and with a store clock about *h*/(*T*-*h*)
                              reads for the watch (0.5 at the default *T* = 3 *h*); without one
                              (etcd) one pushed change and one read per refresh of the watched
                              node; nobody else is woken
a death                       1 read and 1 delete by the watcher, 1 write of the record, then
                              1 read by every node
backends without a member     the one-blob emulation: every member write is a compare-and-swap
table (third-party)           on the whole blob, so N simultaneous joins cost about N²/2
                              attempts, and every heartbeat wakes every node (O(N²/h) reads)
============================  ================================================================

Operating it: :func:`read_status`, :func:`follow_status` and :func:`close_run` see and close a
run from outside; ``delete_when_closed=True`` makes the last node to leave a closed run delete it
(``backend.delete_run()``). Every step is logged under ``arendezvous.rendezvous``, structured
(each record has an ``event`` and its facts as attributes): rounds formed and ended, evictions,
closing and deleting at INFO; one WARNING when a node's store becomes unreachable and one when it
answers again; the steps of a join at DEBUG.

Where it departs from PyTorch's handler, and why:

* A complete round's membership never changes: losing a participant ends the round at once, and
  the first participant to call :meth:`~AsyncRendezvous.next_rendezvous` again ends it for all.
* A new round starts with the nodes that waited for it already in its group, so they get in first.
* :meth:`~AsyncRendezvous.num_nodes_waiting` also counts nodes already gathering in a newer round,
  so every old participant (and torch's agents, which poll it) sees that it must rejoin.
* No rollback period after a join timeout: the node withdraws, then raises.
* The last call is timed by each node from when it saw it start, never by a timestamp another
  machine wrote.
"""

from __future__ import annotations

from ._handler import AsyncRendezvous as AsyncRendezvous
from ._info import Progress as Progress
from ._info import RendezvousInfo as RendezvousInfo
from ._info import RoundEnd as RoundEnd
from ._info import default_node_id as default_node_id
from ._record import SCHEMA_VERSION as SCHEMA_VERSION
from ._status import NodeStatus as NodeStatus
from ._status import RunStatus as RunStatus
from ._status import close_run as close_run
from ._status import follow_status as follow_status
from ._status import read_status as read_status
from .sync import SyncRendezvous as SyncRendezvous

__all__ = (
    "SCHEMA_VERSION",
    "AsyncRendezvous",
    "NodeStatus",
    "Progress",
    "RendezvousInfo",
    "RoundEnd",
    "RunStatus",
    "SyncRendezvous",
    "close_run",
    "default_node_id",
    "follow_status",
    "read_status",
)
