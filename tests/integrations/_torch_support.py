"""Shared by the torch integration tests: the torch requirement and the stores to run on."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator

from _missing import missing

__all__ = ("require_torch", "store_url")


def require_torch() -> None:
    """Skip the calling module loudly when torch is missing; in CI, fail instead."""
    if importlib.util.find_spec("torch") is not None:
        return
    missing("torch is not installed: pip install 'arendezvous[torch]'", module=True)


_LAUNCHERS = {
    "redis": ("servers.redis", "RedisServer"),
    "etcd": ("servers.etcd", "EtcdServer"),
}


@contextlib.contextmanager
def store_url(kind: str, directory: str) -> Iterator[str]:
    """A backend URL of *kind*: ``file`` in *directory*, or a throwaway Redis or etcd server.

    The distributed stores' launchers and backends are built alongside this integration; while
    one is missing, its tests skip (locally) with the reason.
    """
    if kind == "file":
        yield f"file://{directory}?durable=false&poll_interval=0.02"
        return
    module_name, class_name = _LAUNCHERS[kind]
    try:
        launcher = getattr(importlib.import_module(module_name), class_name)
        importlib.import_module(f"arendezvous.backends.{kind}")
    except ImportError as exc:
        missing(f"the {kind} backend or its test server is missing: {exc}")
    with launcher() as server:
        yield str(server.url)
