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

from dataclasses import dataclass

from ..._errors import RendezvousStateError
from .._sealed import SealedFormat

__all__ = ("HEADER_SIZE", "MAGIC", "MAX_COUNTER", "StoredState", "decode", "encode")

MAGIC = b"ARS3"
_FORMAT = SealedFormat(MAGIC, 1, "16sQ16s", "object")  # incarnation, counter, writer
HEADER_SIZE = _FORMAT.header_size
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
    return _FORMAT.encode((incarnation, counter, writer), state)


def decode(data: bytes) -> StoredState:
    """Decode an object's bytes.

    :raises RendezvousStateError: the bytes are not a complete, intact object of this format.
    """
    (incarnation, counter, writer), state = _FORMAT.decode(data)
    if counter == 0:
        # Writers start at 1: a zero counter was never written by this backend.
        raise RendezvousStateError("the object's counter is 0, which no writer produces")
    return StoredState(incarnation, counter, writer, state)
