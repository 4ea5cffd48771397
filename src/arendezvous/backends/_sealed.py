"""A checksummed header in front of state bytes: the one mechanism behind the file backend's
state files and the S3 backend's objects.

Layout (big-endian): magic (4 bytes) | format version u8 | 3 reserved zero bytes | the format's
own fields | state length u32 | CRC-32 of everything before it and of the state | the state.
CRC-32 detects every error burst of up to 32 bits, so any single flipped byte is caught; the
length field catches truncation and trailing garbage.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from .._errors import RendezvousStateError

__all__ = ("SealedFormat",)


class SealedFormat:
    """One format: its *magic*, *version*, the ``struct`` codes of its *fields* (between the
    reserved bytes and the length), and *what* its messages call a piece of it (``"state file"``,
    ``"object"``)."""

    def __init__(self, magic: bytes, version: int, fields: str, what: str) -> None:
        self.magic = magic
        self.version = version
        self.what = what
        self._prefix = struct.Struct(f">4sB3x{fields}I")
        self.header_size = self._prefix.size + 4

    def encode(self, fields: tuple[Any, ...], state: bytes) -> bytes:
        """*state* behind a header holding *fields*."""
        prefix = self._prefix.pack(self.magic, self.version, *fields, len(state))
        checksum = zlib.crc32(state, zlib.crc32(prefix))
        return b"".join((prefix, checksum.to_bytes(4, "big"), state))

    def declared_size(self, header: bytes) -> int | None:
        """The whole size (header and state) that *header*, the first :attr:`header_size` bytes,
        declares; ``None`` if it is no header of this format (:meth:`decode` then refuses the
        bytes whatever follows). Lets a reader stop where the data should end."""
        if len(header) < self.header_size:
            return None
        magic, version, *_, length = self._prefix.unpack_from(header)
        if magic != self.magic or version != self.version:
            return None
        return self.header_size + int(length)

    def decode(self, data: bytes) -> tuple[tuple[Any, ...], bytes]:
        """The fields and the state of *data*.

        :raises RendezvousStateError: the bytes are not a complete, intact piece of this format.
        """
        what, size = self.what, self.header_size
        if len(data) < size:
            raise RendezvousStateError(
                f"the {what} is truncated ({len(data)} bytes; the header alone is {size})"
            )
        magic, version, *fields, length = self._prefix.unpack_from(data)
        if magic != self.magic:
            raise RendezvousStateError(f"not an arendezvous {what} (magic {magic!r})")
        if version != self.version:
            raise RendezvousStateError(f"unknown arendezvous {what} format version {version}")
        if len(data) != size + length:
            raise RendezvousStateError(
                f"the {what} holds {len(data) - size} state bytes, its header says {length}"
            )
        stored_checksum = int.from_bytes(data[self._prefix.size : size], "big")
        state = data[size:]
        if zlib.crc32(state, zlib.crc32(data[: self._prefix.size])) != stored_checksum:
            raise RendezvousStateError(f"the {what}'s checksum does not match: it is corrupt")
        return tuple(fields), state
