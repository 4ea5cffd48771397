"""The round record: the one small document every node of a run reads, and its wire format.

It says which round the run is in, whether that round is complete (and who is in it, in rank
order) or still open (and whether its last call runs), whether nodes wait for the next round, and
whether the run is closed. Who has *joined* an open round is not in it: each node keeps its own
record in the member table (see :mod:`arendezvous.rendezvous`), so joining never races on this
document. The record changes a handful of times per round, and every change wakes every node.

Wire format, schema version 2 (UTF-8 JSON, never pickle: the bytes come from a shared store)::

    {"v": 2, "id": "5f0c...32 hex...", "round": 3, "complete": true, "closed": false,
     "last_call": false, "waiting": false, "participants": ["a", "b"], "seq": 17,
     "previous": [], "previous_seq": 0}

``id`` is the record's *incarnation*, drawn at random when the record is created: a store that
loses its data gets a new one, so ``(id, round)`` never repeats within a run. Every transition is
a pure function returning a new, validated record, and encoding validates exactly what decoding
does, so the library never writes what it would refuse to read.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, replace
from typing import Any

from .._errors import RendezvousStateError
from .._forksafe import renew_in_child
from .._members import MAX_NODE_LENGTH

__all__ = (
    "MAX_ROUND",
    "SCHEMA_VERSION",
    "RoundRecord",
    "decode_record",
    "encode_record",
    "group_name",
)

SCHEMA_VERSION = 2
"""The version written into every record; any other version is refused with RendezvousStateError."""

MAX_ROUND = 2**63 - 1
"""The largest round number (a signed 64-bit integer, so every JSON reader can hold it)."""

_KEYS = frozenset(("v", "id", "round", "complete", "closed", "last_call", "waiting",
                   "participants", "seq", "previous", "previous_seq"))
_HEX = frozenset("0123456789abcdef")


def _fail(reason: str) -> RendezvousStateError:
    return RendezvousStateError(f"the rendezvous round record is malformed: {reason}")


@dataclass(frozen=True)
class RoundRecord:
    """One run's round record. Immutable; built only through :meth:`new` and the transitions,
    each of which validates the result.

    :ivar incarnation: 32 hex digits drawn when the record was created.
    :ivar round: the round number; it grows by one with every new round of an incarnation.
    :ivar complete: the round's membership is fixed; ``participants`` holds it in rank order.
    :ivar closed: the run is closed; it never reopens.
    :ivar last_call: (open round) ``min_nodes`` have joined; the round completes when the last
        call, timed by each node on its own clock from when it saw this flag, runs out.
    :ivar waiting: (complete round with room) nodes wait to join: the participants should start a
        new round.
    :ivar participants: (complete round) node ids in rank order (sorted); empty while open.
    :ivar seq: (complete round) the highest member-table ``seq`` among the participants' records
        as the completing node listed them. A participant holds the round only if its own
        record's ``seq`` is not higher: a process that took over a participant's id after the
        listing (the participant's process having died) put a later record, and is not the
        participant the round was formed with. 0 while open.
    :ivar previous: (open round) the participants of the round before it, if that round was
        complete, in rank order: a participant that had not yet read its round complete when
        another ended it still learns its place (PyTorch's handler, too, returns a round that a
        peer has already left). Empty in a complete round.
    :ivar previous_seq: (open round) the ``seq`` of the round before it, with :attr:`previous`.
    """

    incarnation: str
    round: int = 0
    complete: bool = False
    closed: bool = False
    last_call: bool = False
    waiting: bool = False
    participants: tuple[str, ...] = ()
    seq: int = 0
    previous: tuple[str, ...] = ()
    previous_seq: int = 0

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise _fail(problem)

    @classmethod
    def new(cls, round: int = 0) -> RoundRecord:
        """A fresh open record with a new incarnation, starting at *round*."""
        return cls(os.urandom(16).hex(), round)

    @property
    def group(self) -> str:
        """The member-table group of this record's round (where its joiners are listed)."""
        return group_name(self.incarnation, self.round)

    @property
    def next_group(self) -> str:
        """The group of the round after this one (where nodes wait while this one is complete)."""
        return group_name(self.incarnation, self.round + 1)

    def rank_of(self, node: str) -> int:
        """*node*'s rank in this complete round."""
        return self.participants.index(node)

    # -- transitions: each returns a new, validated record ---------------------------------------

    def ended(self, *, last_call: bool = False) -> RoundRecord:
        """The next round, open (with its last call already running if *last_call*).

        :raises RendezvousStateError: the run has used every round number.
        """
        if self.round >= MAX_ROUND:
            raise RendezvousStateError(
                f"the run has used every round number up to {MAX_ROUND}; start a new run id"
            )
        return RoundRecord(self.incarnation, self.round + 1, closed=self.closed,
                           last_call=last_call, previous=self.participants,
                           previous_seq=self.seq)

    def completed(self, participants: tuple[str, ...], seq: int) -> RoundRecord:
        """This round, complete with *participants* (ranked by sorted node id)."""
        return replace(self, complete=True, last_call=False, waiting=False,
                       participants=tuple(sorted(participants)), seq=seq, previous=(),
                       previous_seq=0)

    def with_last_call(self, running: bool) -> RoundRecord:
        """This open round with its last call started (or stopped)."""
        return replace(self, last_call=running)

    def with_waiting(self, waiting: bool) -> RoundRecord:
        """This complete round with nodes waiting for the next one (or none)."""
        return replace(self, waiting=waiting)

    def closed_record(self) -> RoundRecord:
        """This record, closed."""
        return replace(self, closed=True)


def group_name(incarnation: str, round: int) -> str:
    """The member-table group of round *round* of incarnation *incarnation*."""
    return f"{incarnation}/{round}"


def _problem(record: RoundRecord) -> str | None:
    """What is wrong with *record*, or ``None``: the one validation, for encoding and decoding."""
    incarnation = record.incarnation
    if type(incarnation) is not str or len(incarnation) != 32 or not _HEX.issuperset(incarnation):
        return "'id' must be 32 lowercase hex digits"
    if type(record.round) is not int or not 0 <= record.round <= MAX_ROUND:
        return f"'round' must be an integer from 0 to {MAX_ROUND}"
    for name in ("complete", "closed", "last_call", "waiting"):
        if type(getattr(record, name)) is not bool:
            return f"{name!r} must be true or false"
    participants = record.participants
    for name in ("participants", "previous"):
        nodes = getattr(record, name)
        if type(nodes) is not tuple or any(
            type(node) is not str or not node or len(node) > MAX_NODE_LENGTH for node in nodes
        ):
            return f"{name!r} must be a list of node ids"
    if list(record.previous) != sorted(set(record.previous)):
        return "previous participants must be distinct and in rank (sorted) order"
    if record.previous and (record.complete or record.round == 0):
        return "only an open round after another lists previous participants"
    if record.complete:
        if not participants:
            return "a complete round without participants"
        if list(participants) != sorted(set(participants)):
            return "participants must be distinct and in rank (sorted) order"
        if record.last_call:
            return "a complete round has no last call"
    elif participants or record.waiting:
        return "an open round lists no participants and no waiting flag"
    for name in ("seq", "previous_seq"):
        value = getattr(record, name)
        if type(value) is not int or not 0 <= value <= MAX_ROUND:
            return f"{name!r} must be an integer from 0 to {MAX_ROUND}"
    if record.seq and not record.complete:
        return "an open round has no seq"
    if record.previous_seq and not record.previous:
        return "a previous_seq without previous participants"
    return None


# -- wire format --------------------------------------------------------------------------------

# Every node of a process decodes the same bytes after each change; a few recent results, keyed
# by the bytes, turn that into a lookup. Only validated records enter it (both ways).
_CACHE_SIZE = 8
_cache: dict[bytes, RoundRecord] = {}
_cache_lock = threading.Lock()
renew_in_child(sys.modules[__name__], "_cache_lock")  # see _forksafe


def _remember(data: bytes, record: RoundRecord) -> None:
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            del _cache[next(iter(_cache))]
        _cache[data] = record


def encode_record(record: RoundRecord) -> bytes:
    """The record as schema-version-2 JSON bytes (validated when the record was built)."""
    document: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": record.incarnation,
        "round": record.round,
        "complete": record.complete,
        "closed": record.closed,
        "last_call": record.last_call,
        "waiting": record.waiting,
        "participants": record.participants,
        "seq": record.seq,
        "previous": record.previous,
        "previous_seq": record.previous_seq,
    }
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    _remember(data, record)
    return data


