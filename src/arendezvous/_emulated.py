"""A member table kept inside a backend's one blob: the capability for any backend.

A backend that only meets the one-blob contract (``member_table()`` returns ``None``) still
carries the rendezvous: :func:`emulate_member_table` stores a small register and every member
record together in the run's blob, as one JSON document, and offers them as a register
(an :class:`~arendezvous.AsyncRendezvousBackend`) and a :class:`~arendezvous.MemberTable`.

It is correct but costs what the one blob costs: every write of a record is a compare-and-swap on
the whole document, so N nodes joining at once cost about N²/2 attempts, and every heartbeat
wakes every waiter. It has no store clock (``has_clock`` is false): its ``wait_for_change`` is the
blob's own notification, filtered to the record asked about.

Document (UTF-8 JSON; values base64)::

    {"arendezvous": "emulated-members/1", "id": "<32 hex: incarnation>", "next": 17,
     "register": ["<base64 state>", 16] | null,
     "members": {"node-a": ["group", "<base64 value>", 12, 9], ...}}

``next`` is the next number to hand out; the register's version and each record's version and
seq are numbers handed out from it, so none repeats within an incarnation, and a document created
again (after a deletion) draws a new random incarnation, which every version carries.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from ._backend import AsyncRendezvousBackend, Token, check_state, check_timeout
from ._errors import BackendClosedError, RendezvousStateError
from ._members import (
    MAX_GROUP_LENGTH,
    MAX_MEMBER_VALUE,
    MAX_NODE_LENGTH,
    Member,
    MemberPut,
    MemberTable,
    check_group,
    check_member_value,
    check_node,
)

__all__ = ("EMULATED_FORMAT", "EmulatedVersion", "emulate_member_table")

EMULATED_FORMAT = "emulated-members/1"
"""The ``arendezvous`` field of every emulated document; anything else in the blob is refused."""

_MAX_NUMBER = 2**63 - 1
_T = TypeVar("_T")
_SetResult = tuple[bytes, Token, bool]


@dataclass(frozen=True, slots=True)
class EmulatedVersion:
    """A version in an emulated document: its incarnation and a number handed out from it."""

    incarnation: str
    number: int


def _is_version(candidate: object, incarnation: str, number: int) -> bool:
    # The caller's version is untrusted: exact type first, so no foreign __eq__ runs.
    return (
        type(candidate) is EmulatedVersion
        and type(candidate.incarnation) is str
        and type(candidate.number) is int
        and candidate.incarnation == incarnation
        and candidate.number == number
    )


@dataclass(frozen=True)
class _Record:
    group: str
    value: bytes
    version: int
    seq: int


@dataclass(frozen=True)
class _Document:
    incarnation: str
    next: int
    register: tuple[bytes, int] | None
    members: dict[str, _Record]

    @classmethod
    def new(cls) -> _Document:
        return cls(os.urandom(16).hex(), 1, None, {})

    def version(self, number: int) -> EmulatedVersion:
        return EmulatedVersion(self.incarnation, number)

    def member(self, node: str) -> Member | None:
        record = self.members.get(node)
        if record is None:
            return None
        return Member(node, record.group, record.value, self.version(record.version), record.seq,
                      None)

    def with_members(self, members: dict[str, _Record], used: int) -> _Document:
        return _Document(self.incarnation, self.next + used, self.register, members)


def _fail(reason: str) -> RendezvousStateError:
    return RendezvousStateError(f"the blob is not an emulated member document: {reason}")


def _number(value: object, limit: int) -> int:
    if type(value) is not int or not 0 < value < limit:
        raise _fail(f"{value!r} is not a number handed out by the document")
    return value


def _bytes(text: object, limit: int) -> bytes:
    if type(text) is not str:
        raise _fail("a value is not base64 text")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _fail("a value is not valid base64") from exc
    if len(data) > limit:
        raise _fail("a value is too long")
    return data


def _text(value: object, limit: int) -> str:
    if type(value) is not str or not value or len(value) > limit or "\x00" in value:
        raise _fail(f"{value!r:.40} is not a valid node id or group")
    return value


def _encode(document: _Document) -> bytes:
    register = document.register
    payload: dict[str, Any] = {
        "arendezvous": EMULATED_FORMAT,
        "id": document.incarnation,
        "next": document.next,
        "register": None if register is None else [
            base64.b64encode(register[0]).decode("ascii"), register[1]
        ],
        "members": {
            node: [record.group, base64.b64encode(record.value).decode("ascii"), record.version,
                   record.seq]
            for node, record in document.members.items()
        },
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(data: bytes) -> _Document:
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _fail("not JSON") from exc
    if type(payload) is not dict or payload.get("arendezvous") != EMULATED_FORMAT:
        raise RendezvousStateError(
            "the run's blob was not written by arendezvous's one-blob member emulation: every "
            "node of a run must reach the store through a backend with the same capabilities "
            "(a wrapper that hides member_table() splits a run in two)"
        )
    if payload.keys() != {"arendezvous", "id", "next", "register", "members"}:
        raise _fail("unexpected fields")
    incarnation = payload["id"]
    if type(incarnation) is not str or len(incarnation) != 32:
        raise _fail("bad incarnation")
    next_number = payload["next"]
    if type(next_number) is not int or not 0 < next_number <= _MAX_NUMBER:
        raise _fail("bad counter")
    raw_register = payload["register"]
    register: tuple[bytes, int] | None = None
    if raw_register is not None:
        if type(raw_register) is not list or len(raw_register) != 2:
            raise _fail("bad register")
        register = (_bytes(raw_register[0], 1 << 30), _number(raw_register[1], next_number))
    raw_members = payload["members"]
    if type(raw_members) is not dict:
        raise _fail("bad members")
    members: dict[str, _Record] = {}
    for node, fields in raw_members.items():
        if type(fields) is not list or len(fields) != 4:
            raise _fail("bad member record")
        members[_text(node, MAX_NODE_LENGTH)] = _Record(
            _text(fields[0], MAX_GROUP_LENGTH),
            _bytes(fields[1], MAX_MEMBER_VALUE),
            _number(fields[2], next_number),
            _number(fields[3], next_number),
        )
    return _Document(incarnation, next_number, register, members)


class _Blob:
    """The shared document of one backend handle, read and compare-and-swapped as a whole."""

    def __init__(self, backend: AsyncRendezvousBackend) -> None:
        self.backend = backend
        self.closed = False
        # The last document seen and its token: a write first tries it (the compare-and-swap
        # validates it), saving a read per write when this handle wrote last.
        self._cached: tuple[_Document | None, Token | None] | None = None

    def check_open(self) -> None:
        if self.closed:
            raise BackendClosedError("this emulated register and its member table were closed")

    async def read(self) -> tuple[_Document | None, Token | None]:
        self.check_open()
        current = await self.backend.get_state()
        seen = (None, None) if current is None else (_decode(current[0]), current[1])
        self._cached = seen
        return seen

    async def update(
        self, change: Callable[[_Document | None], tuple[_Document | None, _T]]
    ) -> _T:
        """Apply *change* (document -> (new document or None to write nothing, result)) by
        compare-and-swap, re-applying it to whatever the store holds until it sticks."""
        self.check_open()
        fresh = self._cached is None
        document, token = self._cached if self._cached is not None else await self.read()
        while True:
            new, result = change(document)
            if new is None:
                if fresh:
                    return result
                # A decision not to write must rest on the store's current document.
                document, token = await self.read()
                fresh = True
                continue
            state, token, written = await self.backend.set_state(_encode(new), token)
            if written:
                self._cached = (new, token)
                return result
            fresh = True
            document = None if token is None else _decode(state)
            self._cached = (document, token)

    async def wait(self, token: Token | None) -> tuple[_Document | None, Token | None]:
        """Wait for the blob to differ from *token*; return what it holds then."""
        self.check_open()
        changed = await self.backend.wait_for_change(token)
        assert changed is not None  # no timeout was given
        seen = (_decode(changed[0]), changed[1])
        self._cached = seen
        return seen


class _EmulatedRegister(AsyncRendezvousBackend):
    """The register inside the document, as a backend of its own (it borrows the real one)."""

    def __init__(self, blob: _Blob, table: _EmulatedTable) -> None:
        self._blob = blob
        self._table = table

    @property
    def name(self) -> str:
        return self._blob.backend.name

    def __repr__(self) -> str:
        return f"emulate_member_table({self._blob.backend!r}).register"

    async def get_state(self) -> tuple[bytes, Token] | None:
        document, _ = await self._blob.read()
        return _register_of(document)

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        state = check_state(state, 1 << 30)  # the real backend's own limit applies to the whole

        def change(document: _Document | None) -> tuple[_Document | None, _SetResult]:
            current = None if document is None else document.register
            if current is None:
                if token is not None:
                    return None, (b"", None, False)
            elif document is None or not _is_version(token, document.incarnation, current[1]):
                assert document is not None
                return None, (current[0], document.version(current[1]), False)
            base = document if document is not None else _Document.new()
            new = _Document(base.incarnation, base.next + 1, (state, base.next), base.members)
            return new, (state, new.version(base.next), True)

        return await self._blob.update(change)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        check_timeout(timeout)
        document, blob_token = await self._blob.read()
        current = _register_of(document)
        if _differs(current, token):
            return current
        with anyio.move_on_after(timeout):
            while True:
                document, blob_token = await self._blob.wait(blob_token)
                current = _register_of(document)
                if _differs(current, token):
                    return current
        return None

    async def aclose(self) -> None:
        """Close this register and its table; the real backend belongs to the caller."""
        self._blob.closed = True

    def member_table(self) -> MemberTable:
        return self._table


def _register_of(document: _Document | None) -> tuple[bytes, Token] | None:
    if document is None or document.register is None:
        return None
    state, number = document.register
    return state, document.version(number)


def _differs(current: tuple[bytes, Token] | None, token: Token | None) -> bool:
    if current is None:
        return False
    version = current[1]
    assert isinstance(version, EmulatedVersion)
    return not _is_version(token, version.incarnation, version.number)


class _EmulatedTable(MemberTable):
    """The member records inside the document. No store clock: ages are ``None``."""

    has_clock = False

    def __init__(self, blob: _Blob) -> None:
        self._blob = blob

    def __repr__(self) -> str:
        return f"emulate_member_table({self._blob.backend!r}).table"

    async def get(self, node: str) -> Member | None:
        check_node(node)
        document, _ = await self._blob.read()
        return None if document is None else document.member(node)

    async def members(self, group: str) -> list[Member]:
        check_group(group)
        document, _ = await self._blob.read()
        if document is None:
            return []
        found = [document.member(node) for node, record in document.members.items()
                 if record.group == group]
        return sorted((member for member in found if member is not None),
                      key=lambda member: member.seq)

    async def count(self, group: str) -> int:
        check_group(group)
        document, _ = await self._blob.read()
        if document is None:
            return 0
        return sum(1 for record in document.members.values() if record.group == group)

    async def put(
        self, node: str, group: str, value: bytes, version: Token | None
    ) -> MemberPut:
        check_node(node)
        check_group(group)
        value = check_member_value(value)

        def change(document: _Document | None) -> tuple[_Document | None, MemberPut]:
            current = None if document is None else document.members.get(node)
            if current is None:
                if version is not None:
                    return None, MemberPut(None, False, 0)
            else:
                assert document is not None
                if not _is_version(version, document.incarnation, current.version):
                    return None, MemberPut(document.member(node), False, 0)
            base = document if document is not None else _Document.new()
            members = dict(base.members)
            members[node] = _Record(group, value, base.next, base.next)
            new = base.with_members(members, 1)
            size = sum(1 for record in members.values() if record.group == group)
            return new, MemberPut(new.member(node), True, size)

        return await self._blob.update(change)

    async def touch(self, node: str, version: Token) -> Member | None:
        check_node(node)

        def change(document: _Document | None) -> tuple[_Document | None, Member | None]:
            current = None if document is None else document.members.get(node)
            if current is None:
                return None, None
            assert document is not None
            if not _is_version(version, document.incarnation, current.version):
                return None, None
            members = dict(document.members)
            members[node] = _Record(current.group, current.value, document.next, current.seq)
            new = document.with_members(members, 1)
            return new, new.member(node)

        return await self._blob.update(change)

    async def delete(self, node: str, version: Token) -> bool:
        check_node(node)

        def change(document: _Document | None) -> tuple[_Document | None, bool]:
            current = None if document is None else document.members.get(node)
            if current is None:
                return None, False
            assert document is not None
            if not _is_version(version, document.incarnation, current.version):
                return None, False
            members = {other: record for other, record in document.members.items()
                       if other != node}
            return document.with_members(members, 0), True

        return await self._blob.update(change)

    async def wait_for_change(
        self, node: str, version: Token | None, *, timeout: float | None = None
    ) -> bool:
        check_node(node)
        check_timeout(timeout)
        document, blob_token = await self._blob.read()
        if self._moved(document, node, version):
            return True
        with anyio.move_on_after(timeout):
            while True:
                document, blob_token = await self._blob.wait(blob_token)
                if self._moved(document, node, version):
                    return True
        return False

    @staticmethod
    def _moved(document: _Document | None, node: str, version: Token | None) -> bool:
        current = None if document is None else document.members.get(node)
        if current is None:
            return version is not None
        assert document is not None
        return not _is_version(version, document.incarnation, current.version)


def emulate_member_table(
    backend: AsyncRendezvousBackend,
) -> tuple[AsyncRendezvousBackend, MemberTable]:
    """Keep a register and a member table together in *backend*'s one blob.

    Returns ``(register, table)``: the register is a backend of its own (the rendezvous keeps its
    round record there) whose ``member_table()`` is the table. Both borrow *backend*: closing it
    closes them. Every handle of a run must use the emulation, or none: the document is refused
    with :class:`~arendezvous.RendezvousStateError` by anything else that reads the blob.
    """
    if not isinstance(backend, AsyncRendezvousBackend):
        raise TypeError(f"expected an AsyncRendezvousBackend, not {type(backend).__name__}")
    blob = _Blob(backend)
    table = _EmulatedTable(blob)
    return _EmulatedRegister(blob, table), table
