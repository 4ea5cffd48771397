"""``s3://`` URLs."""

from __future__ import annotations

import urllib.parse
from typing import Any

from .._urlparse import has_userinfo_before_query, parse_options, parse_seconds
from ._backend import S3Backend

__all__ = ("from_url",)

# Query names that look like credentials get a message saying where credentials go instead.
_CREDENTIAL_WORDS = ("secret", "access_key", "accesskey", "token", "password", "credential")

_OPTIONS: dict[str, Any] = {
    "endpoint_url": str,
    "region": str,
    "profile": str,
    "addressing_style": str,
    "timeout": parse_seconds,
    "poll_interval": parse_seconds,
    "max_poll_interval": parse_seconds,
    "max_state_size": int,
    "expire_after": parse_seconds,
}


def from_url(url: str, *, run_id: str) -> S3Backend:
    """Open ``s3://BUCKET[/PREFIX][?options]``.

    Options, as query parameters:

    * ``endpoint_url`` -- an S3-compatible store, e.g. ``http://127.0.0.1:8333`` (default: AWS).
    * ``region`` -- the region requests are signed for (default: botocore's configuration).
    * ``profile`` -- the AWS config profile whose credentials to use.
    * ``addressing_style`` -- ``path``, ``virtual`` or ``auto`` (default: ``path`` with an
      ``endpoint_url``, else botocore's).
    * ``timeout`` -- seconds a request may take (default 5).
    * ``poll_interval``, ``max_poll_interval`` -- ``wait_for_change``'s shortest and longest
      pause between polls (default 0.1 and 1 s).
    * ``max_state_size`` -- the largest state accepted, in bytes (default 1 MiB).
    * ``expire_after`` -- seconds after which a run nobody writes to disappears, enforced by
      reads and listings by the store's clock (default: never; see :class:`S3Backend`).

    Credentials never go in the URL: botocore finds them in the environment, the AWS config files
    or the named profile. So an unencoded ``@`` before the query is refused wherever it is (a
    prefix holding one writes it ``%40``).

    :raises ValueError: the URL is malformed, carries credentials, or an option is unknown or
        invalid (the message never repeats credentials).
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() != "s3":
        raise ValueError(f"expected an s3:// URL, got {parsed.scheme}://")
    if has_userinfo_before_query(url) or any(
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
    options = parse_options(parsed, _OPTIONS)
    # One '/' separates bucket and prefix; a second one would be an empty name (refused).
    prefix = urllib.parse.unquote(parsed.path).removeprefix("/").rstrip("/")
    return S3Backend(parsed.netloc, run_id, prefix=prefix, **options)
