"""Parsing backend URLs and options: the helpers every backend's ``from_url`` shares.

Options (query parameters and their converters), seconds, booleans, counts, ports, userinfo, the
TLS option vocabulary of the network stores, TLS files, and the one redactor that makes a URL safe
to show. The scheme registry (``open_backend``) lives apart, in :mod:`arendezvous.backends._url`.
"""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = (
    "TLS_URL_OPTIONS",
    "TLS_VERIFY_MODES",
    "TlsOptions",
    "has_userinfo_before_query",
    "merge_alias",
    "parse_bool",
    "parse_host_port",
    "parse_options",
    "parse_port",
    "parse_positive_int",
    "parse_seconds",
    "read_tls_file",
    "redact_url",
    "shown_option",
    "split_userinfo",
)

_T = TypeVar("_T")

_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
# Query parameters whose values are secrets (password=, sslpassword=, token=, ...): never shown.
_CREDENTIAL_OPTION = re.compile(r"pass|pwd|secret|token|credential|auth", re.IGNORECASE)


def shown_option(key: str) -> str:
    """*key*, quoted, if it looks like an option name; else a placeholder. After an unencoded
    '?' in a user or password, the query's first "name" is the rest of the credentials."""
    return repr(key) if _OPTION_NAME.fullmatch(key) else "(a malformed name, not shown)"


def parse_options(
    url: urllib.parse.SplitResult, accepted: Mapping[str, Callable[[str], Any]]
) -> dict[str, Any]:
    """Convert a URL's query parameters with *accepted*'s converters; refuse unknown ones.

    :raises ValueError: an unknown or repeated parameter, or a value its converter rejects (the
        value is not repeated for credential options).
    """
    options: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
        if key not in accepted:
            raise ValueError(
                f"unknown option {shown_option(key)} for {url.scheme}:// URLs; accepted: "
                + (", ".join(sorted(accepted)) or "none")
            )
        if key in options:
            raise ValueError(f"option {key!r} given twice")
        try:
            options[key] = accepted[key](value)
        except (TypeError, ValueError) as exc:
            if _CREDENTIAL_OPTION.search(key):  # the converter's message may repeat the value
                raise ValueError(f"bad value for option {key!r} (not shown)") from None
            raise ValueError(f"bad value for option {key!r}: {value!r} ({exc})") from None
    return options


def parse_bool(value: str) -> bool:
    """A URL option's boolean: 1/0, true/false, yes/no, on/off."""
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_seconds(value: str) -> float:
    """A URL option's duration in seconds: a positive, finite number."""
    seconds = float(value)
    if not 0 < seconds < math.inf:
        raise ValueError("expected a positive number of seconds")
    return seconds


def parse_positive_int(value: str) -> int:
    """A URL option's count: an integer of at least 1."""
    number = int(value)
    if number < 1:
        raise ValueError("expected a positive integer")
    return number


def parse_port(text: str) -> int:
    """A TCP port as a URL gives it: ASCII digits only, from 1 to 65535.

    :raises ValueError: anything else (signs, spaces, other scripts' digits, ``1e3``, ``0x50``).
    """
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError("a port must be a number from 1 to 65535")
    return int(text)


def parse_host_port(text: str, default_port: int, what: str) -> tuple[str, int]:
    """``host[:port]`` or ``[IPv6 address][:port]`` as *what* gives it -> ``(host, port)``.

    :raises ValueError: an empty or malformed host, an IPv6 address outside brackets, a bad port.
    """
    item = text.strip()
    if not item:
        raise ValueError(f"empty host in {what}")
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed host in {what}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"malformed IPv6 address in {what}") from None
    else:
        if item.count(":") > 1:
            raise ValueError(f"malformed host in {what}: put IPv6 addresses in brackets, [::1]")
        host, colon, port_text = item.partition(":")
        if not host or any(c.isspace() or c in "/@?#[]" for c in host):
            raise ValueError(f"malformed host in {what}")
        if colon and not port_text:
            raise ValueError(f"bad port (empty) in {what}")
    if not port_text:
        return host, default_port
    try:
        return host, parse_port(port_text)
    except ValueError:
        raise ValueError(f"bad port in {what}: a number from 1 to 65535") from None


def has_userinfo_before_query(url: str) -> bool:
    """Whether *url* has an ``@`` anywhere before its query: for a store that takes no user or
    password, a credential, wherever it landed (``s3://us/er:secret@bucket`` has the netloc
    ``us`` and the secret in its path, where it would become a prefix or a directory and show
    in a repr). Such a URL is refused, unrepeated; an ``@`` in a name is written ``%40``."""
    return "@" in url.partition("?")[0]


def split_userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """``(user, password, hosts)`` of a URL's netloc, user and password percent-decoded.

    ``None`` marks a part that is absent (``redis://:pw@h`` has no user, ``u@h`` no password).
    """
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, hosts
    user, colon, password = userinfo.partition(":")
    return (
        urllib.parse.unquote(user) if user else None,
        urllib.parse.unquote(password) if colon else None,
        hosts,
    )


