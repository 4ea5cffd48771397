"""``open_backend(url, run_id=...)``: one entry point for every backend, chosen by URL scheme.

Built-in schemes map to a factory imported only when used, so ``import arendezvous`` never imports
a store client. Third parties add schemes through the ``arendezvous.backends`` entry-point group;
the entry point's name is the scheme and its object a callable ``(url, *, run_id) -> backend``.
"""

from __future__ import annotations

import importlib
import re
import urllib.parse
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, Protocol

from .._backend import AsyncRendezvousBackend, check_run_id

__all__ = (
    "BackendFactory",
    "open_backend",
    "parse_bool",
    "parse_options",
    "parse_seconds",
    "registered_schemes",
)

ENTRY_POINT_GROUP = "arendezvous.backends"


class BackendFactory(Protocol):
    """What a scheme's entry point provides."""

    def __call__(self, url: str, *, run_id: str) -> AsyncRendezvousBackend: ...


_BUILTIN: dict[str, str] = {
    "memory": "arendezvous.backends.memory:from_url",
    "file": "arendezvous.backends.file:from_url",
    "redis": "arendezvous.backends.redis:from_url",
    "rediss": "arendezvous.backends.redis:from_url",
    "etcd": "arendezvous.backends.etcd:from_url",
    "postgresql": "arendezvous.backends.postgres:from_url",
    "postgres": "arendezvous.backends.postgres:from_url",
    "s3": "arendezvous.backends.s3:from_url",
}


def _entry_point_schemes() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def registered_schemes() -> list[str]:
    """Every scheme ``open_backend`` accepts: the built-in ones and those of installed plugins."""
    return sorted(set(_BUILTIN) | set(_entry_point_schemes()))


def _factory(scheme: str) -> BackendFactory:
    if scheme in _BUILTIN:
        module_name, _, attribute = _BUILTIN[scheme].partition(":")
        factory: BackendFactory = getattr(importlib.import_module(module_name), attribute)
        return factory
    entry_point = _entry_point_schemes().get(scheme)
    if entry_point is None:
        raise ValueError(
            f"unknown backend URL scheme {scheme!r}; accepted schemes: "
            + ", ".join(f"{name}://" for name in registered_schemes())
        )
    loaded: BackendFactory = entry_point.load()
    return loaded


def open_backend(url: str, *, run_id: str) -> AsyncRendezvousBackend:
    """Open a backend on the run *run_id* of the store that *url* names.

    ``memory://`` (the process-wide store; ``memory://NAME`` a named one), ``file:///dir``, and
    the stores whose extras are installed; options go in the query string.

    :raises ValueError: the URL is malformed, its scheme unknown, or an option is not accepted.
    :raises ImportError: the scheme's extra is not installed (the message says what to install).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be str, not {type(url).__name__}")
    check_run_id(run_id)
    if "@" in url:
        try:
            urllib.parse.urlsplit(url)
        except ValueError:
            # urllib's own message repeats the netloc, credentials included.
            raise ValueError(
                "malformed URL (the parser's message is withheld: it may hold credentials)"
            ) from None
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ValueError(
            "backend URL must look like SCHEME://...; accepted schemes: "
            + ", ".join(f"{name}://" for name in registered_schemes())
        )
    return _factory(scheme.lower())(url, run_id=run_id)


_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def shown_option(key: str) -> str:
    """*key*, quoted, if it looks like an option name; else a placeholder. After an unencoded
    '?' in a user or password, the query's first "name" is the rest of the credentials."""
    return repr(key) if _OPTION_NAME.fullmatch(key) else "(a malformed name, not shown)"


def parse_options(
    url: urllib.parse.SplitResult, accepted: Mapping[str, Callable[[str], Any]]
) -> dict[str, Any]:
    """Convert a URL's query parameters with *accepted*'s converters; refuse unknown ones.

    :raises ValueError: an unknown or repeated parameter, or a value its converter rejects.
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
    """A URL option's duration in seconds: a positive number."""
    seconds = float(value)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return seconds

