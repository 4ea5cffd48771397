"""``redis://`` and ``rediss://`` URLs."""

from __future__ import annotations

import urllib.parse
from typing import Any

from .._urlparse import (
    TLS_URL_OPTIONS,
    parse_bool,
    parse_host_port,
    parse_options,
    parse_seconds,
    split_userinfo,
)
from ._backend import RedisBackend

__all__ = ("from_url",)

_SSL_CERT_REQS = ("none", "optional", "required")


def _parse_cert_reqs(value: str) -> str:
    if value not in _SSL_CERT_REQS:
        raise ValueError(f"expected one of {', '.join(_SSL_CERT_REQS)}")
    return value


_OPTIONS: dict[str, Any] = {
    "timeout": parse_seconds,
    "key_prefix": str,
    "max_state_size": int,
    "expire_after": parse_seconds,
    **TLS_URL_OPTIONS,
    # The older names of the TLS options (redis-py's), kept working.
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": _parse_cert_reqs,
    "ssl_check_hostname": parse_bool,
}


def from_url(url: str, *, run_id: str) -> RedisBackend:
    """Open ``redis://[[username]:password@]host[:port][/db][?options]`` (``rediss://``: TLS).

    The host defaults to ``localhost``, the port to 6379 and the database to 0; username and
    password are percent-decoded. Options, as query parameters:

    * ``timeout`` -- seconds a call may take (default 5); also the connect and socket timeout.
    * ``key_prefix`` -- prefix of the run's key (default ``arendezvous:``).
    * ``max_state_size`` -- the largest state accepted, in bytes (default 1 MiB).
    * ``expire_after`` -- seconds after which a run nobody writes to disappears (default: never).
    * ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file`` -- PEM files: the CAs to trust, and a
      client certificate and its key (``rediss://`` only; older names ``ssl_ca_certs``,
      ``ssl_certfile``, ``ssl_keyfile``).
    * ``tls_verify`` -- ``full`` (default), ``ca`` or ``none`` (``rediss://`` only); the older
      ``ssl_cert_reqs`` (``required``, ``optional``, ``none``) and ``ssl_check_hostname``
      (default true) still work.

    :raises ValueError: the URL is malformed or an option is unknown or invalid (the message
        never repeats the password).
    """
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"expected a redis:// or rediss:// URL, got {scheme}://")
    if parsed.fragment:
        raise ValueError("redis URLs take no #fragment")
    username, password, hosts = split_userinfo(parsed.netloc)
    host, port = ("", 6379) if not hosts else parse_host_port(hosts, 6379, "a redis URL")
    if parsed.netloc and not hosts:
        raise ValueError("the host of a redis URL is empty")
    path = parsed.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError("the path of a redis URL is the database number, e.g. redis://host/0")
    options = parse_options(parsed, _OPTIONS)
    tls_options = [name for name in options if name.startswith(("ssl_", "tls"))]
    if scheme == "redis" and tls_options:
        raise ValueError("TLS options (tls*, ssl_*) need a rediss:// URL")
    if scheme == "rediss" and options.pop("tls", True) is not True:
        raise ValueError("rediss:// means TLS: tls=false contradicts it")
    return RedisBackend(
        run_id,
        host=host or None,
        port=port,
        db=int(path) if path else None,
        username=username,
        password=password,
        tls=scheme == "rediss",
        **options,
    )
