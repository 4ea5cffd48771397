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
* :func:`read_head` -- a ranged ``GetObject`` of an object's first bytes (its header), with its
  whole size, ETag, run-id metadata and age: enough to tell whether it is ours without
  downloading it.
* :func:`delete_object_if` -- ``DeleteObject`` with ``If-Match: <etag>`` (delete only that
  version), or unconditionally.
* :func:`list_page` -- one page of ``ListObjectsV2`` directly under a folder.

Ages are the store's own: the reply's ``Date`` header less the object's ``Last-Modified``, both
the store's clock (:func:`server_age`); this machine's clock is never read.
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from types import MappingProxyType
from typing import Any, TypeAlias

from ..._errors import ErrorRule, ErrorTable, RendezvousStateError

__all__ = (
    "PROBE_NAME",
    "REFUSED",
    "REPLY_TABLE",
    "RUN_ID_METADATA",
    "Listed",
    "MissingETag",
    "ObjectHead",
    "ObjectTooLarge",
    "Outcome",
    "S3Client",
    "StoredObject",
    "classify",
    "delete_object_if",
    "describe",
    "error_table",
    "format_etag",
    "list_page",
    "normalize_etag",
    "probe_conditional_writes",
    "put_object_if",
    "read_head",
    "read_object",
    "server_age",
)

S3Client: TypeAlias = Any
"""An aiobotocore S3 client (aiobotocore ships no type information)."""

PROBE_NAME = ".arendezvous-probe"
"""The probe object's name under the prefix; a run's object name never starts with a dot."""

RUN_ID_METADATA = "arendezvous-run-id"
"""The user-metadata key (``x-amz-meta-arendezvous-run-id``) holding a run's id, percent-encoded,
on objects whose name is shortened with a hash (a long run id): listing reads it back there."""

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


