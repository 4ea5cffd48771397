"""The S3 backend's option checks: each refuses bad input with ``TypeError``/``ValueError``
before anything is sent, and never repeats a value that may hold credentials."""

from __future__ import annotations

import re
import urllib.parse

__all__ = (
    "ADDRESSING_STYLES",
    "check_bucket",
    "check_endpoint",
    "check_prefix",
    "check_profile",
    "check_region",
)

ADDRESSING_STYLES = ("path", "virtual", "auto")
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_REGION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_bucket(bucket: object) -> str:
    """A bucket name, checked only for what no S3 store accepts (the store checks the rest)."""
    if not isinstance(bucket, str):
        raise TypeError(f"bucket must be str, not {type(bucket).__name__}")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise ValueError(
            "bucket must be 1 to 255 letters, digits, '.', '-' or '_', starting with a letter "
            "or digit"
        )
    return bucket


def check_prefix(prefix: object) -> str:
    """A key prefix: "/"-separated names that every store, file-system backed ones too, keeps
    apart (no empty, "." or ".." names); at most 512 bytes, so any run's key fits in 1024."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
    if not prefix:
        return prefix
    segments = prefix.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError(
            "prefix must be names separated by single '/', without '.' or '..' and without a "
            "leading or trailing '/'"
        )
    if any(not character.isprintable() for character in prefix):
        raise ValueError("prefix must not contain control characters")
    try:
        encoded = prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("prefix must be encodable as UTF-8") from None
    if len(encoded) > 512:
        raise ValueError("prefix must be at most 512 bytes in UTF-8 (S3 keys hold 1024)")
    return prefix


def check_endpoint(url: object) -> str:
    """An ``http(s)://host[:port][/path]`` URL without credentials, query or fragment."""
    if not isinstance(url, str):
        raise TypeError(f"endpoint_url must be str, not {type(url).__name__}")
    # Anywhere, not only in the parsed netloc: in "http://?:secret@host" urllib sees a query.
    if "@" in url:
        raise ValueError(
            "endpoint_url must not carry credentials (not shown); botocore finds them in the "
            "environment, the AWS config files or the profile= option"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        # urllib's message may repeat the netloc.
        raise ValueError("endpoint_url is malformed (not shown)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint_url must look like http(s)://host[:port], not {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"endpoint_url takes no query or fragment: {url!r}")
    if port == 0:
        raise ValueError(f"endpoint_url has port 0: {url!r}")
    return url


def check_region(region: object) -> str | None:
    """A region name, or ``None`` for botocore's configuration."""
    if region is None:
        return None
    if not isinstance(region, str):
        raise TypeError(f"region must be str or None, not {type(region).__name__}")
    if not _REGION_NAME.fullmatch(region):
        raise ValueError("region must be 1 to 64 letters, digits, '-' or '_'")
    return region


def check_profile(profile: object) -> str | None:
    """An AWS config profile name, or ``None`` for botocore's default."""
    if profile is None:
        return None
    if not isinstance(profile, str):
        raise TypeError(f"profile must be str or None, not {type(profile).__name__}")
    if not profile or len(profile) > 128 or not profile.isprintable() or profile != profile.strip():
        raise ValueError("profile must be a printable name of 1 to 128 characters")
    return profile
