"""The on-disk format of the file backend: a checksummed header in front of the state bytes.

Layout (big-endian), 40 bytes of header then the state::

    magic b"ARDZ" | format version u8 | 3 reserved zero bytes | incarnation 16 bytes
    | counter u64 | state length u32 | CRC-32 of everything before it and of the state

CRC-32 detects every error burst of up to 32 bits, so any single flipped byte is caught; the length
field catches truncation and trailing garbage. The incarnation is random per creation of the file,
so a run deleted and created again never repeats a token.
"""

from __future__ import annotations

from ._sealed import SealedFormat

__all__ = ("HEADER_SIZE", "MAGIC", "declared_size", "decode", "encode", "format_token")

MAGIC = b"ARDZ"
_FORMAT = SealedFormat(MAGIC, 1, "16sQ", "state file")  # incarnation, counter
HEADER_SIZE = _FORMAT.header_size


def format_token(incarnation: bytes, counter: int) -> str:
    """The token a client sees for a file at *counter* in *incarnation*."""
    return f"{incarnation.hex()}-{counter}"


def encode(incarnation: bytes, counter: int, state: bytes) -> bytes:
    """Serialise *state* with its header."""
    return _FORMAT.encode((incarnation, counter), state)


def declared_size(header: bytes) -> int | None:
    """The whole file's size (header and state) that *header*, a file's first
    :data:`HEADER_SIZE` bytes, declares; ``None`` if it is no header of this format (then
    :func:`decode` refuses the file whatever follows). Lets a reader stop where the file should
    end instead of reading whatever is there."""
    return _FORMAT.declared_size(header)


def decode(data: bytes) -> tuple[bytes, int, bytes]:
    """Return ``(incarnation, counter, state)`` from a file's bytes.

    :raises RendezvousStateError: the bytes are not a complete, intact state file.
    """
    (incarnation, counter), state = _FORMAT.decode(data)
    return incarnation, counter, state