def redact_url(url: str) -> str:
    """*url* fit to print: the one redactor for every message, repr and program output.

    A URL is how users hand over credentials, so everything that shows one shows this instead:

    - userinfo: the user name stays, a password becomes ``***``.
    - query: an option whose name carries a credential (``password``, ``sslpassword``,
      ``passfile``: any name with pass, pwd, secret, token, credential or auth) keeps its name and
      loses its value; a piece that is not ``name=value`` with an option-like name is hidden
      whole -- after an unencoded ``&`` in a password, the rest of the password looks like one.
    - fragment: no backend takes one, and after an unencoded ``#`` in a password it holds the
      rest of it: hidden.
    - an ``@`` after the host (in the path, query or fragment) with a ``:`` anywhere before it:
      either a password with an unencoded ``/``, ``?`` or ``#`` spilled past the host, or the
      ``@`` belongs to the path or query and the ``:`` to a port. No reading of such a URL is safe
      to print, so only its scheme is shown (``redis://***``).

    Otherwise the scheme, host, port and path stay, so the result still says which store is meant.
    """
    scheme, sep, rest = url.partition("://")
    shown = f"{scheme}{sep}" if sep else ""
    if not sep:
        rest = url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in tail and ":" in rest[: rest.rfind("@")]:
        return shown + "***"
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        shown += f"{user}:***@" if colon else f"{user}@"
    tail, hash_mark, _ = tail.partition("#")
    path, question_mark, query = tail.partition("?")
    shown += host + path + question_mark
    shown += "&".join(_redact_query_piece(piece) for piece in query.split("&"))
    return shown + ("#***" if hash_mark else "")


def _redact_query_piece(piece: str) -> str:
    if not piece:
        return piece
    name, equals, _ = piece.partition("=")
    decoded = urllib.parse.unquote_plus(name)
    if not equals or not _OPTION_NAME.fullmatch(decoded):
        return "***"
    if _CREDENTIAL_OPTION.search(decoded):
        return f"{name}=***"
    return piece


def merge_alias(name: str, value: _T | None, alias: str, alias_value: _T | None) -> _T | None:
    """The value of option *name* or of its older spelling *alias*, whichever was given.

    :raises ValueError: both were given.
    """
    if value is not None and alias_value is not None:
        raise ValueError(f"give {name} or its older name {alias}, not both")
    return alias_value if value is None else value


# -- TLS ---------------------------------------------------------------------------------------

TLS_VERIFY_MODES = ("full", "ca", "none")
"""How a server's certificate is checked: ``full`` (the chain and the server's name), ``ca``
(the chain only) or ``none`` (not at all: encryption without authentication)."""


def _parse_verify(value: str) -> str:
    if value not in TLS_VERIFY_MODES:
        raise ValueError(f"expected one of {', '.join(TLS_VERIFY_MODES)}")
    return value


TLS_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "tls": parse_bool,
    "tls_ca_file": str,
    "tls_cert_file": str,
    "tls_key_file": str,
    "tls_verify": _parse_verify,
}
"""The TLS options every network store's URL accepts, with their converters."""


@dataclass(frozen=True)
class TlsOptions:
    """The TLS settings of a network backend, in the vocabulary all the stores share.

    :ivar enabled: use TLS (implied by any file or by *verify*).
    :ivar ca_file: PEM file of the CAs to trust; ``None``: the system's roots.
    :ivar cert_file: PEM client certificate (chain), for servers that demand one.
    :ivar key_file: PEM private key of *cert_file*.
    :ivar verify: one of :data:`TLS_VERIFY_MODES`.
    """

    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: str = "full"

    @classmethod
    def build(
        cls,
        *,
        tls: bool | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_verify: str | None = None,
    ) -> TlsOptions:
        """Check and combine the TLS options a caller gave (``None``: not given).

        :raises TypeError: an option of the wrong type.
        :raises ValueError: files or a verification mode with ``tls=False``, a key without its
            certificate, or an unknown verification mode.
        """
        if tls is not None and not isinstance(tls, bool):
            raise TypeError(f"tls must be a bool, not {type(tls).__name__}")
        for name, path in (
            ("tls_ca_file", tls_ca_file),
            ("tls_cert_file", tls_cert_file),
            ("tls_key_file", tls_key_file),
        ):
            if path is not None and not isinstance(path, str):
                raise TypeError(f"{name} must be a str path, not {type(path).__name__}")
        if tls_verify is not None:
            _parse_verify(tls_verify)
        implied = any(v is not None for v in (tls_ca_file, tls_cert_file, tls_key_file, tls_verify))
        if tls is False and implied:
            raise ValueError("TLS files or tls_verify given with tls=false")
        if tls_key_file is not None and tls_cert_file is None:
            raise ValueError("tls_key_file needs tls_cert_file (the certificate it belongs to)")
        return cls(
            enabled=bool(tls) or implied,
            ca_file=tls_ca_file,
            cert_file=tls_cert_file,
            key_file=tls_key_file,
            verify=tls_verify or "full",
        )


def read_tls_file(option: str, path: str | None) -> bytes | None:
    """The bytes of the TLS file *path* given as *option*, or ``None`` if none was given.

    :raises ValueError: it cannot be read (the message names the option and path, never the
        file's contents).
    """
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"cannot read {option} file {path!r}: {exc.strerror}") from None
