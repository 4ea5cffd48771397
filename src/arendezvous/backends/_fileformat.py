"""The on-disk format of the file backend: a checksummed header in front of the state bytes.

Layout (big-endian), 40 bytes of header then the state::

    magic b"ARDZ" | format version u8 | 3 reserved zero bytes | incarnation 16 bytes
    | counter u64 | state length u32 | CRC-32 of everything before it and of the state

CRC-32 detects every error burst of up to 32 bits, so any single flipped byte is caught; the length
field catches truncation and trailing garbage. The incarnation is random per creation of the file,
so a run deleted and created again never repeats a token.
"""

from __future__ import annotations

import struct
import zlib

from .._errors import RendezvousStateError

__all__ = ("HEADER_SIZE", "MAGIC", "declared_size", "decode", "encode", "format_token")

MAGIC = b"ARDZ"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sB3x16sQI")
HEADER_SIZE = _PREFIX.size + 4


def format_token(incarnation: bytes, counter: int) -> str:
    """The token a client sees for a file at *counter* in *incarnation*."""
    return f"{incarnation.hex()}-{counter}"


def encode(incarnation: bytes, counter: int, state: bytes) -> bytes:
    """Serialise *state* with its header."""
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, incarnation, counter, len(state))
    checksum = zlib.crc32(state, zlib.crc32(prefix))
    return b"".join((prefix, checksum.to_bytes(4, "big"), state))


def declared_size(header: bytes) -> int | None:
    """The whole file's size (header and state) that *header*, a file's first
    :data:`HEADER_SIZE` bytes, declares; ``None`` if it is no header of this format (then
    :func:`decode` refuses the file whatever follows). Lets a reader stop where the file should
    end instead of reading whatever is there."""
    if len(header) < HEADER_SIZE:
        return None
    magic, version, _, _, length = _PREFIX.unpack_from(header)
    if magic != MAGIC or version != FORMAT_VERSION:
        return None
    return HEADER_SIZE + int(length)


def decode(data: bytes) -> tuple[bytes, int, bytes]:
    """Return ``(incarnation, counter, state)`` from a file's bytes.

    :raises RendezvousStateError: the bytes are not a complete, intact state file.
    """
    if len(data) < HEADER_SIZE:
        raise RendezvousStateError(f"state file is truncated ({len(data)} bytes, header needs 40)")
    magic, version, incarnation, counter, length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise RendezvousStateError(f"not an arendezvous state file (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise RendezvousStateError(f"unknown state file format version {version}")
    if len(data) != HEADER_SIZE + length:
        raise RendezvousStateError(
            f"state file holds {len(data) - HEADER_SIZE} state bytes, header says {length}"
        )
    stored_checksum = int.from_bytes(data[_PREFIX.size : HEADER_SIZE], "big")
    state = data[HEADER_SIZE:]
    if zlib.crc32(state, zlib.crc32(data[: _PREFIX.size])) != stored_checksum:
        raise RendezvousStateError("state file checksum mismatch: the file is corrupt")
    return incarnation, counter, state
