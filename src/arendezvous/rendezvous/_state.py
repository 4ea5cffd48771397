"""The rendezvous state shared by every node of a run, its wire format, and its transitions.

The state is an immutable :class:`RendezvousState`; every change is a pure function returning a
new one, so the handler can compute a change, try to compare-and-swap it into the store, and on a
lost race simply recompute from the state the store returned. Nothing here awaits or reads a
clock: times are passed in as integer milliseconds of wall-clock time (``time.time()``), because
heartbeats and the last-call deadline are compared across processes and machines.

Wire format, schema version 1 (UTF-8 JSON, never pickle: the bytes come from a shared store and
are untrusted)::

    {"v": 1, "round": 3, "complete": true, "closed": false, "last_call": null,
     "participants": ["a", "b"], "waiting": ["c"], "redundant": [],
     "hb_base": 1712345678901, "hb": [12, 0, 345]}

``participants`` are in join order until the round completes, then in rank order (rank = index).
``hb`` holds one heartbeat per listed node (participants, then waiting, then redundant), each as
milliseconds *before* ``hb_base`` (the newest heartbeat), which keeps the numbers short: at 1,000
nodes the blob stays under ~20 kB (measured in ``benchmarks/bench_rendezvous.py``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from .._errors import RendezvousStateError

__all__ = (
    "SCHEMA_VERSION",
    "RendezvousState",
    "Settings",
    "add_participant",
    "add_redundant",
    "add_waiting",
    "beat",
    "check_node",
    "close",
    "complete_round",
    "decode_state",
    "encode_state",
    "end_round",
    "evict_dead",
    "remove_node",
)

SCHEMA_VERSION = 1
"""The version written into every state; any other version is refused with RendezvousStateError."""

_MAX_NODE_LENGTH = 1024
_MAX_INT = 2**63 - 1
_KEYS = frozenset(
    ("v", "round", "complete", "closed", "last_call", "participants", "waiting", "redundant",
     "hb_base", "hb")
)


def check_node(node: object) -> str:
    """Validate a node id: a non-empty ``str`` of at most 1,024 characters, encodable as UTF-8.

    :raises TypeError: *node* is not a ``str``.
    :raises ValueError: it is empty, too long, or holds lone surrogates.
    """
    if not isinstance(node, str):
        raise TypeError(f"node must be str, not {type(node).__name__}")
    if not node or len(node) > _MAX_NODE_LENGTH:
        raise ValueError(f"node must be 1 to {_MAX_NODE_LENGTH} characters long")
    try:
        node.encode()
    except UnicodeEncodeError:
        raise ValueError("node must be encodable as UTF-8") from None
    return node


@dataclass(frozen=True)
class Settings:
    """What every transition needs to know about the run's limits (times in milliseconds)."""

    min_nodes: int
    max_nodes: int
    last_call_ms: int
    heartbeat_ms: int
    heartbeat_timeout_ms: int


@dataclass(frozen=True, eq=True)
class RendezvousState:
    """One run's shared state. Immutable: never mutate ``heartbeats``; transitions copy it.

    Invariants (checked when decoding): the three node lists are disjoint and free of
    duplicates, every listed node has a heartbeat and no other node has one, and a complete round
    has at least one participant.
    """

    round: int = 0
    complete: bool = False
    closed: bool = False
    last_call: int | None = None
    participants: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    redundant: tuple[str, ...] = ()
    heartbeats: Mapping[str, int] = field(default_factory=dict)

    @cached_property
    def participant_set(self) -> frozenset[str]:
        """The participants, for O(1) membership tests (computed once per state)."""
        return frozenset(self.participants)

    @cached_property
    def positions(self) -> dict[str, int]:
        """Each listed node's index in participants, then waiting, then redundant."""
        return {node: index for index, node in
                enumerate((*self.participants, *self.waiting, *self.redundant))}

    @cached_property
    def oldest_heartbeat(self) -> tuple[int, str] | None:
        """``(time, node)`` of the oldest heartbeat, or ``None`` with no nodes listed."""
        if not self.heartbeats:
            return None
        node = min(self.heartbeats, key=self.heartbeats.__getitem__)
        return self.heartbeats[node], node

    def listed(self, node: str) -> bool:
        """Whether *node* is a participant, waiting or redundant."""
        return node in self.heartbeats

    def rank_of(self, node: str) -> int:
        """*node*'s rank in this complete round (its index in rank order)."""
        return self.participants.index(node)


# -- transitions -------------------------------------------------------------------------------
# Each returns the state unchanged (the same object) when there is nothing to do, so a caller can
# tell "nothing to write" with ``is``.


def _without(nodes: tuple[str, ...], node: str) -> tuple[str, ...]:
    return tuple(other for other in nodes if other != node) if node in nodes else nodes


