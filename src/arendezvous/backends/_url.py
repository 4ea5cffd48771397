"""The scheme registry: ``open_backend(url, run_id=...)`` opens any backend, chosen by scheme.

Built-in schemes map to a factory imported only when used, so ``import arendezvous`` never imports
a store client. Third parties add schemes through the ``arendezvous.backends`` entry-point group;
the entry point's name is the scheme and its object a :class:`SchemeFactory`. Parsing the rest of
a URL is each backend's own ``from_url``, with the helpers of :mod:`arendezvous.backends._urlparse`
(re-exported here for the backends that import them from this module).
"""

from __future__ import annotations

import importlib
import urllib.parse
from importlib.metadata import entry_points
from typing import Any, Protocol

from .._backend import AsyncRendezvousBackend, check_run_id
from ._urlparse import parse_bool as parse_bool
from ._urlparse import parse_options as parse_options
from ._urlparse import parse_seconds as parse_seconds

__all__ = (
    "ENTRY_POINT_GROUP",
    "SchemeFactory",
    "open_backend",
    "parse_bool",
    "parse_options",
    "parse_seconds",
    "registered_schemes",
)

ENTRY_POINT_GROUP = "arendezvous.backends"


class SchemeFactory(Protocol):
    """What a scheme's entry point provides: ``factory(url, *, run_id) -> backend``."""

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


def _factory(scheme: str) -> SchemeFactory:
    if scheme in _BUILTIN:
        module_name, _, attribute = _BUILTIN[scheme].partition(":")
        factory: SchemeFactory = getattr(importlib.import_module(module_name), attribute)
        return factory
    entry_point = _entry_point_schemes().get(scheme)
    if entry_point is None:
        raise ValueError(
            f"unknown backend URL scheme {scheme!r}; accepted schemes: "
            + ", ".join(f"{name}://" for name in registered_schemes())
        )
    loaded: SchemeFactory = entry_point.load()
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
