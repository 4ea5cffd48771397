"""What the S3 backend asks of the store, as plain functions over an aiobotocore S3 client.

Nothing here knows about handles, event loops, timeouts or tokens: each function is one or a few
requests, and returns what the store said in terms the backend decides on. Two tables, both data:

* :data:`REPLY_TABLE` reads the store's error replies (an S3 error code or HTTP status to an
  :class:`Outcome`): which refusals are the answers a conditional write expects;
* :func:`error_table` maps everything else the client raises onto the contract's errors (applied
  by :func:`arendezvous._errors.map_exceptions`, as every network backend's table is).

* :func:`read_object` -- ``GetObject``: the bytes and ETag, or ``None`` when the key is absent.
* :func:`put_object_if` -- ``PutObject`` with ``If-None-Match: *`` (create only) or
  ``If-Match: <etag>`` (replace only that version): the new ETag, or why the store refused.
* :func:`probe_conditional_writes` -- proves the store refuses the conditional writes it must
  refuse; a store that silently ignores either header cannot hold a compare-and-swap register.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, TypeAlias

from ..._errors import ErrorRule, ErrorTable, RendezvousStateError

__all__ = (
    "PROBE_NAME",
    "REFUSED",
    "REPLY_TABLE",
    "MissingETag",
    "ObjectTooLarge",
    "Outcome",
    "S3Client",
    "StoredObject",
    "classify",
    "describe",
    "error_table",
    "format_etag",
    "normalize_etag",
    "probe_conditional_writes",
    "put_object_if",
    "read_object",
)

S3Client: TypeAlias = Any
"""An aiobotocore S3 client (aiobotocore ships no type information)."""

PROBE_NAME = ".arendezvous-probe"
"""The probe object's name under the prefix; a run's object name never starts with a dot."""

_CONTENT_TYPE = "application/octet-stream"


class Outcome(enum.Enum):
    """What an S3 error reply means to the backend."""

    #: The key (or the bucket's key for a read) does not exist.
    MISSING = "missing"
    #: A condition did not hold (412): nothing was written.
    CONDITION_FAILED = "condition failed"
    #: A concurrent conditional write conflicted (409, AWS): nothing was written; try again.
    CONFLICT = "conflict"
    #: The store does not implement the request or header (501).
    UNSUPPORTED = "unsupported"
    #: The bucket does not exist.
    NO_BUCKET = "no bucket"
    #: The store refused the credentials or their permissions.
    DENIED = "denied"
    #: The request's signature carries a time too far from the store's clock (SigV4).
    CLOCK_SKEW = "clock skew"


REPLY_TABLE: Mapping[str | int, Outcome] = MappingProxyType(
    {
        # Error codes first (they are precise), then HTTP statuses for replies without a body,
        # such as HEAD's, or from stores that use other codes.
        "NoSuchKey": Outcome.MISSING,
        "PreconditionFailed": Outcome.CONDITION_FAILED,
        "ConditionalRequestConflict": Outcome.CONFLICT,
        "NotImplemented": Outcome.UNSUPPORTED,
        "NoSuchBucket": Outcome.NO_BUCKET,
        "AccessDenied": Outcome.DENIED,
        "InvalidAccessKeyId": Outcome.DENIED,
        "SignatureDoesNotMatch": Outcome.DENIED,
        "ExpiredToken": Outcome.DENIED,
        "InvalidToken": Outcome.DENIED,
        "RequestTimeTooSkewed": Outcome.CLOCK_SKEW,
        404: Outcome.MISSING,
        412: Outcome.CONDITION_FAILED,
        409: Outcome.CONFLICT,
        501: Outcome.UNSUPPORTED,
        403: Outcome.DENIED,
    }
)
"""How the backend reads an S3 error reply: its code, else its HTTP status, to an outcome.

