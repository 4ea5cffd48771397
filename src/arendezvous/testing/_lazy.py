"""Lazy re-exports: a package names its public objects once, in an ``if TYPE_CHECKING:`` block
of ``from .module import Name as Name`` lines, and each is imported on first use.

Type checkers and readers see ordinary imports; at run time :func:`install_lazy_exports` reads
those lines from the package's source and installs a module ``__getattr__`` (and ``__dir__``)
that imports a name's module only when the name is first looked up. So
``import arendezvous.testing`` imports none of the test tools (pytest, Hypothesis) that some of
its modules need, while ``from arendezvous.testing import backend_state_machine`` works.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from typing import Any

__all__ = ("install_lazy_exports", "lazy_exports")


def lazy_exports(source: str) -> dict[str, tuple[str, str]]:
    """``{name: (module, attribute)}`` for each ``from module import attribute as name`` inside an
    ``if`` whose test mentions ``TYPE_CHECKING``, at the top level of *source*."""
    exports: dict[str, tuple[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.If) or not any(
            isinstance(name, ast.Name) and name.id == "TYPE_CHECKING"
            for name in ast.walk(node.test)
        ):
            continue
        for statement in node.body:
            if isinstance(statement, ast.ImportFrom):
                module = "." * statement.level + (statement.module or "")
                for alias in statement.names:
                    exports[alias.asname or alias.name] = (module, alias.name)
    return exports


def install_lazy_exports(package: str) -> bool:
    """Give the module *package* a ``__getattr__`` importing its ``TYPE_CHECKING`` re-exports on
    first use. Returns ``False`` -- and installs nothing -- when the package's source cannot be
    read (the caller then imports everything at once)."""
    module = sys.modules[package]
    try:
        exports = lazy_exports(inspect.getsource(module))
    except (OSError, TypeError):
        return False

    def __getattr__(name: str) -> Any:
        try:
            module_name, attribute = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module_name, package), attribute)
        setattr(module, name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(exports))

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dir__ = __dir__  # type: ignore[method-assign]
    return True
