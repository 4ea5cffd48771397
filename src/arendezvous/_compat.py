"""Optional dependencies, each reported with the fix in the message."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ("import_optional",)


def import_optional(module: str, extra: str) -> ModuleType:
    """Import *module*, or raise an ``ImportError`` that names the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module!r} is not installed; install it with: pip install 'arendezvous[{extra}]'"
        ) from exc