A reply no row names is a failing store (``RendezvousConnectionError``, by :func:`error_table`)."""

REFUSED = frozenset({Outcome.CONDITION_FAILED, Outcome.CONFLICT, Outcome.MISSING})
"""Outcomes of a conditional ``PutObject`` that wrote nothing because of the condition (AWS
answers ``If-Match`` on an absent key with 404, SeaweedFS with 412)."""


def classify(error: BaseException) -> Outcome | None:
    """The :class:`Outcome` of an S3 error reply, or ``None`` if the table does not know it (or
    *error* is not a reply at all)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if isinstance(code, str) and code in REPLY_TABLE:
        return REPLY_TABLE[code]
    if isinstance(status, int):
        return REPLY_TABLE.get(status)
    return None


def describe(error: BaseException) -> str:
    """A short account of an S3 error reply: code, HTTP status and the store's message."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return f"{type(error).__name__}: {error}"
    details = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    message = str(details.get("Message") or "")[:200]
    return f"S3 error {details.get('Code', '?')} (HTTP {status}){': ' if message else ''}{message}"


def normalize_etag(etag: str) -> str:
    """An ETag without its surrounding double quotes, so that replies that quote it and replies
    that do not give equal tokens."""
    if len(etag) >= 2 and etag[0] == etag[-1] == '"':
        return etag[1:-1]
    return etag


def format_etag(etag: str) -> str:
    """A normalized ETag as an ``If-Match`` header value (quoted, as RFC 9110 writes it)."""
    return f'"{etag}"'


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object as read: its bytes and its (normalized) ETag."""

    body: bytes
    etag: str


async def read_object(
    client: S3Client, bucket: str, key: str, *, max_size: int
) -> StoredObject | None:
    """``GetObject``; ``None`` when the key does not exist.

    An object longer than *max_size* bytes is not read: :class:`ObjectTooLarge` is raised, so
    that a huge foreign object under the key costs one request, not its download.

    :raises ClientError: any other error reply (see :func:`classify`).
    """
    try:
        reply = await client.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if classify(exc) is Outcome.MISSING and _error_code(exc) != "NoSuchBucket":
            return None
        raise
    body = reply["Body"]
    try:
        length = reply.get("ContentLength")
        if isinstance(length, int) and length > max_size:
            raise ObjectTooLarge(key, length, max_size)
        data: bytes = await body.read()
    finally:
        body.close()
    if len(data) > max_size:
        raise ObjectTooLarge(key, len(data), max_size)
    return StoredObject(data, _etag_of(reply))


