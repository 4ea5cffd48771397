"""What the etcd backend stores and sends: value formats, tokens, sizes, errors, the client."""

from __future__ import annotations

import importlib
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple, TypeGuard

from ..._compat import import_optional
from ..._errors import ErrorRule, ErrorTable, RendezvousStateError
from ..._members import MAX_MEMBER_VALUE, check_group

__all__ = (
    "MAX_KEY_SIZE",
    "MAX_REQUEST_BYTES",
    "MAX_STATE_SIZE_LIMIT",
    "EtcdMemberVersion",
    "EtcdToken",
    "MemberRecord",
    "client_modules",
    "decode",
    "decode_member",
    "encode",
    "encode_member",
    "error_table",
    "is_member_record",
    "prefix_range",
    "sendable",
    "sendable_version",
    "state_size",
)

MAX_REQUEST_BYTES = 1536 * 1024
"""etcd's default ``--max-request-bytes`` (1.5 MiB): it refuses any request larger."""

MAX_KEY_SIZE = 16 * 1024
"""The longest key (``key_prefix + run_id``, UTF-8) accepted: a write names it three times."""

MAX_STATE_SIZE_LIMIT = MAX_REQUEST_BYTES - 64 * 1024
"""The largest ``max_state_size``: what a write request of the longest key and its framing leave
of etcd's request limit, so a state within it is never refused by etcd."""

_MAGIC = b"ARDE"
_FORMAT_VERSION = 1
_HEADER = _MAGIC + bytes([_FORMAT_VERSION])
_HEADER_SIZE = len(_HEADER) + 4
_HEADER_CRC = zlib.crc32(_HEADER)


def encode(state: bytes) -> bytes:
    """The stored value: ``b"ARDE" | format u8 | CRC-32 u32 | state``."""
    checksum = zlib.crc32(state, _HEADER_CRC)
    return b"".join((_HEADER, checksum.to_bytes(4, "big"), state))


def decode(value: bytes, key: bytes) -> bytes:
    """The state in a stored *value*.

    :raises RendezvousStateError: *value* is not what :func:`encode` makes.
    """
    if len(value) < _HEADER_SIZE or value[: len(_MAGIC)] != _MAGIC:
        raise RendezvousStateError(
            f"etcd key {key!r} holds {len(value)} bytes that are not arendezvous state"
        )
    if value[len(_MAGIC)] != _FORMAT_VERSION:
        raise RendezvousStateError(
            f"etcd key {key!r} holds state of unknown format version {value[len(_MAGIC)]}"
        )
    state = value[_HEADER_SIZE:]
    if zlib.crc32(state, _HEADER_CRC) != int.from_bytes(value[len(_HEADER) : _HEADER_SIZE], "big"):
        raise RendezvousStateError(f"etcd key {key!r}: state checksum mismatch (corrupt value)")
    return state


