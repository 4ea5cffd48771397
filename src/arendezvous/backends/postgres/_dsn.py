"""PostgreSQL connection URLs (DSNs): checks, the TLS vocabulary in libpq's terms, redaction."""

from __future__ import annotations

import urllib.parse

from .._urlparse import TlsOptions, parse_host_port, redact_url

__all__ = ("SSLMODES", "check_dsn", "shown_dsn", "with_tls")

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
"""libpq's ``sslmode`` values."""

_SSLMODE_OF_VERIFY = {"full": "verify-full", "ca": "verify-ca", "none": "require"}
# The TLS vocabulary's file options and their libpq names.
_LIBPQ_FILES = (
    ("tls_ca_file", "sslrootcert"),
    ("tls_cert_file", "sslcert"),
    ("tls_key_file", "sslkey"),
)


def check_dsn(dsn: object) -> str:
    """*dsn* if it is a well-formed ``postgresql://`` (or ``postgres://``) URL.

    :raises TypeError: not a ``str``.
    :raises ValueError: another scheme, a fragment, more than a database in the path, a bad port
        (the message never repeats the password).
    """
    if not isinstance(dsn, str):
        raise TypeError(f"dsn must be str, not {type(dsn).__name__}")
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ValueError("a PostgreSQL URL starts with postgresql:// or postgres://")
    if parts.fragment:
        raise ValueError("a PostgreSQL URL takes no #fragment")
    if parts.path.count("/") > 1:
        raise ValueError("a PostgreSQL URL's path is /DATABASE (percent-encode '/' in passwords)")
    for host in parts.netloc.rpartition("@")[2].split(","):
        if host:
            try:
                parse_host_port(host, 5432, "a PostgreSQL URL")
            except ValueError as exc:
                raise ValueError(f"{exc} (percent-encode '?' and '/' in passwords)") from None
    return dsn


def with_tls(dsn: str, tls: TlsOptions, *, given: bool) -> str:
    """*dsn* with the TLS options, if *given*, added as libpq's parameters.

    :raises ValueError: *dsn* sets one of them already under its libpq name.
    """
    if not given:
        return dsn
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    present = {key for key, _ in query}
    added = [("sslmode", _SSLMODE_OF_VERIFY[tls.verify] if tls.enabled else "disable")]
    for (option, libpq), path in zip(
        _LIBPQ_FILES, (tls.ca_file, tls.cert_file, tls.key_file), strict=True
    ):
        if path is not None:
            added.append((libpq, path))
            if libpq in present:
                raise ValueError(f"give {option} or its libpq name {libpq}, not both")
    if "sslmode" in present:
        raise ValueError("give tls/tls_verify or libpq's sslmode, not both")
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query + added)))


def shown_dsn(dsn: str) -> str:
    """*dsn* safe to show, and short: redacted, without its query (file paths, settings)."""
    return redact_url(urllib.parse.urlunsplit(urllib.parse.urlsplit(dsn)._replace(query="")))
