"""One node's shared core: who it is, where it stores, and the round record as it last saw it.

:class:`Node` is the one object the join logic (:mod:`._join`), the heartbeat and the watch
(:mod:`._liveness`) and the public handle (:mod:`._handler`) all hold: the node's id and run id,
its monotonic clock, its structured log helper, the backend's register and member table, the
round record as this node last read it (:class:`View`) with its compare-and-swap write, the
record's creation and a round's end, the highest round seen, and the round the node currently
holds (:attr:`Node.info`). Keeping them here lets each of those modules use them without
reaching into another's privates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio

from .._backend import AsyncRendezvousBackend, Token
from .._emulated import emulate_member_table
from .._log import log_event
from .._members import MemberTable
from ._info import RendezvousInfo
from ._record import RoundRecord, decode_record, encode_record
from ._status import run_id_of

__all__ = ("Node", "View", "logger")

logger = logging.getLogger("arendezvous.rendezvous")
"""Where the rendezvous logs (see :meth:`Node.log`): INFO for what an operator follows (rounds
formed and ended, evictions, the run closed or deleted), WARNING for what needs attention (an
unreachable store, once per outage; a node evicted), DEBUG for the steps between."""


@dataclass(frozen=True)
class View:
    """The round record this node last saw, and the token it was stored under."""

    record: RoundRecord | None
    token: Token | None


_EMPTY = View(None, None)


class Node:
    """One node of a run (see the module docstring): its identity, its store, its view of the
    round record.

    :param backend: the run's store; a backend without a member table gets one emulated in its
        blob.
    :param node: this node's id (already checked).
    """

    def __init__(self, backend: AsyncRendezvousBackend, node: str) -> None:
        #: This node's id.
        self.id = node
        self.backend = backend
        self.run_id = run_id_of(backend)
        table = backend.member_table()
        #: The register holding the round record, and the table holding the member records:
        #: the backend's own, or both emulated in its blob.
        self.register: AsyncRendezvousBackend
        self.table: MemberTable
        if table is None:
            self.register, self.table = emulate_member_table(backend)
        else:
            self.register, self.table = backend, table
        #: The round record as this node last read or wrote it.
        self.view: View | None = None
        #: The highest round number this node has seen (a lost record is recreated after it).
        self.highest_round = -1
        #: The round this node holds (what ``next_rendezvous()`` last returned), or ``None``.
        self.info: RendezvousInfo | None = None

    def clock(self) -> float:
        """This node's monotonic clock: the only clock it reads. Never compared with another
        node's; replaced in tests to show that offsets between nodes change nothing."""
        return anyio.current_time()

    def log(self, level: int, event: str, sentence: str, **facts: Any) -> None:
        """Log *event* under ``arendezvous.rendezvous`` with this node's id and run id as facts
        (see :func:`arendezvous._log.log_event`)."""
        log_event(logger, level, event, sentence, stacklevel=2, node=self.id,
                  run_id=self.run_id, **facts)

    # -- the round record ------------------------------------------------------------------------

    def adopt(self, current: tuple[bytes, Token] | None) -> View:
        """Take *current* (the register's state and token, or ``None``: no record) as the round
        record this node last saw."""
        view = _EMPTY if current is None else View(decode_record(current[0]), current[1])
        if view.record is not None:
            self.highest_round = max(self.highest_round, view.record.round)
        self.view = view
        return view

    async def read(self) -> View:
        """Read the round record from the store."""
        return self.adopt(await self.register.get_state())

    async def write(self, view: View, new: RoundRecord) -> tuple[View, bool]:
        """Compare-and-swap *new* over *view*; on a lost race return the store's current view."""
        state, token, written = await self.register.set_state(encode_record(new), view.token)
        if written:
            return self.adopt((state, token)), True
        self.log(logging.DEBUG, "cas_lost",
                 "node %(node)r lost a write of the round record to another node's")
        return self.adopt(None if token is None else (state, token)), False

    async def create(self) -> View:
        """Create the run's record (after a store lost it, numbering on from the highest round
        this node saw)."""
        view, _ = await self.write(_EMPTY, RoundRecord.new(self.highest_round + 1))
        return view

    async def end_round(self, view: View, incarnation: str, round: int, reason: str) -> View:
        """End round *round* of *incarnation* if the record still holds it complete; *reason*
        says why, for the log."""
        while True:
            record = view.record
            if (
                record is None
                or record.closed
                or not record.complete
                or (record.incarnation, record.round) != (incarnation, round)
            ):
                return view
            view, written = await self.write(view, record.ended())
            if written:
                self.log(logging.INFO, "round_ended",
                         "node %(node)r ended round %(round)d (%(reason)s); round %(next)d opens",
                         round=round, next=round + 1, reason=reason)

    async def end_round_of(self, info: RendezvousInfo, reason: str) -> None:
        """End the round *info* (read afresh) if the record still holds it complete."""
        await self.end_round(await self.read(), info.incarnation, info.round, reason)
