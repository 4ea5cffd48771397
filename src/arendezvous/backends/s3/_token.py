"""The S3 backend's token, and the check that keeps a caller's token from doing harm."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import _format

__all__ = ("S3Token", "is_token")

_INCARNATION_TEXT = re.compile(r"[0-9a-f]{32}")
# Visible ASCII without '"': anything else could not be sent back as an If-Match header value.
_ETAG_TEXT = re.compile(r"[\x21\x23-\x7e]{1,256}")


@dataclass(frozen=True, slots=True, eq=False)
class S3Token:
    """An S3 backend's token: the object's ETag, with its incarnation and write counter.

    The ETag is what the store compares (the next write sends it as ``If-Match``), so it is what
    makes two tokens equal: a token equals the current one exactly when the store would let a
    write with it through, and a malformed one (which the backend never sends) equals nothing.
    The incarnation (128 random bits drawn when the object is created) and the counter (one more
    per write) are inside the object and carried here so that the next write's content, and so
    its ETag, is new although an ETag hashes the content: no two writes store the same bytes and
    no token comes back (no ABA). Tokens are values: two reads of one write give equal tokens; a
    token equals only an ``S3Token``.
    """

    incarnation: str
    counter: int
    etag: str

    def __eq__(self, other: object) -> bool:
        if type(other) is not S3Token or type(self) is not S3Token:
            return NotImplemented
        # Fields' exact types first: a str subclass's __eq__ would run on the comparison.
        return is_token(other) and is_token(self) and self.etag == other.etag

    def __hash__(self) -> int:
        return hash(self.etag)


def is_token(token: object) -> bool:
    """Whether *token* is a well-formed :class:`S3Token` (exact types; a subclass is not)."""
    # A caller's token is untrusted: exact types before anything compares it (no foreign __eq__
    # runs), and fields no stored token can have make it merely stale, never a malformed request.
    return (
        type(token) is S3Token
        and type(token.incarnation) is str
        and type(token.counter) is int
        and type(token.etag) is str
        and 0 < token.counter <= _format.MAX_COUNTER
        and _INCARNATION_TEXT.fullmatch(token.incarnation) is not None
        and _ETAG_TEXT.fullmatch(token.etag) is not None
    )
