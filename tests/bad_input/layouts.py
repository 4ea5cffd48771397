"""The stored layouts of the decoding backends, written out from their docstrings.

Independent of the backends' own code, these are the oracle for which raw values must decode:
a value the reference decoder refuses must raise ``RendezvousStateError``, one it accepts must
read as the state it holds.
"""

from __future__ import annotations

import re
import struct
import zlib

from arendezvous.backends.redis import RedisToken

__all__ = (
    "etcd_decode",
    "etcd_encode",
    "file_decode",
    "file_encode",
    "pg_decode",
    "pg_encode",
    "redis_hash_decode",
)

# Reference codecs written from the layouts in each backend's docstring, independent of the
# backends' own code: the oracle for which raw values must decode.

_FILE_PREFIX = struct.Struct(">4sB3x16sQI")
_FILE_HEADER = _FILE_PREFIX.size + 4


def file_encode(state: bytes) -> bytes:
    """A valid state file: magic, version 1, incarnation, counter, length, CRC-32, state."""
    prefix = _FILE_PREFIX.pack(b"ARDZ", 1, b"\x5a" * 16, 7, len(state))
    return prefix + zlib.crc32(state, zlib.crc32(prefix)).to_bytes(4, "big") + state


def file_decode(raw: bytes) -> bytes | None:
    if len(raw) < _FILE_HEADER:
        return None
    magic, version, _, _, length = _FILE_PREFIX.unpack_from(raw)
    state = raw[_FILE_HEADER:]
    checksum = int.from_bytes(raw[_FILE_PREFIX.size : _FILE_HEADER], "big")
    if magic != b"ARDZ" or version != 1 or length != len(state):
        return None
    return state if zlib.crc32(state, zlib.crc32(raw[: _FILE_PREFIX.size])) == checksum else None


def etcd_encode(state: bytes) -> bytes:
    """A valid etcd value: ``ARDE``, version 1, CRC-32 of header and state, state."""
    header = b"ARDE\x01"
    return header + zlib.crc32(state, zlib.crc32(header)).to_bytes(4, "big") + state


def etcd_decode(raw: bytes) -> bytes | None:
    if len(raw) < 9 or raw[:5] != b"ARDE\x01":
        return None
    state = raw[9:]
    return (
        state if zlib.crc32(state, zlib.crc32(raw[:5])) == int.from_bytes(raw[5:9], "big") else None
    )


_PG_HEADER = struct.Struct(">4sBI")


def pg_encode(state: bytes) -> bytes:
    """A valid PostgreSQL ``state`` column: ``ARDP``, version 1, CRC-32 of the state, state."""
    return _PG_HEADER.pack(b"ARDP", 1, zlib.crc32(state)) + state


def pg_decode(raw: bytes) -> bytes | None:
    if len(raw) < _PG_HEADER.size:
        return None
    magic, version, checksum = _PG_HEADER.unpack_from(raw)
    state = raw[_PG_HEADER.size :]
    return state if (magic, version, checksum) == (b"ARDP", 1, zlib.crc32(state)) else None


_REDIS_INCARNATION = re.compile(rb"[0-9a-f]{32}")
_REDIS_COUNTER = re.compile(rb"[1-9][0-9]{0,17}")


def redis_hash_decode(fields: dict[bytes, bytes]) -> tuple[bytes, RedisToken] | None:
    """The state and token a Redis hash holds, or ``None`` if it is not an arendezvous/1 hash."""
    incarnation = fields.get(b"incarnation", b"")
    counter = fields.get(b"counter", b"")
    if (
        fields.get(b"format") != b"arendezvous/1"
        or b"state" not in fields
        or not _REDIS_INCARNATION.fullmatch(incarnation)
        or not _REDIS_COUNTER.fullmatch(counter)
    ):
        return None
    return fields[b"state"], RedisToken(incarnation.decode(), int(counter))