def server_age(reply: Mapping[str, Any], last_modified: object) -> float | None:
    """Seconds from *last_modified* to the ``Date`` of *reply*, both the store's own clock (so
    this machine's clock never enters); ``None`` if either is missing or unreadable.

    Both are HTTP dates, whole seconds: the result is within a second of the true age either way.
    """
    if not isinstance(last_modified, datetime) or last_modified.tzinfo is None:
        return None
    headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    date = headers.get("date") if isinstance(headers, Mapping) else None
    if not isinstance(date, str):
        return None
    try:
        now = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if now.tzinfo is None:
        return None
    return max(0.0, (now - last_modified).total_seconds())


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object as read: its bytes, its (normalized) ETag and its age by the store's clock
    (``None`` if the store's reply does not tell)."""

    body: bytes
    etag: str
    age: float | None = None


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
    return StoredObject(data, _etag_of(reply), server_age(reply, reply.get("LastModified")))


@dataclass(frozen=True, slots=True)
class ObjectHead:
    """An object's first bytes and what its reply says of the whole object.

    :ivar header: up to the requested number of its first bytes (fewer if it is shorter).
    :ivar size: the whole object's length in bytes.
    :ivar etag: its normalized ETag.
    :ivar age: seconds since it was last written, by the store's clock (``None``: not told).
    :ivar run_id: its :data:`RUN_ID_METADATA` value, decoded, or ``None``.
    """

    header: bytes
    size: int
    etag: str
    age: float | None
    run_id: str | None


_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")


async def read_head(client: S3Client, bucket: str, key: str, length: int) -> ObjectHead | None:
    """A ranged ``GetObject`` of the first *length* bytes of *key*; ``None`` when it does not
    exist. One request, at most *length* bytes downloaded whatever the object's size (a store
    that ignores ``Range`` sends more, of which only *length* bytes are read).

    :raises ClientError: any other error reply.
    """
    try:
        reply = await client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{length - 1}")
    except Exception as exc:
        if classify(exc) is Outcome.MISSING and _error_code(exc) != "NoSuchBucket":
            return None
        if _error_code(exc) == "InvalidRange":  # an empty object has no byte 0
            response: Any = getattr(exc, "response", {})
            headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            etag = headers.get("etag") if isinstance(headers, Mapping) else None
            if isinstance(etag, str) and etag:
                return ObjectHead(b"", 0, normalize_etag(etag), None, None)
            return None
        raise
    body = reply["Body"]
    try:
        data: bytes = await body.read(length)
    finally:
        body.close()
    total = _CONTENT_RANGE.fullmatch(str(reply.get("ContentRange", "")))
    size = int(total.group(1)) if total else reply.get("ContentLength")
    if not isinstance(size, int):
        size = len(data)
    metadata = reply.get("Metadata") or {}
    named = metadata.get(RUN_ID_METADATA) if isinstance(metadata, Mapping) else None
    run_id = None
    if isinstance(named, str):
        with contextlib.suppress(UnicodeDecodeError):
            run_id = urllib.parse.unquote(named, errors="strict")
    return ObjectHead(
        data[:length], size, _etag_of(reply), server_age(reply, reply.get("LastModified")), run_id
    )


async def delete_object_if(
    client: S3Client, bucket: str, key: str, *, if_match: str | None
) -> bool | None:
    """``DeleteObject`` of *key*: only the version whose ETag is *if_match* (``If-Match``), or
    whatever is there (*if_match* ``None``).

    :returns: ``True`` if the store deleted it (S3 answers so for an absent key too when there is
        no condition), ``False`` if the condition refused it (412, or 404/409 on AWS: another
        version, or no object), ``None`` if the store does not implement ``If-Match`` on
        ``DeleteObject`` (501): nothing was deleted.
    :raises ClientError: any other error reply.
    """
    condition = {} if if_match is None else {"IfMatch": format_etag(if_match)}
    try:
        await client.delete_object(Bucket=bucket, Key=key, **condition)
    except Exception as exc:
        outcome = classify(exc)
        if _error_code(exc) == "NoSuchBucket":
            raise
        if outcome in REFUSED:
            return False
        if outcome is Outcome.UNSUPPORTED and if_match is not None:
            return None
        raise
    return True


@dataclass(frozen=True, slots=True)
class Listed:
    """One object of a listing: its name under the folder, size, ETag and age (store's clock)."""

    name: str
    size: int
    etag: str
    age: float | None


async def list_page(
    client: S3Client, bucket: str, folder: str, continuation: str | None
) -> tuple[list[Listed], str | None]:
    """One page of ``ListObjectsV2`` of the objects directly under *folder* (``Delimiter: /``:
    nothing from deeper "folders"); returns them and the continuation token of the next page
    (``None``: this was the last). Each object's age is the reply's ``Date`` less its
    ``LastModified``.

    :raises ClientError: an error reply.
    """
    arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": folder, "Delimiter": "/"}
    if continuation is not None:
        arguments["ContinuationToken"] = continuation
    reply = await client.list_objects_v2(**arguments)
    found: list[Listed] = []
    for entry in reply.get("Contents") or ():
        key, size, etag = entry.get("Key"), entry.get("Size"), entry.get("ETag")
        if not (isinstance(key, str) and key.startswith(folder) and isinstance(size, int)):
            continue
        if not isinstance(etag, str) or not etag:
            continue
        age = server_age(reply, entry.get("LastModified"))
        found.append(Listed(key[len(folder):], size, normalize_etag(etag), age))
    following = reply.get("NextContinuationToken")
    more = reply.get("IsTruncated") is True and isinstance(following, str) and following
    return found, following if more else None


class ObjectTooLarge(Exception):
    """An object is larger than the reader accepts; :attr:`size` is its length in bytes."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(
            f"the object {key!r} is {size} bytes, more than the {limit} that max_state_size and "
            "the header allow; it was left as it is"
        )
        self.size = size


async def put_object_if(
    client: S3Client,
    bucket: str,
    key: str,
    body: bytes,
    *,
    if_match: str | None,
    metadata: Mapping[str, str] | None = None,
) -> str | Outcome:
    """``PutObject`` *body* only if the key is absent (*if_match* ``None``: ``If-None-Match: *``)
    or its ETag is *if_match* (``If-Match``), with the user *metadata* given (a write replaces an
    object's metadata: every write sends it).

    :returns: the new object's normalized ETag, or the :data:`REFUSED` outcome (nothing written).
    :raises ClientError: any other error reply, :data:`Outcome.UNSUPPORTED` included.
    """
    condition: dict[str, Any] = (
        {"IfNoneMatch": "*"} if if_match is None else {"IfMatch": format_etag(if_match)}
    )
    if metadata:
        condition["Metadata"] = dict(metadata)
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
