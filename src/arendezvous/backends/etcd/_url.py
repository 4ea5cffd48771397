"""``etcd://`` URLs."""

from __future__ import annotations

import urllib.parse
from typing import Any

from .._urlparse import TLS_URL_OPTIONS, parse_bool, parse_options, parse_seconds
from ._backend import DEFAULT_ENDPOINT, EtcdBackend

__all__ = ("from_url",)

_OPTIONS: dict[str, Any] = {
    "timeout": parse_seconds,
    "key_prefix": str,
    "max_state_size": int,
    "expire_after": parse_seconds,
    **TLS_URL_OPTIONS,
    # The older names of the TLS options, kept working.
    "ca_cert": str,
    "cert_key": str,
    "cert_cert": str,
}
_OPTIONS["tls"] = parse_bool


def from_url(url: str, *, run_id: str) -> EtcdBackend:
    """Open ``etcd://[user:password@]host:port[,host:port...][?option=value&...]``.

    The host list may be empty (``etcd://`` means ``localhost:2379``); the port defaults to 2379;
    IPv6 addresses go in brackets. User name and password are percent-decoded. Options:

    * ``timeout`` -- seconds per call, waiting for a connection included (default 5);
    * ``key_prefix`` -- prefix of the run's key (default ``/arendezvous/``);
    * ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file`` -- PEM files: CA, client certificate,
      client key (older names ``ca_cert``, ``cert_cert``, ``cert_key``);
    * ``tls`` -- ``true`` to use TLS with the system's CA roots (implied by the files above);
    * ``max_state_size`` -- bytes (default 1 MiB; at most what etcd's 1.5 MiB request limit
      leaves);
    * ``expire_after`` -- seconds after which a run nobody writes to disappears (default:
      never), through an etcd lease.

    :raises ValueError: malformed URL, unknown or bad option (the message never repeats the
        password).
    :raises ImportError: the ``etcd`` extra is not installed.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() != "etcd":
        raise ValueError(f"not an etcd:// URL (scheme {parsed.scheme!r})")
    if parsed.path not in ("", "/"):
        raise ValueError("etcd:// URLs take no path; choose the keys' prefix with ?key_prefix=")
    if parsed.fragment:
        raise ValueError("etcd:// URLs take no #fragment")
    userinfo, at, hosts = parsed.netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text or not colon:
            raise ValueError("etcd:// URL credentials must be user:password@")
        username = urllib.parse.unquote(user_text)
        password = urllib.parse.unquote(password_text)
    options = parse_options(parsed, _OPTIONS)
    return EtcdBackend(
        run_id, hosts or DEFAULT_ENDPOINT, username=username, password=password, **options
    )