def state_size(value: bytes) -> int | None:
    """The size of the state in a stored *value* that carries this backend's header (its
    checksum unchecked: a corrupt state of ours is still ours), else ``None``: not ours."""
    if len(value) < _HEADER_SIZE or value[: len(_HEADER)] != _HEADER:
        return None
    return len(value) - _HEADER_SIZE


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """``(key, range_end)`` of etcd's range of every key that starts with *prefix*: the prefix
    with its last byte below 0xff incremented (and what follows it dropped); ``b"\\0"``, etcd's
    "to the end", when there is none (an empty prefix, or one of 0xff bytes only)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return prefix or b"\0", b"\0"
    return prefix, stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(frozen=True, slots=True)
class EtcdToken:
    """An etcd backend's token: the run key's ``mod_revision`` in one cluster.

    Equal only to an :class:`EtcdToken` with the same cluster, key and revision. A revision is
    never reused by a key, so tokens never repeat within a run even across deletion and
    re-creation (as long as the cluster's data is not wiped or restored from an older backup).
    """

    cluster_id: int
    key: bytes
    mod_revision: int

    def __repr__(self) -> str:
        return f"<EtcdToken revision {self.mod_revision} of {self.key!r}>"


def sendable(token: object) -> TypeGuard[EtcdToken]:
    """An EtcdToken whose fields have the types and ranges etcd's have: only such a token is
    compared or sent; any other is merely stale."""
    return (
        type(token) is EtcdToken
        and type(token.cluster_id) is int
        and type(token.key) is bytes
        and type(token.mod_revision) is int
        and 0 < token.mod_revision < 2**63
    )


_MEMBER_MAGIC = b"ARDM"
_MEMBER_FORMAT = 1
_MEMBER_HEADER = _MEMBER_MAGIC + bytes([_MEMBER_FORMAT])
_MEMBER_HEADER_CRC = zlib.crc32(_MEMBER_HEADER)
_MEMBER_FIXED = len(_MEMBER_HEADER) + 4 + 8 + 2  # header, CRC-32, seq, group length
MAX_MEMBER_RECORD = _MEMBER_FIXED + 4 * 256 + MAX_MEMBER_VALUE
"""The largest stored member record: the longest group (256 characters of up to 4 UTF-8 bytes)
and the largest value."""

SEQ_IS_MOD_REVISION = 0
"""The seq stored by a put: the record's seq is then its key's ``mod_revision`` (the put's own
revision, which no request can know before etcd commits it). A touch stores the seq explicitly."""


class MemberRecord(NamedTuple):
    """A decoded member record: what a record key's value holds."""

    group: str
    value: bytes
    seq: int
    """The stored seq: :data:`SEQ_IS_MOD_REVISION` or the revision of the record's last put."""


def encode_member(group: str, value: bytes, seq: int) -> bytes:
    """A member record key's value: ``b"ARDM" | format u8 | CRC-32 u32 | seq u64 |
    group length u16 | group (UTF-8) | value``; the checksum covers everything after it."""
    encoded_group = group.encode()
    body = b"".join(
        (seq.to_bytes(8, "big"), len(encoded_group).to_bytes(2, "big"), encoded_group, value)
    )
    return b"".join(
        (_MEMBER_HEADER, zlib.crc32(body, _MEMBER_HEADER_CRC).to_bytes(4, "big"), body)
    )


def is_member_record(raw: bytes) -> bool:
    """Whether *raw* starts like a member record this backend writes (for counting records
    cheaply: :func:`decode_member` checks the rest)."""
    return raw[: len(_MEMBER_HEADER)] == _MEMBER_HEADER


def decode_member(raw: bytes, key: bytes) -> MemberRecord:
    """The record in a member record key's value *raw*.

    :raises RendezvousStateError: *raw* is not what :func:`encode_member` makes (a value written
        by someone else, or damaged): the record is never overwritten on a guess.
    """
    if len(raw) < _MEMBER_FIXED or raw[: len(_MEMBER_MAGIC)] != _MEMBER_MAGIC:
        raise RendezvousStateError(
            f"etcd key {key!r} holds {len(raw)} bytes that are not an arendezvous member record"
        )
    if raw[len(_MEMBER_MAGIC)] != _MEMBER_FORMAT:
        raise RendezvousStateError(
            f"etcd key {key!r} holds a member record of unknown format version "
            f"{raw[len(_MEMBER_MAGIC)]}"
        )
    body = memoryview(raw)[len(_MEMBER_HEADER) + 4 :]
    checksum = int.from_bytes(raw[len(_MEMBER_HEADER) : len(_MEMBER_HEADER) + 4], "big")
    if zlib.crc32(body, _MEMBER_HEADER_CRC) != checksum:
        raise RendezvousStateError(f"etcd key {key!r}: member record checksum mismatch (corrupt)")
    seq = int.from_bytes(body[:8], "big")
    group_end = 10 + int.from_bytes(body[8:10], "big")
    try:
        if seq >= 2**63 or group_end > len(body) or len(body) - group_end > MAX_MEMBER_VALUE:
            raise ValueError("a field is out of range")
        group = check_group(bytes(body[10:group_end]).decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise RendezvousStateError(
            f"etcd key {key!r} holds a malformed member record: {exc}"
        ) from None
    return MemberRecord(group, bytes(body[group_end:]), seq)


@dataclass(frozen=True, slots=True)
class EtcdMemberVersion:
    """The version of an etcd member record: its key's ``mod_revision`` in one cluster, with the
    record as stored at that revision.

    Equal only to a version of the same cluster, key, revision and record. A revision is never
    reused, so versions never repeat within a run (as long as the cluster's data is not wiped or
    restored from an older backup). The record rides along because the writes that follow need
    it without a read: a put deletes the record's old group-index key, a touch rewrites the
    record with its seq made explicit, and every write compares the stored record too, so a
    version made up with a right revision but a wrong record only fails its compare.
    """

    cluster_id: int
    key: bytes
    mod_revision: int
    record: bytes

    def __repr__(self) -> str:
        return f"<EtcdMemberVersion revision {self.mod_revision} of {self.key!r}>"


def sendable_version(version: object, key: bytes) -> TypeGuard[EtcdMemberVersion]:
    """An :class:`EtcdMemberVersion` of the record key *key* whose fields have the exact types and
    ranges etcd's have: only such a version is compared or sent; any other is merely stale."""
    return (
        type(version) is EtcdMemberVersion
        and type(version.cluster_id) is int
        and type(version.key) is bytes
        and type(version.mod_revision) is int
        and type(version.record) is bytes
        and 0 < version.mod_revision < 2**63
        and len(version.record) <= MAX_MEMBER_RECORD
        and version.key == key
    )


def client_modules() -> tuple[Any, Any]:
    """``(grpc, aetcd.rpc)``, imported on first use so that ``import arendezvous`` never does."""
    import_optional("aetcd", "etcd")
    grpc = import_optional("grpc", "etcd")
    try:
        rpc = importlib.import_module("aetcd.rpc")
    except ImportError:
        raise
    except Exception as exc:  # protobuf's VersionError: gencode newer than the runtime
        raise ImportError(
            f"aetcd cannot load its protocol buffers ({exc}); it needs protobuf>=5.27.2: "
            "pip install 'arendezvous[etcd]'"
        ) from exc
    return grpc, rpc


@cache
def error_table(grpc: Any) -> ErrorTable:
    """gRPC's exceptions (the module *grpc*) and ours."""
    deadline = grpc.StatusCode.DEADLINE_EXCEEDED

    def status(exc: Any) -> str:
        return f"{exc.code().name}: {exc.details()}"

    return (
        ErrorRule(
            (grpc.aio.AioRpcError,),
            detail="no answer within {timeout:g} s (DEADLINE_EXCEEDED)",
            when=lambda exc: getattr(exc, "code", lambda: None)() == deadline,
        ),
        ErrorRule((grpc.aio.AioRpcError,), detail=status),
        ErrorRule((TimeoutError,), detail="no answer within {timeout:g} s"),
        ErrorRule((grpc.RpcError, OSError)),
    )