def end_round(state: RendezvousState, now: int, settings: Settings) -> RendezvousState:
    """Move to the next round, into which the nodes waiting for it move at once.

    Waiting nodes, then redundant ones, become the new round's participants (up to
    ``max_nodes``; the rest keep their places); the old round's participants are dropped and must
    join again. Promoting in the same write matters: a node that restarts the round cannot then
    complete it alone (with a short last call) before the nodes it was restarted for get in.
    """
    queued = (*state.waiting, *state.redundant)
    promoted = queued[: settings.max_nodes]
    heartbeats = {node: at for node, at in state.heartbeats.items()
                  if node not in state.participant_set}
    last_call = now + settings.last_call_ms if len(promoted) >= settings.min_nodes else None
    new = replace(
        state,
        round=state.round + 1,
        complete=False,
        last_call=last_call,
        participants=promoted,
        waiting=tuple(node for node in state.waiting if node not in promoted),
        redundant=tuple(node for node in state.redundant if node not in promoted),
        heartbeats=heartbeats,
    )
    if len(promoted) >= settings.max_nodes:
        new = complete_round(new)
    return new


def complete_round(state: RendezvousState) -> RendezvousState:
    """Mark the round complete and fix the ranks: participants sorted by node id."""
    return replace(state, complete=True, last_call=None,
                   participants=tuple(sorted(state.participants)))


def add_participant(
    state: RendezvousState, node: str, now: int, settings: Settings
) -> RendezvousState:
    """Add *node* to the open round: the last call starts at ``min_nodes``; the round completes
    at ``max_nodes``."""
    if state.complete or node in state.participant_set:
        raise ValueError(f"cannot add {node!r} to the participants of this round")
    participants = (*state.participants, node)
    heartbeats = dict(state.heartbeats)
    heartbeats[node] = now
    last_call = state.last_call
    if len(participants) == settings.min_nodes:
        last_call = now + settings.last_call_ms
    new = replace(
        state,
        participants=participants,
        waiting=_without(state.waiting, node),
        redundant=_without(state.redundant, node),
        last_call=last_call,
        heartbeats=heartbeats,
    )
    if len(participants) >= settings.max_nodes:
        new = complete_round(new)
    return new


def add_waiting(state: RendezvousState, node: str, now: int) -> RendezvousState:
    """List *node* as waiting for the next round (the complete round has room for it)."""
    if node in state.participant_set:
        raise ValueError(f"{node!r} is a participant; it cannot also wait")
    heartbeats = dict(state.heartbeats)
    heartbeats[node] = now
    return replace(state, waiting=(*state.waiting, node), redundant=_without(state.redundant, node),
                   heartbeats=heartbeats)


def add_redundant(state: RendezvousState, node: str, now: int) -> RendezvousState:
    """List *node* as redundant: the complete round is full, so its arrival triggers nothing."""
    if node in state.participant_set:
        raise ValueError(f"{node!r} is a participant; it cannot also be redundant")
    heartbeats = dict(state.heartbeats)
    heartbeats[node] = now
    return replace(state, redundant=(*state.redundant, node), waiting=_without(state.waiting, node),
                   heartbeats=heartbeats)


def _drop(
    state: RendezvousState, dropped: set[str], now: int, settings: Settings
) -> RendezvousState:
    participant_dropped = not dropped.isdisjoint(state.participant_set)
    new = replace(
        state,
        participants=tuple(node for node in state.participants if node not in dropped),
        waiting=tuple(node for node in state.waiting if node not in dropped),
        redundant=tuple(node for node in state.redundant if node not in dropped),
        heartbeats={node: at for node, at in state.heartbeats.items() if node not in dropped},
    )
    if participant_dropped:
        if new.complete:
            # A complete round's membership is fixed: losing a member ends the round, so no
            # completed round ever changes under the nodes that were told about it.
            return end_round(new, now, settings)
        if len(new.participants) < settings.min_nodes:
            new = replace(new, last_call=None)
    return new


def remove_node(
    state: RendezvousState, node: str, now: int, settings: Settings
) -> RendezvousState:
    """Remove *node* from every list (it leaves); a complete round it was in ends."""
    if not state.listed(node):
        return state
    return _drop(state, {node}, now, settings)


def evict_dead(
    state: RendezvousState, now: int, settings: Settings, *, spare: str
) -> RendezvousState:
    """Remove every node but *spare* whose heartbeat is older than the heartbeat timeout."""
    oldest = state.oldest_heartbeat
    if oldest is None or now - oldest[0] <= settings.heartbeat_timeout_ms:
        return state  # the common case, answered without a scan
    limit = now - settings.heartbeat_timeout_ms
    dead = {node for node, at in state.heartbeats.items() if at < limit and node != spare}
    if not dead:
        return state
    return _drop(state, dead, now, settings)


