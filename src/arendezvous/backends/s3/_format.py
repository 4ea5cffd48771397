"""The bytes of one run's S3 object: a checksummed header in front of the state.

Layout (big-endian), 56 bytes of header then the state::

    magic b"ARS3" | format version u8 | 3 reserved zero bytes | incarnation 16 bytes | counter u64
    | writer 16 bytes | state length u32 | CRC-32 of everything before it and of the state

Why each field is there:

* S3's ETag is a hash of the content, so the same bytes written twice would give the same ETag and
  an old token could match again (ABA). The *incarnation* (random when the object is created) and
  the *counter* (one more per write) make every successful write's bytes distinct; the token
  carries both, with the ETag.
* The *writer* is random per ``set_state`` call, so even two racing writes of the same state with
  the same token differ, and a writer that re-reads after a refused write can tell its own write
  from another's.
* The length catches truncation and trailing bytes; CRC-32 catches any error burst of up to 32 bits
  (so any single flipped byte). A foreign object fails the magic check.

This format is distinct from the file backend's (magic ``ARDZ``): an S3 object is never a state
file, and neither backend reads the other's bytes by mistake.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..._errors import RendezvousStateError

__all__ = ("HEADER_SIZE", "MAGIC", "MAX_COUNTER", "StoredState", "decode", "encode")

MAGIC = b"ARS3"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sB3x16sQ16sI")
HEADER_SIZE = _PREFIX.size + 4
MAX_COUNTER = (1 << 64) - 1
"""The largest counter the header holds; a run at it cannot be written again."""


@dataclass(frozen=True, slots=True)
class StoredState:
    """One decoded object: who wrote it, at which version, and the state."""

    incarnation: bytes
    counter: int
    writer: bytes
    state: bytes


def encode(incarnation: bytes, counter: int, writer: bytes, state: bytes) -> bytes:
    """Serialise *state* with its header (*incarnation* and *writer* are 16 bytes each)."""
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, incarnation, counter, writer, len(state))
    checksum = zlib.crc32(state, zlib.crc32(prefix))
    return b"".join((prefix, checksum.to_bytes(4, "big"), state))


def decode(data: bytes) -> StoredState:
    """Decode an object's bytes.

    :raises RendezvousStateError: the bytes are not a complete, intact object of this format.
    """
    if len(data) < HEADER_SIZE:
        raise RendezvousStateError(
            f"the object is truncated ({len(data)} bytes; the header alone is {HEADER_SIZE})"
        )
    magic, version, incarnation, counter, writer, length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise RendezvousStateError(f"not an arendezvous S3 object (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise RendezvousStateError(f"unknown arendezvous S3 object format version {version}")
    if len(data) != HEADER_SIZE + length:
        raise RendezvousStateError(
            f"the object holds {len(data) - HEADER_SIZE} state bytes, its header says {length}"
        )
    stored_checksum = int.from_bytes(data[_PREFIX.size : HEADER_SIZE], "big")
    state = data[HEADER_SIZE:]
    if zlib.crc32(state, zlib.crc32(data[: _PREFIX.size])) != stored_checksum:
        raise RendezvousStateError("the object's checksum does not match: it is corrupt")
    if counter == 0:
        # Writers start at 1: a zero counter was never written by this backend.
        raise RendezvousStateError("the object's counter is 0, which no writer produces")
    return StoredState(incarnation, counter, writer, state)
