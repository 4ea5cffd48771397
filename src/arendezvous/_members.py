"""The optional member-table capability: one small record per node, beside a run's state blob.

The contract's one blob makes every node of a run race on one register: N nodes joining cost
about N²/2 compare-and-swaps, and a heartbeat written there wakes every waiting node. A store that
can also keep one record per node -- in *groups* it counts atomically, with each record's age
told by the store's own clock -- lets the rendezvous join in O(1) store operations per node and
keep a formed round alive with heartbeats that wake nobody (see :mod:`arendezvous.rendezvous`).

A backend offers the capability by returning a :class:`MemberTable` from
:meth:`AsyncRendezvousBackend.member_table() <arendezvous.AsyncRendezvousBackend.member_table>`;
a backend that returns ``None`` (the default, so third-party backends keep working) gets the same
table emulated inside its one blob (:func:`arendezvous.rendezvous.emulate_member_table`), at the
one-blob protocol's cost. ``arendezvous.testing.members`` proves a table against this contract.

The table's contract:

* A record is keyed by a node id and holds a *group* name, a small opaque *value*, a *version*
  (an opaque token like a backend's: compared only with ``==``, never repeated within the table,
  garbage never matches and never raises) and a *seq*.
* :meth:`~MemberTable.put` is a compare-and-swap on the record's version (``None``: create only),
  and it returns, atomically with the write, how many records the group now holds -- so of N
  nodes joining a group at once, exactly one sees the group reach any given size.
* :meth:`~MemberTable.touch` refreshes a record (a heartbeat): new version, age back to zero,
  group, value and seq unchanged.
* A table whose store has a clock clients can trust (``has_clock``) reports every record's age
  in the store's time, never a client's: the rendezvous then judges liveness without comparing
  machines' clocks. A table without one implements :meth:`~MemberTable.wait_for_change`, a push
  notification of a record's next write, so that an observer can time silences on its own clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from ._backend import Token

__all__ = (
    "MAX_GROUP_LENGTH",
    "MAX_MEMBER_VALUE",
    "MAX_NODE_LENGTH",
    "Member",
    "MemberPut",
    "MemberTable",
    "check_group",
    "check_member_value",
    "check_node",
)

MAX_NODE_LENGTH = 1024
"""The longest node id, in characters."""

MAX_GROUP_LENGTH = 256
"""The longest group name, in characters."""

MAX_MEMBER_VALUE = 1024
"""The largest value a member record holds, in bytes (records are small by design)."""


def _check_text(kind: str, text: object, limit: int) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{kind} must be str, not {type(text).__name__}")
    if not text or len(text) > limit:
        raise ValueError(f"{kind} must be 1 to {limit} characters long")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{kind} must be encodable as UTF-8 (no lone surrogates)") from None
    if "\x00" in text:
        raise ValueError(f"{kind} must not contain NUL")
    return text


def check_node(node: object) -> str:
    """Validate a node id: a non-empty ``str`` of at most :data:`MAX_NODE_LENGTH` characters,
    encodable as UTF-8, without NUL.

    :raises TypeError: *node* is not a ``str``.
    :raises ValueError: it is empty, too long, or not encodable.
    """
    return _check_text("node", node, MAX_NODE_LENGTH)


def check_group(group: object) -> str:
    """Validate a group name (like :func:`check_node`, at most :data:`MAX_GROUP_LENGTH` long).

    :raises TypeError: *group* is not a ``str``.
    :raises ValueError: it is empty, too long, or not encodable.
    """
    return _check_text("group", group, MAX_GROUP_LENGTH)


def check_member_value(value: object) -> bytes:
    """Validate a record's value: exact ``bytes`` of at most :data:`MAX_MEMBER_VALUE` bytes.

    :raises TypeError: *value* is not ``bytes`` (a ``bytearray`` could change under us).
    :raises ValueError: it is longer than :data:`MAX_MEMBER_VALUE`.
    """
    if type(value) is not bytes:
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        value = bytes(memoryview(value))
    if len(value) > MAX_MEMBER_VALUE:
        raise ValueError(f"value is {len(value)} bytes; a member record holds at most "
                         f"{MAX_MEMBER_VALUE}")
    return value


@dataclass(frozen=True, slots=True)
class Member:
    """One node's record, as the store held it when it was read or written.

    :ivar node: the record's key.
    :ivar group: the group the node is in (the rendezvous: the round it waits for).
    :ivar value: the small opaque payload (the rendezvous: which process owns the record).
    :ivar version: changes on every put and touch and never repeats within the table; pass it
        back to :meth:`MemberTable.put`, :meth:`~MemberTable.touch` or :meth:`~MemberTable.delete`.
    :ivar seq: the store's count of puts into the table when this record was last put: greater
        than the seq of every record put before it, unchanged by a touch. Orders a group's
        members by arrival.
    :ivar age: seconds since the record was last put or touched, measured by the store's own
        clock, never negative; ``None`` when the table has no clock (``has_clock`` is false).
    """

    node: str
    group: str
    value: bytes
    version: Token
    seq: int
    age: float | None


class MemberPut(NamedTuple):
    """What :meth:`MemberTable.put` returns."""

    member: Member | None
    """The record as written, or, when nothing was written, the current record (``None``: the
    node has none)."""
    written: bool
    """Whether the compare-and-swap wrote."""
    group_size: int
    """After a write, how many records the written group held right after it (counted
    atomically with the write); 0 when nothing was written."""


class MemberTable(ABC):
    """Per-node records of one run, kept beside its state blob; obtained from
    :meth:`AsyncRendezvousBackend.member_table() <arendezvous.AsyncRendezvousBackend.member_table>`.

    It lives and dies with the backend handle that gave it: after the handle's ``aclose()``
    every call raises :class:`~arendezvous.BackendClosedError`. Safe to share between tasks.
    Every write is atomic: cancelled, it happened entirely or not at all. Errors are the
    contract's: :class:`~arendezvous.RendezvousConnectionError` when the store cannot be reached
    (a write may or may not have applied), :class:`~arendezvous.RendezvousStateError` for a
    record that cannot be decoded, ``TypeError``/``ValueError`` for bad arguments, before anything
    is sent.
    """

    has_clock: ClassVar[bool]
    """Whether records carry ages measured by the store's own clock. Tables without one must
    implement :meth:`wait_for_change`."""

    @abstractmethod
    async def get(self, node: str) -> Member | None:
        """The record of *node*, or ``None`` if it has none."""

    @abstractmethod
    async def members(self, group: str) -> list[Member]:
        """Every record in *group*, in ascending ``seq`` order (arrival order)."""

    @abstractmethod
    async def count(self, group: str) -> int:
        """How many records *group* holds."""

    @abstractmethod
    async def put(
        self, node: str, group: str, value: bytes, version: Token | None
    ) -> MemberPut:
        """Write *node*'s record (group and value) if *version* is its current version, or, with
        ``None``, if it has no record; the record gets a new version, a new seq and age zero.

        Otherwise nothing changes and the current record (or ``None``) is returned. A version that
        is stale, foreign or garbage is merely not current: it never raises.
        """

    @abstractmethod
    async def touch(self, node: str, version: Token) -> Member | None:
        """Refresh *node*'s record if *version* is current: a new version and age zero, the rest
        unchanged. Return the refreshed record, or ``None`` if *version* is not current (the record
        was deleted or replaced): the caller has lost it."""

    @abstractmethod
    async def delete(self, node: str, version: Token) -> bool:
        """Delete *node*'s record if *version* is current; return whether it was deleted."""

    async def wait_for_change(
        self, node: str, version: Token | None, *, timeout: float | None = None
    ) -> bool:
        """Wait until *node*'s record is no longer at *version* (written, touched or deleted;
        with ``None``: until a record exists). Return ``True`` then (at once if it already is),
        ``False`` if *timeout* seconds pass first.

        Uses the store's push notification, so that an observer learns of every heartbeat as it
        happens and can time a silence on its own monotonic clock. Required of tables without a
        clock; tables with one may leave it unimplemented.

        :raises NotImplementedError: the table does not offer it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement wait_for_change()")

