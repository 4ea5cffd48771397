"""``postgresql://`` and ``postgres://`` URLs."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any

from .._urlparse import (
    TLS_URL_OPTIONS,
    parse_options,
    parse_positive_int,
    parse_seconds,
    shown_option,
)
from ._backend import PostgresBackend
from ._dsn import SSLMODES, check_dsn

__all__ = ("from_url",)

# libpq connection parameters that asyncpg understands in a URL; passed through to it untouched.
_PASSTHROUGH_OPTIONS = (
    "application_name",
    "dbname",
    "host",
    "krbsrvname",
    "passfile",
    "password",
    "port",
    "ssl_max_protocol_version",
    "ssl_min_protocol_version",
    "sslcert",
    "sslcrl",
    "sslkey",
    "sslmode",
    "sslpassword",
    "sslrootcert",
    "target_session_attrs",
    "user",
)

_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": str,
    "timeout": parse_seconds,
    "pool_size": parse_positive_int,
    "heartbeat": parse_seconds,
    "max_state_size": int,
    "expire_after": parse_seconds,
    **TLS_URL_OPTIONS,
}


def from_url(url: str, *, run_id: str) -> PostgresBackend:
    """Open ``postgresql://user:password@host:port/database`` (or ``postgres://``).

    Options of arendezvous, as query parameters: ``table`` (``NAME`` or ``SCHEMA.NAME``, default
    ``arendezvous_state``), ``timeout`` (seconds per call, default 5), ``pool_size`` (default 4),
    ``heartbeat`` (seconds, default 10), ``max_state_size`` (bytes, default 1 MiB),
    ``expire_after`` (seconds after which a run nobody writes to disappears; default: never),
    and the TLS options of every network store: ``tls``, ``tls_ca_file``, ``tls_cert_file``,
    ``tls_key_file``, ``tls_verify`` (``full``, ``ca``, ``none``).

    libpq parameters passed on to asyncpg: ``sslmode`` (``disable``, ``allow``, ``prefer``,
    ``require``, ``verify-ca``, ``verify-full``), ``sslrootcert``, ``sslcert``, ``sslkey``,
    ``sslpassword``, ``sslcrl``, ``ssl_min_protocol_version``, ``ssl_max_protocol_version``,
    ``application_name``, ``target_session_attrs``, ``host``, ``port``, ``user``, ``password``,
    ``dbname``, ``passfile``, ``krbsrvname``. Any other parameter raises ``ValueError``.
    """
    check_dsn(url)
    parsed = urllib.parse.urlsplit(url)
    ours: list[tuple[str, str]] = []
    passthrough: list[tuple[str, str]] = []
    for key, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        if key in _PASSTHROUGH_OPTIONS:
            if any(key == seen for seen, _ in passthrough):
                raise ValueError(f"option {key!r} given twice")
            if key == "sslmode" and value not in SSLMODES:
                raise ValueError(
                    f"bad value for option 'sslmode': {value!r}; accepted: " + ", ".join(SSLMODES)
                )
            passthrough.append((key, value))
        elif key in _OPTIONS:
            ours.append((key, value))
        else:
            raise ValueError(
                f"unknown option {shown_option(key)} for {parsed.scheme}:// URLs; accepted: "
                + ", ".join(sorted((*_OPTIONS, *_PASSTHROUGH_OPTIONS)))
            )
    options = parse_options(parsed._replace(query=urllib.parse.urlencode(ours)), _OPTIONS)
    dsn = urllib.parse.urlunsplit(parsed._replace(query=urllib.parse.urlencode(passthrough)))
    return PostgresBackend(dsn, run_id, **options)