def beat(state: RendezvousState, node: str, now: int) -> RendezvousState:
    """Record *node*'s heartbeat at *now*, if it is listed (a heartbeat never adds a node)."""
    if not state.listed(node) or state.heartbeats[node] >= now:
        return state
    heartbeats = dict(state.heartbeats)
    heartbeats[node] = now
    return replace(state, heartbeats=heartbeats)


def close(state: RendezvousState) -> RendezvousState:
    """Mark the run closed; it never reopens."""
    return state if state.closed else replace(state, closed=True)


# -- wire format --------------------------------------------------------------------------------

# Every handle in a process decodes the same bytes after each write; a handful of recent results,
# keyed by the bytes (whose hash Python caches), turns that into a dictionary lookup. States are
# immutable, so sharing them is safe.
_CACHE_SIZE = 8
_cache: dict[bytes, RendezvousState] = {}
_cache_lock = threading.Lock()


def _remember(data: bytes, state: RendezvousState) -> None:
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            del _cache[next(iter(_cache))]
        _cache[data] = state


def encode_state(state: RendezvousState) -> bytes:
    """The state as schema-version-1 JSON bytes."""
    nodes = (*state.participants, *state.waiting, *state.redundant)
    base = max(state.heartbeats.values(), default=0)
    document: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "round": state.round,
        "complete": state.complete,
        "closed": state.closed,
        "last_call": state.last_call,
        "participants": state.participants,
        "waiting": state.waiting,
        "redundant": state.redundant,
        "hb_base": base,
        "hb": [base - state.heartbeats[node] for node in nodes],
    }
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    _remember(data, state)
    return data


def _fail(reason: str) -> RendezvousStateError:
    return RendezvousStateError(f"the stored rendezvous state is malformed: {reason}")


def _int(document: dict[str, Any], key: str, *, optional: bool = False) -> int | None:
    value = document[key]
    if value is None and optional:
        return None
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise _fail(f"{key!r} must be a non-negative integer")
    return value


def _bool(document: dict[str, Any], key: str) -> bool:
    value = document[key]
    if type(value) is not bool:
        raise _fail(f"{key!r} must be true or false")
    return value


def _nodes(document: dict[str, Any], key: str) -> tuple[str, ...]:
    value = document[key]
    if type(value) is not list:
        raise _fail(f"{key!r} must be a list of node ids")
    for node in value:
        if type(node) is not str or not node or len(node) > _MAX_NODE_LENGTH:
            raise _fail(f"{key!r} holds something that is not a node id")
    return tuple(value)


def decode_state(data: bytes) -> RendezvousState:
    """Parse and validate stored bytes.

    :raises RendezvousStateError: the bytes are not a valid schema-version-1 state (not JSON, an
        unknown version, a missing or extra field, a wrong type, a broken invariant).
    """
    cached = _cache.get(data)
    if cached is not None:
        return cached
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RendezvousStateError(
            f"the stored rendezvous state is not arendezvous JSON ({type(exc).__name__})"
        ) from exc
    if type(document) is not dict or "v" not in document:
        raise _fail("not a versioned JSON object")
    if document["v"] != SCHEMA_VERSION or type(document["v"]) is not int:
        raise RendezvousStateError(
            f"the stored rendezvous state has schema version {document['v']!r}; this version of "
            f"arendezvous reads only version {SCHEMA_VERSION}"
        )
    if document.keys() != _KEYS:
        missing = sorted(_KEYS - document.keys())
        extra = sorted(document.keys() - _KEYS)
        raise _fail(f"missing fields {missing}, unexpected fields {extra}")
    participants = _nodes(document, "participants")
    waiting = _nodes(document, "waiting")
    redundant = _nodes(document, "redundant")
    nodes = (*participants, *waiting, *redundant)
    if len(set(nodes)) != len(nodes):
        raise _fail("a node is listed twice")
    base = _int(document, "hb_base")
    assert base is not None
    offsets = document["hb"]
    if type(offsets) is not list or len(offsets) != len(nodes):
        raise _fail("'hb' must hold one heartbeat per listed node")
    heartbeats: dict[str, int] = {}
    for node, offset in zip(nodes, offsets, strict=True):
        if type(offset) is not int or not 0 <= offset <= base:
            raise _fail("a heartbeat is not a valid time")
        heartbeats[node] = base - offset
    complete = _bool(document, "complete")
    if complete and not participants:
        raise _fail("a complete round without participants")
    state = RendezvousState(
        round=_int(document, "round") or 0,
        complete=complete,
        closed=_bool(document, "closed"),
        last_call=_int(document, "last_call", optional=True),
        participants=participants,
        waiting=waiting,
        redundant=redundant,
        heartbeats=heartbeats,
    )
    _remember(data, state)
    return state