def decode_record(data: bytes) -> RoundRecord:
    """Parse and validate stored bytes.

    :raises RendezvousStateError: the bytes are not a valid schema-version-2 record (not JSON,
        another version, a missing or extra field, a wrong type, a broken invariant).
    """
    cached = _cache.get(data)
    if cached is not None:
        return cached
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RendezvousStateError(
            f"the stored rendezvous record is not arendezvous JSON ({type(exc).__name__})"
        ) from exc
    if type(document) is not dict or "v" not in document:
        raise _fail("not a versioned JSON object")
    version = document["v"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise RendezvousStateError(
            f"the stored rendezvous record has schema version {version!r}; this version of "
            f"arendezvous reads only version {SCHEMA_VERSION} (every node of a run must run "
            "compatible versions)"
        )
    if document.keys() != _KEYS:
        missing = sorted(_KEYS - document.keys())
        extra = sorted(document.keys() - _KEYS)
        raise _fail(f"missing fields {missing}, unexpected fields {extra}")
    participants, previous = document["participants"], document["previous"]
    for name, nodes in (("participants", participants), ("previous", previous)):
        if type(nodes) is not list:
            raise _fail(f"{name!r} must be a list of node ids")
    record = RoundRecord(
        incarnation=document["id"],
        round=document["round"],
        complete=document["complete"],
        closed=document["closed"],
        last_call=document["last_call"],
        waiting=document["waiting"],
        participants=tuple(participants),
        seq=document["seq"],
        previous=tuple(previous),
        previous_seq=document["previous_seq"],
    )
    _remember(data, record)
    return record
