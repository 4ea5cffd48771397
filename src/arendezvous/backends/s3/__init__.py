"""The S3 backend: one object per run in an S3 bucket, written with conditional ``PutObject``.

A run's state is the object ``<prefix>/<run_id>`` (the run id percent-encoded into one name),
holding a checksummed header -- incarnation, write counter, writer -- and the state
(``_format``). ``set_state`` is one ``PutObject``: with ``If-None-Match: *`` to create the
object, or ``If-Match: <the ETag in the token>`` to replace exactly the version the caller read.
The store applies the condition and the write atomically, so two writers holding one token never
both win; a refused writer re-reads and returns the current state (S3 does not return it).
``get_state`` is one ``GetObject``.

Before its first write a handle proves that the store enforces conditional writes: it asks the
store to re-create an existing probe object with ``If-None-Match: *`` and to replace it with
``If-Match`` of a wrong ETag, and refuses (:class:`UnsafeStoreError`) a store that accepts either,
because on such a store a compare-and-swap would silently not be one.

S3 has no change notification: ``wait_for_change`` re-reads, first every ``poll_interval``
seconds and then ever less often up to ``max_poll_interval``, with jitter; writes by handles in
the same process wake it at once.

The client is aiobotocore (asyncio only; under trio every call raises a ``RuntimeError`` saying
so). Credentials come from botocore's standard chain -- environment, AWS config files, a
``profile=`` -- never from the URL.

The package is split so that what is S3's own is apart from the glue: ``_format`` (the object's
bytes), ``_store`` (requests, the error table, the probe, over an aiobotocore client) and
``_backend`` (options, the client per event loop, the contract).
"""

from __future__ import annotations

import urllib.parse

from ._backend import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    MAX_STATE_SIZE_LIMIT,
    S3Backend,
    S3Token,
    UnsafeStoreError,
)

__all__ = (
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "MAX_STATE_SIZE_LIMIT",
    "S3Backend",
    "S3Token",
    "UnsafeStoreError",
    "from_url",
)

# Query names that look like credentials get a message saying where credentials go instead.
_CREDENTIAL_WORDS = ("secret", "access_key", "accesskey", "token", "password", "credential")


def from_url(url: str, *, run_id: str) -> S3Backend:
    """Open ``s3://BUCKET[/PREFIX][?options]``.

    Options, as query parameters:

    * ``endpoint_url`` -- an S3-compatible store, e.g. ``http://127.0.0.1:8333`` (default: AWS).
    * ``region`` -- the region requests are signed for (default: botocore's configuration).
    * ``profile`` -- the AWS config profile whose credentials to use.
    * ``addressing_style`` -- ``path``, ``virtual`` or ``auto`` (default: ``path`` with an
      ``endpoint_url``, else botocore's).
    * ``timeout`` -- seconds a request may take (default 5).
    * ``poll_interval``, ``max_poll_interval`` -- ``wait_for_change``'s first and longest pause
      between re-reads (default 0.1 and 1 s).
    * ``max_state_size`` -- the largest state accepted, in bytes (default 1 MiB).

    Credentials never go in the URL: botocore finds them in the environment, the AWS config files
    or the named profile.

    :raises ValueError: the URL is malformed, carries credentials, or an option is unknown or
        invalid (the message never repeats credentials).
    """
    from .._url import parse_options, parse_seconds

    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() != "s3":
        raise ValueError(f"expected an s3:// URL, got {parsed.scheme}://")
    if "@" in parsed.netloc or any(
        word in key.lower()
        for key, _ in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
        for word in _CREDENTIAL_WORDS
    ):
        raise ValueError(
            "s3:// URLs carry no credentials (not shown); botocore finds them in the "
            "environment (AWS_ACCESS_KEY_ID, ...), the AWS config files, or a profile=NAME option"
        )
    if not parsed.netloc:
        raise ValueError("an s3:// URL names its bucket: s3://BUCKET[/PREFIX]")
    if parsed.fragment:
        raise ValueError("s3:// URLs take no #fragment")
    options = parse_options(
        parsed,
        {
            "endpoint_url": str,
            "region": str,
            "profile": str,
            "addressing_style": str,
            "timeout": parse_seconds,
            "poll_interval": parse_seconds,
            "max_poll_interval": parse_seconds,
            "max_state_size": int,
        },
    )
    # One '/' separates bucket and prefix; a second one would be an empty name (refused).
    prefix = urllib.parse.unquote(parsed.path).removeprefix("/").rstrip("/")
    return S3Backend(parsed.netloc, run_id, prefix=prefix, **options)
