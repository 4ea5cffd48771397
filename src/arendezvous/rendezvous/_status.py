"""A run's rendezvous as an operator or an orchestrator sees it, read without joining it.

:func:`read_status` reads the round record and the member records of the current and the next
round (three store reads) into a :class:`RunStatus`: the round, its participants with their ranks
and heartbeat ages, the nodes waiting for the next round. :func:`follow_status` yields it again
each time the round record changes (and, if asked, every so many seconds, since joins and
heartbeats do not change the record). :func:`close_run` closes a run from outside. The command
line's ``inspect`` and ``close`` are built on them; :meth:`AsyncRendezvous.progress
<arendezvous.rendezvous.AsyncRendezvous.progress>` adds a joining node's own view (how many are
missing, the time left in the last call).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .._backend import AsyncRendezvousBackend, Token
from .._emulated import emulate_member_table
from .._log import log_event
from .._members import Member, MemberTable
from ._record import RoundRecord, decode_record, encode_record

__all__ = ("NodeStatus", "RunStatus", "close_run", "follow_status", "read_status")


@dataclass(frozen=True)
class NodeStatus:
    """One node as the store lists it.

    :ivar node: its id.
    :ivar rank: its rank in the complete round, or ``None`` (an open round, or waiting).
    :ivar heartbeat_age: seconds since it last refreshed its record, by the store's clock
        (``None`` where the store has none, e.g. etcd, or for a participant whose record is gone).
    """

    node: str
    rank: int | None
    heartbeat_age: float | None

    def to_json(self) -> dict[str, Any]:
        """This node as a JSON-ready dict."""
        return {"node": self.node, "rank": self.rank, "heartbeat_age": self.heartbeat_age}


@dataclass(frozen=True)
class RunStatus:
    """A run's rendezvous as the store holds it.

    :ivar exists: whether the run has a round record at all (``False``: no node ever joined).
    :ivar incarnation: the record's random id (see :attr:`RendezvousInfo.incarnation
        <arendezvous.rendezvous.RendezvousInfo.incarnation>`).
    :ivar round: the current round's number.
    :ivar complete: whether the round's membership is fixed.
    :ivar closed: whether the run is closed.
    :ivar last_call: (open round) whether its last call runs.
    :ivar participants: a complete round's participants in rank order; an open round's joiners
        in arrival order.
    :ivar waiting: nodes listed for the next round (waiting for room, or for it to start).
    """

    exists: bool
    incarnation: str | None = None
    round: int | None = None
    complete: bool = False
    closed: bool = False
    last_call: bool = False
    participants: tuple[NodeStatus, ...] = ()
    waiting: tuple[NodeStatus, ...] = ()

    @property
    def round_id(self) -> str | None:
        """``"<incarnation>/<round>"``, unique to the round within the run; ``None`` without one."""
        return None if self.incarnation is None else f"{self.incarnation}/{self.round}"

    def to_json(self) -> dict[str, Any]:
        """The status as a JSON-ready dict (what ``arendezvous inspect --json`` prints)."""
        return {
            "exists": self.exists,
            "round_id": self.round_id,
            "round": self.round,
            "complete": self.complete,
            "closed": self.closed,
            "last_call": self.last_call,
            "participants": [node.to_json() for node in self.participants],
            "waiting": [node.to_json() for node in self.waiting],
        }


def run_id_of(backend: AsyncRendezvousBackend) -> str | None:
    """*backend*'s run id for the log, or ``None`` (the contract does not require one)."""
    run_id = getattr(backend, "run_id", None)
    return run_id if isinstance(run_id, str) else None


def storage(backend: AsyncRendezvousBackend) -> tuple[AsyncRendezvousBackend, MemberTable]:
    """Where a run's rendezvous lives on *backend*: ``(register of the round record, member
    table)``, the backend's own table or one emulated inside its blob."""
    table = backend.member_table()
    if table is None:
        return emulate_member_table(backend)
    return backend, table


def _nodes(members: list[Member]) -> tuple[NodeStatus, ...]:
    return tuple(NodeStatus(member.node, None, member.age) for member in members)


async def status_of(record: RoundRecord | None, table: MemberTable) -> RunStatus:
    """The status of *record*'s run, its member records read from *table* (two reads)."""
    if record is None:
        return RunStatus(exists=False)
    joined = await table.members(record.group)
    waiting = await table.members(record.next_group)
    if record.complete:
        ages = {member.node: member.age for member in joined}
        participants = tuple(NodeStatus(node, rank, ages.get(node))
                             for rank, node in enumerate(record.participants))
    else:
        participants = _nodes(joined)
    return RunStatus(
        exists=True,
        incarnation=record.incarnation,
        round=record.round,
        complete=record.complete,
        closed=record.closed,
        last_call=record.last_call,
        participants=participants,
        waiting=_nodes(waiting),
    )


async def read_status(backend: AsyncRendezvousBackend) -> RunStatus:
    """The run's rendezvous now: three store reads; joins nothing, writes nothing.

    :raises RendezvousStateError: the run's state is not a rendezvous record.
    :raises RendezvousConnectionError: the store cannot be reached.
    """
    register, table = storage(backend)
    current = await register.get_state()
    return await status_of(None if current is None else decode_record(current[0]), table)


async def follow_status(
    backend: AsyncRendezvousBackend, *, every: float | None = None
) -> AsyncIterator[RunStatus]:
    """Yield the run's status now, then again each time its round record changes (woken by the
    store's notification) and, with *every*, at least every *every* seconds (joins and
    heartbeats change only member records, which notify nobody).

    Runs until the caller stops iterating (or cancels it).
    """
    if every is not None and not every > 0:
        raise ValueError("every must be a positive number of seconds")
    register, table = storage(backend)
    current = await register.get_state()
    token: Token | None = None if current is None else current[1]
    while True:
        record = None if current is None else decode_record(current[0])
        yield await status_of(record, table)
        changed = await register.wait_for_change(token, timeout=every)
        if changed is not None:
            current, token = changed, changed[1]
        else:
            current = await register.get_state()
            token = None if current is None else current[1]


async def close_run(backend: AsyncRendezvousBackend) -> bool:
    """Close the run for every node, without joining it: pending and future joins raise
    :class:`~arendezvous.RendezvousClosedError`. Return whether this call closed it (``False``:
    it already was). A run with no record yet gets a closed one.

    Cancellation leaves it closed or not, never half.
    """
    closed = await close_register(storage(backend)[0])
    if closed:
        run_id = run_id_of(backend)
        log_event(logging.getLogger("arendezvous.rendezvous"), logging.INFO, "run_closed",
                  "the run was closed from outside" if run_id is None else
                  "run %(run_id)r was closed from outside", node=None, run_id=run_id)
    return closed


async def close_register(register: AsyncRendezvousBackend, first_round: int = 0) -> bool:
    """:func:`close_run` on the register holding the round record (a record created here starts
    at *first_round*)."""
    current = await register.get_state()
    while True:
        record = None if current is None else decode_record(current[0])
        if record is not None and record.closed:
            return False
        new = (record or RoundRecord.new(first_round)).closed_record()
        state, token, written = await register.set_state(
            encode_record(new), None if current is None else current[1]
        )
        if written:
            return True
        current = None if token is None else (state, token)