class ObjectTooLarge(Exception):
    """An object is larger than the reader accepts; :attr:`size` is its length in bytes."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(
            f"the object {key!r} is {size} bytes, more than the {limit} that max_state_size and "
            "the header allow; it was left as it is"
        )
        self.size = size


async def put_object_if(
    client: S3Client, bucket: str, key: str, body: bytes, *, if_match: str | None
) -> str | Outcome:
    """``PutObject`` *body* only if the key is absent (*if_match* ``None``: ``If-None-Match: *``)
    or its ETag is *if_match* (``If-Match``).

    :returns: the new object's normalized ETag, or the :data:`REFUSED` outcome (nothing written).
    :raises ClientError: any other error reply, :data:`Outcome.UNSUPPORTED` included.
    """
    condition = {"IfNoneMatch": "*"} if if_match is None else {"IfMatch": format_etag(if_match)}
    try:
        reply = await client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType=_CONTENT_TYPE, **condition
        )
    except Exception as exc:
        outcome = classify(exc)
        if outcome in REFUSED and _error_code(exc) != "NoSuchBucket":
            assert outcome is not None
            return outcome
        raise
    return _etag_of(reply)


async def probe_conditional_writes(client: S3Client, bucket: str, key: str) -> str | None:
    """Prove that the store refuses conditional writes it must refuse; say what it did not.

    Writes the probe object *key* (unconditionally), then asks the store to

    1. create it again with ``If-None-Match: *``;
    2. replace it with ``If-Match`` of an ETag it cannot have;
    3. write an object that does not exist (a new random name next to *key*) with ``If-Match``
       (a store once wrote such an object as if no condition had been given).

    A store that honours conditional writes refuses all three (412, or 404 for the third). Only
    the probe objects are ever written, so a store that ignores the headers damages nothing (an
    object the third request wrongly created is deleted again, if the store lets us). Concurrent
    probes by other processes are harmless: they only rewrite the probe object, which keeps
    existing and never takes the made-up ETag.

    :returns: ``None`` if all were refused, else what the store did wrong (for the error).
    :raises ClientError: the store failed otherwise (e.g. no permission to write).
    """
    await client.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"arendezvous conditional-write probe " + os.urandom(8).hex().encode(),
        ContentType=_CONTENT_TYPE,
    )
    absent = f"{key}-absent-{os.urandom(8).hex()}"
    # 32 random hex digits, shaped like an MD5 ETag (so no store rejects its form), that no
    # object's ETag equals but with probability 2**-128.
    made_up = os.urandom(16).hex()
    checks = (
        (key, None, "a PutObject with If-None-Match: * on an existing object"),
        (key, made_up, "a PutObject with If-Match of an ETag the object does not have"),
        (absent, made_up, "a PutObject with If-Match on an object that does not exist"),
    )
    for target, if_match, request in checks:
        body = b"arendezvous: this write must have been refused"
        try:
            outcome = await put_object_if(client, bucket, target, body, if_match=if_match)
        except Exception as exc:
            if classify(exc) is Outcome.UNSUPPORTED:
                return f"it does not implement {request.partition(' with ')[2]} ({describe(exc)})"
            raise
        if not isinstance(outcome, Outcome):
            if target == absent:
                with contextlib.suppress(Exception):
                    await client.delete_object(Bucket=bucket, Key=absent)
            return f"it accepted {request}, which it must refuse"
    return None


def _error_code(error: BaseException) -> object:
    response = getattr(error, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def _etag_of(reply: Mapping[str, Any]) -> str:
    etag = reply.get("ETag")
    if not isinstance(etag, str) or not etag:
        # Without an ETag no later write can be conditional on this version.
        raise MissingETag("the store's reply carries no ETag")
    return normalize_etag(etag)


class MissingETag(Exception):
    """A successful reply without an ETag: the store cannot serve conditional writes."""


def _is(outcome: Outcome) -> Callable[[BaseException], bool]:
    return lambda error: classify(error) is outcome


def _denied(error: BaseException) -> str:
    return (
        f"the store refused the request ({describe(error)}); check the credentials botocore "
        "found (environment, AWS config files, profile=) and their permissions"
    )


@cache
def error_table() -> ErrorTable:
    """aiobotocore's exceptions and ours (imported on first use: the extra may be missing).

    A reply of the store (botocore's ``ClientError``) that the backend did not expect, a request
    that failed on the way (botocore's and aiohttp's errors, ``OSError``) and a missing ETag are a
    failing store; an object too large to be ours is a state we refuse to read.
    """
    import aiohttp
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        ReadTimeoutError,
    )

    return (
        ErrorRule(
            (TimeoutError, ConnectTimeoutError, ReadTimeoutError),
            detail="no reply within {timeout:g} s",
        ),
        ErrorRule((ObjectTooLarge,), RendezvousStateError, detail="{exc}"),
        ErrorRule((MissingETag,), detail="{exc}"),
        ErrorRule(
            (ClientError,),
            detail=lambda error: f"the bucket does not exist ({describe(error)})",
            when=_is(Outcome.NO_BUCKET),
        ),
        ErrorRule((ClientError,), detail=_denied, when=_is(Outcome.DENIED)),
        ErrorRule(
            (ClientError,),
            detail=lambda error: (
                f"the store refused the request ({describe(error)}): every request is signed "
                "with this machine's time, which must be within 15 minutes of the store's; set "
                "the clock right (NTP)"
            ),
            when=_is(Outcome.CLOCK_SKEW),
        ),
        ErrorRule((ClientError,), detail=describe),
        ErrorRule((BotoCoreError, aiohttp.ClientError, OSError)),
    )
