"""What the rendezvous hands its callers: :class:`RendezvousInfo` (a completed round),
:class:`Progress` (how a join is going), :class:`RoundEnd` (why a round is over) and
:func:`default_node_id`.

Plain values with no behaviour of their own, kept apart so that the modules that produce them
(:mod:`._join`, :mod:`._handler`) and the ones that only pass them on (:mod:`._node`,
:mod:`._liveness`) share one definition without importing each other.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import Enum
from itertools import count

from ._status import RunStatus

__all__ = ("Progress", "RendezvousInfo", "RoundEnd", "default_node_id")

_node_counter = count()


def default_node_id() -> str:
    """A node id unique on this machine: ``<hostname>_<pid>_<counter>`` (PyTorch's scheme)."""
    return f"{socket.gethostname()}_{os.getpid()}_{next(_node_counter)}"


@dataclass(frozen=True)
class RendezvousInfo:
    """A completed round, as every participant sees it.

    :ivar node: this node's id.
    :ivar round: the round number; it grows with every round of the run's record, and a node that
        recreates a lost record continues from the highest round it saw.
    :ivar rank: this node's rank, ``0 <= rank < world_size``.
    :ivar participants: every participant's node id in rank order (sorted by node id), the
        same tuple on every node of the round.
    :ivar incarnation: the random id of the run's round record, drawn when the record was
        created; ``(incarnation, round)`` -- :attr:`round_id` -- never repeats within a run,
        even if the store loses its data and the record is created again.
    """

    node: str
    round: int
    rank: int
    participants: tuple[str, ...]
    incarnation: str = ""

    @property
    def world_size(self) -> int:
        """How many nodes are in the round."""
        return len(self.participants)

    @property
    def round_id(self) -> str:
        """``"<incarnation>/<round>"``: unique to this round within the run, forever."""
        return f"{self.incarnation}/{self.round}"


@dataclass(frozen=True)
class Progress:
    """How a join is going, as :meth:`AsyncRendezvous.progress` sees it (for an orchestrator to
    show while ``next_rendezvous()`` waits).

    :ivar status: the run as the store holds it (see :class:`~arendezvous.rendezvous.RunStatus`).
    :ivar joined: the nodes in the round being formed (or the complete round's participants).
    :ivar missing: how many more nodes the open round needs before it can complete
        (``min_nodes`` minus those joined, at least 0; 0 once complete).
    :ivar last_call_left: seconds left in the running last call, as this node times it on its own
        clock; ``None`` when no last call runs (or this node has not seen it start).
    """

    status: RunStatus
    joined: tuple[str, ...]
    missing: int
    last_call_left: float | None


class RoundEnd(Enum):
    """Why :meth:`AsyncRendezvous.wait_for_round_end` returned."""

    NODES_WAITING = "nodes_waiting"
    """Nodes are waiting to join: call ``next_rendezvous()`` to start a round that includes them."""
    RESTARTED = "restarted"
    """The round is over (a participant left, was evicted, or started the next round)."""
    CLOSED = "closed"
    """The run was closed."""
