"""Optional dependencies and event-loop limits, each reported with the fix in the message."""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType

__all__ = ("import_optional", "require_asyncio")


def import_optional(module: str, extra: str) -> ModuleType:
    """Import *module*, or raise an ``ImportError`` that names the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module!r} is not installed; install it with: pip install 'arendezvous[{extra}]'"
        ) from exc


def require_asyncio(backend: str, client: str) -> None:
    """Raise a clear error unless called from a running asyncio event loop.

    Store clients such as redis.asyncio, aetcd and asyncpg run only on asyncio; under trio they
    fail deep inside with "no running event loop". Saying so up front saves the hunt.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"the {backend} backend runs only on asyncio (its client, {client}, does not support "
            "trio); use it from asyncio, or reach it from trio through arendezvous.SyncBackend "
            "in a worker thread"
        ) from None
